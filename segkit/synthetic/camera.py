"""The pinhole camera and the canvas: projecting metres to pixels and rasterising convex polygons.

Also the smooth noise fields that texture every surface, made from fixed grids so the pattern is the
same at every image size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

_CAM_HEIGHT = 1.22  # metres, the windscreen camera of the recording car


@dataclass(frozen=True)
class Camera:
    """A pinhole camera ``cam_h`` metres above a flat road, looking along the street (+z)."""

    width: int
    height: int
    focal: float  # pixels
    cx: float  # column of the vanishing point
    horizon: float  # row of the vanishing point
    cam_h: float = _CAM_HEIGHT

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        """World metres (x right, y up, z ahead) -> pixel column and row."""
        return self.cx + self.focal * x / z, self.horizon + self.focal * (self.cam_h - y) / z


@dataclass(frozen=True)
class _Fields:
    """Smooth noise images (H, W) of about unit spread, made from fixed grids of random values."""

    low: np.ndarray  # clouds, stains, patches (a 12 x 24 grid)
    mid: np.ndarray  # clumps of leaves, worn paint (a 40 x 80 grid)
    detail: np.ndarray  # leaves, wear and grain (64 x 128 and 256 x 512 grids together)


Window = tuple[slice, slice]


class Canvas:
    """The frame being drawn: colour (3, H, W) in 0..1, label ids (H, W), depth (H, W) in metres.

    Colour planes come first: numpy is many times faster on them than on a trailing RGB axis.
    """

    def __init__(self, cam: Camera, fields: _Fields, light: Any = None,
                 blockers: Sequence[Any] = ()):
        self.cam, self.fields = cam, fields
        self.light = light  # the scene's Light, for shading what is drawn
        self.blockers = blockers  # shadows of buildings, in which objects get only skylight
        self.image = np.zeros((3, cam.height, cam.width), np.float32)
        self.label = np.zeros((cam.height, cam.width), np.uint8)
        self.depth = np.zeros((cam.height, cam.width), np.float32)
        self._cols = np.arange(cam.width, dtype=np.float32) + 0.5  # pixel centres, for coords
        self._rows = np.arange(cam.height, dtype=np.float32) + 0.5

    def window(self, x0: float, y0: float, x1: float, y1: float) -> Window | None:
        """Pixels whose centres may lie in [x0, x1) x [y0, y1), clipped; None if none do."""
        c0, c1 = max(math.floor(x0), 0), min(math.ceil(x1), self.cam.width)
        r0, r1 = max(math.floor(y0), 0), min(math.ceil(y1), self.cam.height)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def cover(self, x0: float, y0: float, x1: float, y1: float) -> Window | None:
        """Pixels whose centres lie in [x0, x1) x [y0, y1), clipped; None if none do."""
        c0, c1 = max(math.ceil(x0 - 0.5), 0), min(math.ceil(x1 - 0.5), self.cam.width)
        r0, r1 = max(math.ceil(y0 - 0.5), 0), min(math.ceil(y1 - 0.5), self.cam.height)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def coords(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre columns (1, w) and rows (h, 1) of a window."""
        rows, cols = win
        return self._cols[None, cols], self._rows[rows, None]

    def paint(self, win: Window, mask: np.ndarray | None, label_id: Any, color: Any,
              depth: Any) -> None:
        """Set label, colour and depth where ``mask`` is True (None: the whole window).

        A label or depth is a number or an array broadcasting to (h, w), a colour an RGB triple
        or a (3, h, w) array; a layer given as None is left as it is.
        """
        if color is not None and not (isinstance(color, np.ndarray) and color.ndim == 3):
            color = np.asarray(color, np.float32)[:, None, None]
        for layer, value in ((self.label[win], label_id), (self.image[(slice(None), *win)], color),
                             (self.depth[win], depth)):
            if value is None:
                continue
            # copyto with where= is many times faster than boolean indexing on colour planes
            np.copyto(layer, value, casting="unsafe", where=True if mask is None else mask)

    def shade(self, win: Window, mask: np.ndarray, factor: float) -> None:
        """Multiply the colour where ``mask`` is True (shadows, see-through parts)."""
        image = self.image[(slice(None), *win)]
        np.multiply(image, np.float32(factor), out=image, where=mask)

    def polygon_mask(self, corners: np.ndarray) -> tuple[Window, np.ndarray] | None:
        """Window and mask of a convex polygon, corners (k, 2) in order."""
        low, high = corners.min(axis=0), corners.max(axis=0)
        win = self.window(low[0], low[1], high[0], high[1])
        if win is None:
            return None
        xs, ys = self.coords(win)
        left, right = _spans(corners[None], ys[:, 0])
        return win, (xs >= left[0, :, None]) & (xs <= right[0, :, None])


def _spans(corners: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where convex polygons (n, k, 2) cross each row ys: left and right ends, (n, rows).

    A convex polygon covers one span per row, so a mask is two comparisons per pixel; rows that
    miss a polygon get NaN, which no comparison passes.
    """
    start, stop = corners, np.roll(corners, -1, axis=1)
    rise = stop[..., 1] - start[..., 1]
    rise[rise == 0] = np.nan  # horizontal (and padding) edges cross no row
    t = (ys[None, None, :] - start[..., 1, None]) / rise[..., None]  # (n, k, rows)
    cross = start[..., 0, None] + t * (stop[..., 0] - start[..., 0])[..., None]
    cross[~((t >= 0) & (t <= 1))] = np.nan
    return np.fmin.reduce(cross, axis=1), np.fmax.reduce(cross, axis=1)


ELLIPSE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False))], axis=1)
#: Up to this many polygon-pixel tests a batch is rasterised in one go, beyond it one by one.
_BATCH_PIXELS = 300_000


class Batch:
    """Convex polygons of one object at one depth, later ones on top, rasterised together.

    Drawing an object's dozen parts in one pass saves most of the numpy calls, which cost more
    than the arithmetic at these sizes. A part with ``color`` None lets the picture below show
    through, darkened by ``shade`` (shadows, the inside of a bicycle wheel); with ``label_id``
    None it keeps the label below.
    """

    def __init__(self, canvas: Canvas, depth: float):
        self.canvas, self.depth = canvas, depth
        self.parts: list[tuple[Any, int | None, Any, float]] = []
        self.brightness = 1.0  # the light on the object: multiplies every colour

    def polygon(self, pts: Any, label_id: int | None, color: Any, shade: float = 1.0) -> None:
        """Add a convex polygon with corners ``pts`` (k, 2) in pixels."""
        self.parts.append((pts, label_id, color, shade))

    def ellipse_px(self, cx: float, cy: float, rx: float, ry: float, label_id: int | None,
                   color: Any, shade: float = 1.0) -> None:
        """Add an axis-aligned ellipse (as a 20-gon) in pixels."""
        self.parts.append((ELLIPSE * (rx, ry) + (cx, cy), label_id, color, shade))

    def draw(self) -> None:
        """Rasterise the parts and paint, per pixel, the last part that covers it."""
        if not self.parts:
            return
        k = max(len(p[0]) for p in self.parts)
        corners = np.empty((len(self.parts), k, 2), np.float32)
        for i, (pts, *_) in enumerate(self.parts):
            corners[i, :len(pts)] = pts
            corners[i, len(pts):] = pts[-1]  # padding repeats a corner: an empty edge
        low, high = corners.min(axis=(0, 1)), corners.max(axis=(0, 1))
        win = self.canvas.window(low[0], low[1], high[0], high[1])
        if win is not None:
            self._paint(win, self._topmost(win, corners))

    def _topmost(self, win: Window, corners: np.ndarray) -> np.ndarray:
        """Per pixel of the window, 1 + the index of the last part covering it (0: none)."""
        xs, ys = self.canvas.coords(win)
        n, h, w = len(corners), ys.shape[0], xs.shape[1]
        if n * h * w <= _BATCH_PIXELS:
            left, right = _spans(corners, ys[:, 0])
            inside = (xs[None] >= left[..., None]) & (xs[None] <= right[..., None])  # (n, h, w)
            return (inside * np.arange(1, n + 1, dtype=np.int16)[:, None, None]).max(axis=0)
        top = np.zeros((h, w), np.int16)
        for i in range(n):  # big objects close to the camera: one part at a time
            hit = self.canvas.polygon_mask(corners[i])
            if hit is not None:
                (rows, cols), mask = hit
                local = (slice(rows.start - win[0].start, rows.stop - win[0].start),
                         slice(cols.start - win[1].start, cols.stop - win[1].start))
                top[local][mask] = i + 1
        return top

    def _paint(self, win: Window, top: np.ndarray) -> None:
        """Paint the window from the topmost-part map."""
        covered = top > 0
        ids = np.array([0] + [255 if p[1] is None else p[1] for p in self.parts], np.uint8)
        colours = np.array([(0, 0, 0)] + [(0, 0, 0) if p[2] is None else p[2] for p in self.parts],
                           np.float32).T * np.float32(self.brightness)
        label, colour = np.take(ids, top), np.take(colours, top, axis=1)
        if any(p[1] is None for p in self.parts):
            keep = label == 255
            label[keep] = self.canvas.label[win][keep]
        if any(p[2] is None for p in self.parts):
            shades = np.array([0.0] + [p[3] if p[2] is None else 0.0 for p in self.parts],
                              np.float32)
            see = np.take(shades, top)
            through = see > 0
            below = self.canvas.image[(slice(None), *win)]
            colour = np.where(through, below * see, colour)
        self.canvas.paint(win, covered, label, colour, self.depth)


class Sprite(Batch):
    """An upright plane facing the camera at depth z; u metres right of x, v metres up the road."""

    def __init__(self, canvas: Canvas, x: float, z: float, squash: float = 1.0,
                 flip: bool = False):
        super().__init__(canvas, z)
        self.scale = canvas.cam.focal / z
        self.col, self.row = canvas.cam.project(x, 0.0, z)
        # squash foreshortens things seen at an angle; flip mirrors them (facing left or right)
        self.su = self.scale * squash * (-1.0 if flip else 1.0)

    def at(self, u: float, v: float) -> tuple[float, float]:
        """Pixel column and row of the local point (u, v)."""
        return self.col + self.su * u, self.row - self.scale * v

    def rect(self, u0: float, v0: float, u1: float, v1: float, label_id: int | None,
             color: Any) -> None:
        """Add the rectangle between (u0, v0) and (u1, v1)."""
        self.poly([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], label_id, color)

    def ellipse(self, u: float, v: float, ru: float, rv: float, label_id: int | None,
                color: Any, shade: float = 1.0) -> None:
        """Add the ellipse centred at (u, v) with radii (ru, rv)."""
        x, y = self.at(u, v)
        self.ellipse_px(x, y, abs(self.su) * ru, self.scale * rv, label_id, color, shade)

    def poly(self, pts: Iterable[tuple[float, float]], label_id: int | None,
             color: Any) -> None:
        """Add the convex polygon with corners ``pts``."""
        self.polygon([self.at(u, v) for u, v in pts], label_id, color)

    def limb(self, p: tuple[float, float], q: tuple[float, float], width: float,
             label_id: int | None, color: Any) -> None:
        """Add a bar of ``width`` metres from p to q (legs, arms, bicycle frames)."""
        du, dv = q[0] - p[0], q[1] - p[1]
        norm = math.hypot(du, dv) or 1.0
        nu, nv = -dv / norm * width / 2, du / norm * width / 2
        self.poly([(p[0] + nu, p[1] + nv), (q[0] + nu, q[1] + nv), (q[0] - nu, q[1] - nv),
                   (p[0] - nu, p[1] - nv)], label_id, color)

    def ring(self, u: float, v: float, r: float, tyre: float, label_id: int, color: Any) -> None:
        """A wheel: a tyre of ``color`` whose inside shows the background but gets the label."""
        self.ellipse(u, v, r, r, label_id, color)
        self.ellipse(u, v, r - tyre, r - tyre, label_id, None, shade=0.8)


def world_polygon(batch: Batch, pts: Any, label_id: int | None, color: Any,
                  shade: float = 1.0) -> None:
    """Add a convex polygon given by world points (k, 3), all ahead of the camera."""
    cam = batch.canvas.cam
    rows = pts.tolist() if isinstance(pts, np.ndarray) else pts  # plain floats: cheaper here
    batch.polygon([cam.project(x, y, z) for x, y, z in rows], label_id, color, shade)


def sub_quad(quad: np.ndarray, a0: float, a1: float, b0: float, b1: float) -> np.ndarray:
    """Part of a world quad (corners p00, p10, p11, p01) between fractions a0..a1 and b0..b1."""
    weights = [((1 - a) * (1 - b), a * (1 - b), a * b, (1 - a) * b)
               for a, b in ((a0, b0), (a1, b0), (a1, b1), (a0, b1))]
    return np.array(weights) @ quad

def noise_fields(rng: np.random.Generator, width: int, height: int) -> _Fields:
    """Smooth noise from fixed grids, so the pattern is the same at every image size."""
    def grid(shape: tuple[int, int]) -> np.ndarray:
        values = rng.random(shape, dtype=np.float32)
        values -= np.float32(0.5)
        values *= np.float32(5.5)  # bilinear resizing halves the spread; this brings it back to ~1
        return values

    def resized(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if values.shape == size[::-1]:
            return values
        return np.asarray(Image.fromarray(values).resize(size, Image.Resampling.BILINEAR))

    low, clumps, mid, fine = grid((12, 24)), grid((40, 80)), grid((64, 128)), grid((256, 512))
    detail = (resized(mid, (512, 256)) + fine) * np.float32(0.7)  # combined before upsizing
    return _Fields(low=resized(low, (width, height)), mid=resized(clumps, (width, height)),
                   detail=resized(detail, (width, height)))
