"""Procedural Cityscapes-like street scenes in the official layout, file names, zips and label ids.

Real Cityscapes needs a registered download, so the course can start from these frames instead.
Each frame is a street seen through a car's windscreen: a pinhole camera over a flat road with lanes,
kerbs and sidewalks, façades with windows, trees and hedges, poles, signs and traffic lights, parked
and moving vehicles, pedestrians and cyclists, and the ego vehicle's bonnet. The frame is then
textured, hazed, lit, blurred and given sensor noise. Class frequencies roughly follow Cityscapes'
train split, and thin or small classes are harder than road, sky and buildings, as on the real data.

A scene is first composed in metres (nothing depends on the image size), then rasterised, so a
512x256 frame looks like the 2048x1024 one scaled down. Each frame's random generator comes from
(seed, split, city, index), so a frame does not depend on which other frames are generated.
"""

from __future__ import annotations

import math
import operator
import os
import random
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from segkit import io, labels, layout
from segkit.labels import colorize_label_ids

DEFAULT_CITIES: dict[str, tuple[str, ...]] = {
    "train": ("hamburg",), "val": ("frankfurt",), "test": ("berlin",),
}
MARKER = "synthetic.json"
#: Bumped whenever the pictures change, so a folder from an older generator is not resumed.
GENERATOR_VERSION = 1
MIN_SIZE = (64, 32)
#: Real Cityscapes frames all carry frame number 19 (the annotated frame of each snippet).
FRAME_NUMBER = 19

_ID = {c.name: c.id for c in labels.CLASSES if c.id >= 0}
EGO, RECT_BORDER, OUT_OF_ROI, STATIC, DYNAMIC, GROUND = (
    _ID[n] for n in ("ego vehicle", "rectification border", "out of roi", "static", "dynamic",
                     "ground"))
ROAD, SIDEWALK, PARKING, BUILDING, WALL, FENCE = (
    _ID[n] for n in ("road", "sidewalk", "parking", "building", "wall", "fence"))
POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = (
    _ID[n] for n in ("pole", "traffic light", "traffic sign", "vegetation", "terrain", "sky"))
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = (
    _ID[n] for n in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"))

_CAM_HEIGHT = 1.22  # metres, the windscreen camera of the recording car
_TEXEL = 0.1  # metres per façade texel
_LIGHTER, _SAME = np.float32(1.15), np.float32(1.0)
_FOCAL = 1.1  # focal length in image widths (Cityscapes: 2262 px at 2048 px)

_Colour = tuple[float, float, float]
_CAR_COLOURS = ((0.62, 0.63, 0.64), (0.35, 0.36, 0.38), (0.08, 0.08, 0.09), (0.82, 0.82, 0.8),
                (0.13, 0.17, 0.3), (0.5, 0.1, 0.09), (0.15, 0.25, 0.2), (0.6, 0.55, 0.45),
                (0.2, 0.2, 0.22), (0.75, 0.75, 0.74))
_WALL_COLOURS = ((0.74, 0.69, 0.6), (0.78, 0.77, 0.74), (0.8, 0.72, 0.52), (0.55, 0.32, 0.26),
                 (0.42, 0.27, 0.23), (0.55, 0.55, 0.54), (0.74, 0.6, 0.56), (0.62, 0.66, 0.68),
                 (0.68, 0.62, 0.5), (0.45, 0.45, 0.46))
_CLOTHES = ((0.1, 0.1, 0.11), (0.14, 0.16, 0.25), (0.3, 0.3, 0.32), (0.5, 0.45, 0.35),
            (0.55, 0.12, 0.12), (0.2, 0.28, 0.2), (0.65, 0.65, 0.66), (0.25, 0.2, 0.16))
_SKIN = ((0.85, 0.68, 0.56), (0.7, 0.52, 0.4), (0.45, 0.32, 0.24), (0.9, 0.75, 0.65))
_PAVINGS = ((0.55, 0.53, 0.52), (0.6, 0.56, 0.5), (0.58, 0.5, 0.48), (0.5, 0.5, 0.5),
            (0.62, 0.6, 0.57))
_GREENS = ((0.2, 0.29, 0.12), (0.25, 0.33, 0.15), (0.16, 0.24, 0.12), (0.3, 0.36, 0.18),
           (0.36, 0.33, 0.16))


# --- the camera and the canvas ---------------------------------------------------------------


@dataclass(frozen=True)
class _Camera:
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
    detail: np.ndarray  # leaves, wear and grain (64 x 128 and 256 x 512 grids together)


_Window = tuple[slice, slice]


class _Canvas:
    """The frame being drawn: colour (3, H, W) in 0..1, label ids (H, W), depth (H, W) in metres.

    Colour planes come first: numpy is many times faster on them than on a trailing RGB axis.
    """

    def __init__(self, cam: _Camera, fields: _Fields):
        self.cam, self.fields = cam, fields
        self.image = np.zeros((3, cam.height, cam.width), np.float32)
        self.label = np.zeros((cam.height, cam.width), np.uint8)
        self.depth = np.zeros((cam.height, cam.width), np.float32)
        self._cols = np.arange(cam.width, dtype=np.float32) + 0.5  # pixel centres, for coords
        self._rows = np.arange(cam.height, dtype=np.float32) + 0.5

    def window(self, x0: float, y0: float, x1: float, y1: float) -> _Window | None:
        """Pixels whose centres may lie in [x0, x1) x [y0, y1), clipped; None if none do."""
        c0, c1 = max(math.floor(x0), 0), min(math.ceil(x1), self.cam.width)
        r0, r1 = max(math.floor(y0), 0), min(math.ceil(y1), self.cam.height)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def cover(self, x0: float, y0: float, x1: float, y1: float) -> _Window | None:
        """Pixels whose centres lie in [x0, x1) x [y0, y1), clipped; None if none do."""
        c0, c1 = max(math.ceil(x0 - 0.5), 0), min(math.ceil(x1 - 0.5), self.cam.width)
        r0, r1 = max(math.ceil(y0 - 0.5), 0), min(math.ceil(y1 - 0.5), self.cam.height)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def coords(self, win: _Window) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre columns (1, w) and rows (h, 1) of a window."""
        rows, cols = win
        return self._cols[None, cols], self._rows[rows, None]

    def paint(self, win: _Window, mask: np.ndarray | None, label_id: Any, color: Any,
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

    def shade(self, win: _Window, mask: np.ndarray, factor: float) -> None:
        """Multiply the colour where ``mask`` is True (shadows, see-through parts)."""
        image = self.image[(slice(None), *win)]
        np.multiply(image, np.float32(factor), out=image, where=mask)

    def polygon_mask(self, corners: np.ndarray) -> tuple[_Window, np.ndarray] | None:
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


_ELLIPSE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
                     np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False))], axis=1)
#: Up to this many polygon-pixel tests a batch is rasterised in one go, beyond it one by one.
_BATCH_PIXELS = 300_000


class _Batch:
    """Convex polygons of one object at one depth, later ones on top, rasterised together.

    Drawing an object's dozen parts in one pass saves most of the numpy calls, which cost more
    than the arithmetic at these sizes. A part with ``color`` None lets the picture below show
    through, darkened by ``shade`` (shadows, the inside of a bicycle wheel); with ``label_id``
    None it keeps the label below.
    """

    def __init__(self, canvas: _Canvas, depth: float):
        self.canvas, self.depth = canvas, depth
        self.parts: list[tuple[Any, int | None, Any, float]] = []

    def polygon(self, pts: Any, label_id: int | None, color: Any, shade: float = 1.0) -> None:
        """Add a convex polygon with corners ``pts`` (k, 2) in pixels."""
        self.parts.append((pts, label_id, color, shade))

    def ellipse_px(self, cx: float, cy: float, rx: float, ry: float, label_id: int | None,
                   color: Any, shade: float = 1.0) -> None:
        """Add an axis-aligned ellipse (as a 20-gon) in pixels."""
        self.parts.append((_ELLIPSE * (rx, ry) + (cx, cy), label_id, color, shade))

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

    def _topmost(self, win: _Window, corners: np.ndarray) -> np.ndarray:
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

    def _paint(self, win: _Window, top: np.ndarray) -> None:
        """Paint the window from the topmost-part map."""
        covered = top > 0
        ids = np.array([0] + [255 if p[1] is None else p[1] for p in self.parts], np.uint8)
        colours = np.array([(0, 0, 0)] + [(0, 0, 0) if p[2] is None else p[2] for p in self.parts],
                           np.float32).T
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


class _Sprite(_Batch):
    """An upright plane facing the camera at depth z; u metres right of x, v metres up the road."""

    def __init__(self, canvas: _Canvas, x: float, z: float, squash: float = 1.0,
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


def _world_polygon(batch: _Batch, pts: Any, label_id: int | None, color: Any,
                   shade: float = 1.0) -> None:
    """Add a convex polygon given by world points (k, 3), all ahead of the camera."""
    cam = batch.canvas.cam
    rows = pts.tolist() if isinstance(pts, np.ndarray) else pts  # plain floats: cheaper here
    batch.polygon([cam.project(x, y, z) for x, y, z in rows], label_id, color, shade)


def _sub_quad(quad: np.ndarray, a0: float, a1: float, b0: float, b1: float) -> np.ndarray:
    """Part of a world quad (corners p00, p10, p11, p01) between fractions a0..a1 and b0..b1."""
    weights = [((1 - a) * (1 - b), a * (1 - b), a * b, (1 - a) * b)
               for a, b in ((a0, b0), (a1, b0), (a1, b1), (a0, b1))]
    return np.array(weights) @ quad


# --- composing a scene in metres --------------------------------------------------------------


@dataclass
class _Side:
    """One side of the street; distances are |x| in metres from the camera's line."""

    sign: int  # -1 left, +1 right
    kerb: float  # where the sidewalk starts
    sidewalk: float
    verge: float  # grass strip between the sidewalk and the building line
    facade: float  # the building line
    park: bool  # trees, hedges and grass instead of buildings
    parking: float = 0.0  # width of a parking strip between road and kerb
    parking_label: int = ROAD
    paving: _Colour = (0.55, 0.53, 0.52)
    buildings: list[dict] = field(default_factory=list)
    back: list[dict] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)  # walls, fences, hedges on the building line


@dataclass
class _Scene:
    """Everything about one frame, in metres and fractions of the image size."""

    horizon: float  # row of the horizon, fraction of the height
    vp: float  # column of the vanishing point, fraction of the width
    road: tuple[float, float]  # x of the left and right road edges
    asphalt: float  # grey level of the road
    lanes: list[dict]  # markings: x, width, period, duty
    sides: tuple[_Side, _Side]
    crossing: tuple[float, float] | None  # z range of a cross street
    z_end: float  # where the street ends in a row of buildings or trees
    far: list[dict]  # what stands at z_end
    objects: list[tuple[float, str, dict]]  # (depth for drawing order, kind, parameters)
    light: dict
    ego: dict
    rails: float | None  # x of tram rails
    patches: list[dict]  # ground label areas: x range, z range, label, colour
    seed: int  # for the textures, drawn last


def _compose(rng: random.Random) -> _Scene:
    """Draw one street in metres: geometry, buildings, objects and light; no pixel sizes."""
    lane = rng.uniform(2.8, 3.5)
    n_lanes = rng.choice([1, 2, 2, 2, 3, 4, 4])
    ego_lane = rng.randrange(n_lanes // 2, n_lanes) if n_lanes > 1 else 0
    road = (-(ego_lane + 0.5) * lane, (n_lanes - ego_lane - 0.5) * lane)
    oncoming = 0 if rng.random() < 0.2 or n_lanes == 1 else n_lanes // 2  # lanes facing us
    lanes = _lane_markings(rng, road, lane, n_lanes, oncoming)
    crossing = None
    if rng.random() < 0.35:
        z0 = rng.uniform(14, 45)
        crossing = (z0, z0 + rng.uniform(9, 16))
    z_end = rng.uniform(70, 220)
    style = rng.randrange(3)  # 0 old town, 1 suburb, 2 modern blocks
    sides = tuple(_side(rng, sign, road, crossing, z_end, style) for sign in (-1, 1))
    objects: list[tuple[float, str, dict]] = []
    for side in sides:
        objects += _side_objects(rng, side, crossing, z_end)
    objects += _traffic(rng, road, lane, n_lanes, ego_lane, oncoming, sides, crossing)
    objects += _people(rng, sides, road, crossing)
    rails = None
    if rng.random() < 0.25 and n_lanes >= 2:
        rails = road[0] + lane * 0.5
        objects.append(_vehicle(rng, "train", rails, rng.uniform(20, 70), facing="front"))
    objects.sort(key=lambda item: -item[0])
    return _Scene(
        horizon=rng.uniform(0.37, 0.47), vp=0.5 + rng.gauss(0, 0.03), road=road,
        asphalt=rng.uniform(0.31, 0.42),
        lanes=lanes, sides=sides, crossing=crossing, z_end=z_end,
        far=_far_row(rng, z_end, style), objects=objects, light=_light(rng),
        ego={"side": rng.uniform(0.022, 0.03), "mid": rng.uniform(0.035, 0.045),
             "rectified": rng.random() < 0.3},
        rails=rails, patches=_patches(rng, sides, road), seed=rng.getrandbits(63))


def _lane_markings(rng: random.Random, road: tuple[float, float], lane: float,
                   n_lanes: int, oncoming: int) -> list[dict]:
    """Dashed lane lines, a solid line between the directions, and edge lines on wide roads."""
    if rng.random() < 0.15:
        return []  # residential streets often have no markings
    marks = []
    period = rng.uniform(6, 12)
    for k in range(1, n_lanes):
        solid = k == oncoming and rng.random() < 0.5
        marks.append({"x": road[0] + k * lane, "width": rng.uniform(0.12, 0.16), "period": period,
                      "duty": 1.0 if solid else rng.uniform(0.3, 0.5), "phase": rng.uniform(0, 12)})
    if n_lanes >= 3 and rng.random() < 0.5:
        for edge in road:
            marks.append({"x": edge - math.copysign(0.4, edge), "width": 0.15, "period": 1.0,
                          "duty": 1.0, "phase": 0.0})
    return marks


def _side(rng: random.Random, sign: int, road: tuple[float, float],
          crossing: tuple[float, float] | None, z_end: float, style: int) -> _Side:
    """The ground strips, buildings and boundary walls of one side of the street."""
    edge = abs(road[0] if sign < 0 else road[1])
    parking = rng.uniform(2.0, 2.4) if rng.random() < 0.45 else 0.0
    kerb = edge + parking
    sidewalk = rng.uniform(1.8, 5.0)
    verge = rng.uniform(1.5, 5.0) if rng.random() < 0.45 else 0.0
    side = _Side(sign=sign, kerb=kerb, sidewalk=sidewalk, verge=verge,
                 facade=kerb + sidewalk + verge, park=rng.random() < 0.15, parking=parking,
                 parking_label=PARKING if rng.random() < 0.2 else ROAD,
                 paving=rng.choice(_PAVINGS))
    heights = ((11, 22), (6, 11), (14, 32))[style]
    if not side.park:
        side.buildings = _building_row(rng, heights, crossing, z_end, side.sidewalk)
    if side.park or rng.random() < 0.6:
        side.back = _building_row(rng, (heights[0] + 4, heights[1] + 10), None, z_end, 0.0)
        offset = rng.uniform(10, 30) + (20 if side.park else 0)
        for b in side.back:
            b["offset"] = offset
    side.edges = _edges(rng, side, crossing, z_end)
    return side


def _building_row(rng: random.Random, heights: tuple[float, float],
                  crossing: tuple[float, float] | None, z_end: float,
                  corner: float) -> list[dict]:
    """Consecutive buildings along the street with gaps, skipping a cross street."""
    row, z = [], rng.uniform(-8, 0)
    while z < z_end:
        width = rng.uniform(8, 26)
        if crossing and z < crossing[1] + corner and z + width > crossing[0] - corner:
            if z < crossing[0] - corner - 3:
                row.append(_building(rng, z, crossing[0] - corner, heights))
            z = crossing[1] + corner
            continue
        row.append(_building(rng, z, min(z + width, z_end), heights))
        z += width + (rng.uniform(3, 14) if rng.random() < 0.2 else 0.0)
    return row


def _building(rng: random.Random, z0: float, z1: float,
              heights: tuple[float, float]) -> dict:
    """One building: extent along the street, height, wall colour and window grid."""
    colour = np.array(rng.choice(_WALL_COLOURS)) * [rng.uniform(0.85, 1.1) for _ in range(3)]
    floor = rng.uniform(2.9, 3.6)
    return {"z0": z0, "z1": z1, "height": rng.uniform(*heights),
            "color": np.clip(colour, 0, 1), "bay": rng.uniform(2.2, 3.8), "floor": floor,
            "ground": floor * rng.uniform(1.0, 1.3), "win_w": rng.uniform(0.35, 0.6),
            "win_h": rng.uniform(0.4, 0.6), "u0": rng.uniform(0, 3),
            "glass": np.array([0.16, 0.19, 0.22]) * rng.uniform(0.7, 1.3),
            "shop": rng.random() < 0.5, "depth": rng.uniform(10, 18), "offset": 0.0,
            "seed": rng.getrandbits(32)}


def _edges(rng: random.Random, side: _Side, crossing: tuple[float, float] | None,
           z_end: float) -> list[dict]:
    """Walls, fences and hedges: in gaps of the building line (all along parks), before front
    gardens, and now and then as a barrier between road and sidewalk."""
    gaps = []
    z = 0.0
    for b in [*side.buildings, {"z0": z_end, "z1": z_end}]:
        if b["z0"] - z > 1.0:
            gaps.append((z, b["z0"]))
        z = max(z, b["z1"])
    if side.buildings and rng.random() < 0.35:  # front gardens behind a low wall or fence
        z0 = rng.uniform(0, 30)
        gaps.append((z0, z0 + rng.uniform(10, 40)))
    edges = []
    for z0, z1 in gaps:
        if crossing and z0 < crossing[1] and z1 > crossing[0]:
            continue
        kind = rng.choices(["wall", "fence", "hedge", "none"], [0.4, 0.2, 0.3, 0.1])[0]
        if kind != "none":
            edges.append(_edge(rng, kind, side.sign * (side.facade - 0.15), z0, z1,
                               (1.0, 2.2)))
    if rng.random() < 0.2:  # a barrier or railing between road and sidewalk
        z0 = rng.uniform(2, 20)
        z1 = z0 + rng.uniform(10, 50)
        if not (crossing and z0 < crossing[1] and z1 > crossing[0] - 5):
            kind = "wall" if rng.random() < 0.6 else "fence"
            edges.append(_edge(rng, kind, side.sign * (side.kerb + 0.15), z0, z1, (0.8, 1.2)))
    return edges


def _edge(rng: random.Random, kind: str, x: float, z0: float, z1: float,
          heights: tuple[float, float]) -> dict:
    """A wall, fence or hedge in the plane x from z0 to z1."""
    return {"kind": kind, "x": x, "z0": z0, "z1": z1, "height": rng.uniform(*heights),
            "seed": rng.getrandbits(32)}


def _far_row(rng: random.Random, z_end: float, style: int) -> list[dict]:
    """Buildings and tree clumps across the end of the street."""
    items, x = [], rng.uniform(-90, -70)
    heights = ((12, 28), (6, 14), (15, 40))[style]
    while x < 90:
        width = rng.uniform(8, 30)
        if rng.random() < 0.3:
            items.append({"kind": "trees", "x": x + width / 2, "width": width,
                          "height": rng.uniform(6, 15), "seed": rng.getrandbits(32)})
        else:
            items.append({"kind": "building", "x0": x, "x1": x + width,
                          **_building(rng, 0.0, width, heights)})
        x += width
    return items


def _light(rng: random.Random) -> dict:
    """Weather and camera response: sun and shadows, sky, haze, exposure, white balance."""
    sunny = rng.random() < 0.35
    return {"sunny": sunny, "sun_side": rng.choice([-1, 1]),
            "shadow": rng.uniform(0.4, 1.2), "clear_sky": sunny or rng.random() < 0.2,
            "haze": rng.uniform(120, 400), "exposure": rng.uniform(0.75, 1.15),
            "contrast": rng.uniform(0.75, 1.1),
            "tint": np.array([rng.uniform(0.9, 1.0), 1.0, rng.uniform(0.9, 1.05)]),
            "saturation": rng.uniform(0.6, 0.95), "noise": rng.uniform(1.0, 3.5),
            "blur": rng.uniform(0.5, 0.9)}


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson-distributed count (Knuth's method, fine for the small means used here)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _item(z: float, kind: str, rng: random.Random, **params: Any) -> tuple[float, str, dict]:
    """An object to draw, with its own seed: its details are drawn when it is drawn."""
    return z, kind, {"z": z, "seed": rng.getrandbits(32), **params}


def _spots(rng: random.Random, start: float, stop: float, gap: tuple[float, float],
           crossing: tuple[float, float] | None) -> list[float]:
    """Positions along the street spaced by ``gap``, none inside a cross street."""
    out, z = [], start + rng.uniform(0, gap[1])
    while z < stop:
        if not (crossing and crossing[0] - 1 < z < crossing[1] + 1):
            out.append(float(z))
        z += rng.uniform(*gap)
    return out


def _side_objects(rng: random.Random, side: _Side, crossing: tuple[float, float] | None,
                  z_end: float) -> list[tuple[float, str, dict]]:
    """Trees, lamps, signs, bins and parked bicycles on one sidewalk."""
    s, items = side.sign, []
    near_kerb = s * (side.kerb + 0.45)
    if side.park or rng.random() < 0.55:
        x_tree = s * (side.kerb + 0.9) if rng.random() < 0.6 else s * (side.facade - 1.2)
        big = 1.0 + side.park * 0.3
        for z in _spots(rng, 2.0, min(z_end * 0.6, 90), (7, 14), crossing):
            items.append(_item(z, "tree", rng, x=x_tree, radius=rng.uniform(2.0, 3.6) * big,
                               trunk=rng.uniform(2.2, 3.5)))
    if side.park:
        for z in _spots(rng, 4.0, min(z_end * 0.7, 110), (5, 10), crossing):
            x = s * (side.facade + rng.uniform(2, 9))
            items.append(_item(z, "tree", rng, x=x, radius=rng.uniform(2.5, 4.5),
                               trunk=rng.uniform(2.0, 4.0)))
    if rng.random() < 0.75:
        for z in _spots(rng, 3.0, min(z_end * 0.8, 140), (18, 32), crossing):
            items.append(_item(z, "lamp", rng, x=near_kerb, arm=-s))
    for _ in range(_poisson(rng, 1.2)):
        items.append(_item(rng.uniform(5, 50), "sign", rng, x=near_kerb, back=s < 0))
    for _ in range(_poisson(rng, 0.6)):
        items.append(_item(rng.uniform(5, 45), "pole", rng, x=s * (side.kerb + rng.uniform(0.3, 1))))
    for kind, mean in (("static", 2.0), ("dynamic", 0.7)):
        for _ in range(_poisson(rng, mean)):
            x = s * (side.facade - rng.uniform(0.4, 1.0)) if rng.random() < 0.6 else near_kerb
            items.append(_item(rng.uniform(4, 45), kind, rng, x=x))
    if rng.random() < 0.55:
        z0 = rng.uniform(5, 30)
        for k in range(rng.randrange(1, 7)):
            items.append(_item(z0 + 0.7 * k, "parked", rng, x=s * (side.facade - 0.9),
                               vehicle="bicycle", squash=0.55))
    if rng.random() < 0.2:
        items.append(_item(rng.uniform(5, 30), "parked", rng, x=s * (side.kerb + 0.8),
                           vehicle="motorcycle", squash=0.6))
    return items


def _traffic(rng: random.Random, road: tuple[float, float], lane: float, n_lanes: int,
             ego_lane: int, oncoming: int, sides: tuple[_Side, _Side],
             crossing: tuple[float, float] | None) -> list[tuple[float, str, dict]]:
    """Parked cars along the kerbs and vehicles in the lanes."""
    items = []
    for side in sides:
        x = side.sign * (side.kerb - 1.15)
        # without a parking strip, cars park on the road only if they leave the ego lane free
        if rng.random() < (0.65 if side.parking else 0.2 * (abs(x) > 2.5)):
            items += _parked_row(rng, x, crossing)
    for k in range(n_lanes):
        x = road[0] + (k + 0.5) * lane
        facing = "front" if k < oncoming else "rear"
        z = rng.uniform(8, 40) if k != ego_lane else rng.uniform(12, 50)
        while z < 120 and rng.random() < 0.5:
            kind = rng.choices(["car", "truck", "bus", "motorcycle"], [0.8, 0.07, 0.06, 0.07])[0]
            z = max(z, 28.0) if kind in ("truck", "bus") else z  # big ones mostly farther off
            items.append(_vehicle(rng, kind, x + rng.gauss(0, 0.2), z, facing=facing))
            z += items[-1][2]["length"] + rng.uniform(5, 25)
    if rng.random() < 0.3:
        items.append(_item(rng.uniform(8, 35), "cyclist", rng, x=road[1] - 0.7, vehicle="bicycle"))
    if road[1] > 2.5 and rng.random() < 0.1:  # a bus waiting at a stop on the right
        items.append(_vehicle(rng, "bus", road[1] - 1.4, rng.uniform(20, 50), facing="rear"))
    return items


def _parked_row(rng: random.Random, x: float,
                crossing: tuple[float, float] | None) -> list[tuple[float, str, dict]]:
    """Cars parked one behind the other at x, with a few gaps, clear of a cross street."""
    items, z = [], rng.uniform(3, 14)
    while z < 70:
        if crossing and crossing[0] - 6 < z < crossing[1] + 1:
            z = crossing[1] + 1
            continue
        kind = "truck" if z > 20 and rng.random() < 0.02 else "car"
        items.append(_vehicle(rng, kind, x, z, facing=rng.choice(["rear", "front"])))
        z += items[-1][2]["length"] + rng.uniform(0.6, 2.5)
        z += rng.uniform(5, 15) if rng.random() < 0.35 else 0.0
    return items


def _vehicle(rng: random.Random, kind: str, x: float, z: float,
             facing: str) -> tuple[float, str, dict]:
    """A vehicle standing on the road with its near end at depth z."""
    if kind == "motorcycle":
        return _item(z, "cyclist", rng, x=x, vehicle="motorcycle", length=2.2)
    width, length = {
        "car": (rng.uniform(1.7, 1.95), rng.uniform(3.8, 4.9)),
        "truck": (2.45, rng.uniform(7, 10)),
        "bus": (2.55, rng.uniform(11, 13)),
        "train": (2.65, rng.uniform(25, 35)),
    }[kind]
    colours = _CAR_COLOURS if kind == "car" else _WALL_COLOURS + ((0.85, 0.85, 0.83),) * 3
    colour = np.array(rng.choice(colours)) * rng.uniform(0.9, 1.1)
    return _item(z, kind, rng, x=x, width=width, length=length, facing=facing,
                 color=np.clip(colour, 0, 1))


def _people(rng: random.Random, sides: tuple[_Side, _Side], road: tuple[float, float],
            crossing: tuple[float, float] | None) -> list[tuple[float, str, dict]]:
    """Pedestrians on sidewalks and crossings, and cyclists crossing the street."""
    items = []
    for _ in range(_poisson(rng, 4.5)):
        side = rng.choice(sides)
        x = side.sign * (side.kerb + rng.uniform(0.4, side.sidewalk - 0.3))
        items.append(_item(rng.uniform(3.5, 30), "person", rng, x=x))
    if crossing or rng.random() < 0.2:
        z = crossing[0] - 3 if crossing else rng.uniform(10, 30)
        for _ in range(_poisson(rng, 1.5)):
            x = rng.uniform(road[0] - 2, road[1] + 2)
            items.append(_item(z + rng.uniform(-1.5, 1.5), "person", rng, x=x))
        if rng.random() < 0.4:
            items.append(_item(z, "cyclist", rng, x=rng.uniform(road[0], road[1]),
                               vehicle="bicycle", side_view=True))
    if crossing:
        for side in sides:
            items.append(_item(crossing[0] - 1.5, "light", rng, x=side.sign * (side.kerb + 0.4),
                               overhead=rng.random() < 0.6, arm=-side.sign))
    elif rng.random() < 0.7:  # a pedestrian light on its own
        side = rng.choice(sides)
        items.append(_item(rng.uniform(8, 35), "light", rng, x=side.sign * (side.kerb + 0.4),
                           overhead=False, arm=-side.sign))
    return items


def _patches(rng: random.Random, sides: tuple[_Side, _Side],
             road: tuple[float, float]) -> list[dict]:
    """Ground that is neither road nor sidewalk: driveways across sidewalks, traffic islands."""
    patches = []
    for side in sides:
        for _ in range(_poisson(rng, 0.5)):
            z0 = rng.uniform(4, 40)
            xs = sorted((side.sign * side.kerb, side.sign * side.facade))
            patches.append({"x": tuple(xs), "z": (z0, z0 + rng.uniform(3, 7)), "label": GROUND,
                            "color": (0.45, 0.43, 0.4)})
    if road[1] - road[0] > 9 and rng.random() < 0.25:
        z0 = rng.uniform(8, 25)
        centre = road[0] + rng.uniform(0.3, 0.45) * (road[1] - road[0])
        width = rng.uniform(1.2, 2.5)
        patches.append({"x": (centre - width / 2, centre + width / 2),
                        "z": (z0, z0 + rng.uniform(8, 30)), "label": GROUND,
                        "color": (0.5, 0.48, 0.45)})
    return patches


# --- rasterising a scene -----------------------------------------------------------------------


def render_scene(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (H, W, 3) uint8 RGB image and (H, W) uint8 official label ids.

    The scene is drawn from ``rng`` before any pixel size is used, so the same generator state
    gives the same street at every size.
    """
    # scalar draws from Python's generator cost a tenth of numpy's, and a scene needs a thousand
    scene = _compose(random.Random(int(rng.integers(2**63))))
    texture_rng = np.random.default_rng(scene.seed)
    cam = _Camera(width, height, _FOCAL * width, scene.vp * width, scene.horizon * height)
    cv = _Canvas(cam, _noise_fields(texture_rng, width, height))
    _draw_sky(cv, scene)
    _draw_ground(cv, scene)
    for side in scene.sides:
        _draw_side(cv, scene, side)
    _draw_far(cv, scene)  # after the sides, with a depth test: most of it is hidden
    for _, kind, params in scene.objects:
        _DRAW[kind](cv, params)
    for side in scene.sides:
        for edge in side.edges:
            _draw_edge(cv, edge)
    _draw_ego(cv, scene)
    image = _develop(cv, scene, texture_rng)
    return image, cv.label


def _noise_fields(rng: np.random.Generator, width: int, height: int) -> _Fields:
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

    low, mid, fine = grid((12, 24)), grid((64, 128)), grid((256, 512))
    detail = (resized(mid, (512, 256)) + fine) * np.float32(0.7)  # combined before upsizing
    return _Fields(low=resized(low, (width, height)), detail=resized(detail, (width, height)))


def _draw_sky(cv: _Canvas, scene: _Scene) -> None:
    """Overcast white-grey or blue sky with clouds, lighter toward the horizon."""
    cam = cv.cam
    rows = min(math.floor(cam.horizon) + 1, cam.height)  # the ground covers the rows below
    t = np.clip((np.arange(rows, dtype=np.float32) + 0.5) / max(cam.horizon, 1.0), 0, 1)
    if scene.light["clear_sky"]:
        top, low = np.array([0.42, 0.58, 0.82], np.float32), np.array([0.75, 0.82, 0.88], np.float32)
    else:
        top, low = np.array([0.72, 0.76, 0.8], np.float32), np.array([0.86, 0.88, 0.9], np.float32)
    sky = top[:, None, None] + (low - top)[:, None, None] * t[:, None]  # (3, rows, 1)
    cloud = np.clip(cv.fields.low[:rows] * 0.35 + cv.fields.detail[:rows] * 0.04 + 0.1, 0, 1)
    cv.image[:, :rows] = sky + (np.float32(0.93) - sky) * (cloud * np.float32(0.7))
    cv.label[:] = SKY


def _ground_zones(scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Strips across the street from left to right: x boundaries, label ids, colours, road index."""
    def strips(side: _Side) -> list[tuple[float, int, _Colour]]:
        kerb_stone = tuple(min(c * 1.2, 1.0) for c in side.paving)
        return [(side.parking, side.parking_label, (0.4, 0.39, 0.38)),
                (0.25, SIDEWALK, kerb_stone), (side.sidewalk - 0.25, SIDEWALK, side.paving),
                (side.verge, TERRAIN, (0.33, 0.38, 0.2)),
                (math.inf, TERRAIN if side.park else GROUND, (0.42, 0.4, 0.36))]

    left, right = (strips(side) for side in scene.sides)
    outer_left = abs(scene.road[0]) + np.cumsum([w for w, _, _ in left[:-1]])
    outer_right = scene.road[1] + np.cumsum([w for w, _, _ in right[:-1]])
    bounds = np.concatenate([-outer_left[::-1], scene.road, outer_right])
    asphalt = (scene.asphalt, scene.asphalt * 1.01, scene.asphalt * 1.04)
    zones = [*left[::-1], (0.0, ROAD, asphalt), *right]
    ids = np.array([z[1] for z in zones], np.uint8)
    colours = np.array([z[2] for z in zones], np.float32)
    return bounds, ids, colours, len(left)


def _draw_ground(cv: _Canvas, scene: _Scene) -> None:
    """Road, parking, kerbs, sidewalks and verges, with markings, paving and building shadows."""
    cam = cv.cam
    first = min(math.floor(cam.horizon) + 1, cam.height)
    d = np.arange(first, cam.height, dtype=np.float32) + 0.5 - cam.horizon
    z = cam.focal * cam.cam_h / d  # (n,) depth of each row
    x = (np.arange(cam.width, dtype=np.float32) + 0.5 - cam.cx)[None, :] * (cam.cam_h / d)[:, None]
    bounds, ids, colours, road_zone = _ground_zones(scene)
    zone = np.searchsorted(bounds, x)
    if scene.crossing:
        zone[(z > scene.crossing[0]) & (z < scene.crossing[1])] = road_zone
    label, image = np.take(ids, zone), np.take(colours.T, zone, axis=1)  # image (3, rows, W)
    for patch in scene.patches:
        rows = (z > patch["z"][0]) & (z < patch["z"][1])
        hit = (x[rows] > patch["x"][0]) & (x[rows] < patch["x"][1])
        label[rows] = np.where(hit, patch["label"], label[rows])
        colour = np.array(patch["color"], np.float32)[:, None, None]
        image[:, rows] = np.where(hit, colour, image[:, rows])
    road = label == ROAD
    _markings(image, x, z, road, scene)
    _paving(image, x, z, label == SIDEWALK, cam)
    _building_shadows(image, x, z, scene)
    cv.label[first:] = label
    cv.image[:, first:] = image
    cv.depth[first:] = z[:, None]


def _markings(image: np.ndarray, x: np.ndarray, z: np.ndarray, road: np.ndarray,
              scene: _Scene) -> None:
    """Lane lines, a zebra crossing and tram rails: paint on the road, still labelled road."""
    paint = np.array([0.8, 0.8, 0.78], np.float32)[:, None]
    open_road = road.copy()
    if scene.crossing:
        open_road[(z > scene.crossing[0] - 0.5) & (z < scene.crossing[1] + 0.5)] = False
    for m in scene.lanes:
        hit = open_road & (np.abs(x - m["x"]) < m["width"] / 2)
        if m["duty"] < 1:
            hit &= (np.mod(z + m["phase"], m["period"]) < m["duty"] * m["period"])[:, None]
        np.copyto(image, paint[..., None], where=hit)
    if scene.crossing:
        rows = (z > scene.crossing[0] - 4.5) & (z < scene.crossing[0] - 0.8)
        stripes = road[rows] & (np.mod(x[rows], 1.0) < 0.5)
        image[:, rows] = np.where(stripes, paint[..., None], image[:, rows])
    if scene.rails is not None:
        for rail in (scene.rails - 0.72, scene.rails + 0.72):
            np.copyto(image, np.float32(0.55), where=road & (np.abs(x - rail) < 0.05))


def _paving(image: np.ndarray, x: np.ndarray, z: np.ndarray, sidewalk: np.ndarray,
            cam: _Camera) -> None:
    """Joints between paving slabs, only where they are at least a dozen pixels apart."""
    slab = 0.4
    near = z < cam.focal * slab / 12  # farther joints would alias into noise
    rows, cols = np.nonzero(sidewalk & near[:, None])  # sidewalks are a small part of the ground
    joint = (np.mod(x[rows, cols], slab) < 0.03) | (np.mod(z[rows], slab) < 0.03)
    rows, cols = rows[joint], cols[joint]
    image[:, rows, cols] *= np.float32(0.82)


def _building_shadows(image: np.ndarray, x: np.ndarray, z: np.ndarray, scene: _Scene) -> None:
    """On sunny days the buildings on the sun's side shade part of the street."""
    light = scene.light
    if not light["sunny"]:
        return
    side = scene.sides[0 if light["sun_side"] < 0 else 1]
    heights = np.zeros_like(z)
    for b in side.buildings:
        heights[(z >= b["z0"]) & (z < b["z1"])] = b["height"]
    reach = side.facade - heights * light["shadow"]  # |x| where the shadow ends, per row
    shadow = side.sign * x > reach[:, None]
    np.multiply(image, np.float32(0.5), out=image, where=shadow)


def _side_plane(cv: _Canvas, x_plane: float, z0: float, z1: float, y0: float,
                y1: float) -> tuple[_Window, np.ndarray, np.ndarray, np.ndarray] | None:
    """A vertical plane x = x_plane along the street: window, mask, depth z (1, w), height (h, w)."""
    cam = cv.cam
    z0 = max(z0, 0.3)
    if z1 <= z0:
        return None
    cols = [cam.project(x_plane, 0.0, zz)[0] for zz in (z0, z1)]
    rows = [cam.project(x_plane, y, zz)[1] for y in (y0, y1) for zz in (z0, z1)]
    win = cv.window(min(cols), min(rows), max(cols), max(rows))
    if win is None:
        return None
    xs, ys = cv.coords(win)
    with np.errstate(divide="ignore"):
        z = cam.focal * x_plane / (xs - cam.cx)
    y = cam.cam_h - (ys - cam.horizon) * z / cam.focal
    mask = (z >= z0) & (z <= z1) & (y >= y0) & (y <= y1)
    return win, mask, z, y


def _facade_atlas(b: dict, shade: float) -> np.ndarray:
    """One bay of a façade, pavement to roof, as a picture of 0.1 m texels.

    Returns colour planes (3, rows * columns), rows counted up from the pavement. Built from row
    and column profiles, so it costs little even for tall buildings.
    """
    r = random.Random(b["seed"])
    cols = max(round(b["bay"] / _TEXEL), 1)
    centre = np.abs((np.arange(cols) + 0.5) / cols - 0.5)[None, :]  # 0 mid-bay, 0.5 at its edges
    v = (np.arange(max(math.ceil(b["height"] / _TEXEL), 1)) + 0.5) * _TEXEL
    level = (v - b["ground"]) / b["floor"]
    storey = np.floor(level)
    fv = level - storey  # height within the storey, 0..1
    upper = (v > b["ground"]) & (v < b["height"] - 1.0)
    half, top = b["win_w"] / 2, 0.25 + b["win_h"]
    glass = (upper & (fv > 0.25) & (fv < top))[:, None] & (centre < half)
    frame = (upper & (fv > 0.2) & (fv < top + 0.05))[:, None] & (centre < half + 0.05)
    # roof band, a cornice at every storey, and grime near the pavement
    rows = (np.where(v > b["height"] - 0.5, 0.75, 1.0) * np.where(fv < 0.04, 0.9, 1.0)
            * (0.85 + 0.15 * np.minimum(v / 2.0, 1.0)))
    wall = rows[:, None] * b["color"]  # (rows, 3)
    if b["shop"]:
        glass |= ((v > 0.3) & (v < b["ground"] - 0.7))[:, None] & (centre < 0.42)
        wall[(v > b["ground"] - 0.6) & (v < b["ground"] - 0.25)] = r.choice(_CAR_COLOURS)
    # each storey's panes reflect differently (sky, curtains, a lamp inside)
    panes = np.array([r.uniform(0.5, 1.7) for _ in range(int(storey[-1]) + 2)])
    glazing = b["glass"][:, None] * (panes[storey.astype(int) + 1] + 0.6 * (fv - 0.25))
    wall = np.ascontiguousarray(wall.T * shade, np.float32)  # (3, rows)
    atlas = wall[..., None] * np.where(frame, _LIGHTER, _SAME)
    np.copyto(atlas, (glazing * shade)[..., None], where=glass, casting="same_kind")
    return atlas.reshape(3, -1)


def _facade(b: dict, u: np.ndarray, v: np.ndarray, shade: float) -> np.ndarray:
    """Façade colours (3, h, w) at wall coordinates u (along the wall) and v (up), in metres."""
    atlas = _facade_atlas(b, shade)
    cols = max(round(b["bay"] / _TEXEL), 1)  # as in the atlas
    rows = atlas.shape[1] // cols
    ui = np.minimum((np.mod(u - b["u0"], b["bay"]) * (cols / b["bay"])).astype(np.intp), cols - 1)
    vi = np.clip((v * (1 / _TEXEL)).astype(np.intp), 0, rows - 1)
    return np.take(atlas, vi * cols + ui, axis=1)


def _draw_far(cv: _Canvas, scene: _Scene) -> None:
    """The buildings and trees across the end of the street, and the back rows on both sides.

    They are drawn behind what is there already (depth test), so hidden ones cost little.
    """
    light = scene.light
    for side in scene.sides:
        lit = _sunlit(light, side) * 0.95
        for b in side.back:
            _side_wall(cv, side.sign * (side.facade + b["offset"]), b, lit, behind=True)
    for item in scene.far:
        if item["kind"] == "trees":
            r = random.Random(item["seed"])
            blobs = [(item["x"] + r.uniform(-0.5, 0.5) * item["width"],
                      item["height"] * r.uniform(0.4, 0.8), item["width"] * r.uniform(0.2, 0.4),
                      item["height"] * r.uniform(0.3, 0.5)) for _ in range(5)]
            _foliage(_Sprite(cv, 0.0, scene.z_end), blobs, np.array(r.choice(_GREENS)),
                     behind=True)
        else:
            _frontal_wall(cv, item, scene.z_end, item["x0"], item["x1"], 0.9, behind=True)


def _hidden(cv: _Canvas, win: _Window, depth: Any) -> np.ndarray:
    """Where something at ``depth`` is behind what is drawn already (the sky, depth 0, is not)."""
    drawn = cv.depth[win]
    return (drawn > 0) & (drawn <= depth)


def _frontal_wall(cv: _Canvas, b: dict, z: float, x0: float, x1: float, shade: float,
                  behind: bool = False) -> None:
    """A building wall facing the camera at depth z between x0 and x1 (end walls, far rows).

    With ``behind`` it only fills what is farther away than z.
    """
    cam = cv.cam
    (c0, r1), (c1, r0) = cam.project(x0, 0.0, z), cam.project(x1, b["height"], z)
    win = cv.window(min(c0, c1), r0, max(c0, c1), r1)
    if win is None:
        return
    mask = ~_hidden(cv, win, z) if behind else None
    if mask is not None and not mask.any():
        return
    xs, ys = cv.coords(win)
    u = np.abs(xs - cam.cx) * z / cam.focal
    v = cam.cam_h - (ys - cam.horizon) * z / cam.focal
    cv.paint(win, mask, BUILDING, _facade(b, u, v, shade), z)


def _sunlit(light: dict, side: _Side) -> float:
    """Brightness of one side's façades: lit or in shade on sunny days."""
    if not light["sunny"]:
        return 1.0
    return 1.15 if light["sun_side"] != side.sign else 0.7


def _draw_side(cv: _Canvas, scene: _Scene, side: _Side) -> None:
    """One side's buildings, far to near, with end walls where a gap shows them."""
    lit = _sunlit(scene.light, side)
    for b in sorted(side.buildings, key=lambda b: -b["z0"]):
        _side_wall(cv, side.sign * side.facade, b, lit)
    reached = -math.inf  # how far along the street the previous building ended
    for b in sorted(side.buildings, key=lambda b: b["z0"]):
        if b["z0"] > max(reached + 0.5, 0.5):  # a gap in front: the end wall shows
            x0 = side.sign * side.facade
            _frontal_wall(cv, b, b["z0"], x0, x0 + side.sign * b["depth"], 0.85)
        reached = b["z1"]


def _side_wall(cv: _Canvas, x_plane: float, b: dict, shade: float, behind: bool = False) -> None:
    """A building's façade along the street; with ``behind`` only where nothing nearer is."""
    hit = _side_plane(cv, x_plane, b["z0"], b["z1"], 0.0, b["height"])
    if hit is None:
        return
    win, mask, z, y = hit
    if behind:
        mask &= ~_hidden(cv, win, z)
        if not mask.any():
            return
    cv.paint(win, mask, BUILDING, _facade(b, z, y, shade), z)


def _draw_edge(cv: _Canvas, edge: dict) -> None:
    """A wall, fence or hedge along the street, hidden by whatever stands in front of it.

    Edges run past many objects, so they are drawn after them with a depth test instead of in
    the painter's order.
    """
    r = random.Random(edge["seed"])
    hit = _side_plane(cv, edge["x"], edge["z0"], edge["z1"], 0.0, edge["height"] + 0.3)
    if hit is None:
        return
    win, mask, z, y = hit
    mask = mask & ~_hidden(cv, win, z)
    kind, top = edge["kind"], edge["height"]
    if kind == "hedge":
        mask = mask & (y < top + 0.2 * cv.fields.detail[win])
        green = np.array(r.choice(_GREENS), np.float32)
        shade = 0.6 + 0.15 * cv.fields.detail[win] + 0.2 * np.clip(y / top, 0, 1)
        cv.paint(win, mask, VEGETATION, green[:, None, None] * shade, z)
    elif kind == "wall":
        colour = np.array(r.choice(_WALL_COLOURS), np.float32) * 0.85
        cap = np.where(y > top - 0.12, np.float32(1.15), np.float32(1.0))
        colour = colour[:, None, None]
        cv.paint(win, mask & (y < top), WALL, colour * cap, z)
    else:
        _fence(cv, win, mask & (y < top), z, y, top, r)


def _fence(cv: _Canvas, win: _Window, mask: np.ndarray, z: np.ndarray, y: np.ndarray,
           top: float, r: random.Random) -> None:
    """Bars and rails; the background shows between the bars, which are still labelled fence."""
    colour = np.array(((0.22, 0.25, 0.22), (0.35, 0.35, 0.36), (0.45, 0.36, 0.26))[r.randrange(3)],
                      np.float32)
    spacing = r.uniform(0.12, 0.25)
    bar = (np.mod(z, spacing) < spacing * 0.35) | (y > top - 0.1) | (np.abs(y - 0.25) < 0.05)
    cv.paint(win, mask, FENCE, None, z)
    cv.paint(win, mask & bar, None, colour, None)
    cv.shade(win, mask & ~bar, 0.75)


def _foliage(sp: _Sprite, blobs: Sequence[tuple[float, float, float, float]],
             green: np.ndarray, behind: bool = False) -> None:
    """A tree crown: overlapping ellipses (u, v, ru, rv) with a leafy, noisy outline.

    With ``behind`` it only fills what is farther away than the crown.
    """
    cv = sp.canvas
    boxes = []
    for u, v, ru, rv in blobs:
        x, y = sp.at(u, v)
        boxes.append((x, y, abs(sp.su) * ru, sp.scale * rv))
    win = cv.window(min(b[0] - b[2] for b in boxes), min(b[1] - b[3] for b in boxes),
                    max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes))
    if win is None:
        return
    rows, cols = win
    crown = np.full((rows.stop - rows.start, cols.stop - cols.start), -1.0, np.float32)
    for x, y, rx, ry in boxes:
        sub = cv.window(x - rx, y - ry, x + rx, y + ry)
        if sub is None:
            continue
        xs, ys = cv.coords(sub)
        local = (slice(sub[0].start - rows.start, sub[0].stop - rows.start),
                 slice(sub[1].start - cols.start, sub[1].stop - cols.start))
        np.maximum(crown[local], 1 - ((xs - x) / rx) ** 2 - ((ys - y) / ry) ** 2, out=crown[local])
    leaves = cv.fields.detail[win]
    mask = crown + 0.1 * leaves > 0.08  # a leafy but not ragged outline, as annotators draw it
    if behind:
        mask &= ~_hidden(cv, win, sp.depth)
    shade = 0.55 + 0.35 * np.clip(crown, 0, 1) + 0.18 * leaves
    cv.paint(win, mask, VEGETATION, green[:, None, None] * shade, sp.depth)


# --- objects -----------------------------------------------------------------------------------


def _grey(r: random.Random, low: float, high: float) -> np.ndarray:
    """A neutral grey with a slight random cast."""
    grey = r.uniform(low, high)
    return np.array([min(grey * r.uniform(0.95, 1.05), 1.0) for _ in range(3)])


def _draw_tree(cv: _Canvas, p: dict) -> None:
    """A street or park tree: trunk and a crown of leaves, all vegetation."""
    r = random.Random(p["seed"])
    sp = _Sprite(cv, p["x"], p["z"])
    radius, trunk = p["radius"], p["trunk"]
    width = r.uniform(0.2, 0.4)
    (x0, y1), (x1, y0) = sp.at(-width / 2, 0), sp.at(width / 2, trunk + radius * 0.6)
    win = cv.cover(x0, y0, x1, y1)
    if win is not None:
        cv.paint(win, None, VEGETATION, _grey(r, 0.18, 0.3), sp.depth)
    blobs = [(r.gauss(0, 0.4) * radius, trunk + radius * (0.95 + r.gauss(0, 0.25)),
              radius * r.uniform(0.45, 0.75), radius * r.uniform(0.4, 0.7))
             for _ in range(r.randrange(5, 9))]
    green = np.array(r.choice(_GREENS)) * r.uniform(0.85, 1.15)
    _foliage(sp, blobs, green.astype(np.float32))


def _draw_lamp(cv: _Canvas, p: dict) -> None:
    """A street lamp: a tall tapered pole with an arm over the road."""
    r = random.Random(p["seed"])
    sp = _Sprite(cv, p["x"], p["z"])
    height, width, arm = r.uniform(6, 9), r.uniform(0.12, 0.2), p["arm"]
    colour = _grey(r, 0.3, 0.55) if r.random() < 0.7 else np.array([0.2, 0.26, 0.22])
    sp.poly([(-width / 2, 0), (width / 2, 0), (width * 0.3, height), (-width * 0.3, height)],
            POLE, colour)
    reach = r.uniform(1.0, 2.2)
    sp.limb((0, height - 0.1), (arm * reach, height + 0.3), 0.08, POLE, colour)
    sp.rect(arm * (reach - 0.4), height + 0.12, arm * (reach + 0.35), height + 0.38, POLE,
            colour * 0.8)
    sp.draw()


def _draw_pole(cv: _Canvas, p: dict) -> None:
    """A bare pole or post."""
    r = random.Random(p["seed"])
    sp = _Sprite(cv, p["x"], p["z"])
    height, width = r.uniform(1.0, 5.0), r.uniform(0.08, 0.16)
    sp.rect(-width / 2, 0, width / 2, height, POLE, _grey(r, 0.3, 0.6))
    sp.draw()


def _draw_sign(cv: _Canvas, p: dict) -> None:
    """A traffic sign on a thin pole: round, triangular or square plates; the back is grey."""
    r = random.Random(p["seed"])
    sp = _Sprite(cv, p["x"], p["z"])
    h = r.uniform(2.2, 3.2)
    sp.rect(-0.035, 0, 0.035, h + 0.3, POLE, _grey(r, 0.4, 0.6))
    back = p["back"] and r.random() < 0.7
    plain = _grey(r, 0.45, 0.6)
    red, white, blue = (0.7, 0.1, 0.1), (0.85, 0.85, 0.85), (0.1, 0.25, 0.6)
    shape = r.randrange(4)
    if shape == 0:
        sp.ellipse(0, h, 0.32, 0.32, SIGN, plain if back else red)
        if not back:
            sp.ellipse(0, h, 0.24, 0.24, SIGN, white if r.random() < 0.7 else blue)
    elif shape == 1:
        sp.poly([(-0.42, h - 0.3), (0.42, h - 0.3), (0, h + 0.42)], SIGN, plain if back else red)
        if not back:
            sp.poly([(-0.3, h - 0.23), (0.3, h - 0.23), (0, h + 0.28)], SIGN, white)
    else:
        colour = np.array((blue, (0.85, 0.7, 0.1), white)[r.randrange(3)])
        w = 0.3 if shape == 2 else r.uniform(0.4, 0.7)
        sp.rect(-w, h - 0.3, w, h + 0.3, SIGN, plain if back else colour)
        if not back:
            sp.rect(-w + 0.05, h - 0.25, w - 0.05, h + 0.25, SIGN, np.minimum(colour * 1.15, 1))
    if r.random() < 0.3:
        sp.rect(-0.3, h - 0.65, 0.3, h - 0.4, SIGN, plain if back else white)
    sp.draw()


def _draw_light(cv: _Canvas, p: dict) -> None:
    """A traffic light on a pole, or hung from an arm over the road."""
    r = random.Random(p["seed"])
    sp = _Sprite(cv, p["x"], p["z"])
    colour = _grey(r, 0.25, 0.5)
    overhead = p["overhead"]
    height = r.uniform(5.6, 6.5) if overhead else r.uniform(2.6, 3.4)
    sp.rect(-0.08, 0, 0.08, height, POLE, colour)
    centre = 0.0
    if overhead:
        centre = p["arm"] * r.uniform(3.0, 5.0)
        sp.limb((0, height), (centre + p["arm"] * 0.5, height), 0.12, POLE, colour)
    top = height - (0.15 if overhead else 0.0)
    sp.rect(centre - 0.18, top - 0.95, centre + 0.18, top, LIGHT, (0.08, 0.08, 0.08))
    lit = r.randrange(3)
    for k, lamp in enumerate(((0.9, 0.15, 0.1), (0.95, 0.7, 0.1), (0.2, 0.9, 0.5))):
        sp.ellipse(centre, top - 0.17 - 0.3 * k, 0.1, 0.1, LIGHT,
                   lamp if k == lit else tuple(c * 0.25 for c in lamp))
    sp.draw()


def _draw_static(cv: _Canvas, p: dict) -> None:
    """Street furniture: bins, utility boxes, advertising pillars, benches (label static)."""
    r = random.Random(p["seed"])
    sp = _Sprite(cv, p["x"], p["z"])
    kind = r.randrange(4)
    if kind == 0:
        sp.rect(-0.25, 0, 0.25, 0.95, STATIC, _grey(r, 0.2, 0.5) * (1, 1.1, 1))
    elif kind == 1:
        sp.rect(-0.45, 0, 0.45, 1.3, STATIC, _grey(r, 0.45, 0.7) * (1, 1, 0.92))
    elif kind == 2:
        sp.rect(-0.6, 0, 0.6, 2.8, STATIC, np.array(r.choice(_WALL_COLOURS)))
        sp.rect(-0.55, 0.5, 0.55, 2.5, STATIC, np.array(r.choice(_CAR_COLOURS)))
        sp.ellipse(0, 2.85, 0.65, 0.15, STATIC, (0.2, 0.22, 0.2))
    else:
        colour = np.array([0.35, 0.25, 0.15]) * r.uniform(0.7, 1.3)
        sp.rect(-0.9, 0.4, 0.9, 0.5, STATIC, colour)
        sp.rect(-0.9, 0.55, 0.9, 0.85, STATIC, colour * 0.9)
        for u in (-0.8, 0.7):
            sp.rect(u, 0, u + 0.1, 0.45, STATIC, (0.15, 0.15, 0.15))
    sp.draw()


def _draw_dynamic(cv: _Canvas, p: dict) -> None:
    """Things that move about: wheelie bins and strollers (label dynamic)."""
    r = random.Random(p["seed"])
    sp = _Sprite(cv, p["x"], p["z"])
    colour = np.array(((0.15, 0.3, 0.15), (0.2, 0.2, 0.22), (0.15, 0.2, 0.45),
                       (0.4, 0.28, 0.15))[r.randrange(4)])
    if r.random() < 0.75:
        sp.rect(-0.3, 0.05, 0.3, 1.0, DYNAMIC, colour)
        sp.rect(-0.33, 1.0, 0.33, 1.07, DYNAMIC, colour * 0.8)
    else:
        sp.ellipse(0, 0.75, 0.35, 0.3, DYNAMIC, colour)
        sp.limb((0.2, 0.7), (0.45, 1.1), 0.04, DYNAMIC, (0.1, 0.1, 0.1))
        for u in (-0.25, 0.25):
            sp.ellipse(u, 0.12, 0.12, 0.12, DYNAMIC, (0.08, 0.08, 0.08))
    sp.draw()


def _draw_person(cv: _Canvas, p: dict) -> None:
    """A pedestrian, facing the camera or walking across the view."""
    r = random.Random(p["seed"])
    sp = _Sprite(cv, p["x"], p["z"], flip=r.random() < 0.5)
    _figure(sp, r, r.random() < 0.5)
    sp.draw()


def _figure(sp: _Sprite, r: random.Random, sideways: bool) -> None:
    """A standing person of 1.55-1.95 m: legs, torso, arms and head."""
    h = r.uniform(1.55, 1.95)
    top = np.array(r.choice(_CLOTHES)) * r.uniform(0.8, 1.2)
    legs = np.array(r.choice(_CLOTHES[:4])) * r.uniform(0.8, 1.2)
    skin = np.array(r.choice(_SKIN))
    hip, shoulder = 0.52 * h, 0.81 * h
    if sideways:
        stride = r.uniform(0.0, 0.22) * h
        for sign in (-1, 1):
            sp.limb((0, hip), (sign * stride, 0.02), 0.075 * h, PERSON, legs)
        sp.poly([(-0.06 * h, hip), (0.06 * h, hip), (0.07 * h, shoulder), (-0.07 * h, shoulder)],
                PERSON, top)
        sp.limb((0, shoulder - 0.03 * h), (0.1 * h, 0.5 * h), 0.05 * h, PERSON, top * 0.85)
    else:
        for sign in (-1, 1):
            sp.rect(sign * 0.015 * h, 0.0, sign * 0.1 * h, hip, PERSON, legs)
        sp.poly([(-0.1 * h, hip - 0.03 * h), (0.1 * h, hip - 0.03 * h), (0.13 * h, shoulder),
                 (-0.13 * h, shoulder)], PERSON, top)
        for sign in (-1, 1):
            sp.limb((sign * 0.12 * h, shoulder - 0.02 * h), (sign * 0.15 * h, 0.47 * h), 0.05 * h,
                    PERSON, top * 0.85)
    sp.rect(-0.025 * h, shoulder - 0.01, 0.025 * h, 0.87 * h, PERSON, skin)
    sp.ellipse(0, 0.925 * h, 0.055 * h, 0.068 * h, PERSON, skin)
    sp.ellipse(0, 0.95 * h, 0.057 * h, 0.048 * h, PERSON, (0.12, 0.09, 0.07))


def _draw_parked(cv: _Canvas, p: dict) -> None:
    """A parked bicycle or motorcycle, seen from the side at an angle."""
    r = random.Random(p["seed"])
    sp = _Sprite(cv, p["x"], p["z"], squash=p["squash"], flip=r.random() < 0.5)
    _motorbike(sp, r) if p["vehicle"] == "motorcycle" else _bike(sp, r)
    sp.draw()


def _bike(sp: _Sprite, r: random.Random) -> None:
    """A bicycle from the side: two wheels whose insides are labelled bicycle, a frame, a saddle."""
    frame = np.array(r.choice(_CAR_COLOURS)) * 0.9
    for u in (-0.52, 0.55):
        sp.ring(u, 0.34, 0.34, 0.05, BICYCLE, (0.07, 0.07, 0.07))
    rear, bracket, seat, head = (-0.52, 0.34), (0.0, 0.3), (-0.15, 0.85), (0.4, 0.85)
    for a, b in ((rear, bracket), (bracket, seat), (seat, rear), (bracket, head), (seat, head),
                 (head, (0.55, 0.34)), (head, (0.45, 1.02))):
        sp.limb(a, b, 0.045, BICYCLE, frame)
    sp.rect(-0.24, 0.9, -0.06, 0.95, BICYCLE, (0.08, 0.08, 0.08))
    sp.rect(0.35, 1.0, 0.55, 1.04, BICYCLE, (0.1, 0.1, 0.1))


def _draw_cyclist(cv: _Canvas, p: dict) -> None:
    """A rider on a bicycle or motorcycle: from the side when crossing, else from behind."""
    r = random.Random(p["seed"])
    motor = p["vehicle"] == "motorcycle"
    if p.get("side_view"):
        sp = _Sprite(cv, p["x"], p["z"], flip=r.random() < 0.5)
        _motorbike(sp, r) if motor else _bike(sp, r)
        _seated(sp, r, motor)
    else:
        sp = _Sprite(cv, p["x"], p["z"])
        _rear_rider(sp, r, motor)
    sp.draw()


def _motorbike(sp: _Sprite, r: random.Random) -> None:
    """A motorcycle from the side: solid wheels, engine, tank and seat."""
    body = np.array(r.choice(_CAR_COLOURS))
    for u in (-0.7, 0.72):
        sp.ellipse(u, 0.32, 0.32, 0.32, MOTORCYCLE, (0.06, 0.06, 0.06))
        sp.ellipse(u, 0.32, 0.15, 0.15, MOTORCYCLE, (0.4, 0.4, 0.42))
    sp.poly([(-0.45, 0.35), (0.35, 0.3), (0.55, 0.8), (-0.2, 0.8)], MOTORCYCLE, (0.2, 0.2, 0.21))
    sp.poly([(0.0, 0.78), (0.5, 0.78), (0.45, 1.0), (0.05, 0.98)], MOTORCYCLE, body)
    sp.poly([(-0.75, 0.72), (0.05, 0.78), (0.0, 0.9), (-0.7, 0.85)], MOTORCYCLE, (0.1, 0.1, 0.1))
    sp.limb((0.72, 0.32), (0.5, 1.1), 0.07, MOTORCYCLE, (0.5, 0.5, 0.52))


def _seated(sp: _Sprite, r: random.Random, motor: bool) -> None:
    """A rider sitting on a bike seen from the side."""
    clothes = np.array(r.choice(_CLOTHES)) * r.uniform(0.8, 1.2)
    hip = (-0.3, 0.95) if motor else (-0.2, 1.0)
    shoulder, hand, knee, foot = (0.08, 1.55), (0.45, 1.05), (0.12, 0.7), (0.02, 0.25)
    sp.limb(hip, knee, 0.15, RIDER, clothes * 0.7)
    sp.limb(knee, foot, 0.11, RIDER, clothes * 0.7)
    sp.limb(hip, shoulder, 0.32, RIDER, clothes)
    sp.limb(shoulder, hand, 0.09, RIDER, clothes * 0.9)
    head = (0.3, 0.3, 0.32) if motor else np.array(r.choice(_SKIN))
    sp.ellipse(0.15, 1.72, 0.12 if motor else 0.1, 0.13 if motor else 0.12, RIDER, head)


def _rear_rider(sp: _Sprite, r: random.Random, motor: bool) -> None:
    """A cyclist or motorcyclist seen from behind."""
    clothes = np.array(r.choice(_CLOTHES)) * r.uniform(0.8, 1.2)
    vehicle = MOTORCYCLE if motor else BICYCLE
    sp.ellipse(0, 0.33, 0.09 if motor else 0.03, 0.33, vehicle, (0.06, 0.06, 0.06))
    if motor:
        sp.rect(-0.28, 0.4, 0.28, 0.95, vehicle, (0.18, 0.18, 0.2))
        sp.rect(-0.08, 0.75, 0.08, 0.82, vehicle, (0.7, 0.1, 0.08))
    bar = 0.42 if motor else 0.32
    sp.rect(-bar, 1.0, bar, 1.05, vehicle, (0.1, 0.1, 0.1))
    for sign in (-1, 1):
        sp.limb((sign * 0.12, 0.95), (sign * 0.14, 0.5 if motor else 0.3), 0.11, RIDER,
                clothes * 0.7)
        sp.limb((sign * 0.18, 1.45), (sign * 0.3, 1.05), 0.08, RIDER, clothes)
    sp.poly([(-0.18, 0.95), (0.18, 0.95), (0.21, 1.5), (-0.21, 1.5)], RIDER, clothes)
    head = (0.3, 0.3, 0.32) if motor else np.array(r.choice(_SKIN)) * 0.4
    sp.ellipse(0, 1.65, 0.12 if motor else 0.1, 0.13 if motor else 0.12, RIDER, head)


def _box_faces(cam: _Camera, x0: float, x1: float, y0: float, y1: float, z0: float,
               z1: float) -> dict[str, np.ndarray]:
    """World corners (p00, p10, p11, p01) of the faces of a box that the camera sees."""
    faces = {}
    if y1 < cam.cam_h:
        faces["top"] = np.array([[x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]])
    side = x0 if x0 > 0 else x1 if x1 < 0 else None
    if side is not None:
        faces["side"] = np.array([[side, y0, z0], [side, y0, z1], [side, y1, z1], [side, y1, z0]])
    faces["near"] = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]])
    return faces


def _solid(batch: _Batch, faces: dict[str, np.ndarray], label_id: int, colour: np.ndarray) -> None:
    """Add a box's visible faces, the side darker and the top lighter."""
    for name, factor in (("top", 1.12), ("side", 0.78), ("near", 1.0)):
        if name in faces:
            _world_polygon(batch, faces[name], label_id, np.minimum(colour * factor, 1))


def _ground_shadow(batch: _Batch, x0: float, x1: float, z0: float, z1: float) -> None:
    """Darken the road under a vehicle (the road keeps its label)."""
    _world_polygon(batch, [(x0, 0.0, z0), (x1, 0.0, z0), (x1, 0.0, z1), (x0, 0.0, z1)], None,
                   None, shade=0.4)


def _wheel(batch: _Batch, x: float, z: float, radius: float, label_id: int,
           hub: bool = True) -> None:
    """A wheel on a vehicle's side: tyre and hub."""
    parts = ((radius, (0.06, 0.06, 0.06)), (radius * 0.55, (0.35, 0.35, 0.37)))
    for r, colour in parts[:1 + hub]:
        _world_polygon(batch, [(x, radius + r * s, z + r * c) for c, s in _ELLIPSE[::2]],
                       label_id, colour)


def _draw_car(cv: _Canvas, p: dict) -> None:
    """A car: body, cabin, wheels, windows, lights and plate, and its shadow on the road."""
    r = random.Random(p["seed"])
    x0, x1 = p["x"] - p["width"] / 2, p["x"] + p["width"] / 2
    z0, z1 = p["z"], p["z"] + p["length"]
    colour = p["color"].astype(np.float32)
    van = r.random() < 0.15
    belt, roof = r.uniform(0.8, 0.95), r.uniform(1.8, 2.0) if van else r.uniform(1.38, 1.55)
    a0, b0 = (0.15, 0.9) if van else (r.uniform(0.6, 1.0), r.uniform(0.9, 1.3))
    a1, b1 = a0 + (0.15 if van else r.uniform(0.35, 0.6)), b0 + r.uniform(0.5, 0.9)
    glass = np.array([0.1, 0.12, 0.15], np.float32) * r.uniform(0.8, 1.6)
    detail = cv.cam.focal * p["width"] / z0 > 12  # smaller cars: no hubs, windows or lights
    batch = _Batch(cv, z0)
    _ground_shadow(batch, x0 + 0.05, x1 - 0.05, z0 + 0.1, z1 - 0.1)
    for xa, xb in ((x0 + 0.05, x0 + 0.3), (x1 - 0.3, x1 - 0.05)):  # wheels under the bumper
        _world_polygon(batch, [(xa, 0, z0 + 0.7), (xb, 0, z0 + 0.7), (xb, 0.5, z0 + 0.7),
                               (xa, 0.5, z0 + 0.7)], CAR, (0.05, 0.05, 0.05))
    body = _box_faces(cv.cam, x0, x1, 0.25, belt, z0, z1)
    _solid(batch, body, CAR, colour)
    if "side" in body:
        xs = body["side"][0, 0]
        for zc in (z0 + 0.8, z1 - 0.85):
            _wheel(batch, xs, zc, 0.32, CAR, hub=detail)
        xc = xs + (0.1 if xs == x0 else -0.1)
        cabin = np.array([[xc, belt, z0 + a0], [xc, belt, z1 - b0], [xc, roof, z1 - b1],
                          [xc, roof, z0 + a1]])
        _world_polygon(batch, cabin, CAR, colour * 0.75)
        for lo, hi in ((0.05, 0.47), (0.53, 0.95))[:2 * detail]:
            _world_polygon(batch, _sub_quad(cabin, lo, hi, 0.1, 0.88), CAR, glass)
    near_cabin = np.array([[x0 + 0.12, belt, z0 + a0], [x1 - 0.12, belt, z0 + a0],
                           [x1 - 0.2, roof, z0 + a1], [x0 + 0.2, roof, z0 + a1]])
    _world_polygon(batch, near_cabin, CAR, np.minimum(colour * 1.05, 1))
    if detail:
        _world_polygon(batch, _sub_quad(near_cabin, 0.07, 0.93, 0.1, 0.88), CAR, glass * 1.3)
        _car_end(batch, body["near"], colour, p["facing"] == "rear")
    batch.draw()


def _car_end(batch: _Batch, near: np.ndarray, colour: np.ndarray, rear: bool) -> None:
    """Lamps, bumper and number plate on a car's near face."""
    lamp = (0.6, 0.08, 0.06) if rear else (0.85, 0.85, 0.8)
    for lo, hi in ((0.02, 0.2), (0.8, 0.98)):
        _world_polygon(batch, _sub_quad(near, lo, hi, 0.55, 0.85), CAR, lamp)
    _world_polygon(batch, _sub_quad(near, 0.0, 1.0, 0.0, 0.2), CAR, colour * 0.5 + 0.03)
    _world_polygon(batch, _sub_quad(near, 0.38, 0.62, 0.25, 0.45), CAR, (0.8, 0.8, 0.76))


def _draw_truck(cv: _Canvas, p: dict) -> None:
    """A lorry: a cargo box and a cab, the cab at the far end when driving away."""
    r = random.Random(p["seed"])
    x0, x1, z0, z1 = p["x"] - 1.225, p["x"] + 1.225, p["z"], p["z"] + p["length"]
    cab_colour = np.array(r.choice(_CAR_COLOURS), np.float32)
    batch = _Batch(cv, z0)
    _ground_shadow(batch, x0 - 0.2, x1 + 0.2, z0 - 0.2, z1)
    cab_near = p["facing"] == "front"
    split = z0 + 2.3 if cab_near else z1 - 2.3
    cab = (z0, split) if cab_near else (split + 0.3, z1)
    cargo = (split + 0.3, z1) if cab_near else (z0, split)
    parts = [(cargo, 0.6, 3.6, p["color"].astype(np.float32)), (cab, 0.45, 2.9, cab_colour)]
    for (za, zb), y0, y1, colour in sorted(parts, key=lambda part: -part[0][0]):
        faces = _box_faces(cv.cam, x0, x1, y0, y1, za, zb)
        _solid(batch, faces, TRUCK, colour)
        if "side" in faces:
            for zc in (za + 1.0, zb - 1.0):
                _wheel(batch, faces["side"][0, 0], zc, 0.5, TRUCK)
        if (za, zb) == cab and cab_near:
            _world_polygon(batch, _sub_quad(faces["near"], 0.05, 0.95, 0.55, 0.92), TRUCK,
                           (0.12, 0.14, 0.17))
        elif (za, zb) == cargo and not cab_near:
            _world_polygon(batch, _sub_quad(faces["near"], 0.49, 0.51, 0.05, 0.97), TRUCK,
                           colour * 0.5)
    _world_polygon(batch, [(x0, 0.25, z0), (x1, 0.25, z0), (x1, 0.6, z0), (x0, 0.6, z0)], TRUCK,
                   (0.1, 0.1, 0.1))
    batch.draw()


def _draw_bus(cv: _Canvas, p: dict) -> None:
    """A city bus: a long box with a band of windows and a large windscreen or rear window."""
    _long_vehicle(cv, p, BUS, (0.3, 3.0), 1.4, wheel_at=(2.6, 3.2))


def _draw_train(cv: _Canvas, p: dict) -> None:
    """A tram on rails in the street (Cityscapes' train class)."""
    _long_vehicle(cv, p, TRAIN, (0.35, 3.5), 2.0, wheel_at=(3.0, 3.0))


def _long_vehicle(cv: _Canvas, p: dict, label_id: int, ys: tuple[float, float], pane: float,
                  wheel_at: tuple[float, float]) -> None:
    """A bus or tram: a box with windows along the side and a windscreen at the near end."""
    x0, x1 = p["x"] - p["width"] / 2, p["x"] + p["width"] / 2
    z0, z1 = p["z"], p["z"] + p["length"]
    colour = p["color"].astype(np.float32)
    glass = np.array([0.12, 0.14, 0.16], np.float32)
    batch = _Batch(cv, z0)
    _ground_shadow(batch, x0 - 0.2, x1 + 0.2, z0 - 0.2, z1)
    faces = _box_faces(cv.cam, x0, x1, *ys, z0, z1)
    _solid(batch, faces, label_id, colour)
    if "side" in faces:
        side = faces["side"]
        panes = max(int(p["length"] / pane), 1)
        for k in range(panes):
            a = k / panes
            _world_polygon(batch, _sub_quad(side, a + 0.08 / panes, a + 0.92 / panes, 0.4, 0.85),
                           label_id, glass * (1.0 + 0.3 * (k % 3)))
        _world_polygon(batch, _sub_quad(side, 0.0, 1.0, 0.0, 0.12), label_id, colour * 0.4)
        for zc in (z0 + wheel_at[0], z1 - wheel_at[1]):
            _wheel(batch, side[0, 0], zc, 0.5, label_id)
    near = faces["near"]
    low = 0.3 if p["facing"] == "front" else 0.55
    _world_polygon(batch, _sub_quad(near, 0.05, 0.95, low, 0.86), label_id, glass)
    _world_polygon(batch, _sub_quad(near, 0.1, 0.9, 0.89, 0.97), label_id, (0.05, 0.05, 0.05))
    for lo, hi in ((0.03, 0.15), (0.85, 0.97)):
        _world_polygon(batch, _sub_quad(near, lo, hi, 0.1, 0.18), label_id, (0.85, 0.8, 0.6))
    batch.draw()


_DRAW: dict[str, Callable[[_Canvas, dict], None]] = {
    "tree": _draw_tree, "lamp": _draw_lamp, "pole": _draw_pole, "sign": _draw_sign,
    "light": _draw_light, "static": _draw_static, "dynamic": _draw_dynamic,
    "person": _draw_person, "parked": _draw_parked, "cyclist": _draw_cyclist,
    "car": _draw_car, "truck": _draw_truck, "bus": _draw_bus, "train": _draw_train,
}


# --- the recording car and the camera ----------------------------------------------------------


def _draw_ego(cv: _Canvas, scene: _Scene) -> None:
    """The bonnet at the bottom (reflecting the street), its star, and the void borders."""
    cam, ego = cv.cam, scene.ego
    w, h = cam.width, cam.height
    u = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    edge = h * (1 - ego["side"] - ego["mid"] * (1 - u**2))  # (W,) top of the bonnet per column
    win = cv.window(0, float(edge.min()), w, h)
    if win is not None:
        ys = cv.coords(win)[1]
        mask = ys > edge[None, :]
        mirror = np.clip((2 * edge[None, :] - ys).astype(np.intp), 0, h - 1)  # reflected rows
        reflection = np.take(cv.image.reshape(3, -1), mirror * w + np.arange(w), axis=1)
        cv.paint(win, mask, EGO, reflection * np.float32(0.3) + np.float32(0.06), 0.0)
    top, star = h * (1 - ego["side"] - ego["mid"]), h * 0.017
    badge = _Batch(cv, 0.0)
    badge.ellipse_px(w / 2, top - star * 0.8, star, star, EGO, (0.55, 0.56, 0.58))
    badge.ellipse_px(w / 2, top - star * 0.8, star * 0.75, star * 0.75, EGO, (0.12, 0.12, 0.13))
    badge.draw()
    _draw_borders(cv, scene)


def _draw_borders(cv: _Canvas, scene: _Scene) -> None:
    """Rectification wedges at the sides (some frames) and the thin out-of-roi frame."""
    h, w = cv.cam.height, cv.cam.width
    if scene.ego["rectified"]:
        for reach, flip in ((0.012 * w, False), (0.008 * w, True)):
            win = cv.window(w - reach if flip else 0, 0, w if flip else reach, 0.55 * h)
            xs, ys = cv.coords(win)
            inside = (w - xs if flip else xs) < reach * (1 - ys / (0.55 * h))
            cv.paint(win, inside, RECT_BORDER, (0.02, 0.02, 0.02), 0.0)
    b = max(1, round(0.004 * h))
    cv.label[:b], cv.label[-b:], cv.label[:, :b], cv.label[:, -b:] = (OUT_OF_ROI,) * 4


def _texture_table() -> np.ndarray:
    """How strongly each label's colour varies with the low and the detail noise: (2, 256)."""
    table = np.zeros((2, 256), np.float32)
    for name, amplitudes in {
            "road": (0.035, 0.045), "sidewalk": (0.03, 0.06), "parking": (0.04, 0.05),
            "ground": (0.06, 0.08), "terrain": (0.1, 0.16), "building": (0.02, 0.025),
            "wall": (0.03, 0.05), "vegetation": (0.05, 0.12), "pole": (0.01, 0.03),
            "car": (0.01, 0.02), "static": (0.03, 0.05), "person": (0.02, 0.05)}.items():
        table[:, _ID[name]] = amplitudes
    return table


_TEXTURE = _texture_table()
_HAZE = np.array([0.78, 0.8, 0.82], np.float32)


def _develop(cv: _Canvas, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Texture, haze, vignetting, colour grading, sensor noise and blur: the final uint8 photo."""
    light, f, label = scene.light, cv.fields, cv.label
    h, w = label.shape
    u, v = np.linspace(-1, 1, w, dtype=np.float32), np.linspace(-1, 1, h, dtype=np.float32)
    exposure = 1 - np.float32(0.125) * (u[None, :] ** 2 + v[:, None] ** 2)
    exposure *= np.float32(light["exposure"])
    fog = 1 - np.exp(cv.depth * np.float32(-1 / light["haze"]))  # sky and bonnet: depth 0
    fog *= np.float32(0.75)
    gain = np.take(_TEXTURE[0], label) * f.low
    gain += np.take(_TEXTURE[1], label) * f.detail
    gain += 1
    gain *= (1 - fog) * exposure
    fog *= exposure
    # grading: white balance, then saturation (mixing in the grey), then contrast, to 0..255
    tint, sat = light["tint"].astype(np.float32), np.float32(light["saturation"])
    scale = np.float32(light["contrast"] * 255)
    haze = _HAZE * tint
    haze = (haze * sat + haze.sum() * (1 - sat) / 3) * scale
    grey = (cv.image[0] * tint[0] + cv.image[1] * tint[1] + cv.image[2] * tint[2]) * gain
    grey *= (1 - sat) * scale / 3
    image = cv.image * gain
    for c in range(3):
        image[c] *= tint[c] * sat * scale
        image[c] += grey + fog * haze[c]
    image = _blur(image, light["blur"] * w / 2048)
    # uniform sensor noise, cheaper to draw than Gaussian and looking the same; one plane of
    # draws, each channel reading it one pixel further right (so from different draws), plus
    # the contrast pivot and 0.5 so that the conversion to integers rounds
    spread = light["noise"] * math.sqrt(12)
    noise = rng.random((h, w + 2), dtype=np.float32)
    noise *= np.float32(spread)
    noise += np.float32(0.45 * (1 - light["contrast"]) * 255 - spread / 2 + 0.5)
    for c in range(3):
        image[c] += noise[:, c:c + w]
    np.clip(image, 0, 255, out=image)
    return np.stack([plane.astype(np.uint8) for plane in image], axis=-1)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A slight lens blur of about ``sigma`` pixels on (3, H, W) planes (3-tap, separable)."""
    if sigma < 0.35:  # the neighbours would weigh under 2 %
        return image
    side = math.exp(-0.5 / sigma**2)
    centre, side = np.float32(1 / (1 + 2 * side)), np.float32(side / (1 + 2 * side))
    for axis in (1, 2):
        neighbour = image * side
        out = image * centre
        lead, rest = [slice(None)] * 3, [slice(None)] * 3
        lead[axis], rest[axis] = slice(1, None), slice(None, -1)
        out[tuple(lead)] += neighbour[tuple(rest)]
        out[tuple(rest)] += neighbour[tuple(lead)]
        for index in (0, -1):  # border pixels stand in for their missing neighbours
            lead[axis] = slice(index, index + 1 or None)
            out[tuple(lead)] += neighbour[tuple(lead)]
        image = out
    return image


# --- writing the dataset -----------------------------------------------------------------------

_CITY_NAME = re.compile(r"[a-z][a-z0-9]*")  # no "_": it separates the parts of a frame name
_README = """Synthetic Cityscapes-like data, generated by segkit.synthetic.

This is NOT the Cityscapes dataset. The street scenes are drawn procedurally, but the folders,
file names, image format and label ids follow the official leftImg8bit_trainvaltest.zip and
gtFine_trainvaltest.zip, so code written for Cityscapes reads them unchanged:

  leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png   8-bit RGB camera image
  gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png    label ids (0..33)
  gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_color.png       labels in the official colours

As in the real data, the test split has dummy labels (all 0, "unlabeled").
"""
_LICENSE = """These synthetic images and labels were generated procedurally by segkit and contain no
data from the Cityscapes dataset; they may be used freely (MIT license, like segkit).
The real Cityscapes dataset has its own terms: https://www.cityscapes-dataset.com/license/
"""


def generate(out: str | os.PathLike, *, size: tuple[int, int] = (2048, 1024), frames: int = 20,
             seed: int = 0, cities: Mapping[str, Sequence[str]] | None = None,
             zips: bool = False, progress: bool = True) -> dict:
    """Write ``frames`` frames per split into ``out`` in the official Cityscapes layout.

    Args:
        out: output folder; it must be new, empty, or an earlier run with the same options, which
            is resumed: existing files are kept, missing ones written.
        size: (width, height) in pixels, at least ``MIN_SIZE``.
        frames: frames per split, spread over that split's cities.
        seed: frame ``k`` of a city depends only on (seed, split, city, k).
        cities: split -> city names (``DEFAULT_CITIES`` when None).
        zips: also pack the folders into the two official zips in ``out``.
        progress: show a progress bar.

    Returns:
        A summary: ``root``, ``size``, ``seed``, ``counts`` ({split: {city: frames}}),
        ``written`` and ``skipped`` frames, ``zips`` (two paths or None), ``seconds`` (all of it)
        and ``frames_per_s`` (frames written per second of rendering and writing).
    """
    out = Path(out)
    width, height = _check_size(size)
    frames, seed = _integer(frames, "frames"), _integer(seed, "seed")
    plan = _plan(cities, frames)
    if seed < 0:
        raise io.DataError(f"seed must be a non-negative integer, got {seed}")
    options = {"generator": "segkit.synthetic", "version": GENERATOR_VERSION,
               "size": [width, height], "frames": frames, "seed": seed,
               "cities": {split: list(counts) for split, counts in plan.items()}}
    # zips and progress are left out: they do not change the frames, so a rerun may add zips
    resumed = io.claim_output_dir(out, MARKER, options)
    jobs = [(split, city, seq) for split, counts in plan.items()
            for city, count in counts.items() for seq in range(count)]
    start, written = time.perf_counter(), 0
    for split, city, seq in tqdm(jobs, desc="synthetic frames", unit="frame", disable=not progress):
        # files are written atomically, so an existing one is complete and the same as a new one
        missing = [p for p in _frame_paths(out, split, city, seq) if not (resumed and p.is_file())]
        if missing:
            _write_frame(missing, split, _frame_rng(seed, split, city, seq), width, height)
            written += 1
    drawing = time.perf_counter() - start
    archives = write_official_zips(out, out) if zips else None
    return {"root": str(out), "size": [width, height], "seed": seed,
            "counts": {split: dict(counts) for split, counts in plan.items()},
            "written": written, "skipped": len(jobs) - written,
            "zips": [str(path) for path in archives] if archives else None,
            "seconds": time.perf_counter() - start,
            "frames_per_s": written / drawing if written else 0.0}


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    """Validate ``(width, height)``."""
    try:
        width, height = size
    except (TypeError, ValueError):
        raise io.DataError(f"size must be (width, height), got {size!r}") from None
    width, height = _integer(width, "size"), _integer(height, "size")
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise io.DataError(f"size {width}x{height} is too small: synthetic frames need at least "
                           f"{MIN_SIZE[0]}x{MIN_SIZE[1]} pixels")
    return width, height


def _integer(value: Any, what: str) -> int:
    """``value`` as an int (numpy integers too); floats and other types are refused."""
    try:
        return operator.index(value)
    except TypeError:
        raise io.DataError(f"{what}: expected an integer, got {value!r}") from None


def _plan(cities: Mapping[str, Sequence[str]] | None, frames: int) -> dict[str, dict[str, int]]:
    """Frames per city for every split: {split: {city: count}}, splits in the official order."""
    if frames < 1:
        raise io.DataError(f"frames must be a positive integer (frames per split), got {frames}")
    cities = DEFAULT_CITIES if cities is None else cities
    unknown = sorted(set(cities) - set(layout.SPLITS))
    if unknown or not cities:
        raise io.DataError(f"cities must map splits ({', '.join(layout.SPLITS)}) to city names; "
                           f"got {', '.join(map(repr, unknown)) or 'no split'}")
    plan = {}
    for split in (s for s in layout.SPLITS if s in cities):
        names = (cities[split],) if isinstance(cities[split], str) else tuple(cities[split])
        bad = [n for n in names if not isinstance(n, str) or not _CITY_NAME.fullmatch(n)]
        if bad or not names or len(set(names)) != len(names):
            raise io.DataError(f"cities for {split!r} must be distinct lowercase names like "
                               f"'hamburg' (letters and digits, no '_'), got {list(names)!r}")
        if frames < len(names):
            raise io.DataError(f"{frames} frames cannot cover the {len(names)} cities of "
                               f"{split!r}; ask for at least {len(names)} frames")
        plan[split] = {name: frames // len(names) + (k < frames % len(names))
                       for k, name in enumerate(names)}
    return plan


def _frame_rng(seed: int, split: str, city: str, seq: int) -> np.random.Generator:
    """The random generator of one frame, from (seed, split, city, sequence number) only."""
    return np.random.default_rng(
        np.random.SeedSequence([seed, zlib.crc32(split.encode()), zlib.crc32(city.encode()), seq]))


def _frame_paths(root: Path, split: str, city: str, seq: int) -> tuple[Path, Path, Path]:
    """Image, labelIds and colour paths of a frame."""
    stem = layout.frame_stem(city, seq, FRAME_NUMBER)
    return (layout.image_path(root, split, city, stem), layout.label_path(root, split, city, stem),
            layout.label_path(root, split, city, stem, layout.COLOR_SUFFIX))


def _write_frame(paths: Sequence[Path], split: str, rng: np.random.Generator, width: int,
                 height: int) -> None:
    """Render one frame and write those of its three PNGs that ``paths`` names, atomically."""
    image, label_ids = render_scene(rng, width, height)
    if split == "test":
        label_ids = np.zeros_like(label_ids)  # like the real test split: no public labels
    for path in paths:
        if path.name.endswith(layout.IMAGE_SUFFIX):
            data = io.encode_png(image, photo=True)
        elif path.name.endswith(layout.COLOR_SUFFIX):  # RGBA, as the official colour files are
            alpha = np.full(label_ids.shape, 255, np.uint8)
            data = io.encode_png(np.dstack([colorize_label_ids(label_ids), alpha]), photo=False)
        else:
            data = io.encode_png(label_ids, photo=False)
        io.write_bytes(path, data)


def write_official_zips(root: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Pack ``root``'s leftImg8bit/ and gtFine/ into ``out_dir``'s two official zips.

    Members are named as in the downloads (``leftImg8bit/train/hamburg/…_leftImg8bit.png``, with
    a top-level ``README`` and ``license.txt``). PNGs are stored, not deflated (they are already
    compressed), and every member gets the same timestamp, so equal folders give equal zips. Each
    zip is written under a temporary name and renamed, so a zip that exists is complete.

    Returns the paths of ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``.
    """
    root, out_dir = Path(root), Path(out_dir)
    return (_write_zip(root, layout.IMAGE_DIR, out_dir / layout.IMAGES_ZIP),
            _write_zip(root, layout.LABEL_DIR, out_dir / layout.LABELS_ZIP))


def _write_zip(root: Path, top: str, dest: Path) -> Path:
    """Zip every PNG under ``root / top`` into ``dest``, names relative to ``root``."""
    files = sorted(p for p in (root / top).rglob("*.png") if not p.name.startswith("."))
    if not files:
        raise io.DataError(f"{root / top}: no PNG files to pack into {dest.name}")
    with io.atomic_write(dest) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name, text in (("README", _README), ("license.txt", _LICENSE)):
            archive.writestr(_zip_entry(name, zipfile.ZIP_DEFLATED), text)
        for path in files:
            archive.writestr(_zip_entry(path.relative_to(root).as_posix(), zipfile.ZIP_STORED),
                             path.read_bytes())
    return dest


def _zip_entry(name: str, compression: int) -> zipfile.ZipInfo:
    """A zip member with a fixed date and ordinary file permissions."""
    info = zipfile.ZipInfo(name, date_time=(2016, 2, 25, 0, 0, 0))
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info
