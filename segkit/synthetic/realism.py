"""How much synthetic frames look like real camera frames: measures of grain, flat areas, colour and
objects, and the real Cityscapes figures they are compared with.

Each measure takes what a frame is made of (an (H, W, 3) uint8 RGB image, an (H, W) map of official
label ids) and returns plain numbers; ``measure`` gathers them over many frames. The figures are
meant for frames of 512x256, the size the real ones in ``REAL`` were measured at.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segkit import layout
from segkit.synthetic.palette import BUILDING, CAR, PERSON, POLE, SIDEWALK, SIGN, SKY, VEGETATION

MEASURE_SIZE = (512, 256)  # (width, height) the figures below were taken at
#: Classes whose mean colour is compared, and classes counted as objects (connected pieces).
#: Pieces smaller than this many pixels are not counted as objects: they are fragments, such as the
#: tip of a pole between leaves (with this, generator version 2's set gives its figures).
MIN_PIECE = 10
COLOUR_CLASSES = {"building": BUILDING, "sky": SKY, "sidewalk": SIDEWALK, "vegetation": VEGETATION}
OBJECT_CLASSES = {"car": CAR, "pole": POLE, "traffic sign": SIGN, "person": PERSON}

#: Measured on real Cityscapes frames at 512x256. Ranges are (low, high) over the frame
#: sets measured; colours are mean RGB (0-255) over the class's pixels; objects are (per frame,
#: median size in pixels), None where no size was measured.
REAL = {
    "source": "measured on real Cityscapes frames at 512x256",
    "laplacian_var": (267.0, 363.0),
    "flat_share": (0.127, 0.139),
    "saturation": (49.0, 49.0),
    "rgb_std": (41.0, 48.0),
    "colour": {"building": (85.0, 94.0, 83.0), "sky": (189.0, 206.0, 203.0),
               "sidewalk": (66.0, 77.0, 64.0), "vegetation": (43.0, 54.0, 40.0)},
    "colour_std": {"building": 58.0},
    "objects": {"car": (5.9, 295.0), "pole": (12.9, None), "traffic sign": (4.5, None),
                "person": (3.2, 109.0)},
}
#: What "close to real" means (the realism thresholds): grain and flat areas within a factor of
#: 1.5 of the real range, saturation and the class colours within 15 %, at least 4 cars a frame
#: and their median size at most twice the real one.
DONE = {"factor": 1.5, "colour_tolerance": 0.15, "cars_per_frame": 4.0, "car_size_factor": 2.0}
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as PIL's "L" and OpenCV's grey


def grey(image: np.ndarray) -> np.ndarray:
    """Luma of an (H, W, 3) RGB image as (H, W) uint8, rounded as PIL's ``convert("L")``."""
    return np.clip(np.rint(np.asarray(image, np.float64) @ _LUMA), 0, 255).astype(np.uint8)


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image, borders left out: large for
    hard edges and grain, small for soft, smooth pictures."""
    g = grey(image).astype(np.float64)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def flat_share(image: np.ndarray, threshold: float = 0.5) -> float:
    """Share of pixels (borders left out) whose 3x3 grey neighbourhood has a standard deviation
    below ``threshold``: areas without grain, such as clipped sky and smooth shadows."""
    g = grey(image).astype(np.float64)
    h, w = g.shape
    total = np.zeros((h - 2, w - 2))
    square = np.zeros((h - 2, w - 2))
    for dy in range(3):
        for dx in range(3):
            part = g[dy:dy + h - 2, dx:dx + w - 2]
            total += part
            square += part * part
    variance = square / 9 - (total / 9) ** 2
    return float((variance < threshold**2 - 1e-9).mean())


def mean_saturation(image: np.ndarray) -> float:
    """Mean HSV saturation (0-255): (max - min) / max of each pixel's RGB, 0 for black."""
    rgb = np.asarray(image, np.float64)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return float(np.mean(np.where(high > 0, (high - low) / np.maximum(high, 1), 0.0)) * 255)


def rgb_std(image: np.ndarray) -> float:
    """Standard deviation of all the RGB values of the image together."""
    return float(np.asarray(image, np.float64).std())


def components(mask: np.ndarray, min_size: int = 1) -> list[int]:
    """Sizes in pixels of the 4-connected pieces of a boolean (H, W) mask that have at least
    ``min_size`` pixels, in no fixed order.

    Runs of True in each row are joined to the overlapping runs of the row above (union-find over
    runs, so the cost grows with the number of runs, not of pixels).
    """
    mask = np.asarray(mask, bool)
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    ends = np.nonzero(step == -1)[1]  # same order as starts: row by row, left to right
    parent = list(range(len(starts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(mask.shape[0] + 1))  # index of each row's first run
    for row in range(1, mask.shape[0]):
        above = range(first[row - 1], first[row])
        for i in range(first[row], first[row + 1]):
            for j in above:
                if starts[j] < ends[i] and starts[i] < ends[j]:  # the runs share a column
                    parent[root(i)] = root(j)
    sizes: dict[int, int] = {}
    for i in range(len(starts)):
        key = root(i)
        sizes[key] = sizes.get(key, 0) + int(ends[i] - starts[i])
    return [size for size in sizes.values() if size >= min_size]


@dataclass
class Realism:
    """The measures over a set of frames: each image measure's mean, per class mean colour and
    spread, and per object class the pieces per frame and their median size in pixels (pieces:
    4-connected, of at least ``MIN_PIECE`` pixels)."""

    frames: int
    laplacian_var: float
    flat_share: float
    saturation: float
    rgb_std: float
    colour: dict[str, tuple[float, float, float]]
    colour_std: dict[str, float]
    objects: dict[str, tuple[float, float]]


def official_frames(root: str | os.PathLike, split: str | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image (H, W, 3), label ids (H, W)) uint8 arrays of every frame of ``split`` (default: every
    split) under a root in the official layout: the synthetic set, or a prepared copy."""
    images = Path(root, layout.IMAGE_DIR, *([split] if split else []))
    for image_path in sorted(images.rglob(f"*{layout.IMAGE_SUFFIX}")):
        split_of, city = image_path.parent.parent.name, image_path.parent.name
        stem = image_path.name.removesuffix(layout.IMAGE_SUFFIX)
        with Image.open(image_path) as image, \
                Image.open(layout.label_path(Path(root), split_of, city, stem)) as label_ids:
            yield np.asarray(image.convert("RGB")), np.asarray(label_ids)


def measure(frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> Realism:
    """The realism measures over (image (H, W, 3) uint8, label ids (H, W)) pairs."""
    image_measures: list[tuple[float, ...]] = []
    colour_sum = {name: np.zeros(3) for name in COLOUR_CLASSES}
    colour_square = {name: np.zeros(3) for name in COLOUR_CLASSES}
    colour_count = dict.fromkeys(COLOUR_CLASSES, 0)
    pieces: dict[str, list[int]] = {name: [] for name in OBJECT_CLASSES}
    for image, label_ids in frames:
        image_measures.append((laplacian_variance(image), flat_share(image),
                               mean_saturation(image), rgb_std(image)))
        for name, class_id in COLOUR_CLASSES.items():
            values = image[label_ids == class_id].astype(np.float64)  # (n, 3)
            colour_sum[name] += values.sum(axis=0)
            colour_square[name] += (values**2).sum(axis=0)
            colour_count[name] += len(values)
        for name, class_id in OBJECT_CLASSES.items():
            pieces[name] += components(label_ids == class_id, MIN_PIECE)
    n = len(image_measures)
    if n == 0:
        raise ValueError("measure needs at least one frame")
    lap, flat, sat, std = np.mean(image_measures, axis=0)
    colour, colour_std = {}, {}
    for name, count in colour_count.items():
        mean = colour_sum[name] / max(count, 1)
        spread = np.sqrt(np.maximum(colour_square[name] / max(count, 1) - mean**2, 0))
        colour[name] = tuple(float(c) for c in mean)
        colour_std[name] = float(spread.mean())
    objects = {name: (len(sizes) / n, float(np.median(sizes)) if sizes else 0.0)
               for name, sizes in pieces.items()}
    return Realism(frames=n, laplacian_var=float(lap), flat_share=float(flat), saturation=float(sat),
                   rgb_std=float(std), colour=colour, colour_std=colour_std, objects=objects)


def _within_factor(value: float, low: float, high: float, factor: float) -> bool:
    return low / factor <= value <= high * factor


def shortfalls(result: Realism, real: Mapping = REAL, done: Mapping = DONE) -> list[str]:
    """What keeps ``result`` from the realism thresholds (``DONE``) against ``real``; empty when none.

    Each entry names the measure, its value and the range it should fall in.
    """
    out = []
    factor, tol = done["factor"], done["colour_tolerance"]
    for key in ("laplacian_var", "flat_share"):
        low, high = real[key]
        value = getattr(result, key)
        if not _within_factor(value, low, high, factor):
            out.append(f"{key} {value:.3g} not in {low / factor:.3g}..{high * factor:.3g}")
    low, high = real["saturation"]
    if not low * (1 - tol) <= result.saturation <= high * (1 + tol):
        out.append(f"saturation {result.saturation:.1f} not within {tol:.0%} of {low:g}")
    for name, target in real["colour"].items():
        colour = result.colour[name]
        if any(abs(c - t) > tol * t for c, t in zip(colour, target, strict=True)):
            shown = ",".join(f"{c:.0f}" for c in colour)
            out.append(f"{name} colour {shown} not within {tol:.0%} of "
                       f"{','.join(f'{t:g}' for t in target)}")
    cars, size = result.objects["car"]
    if cars < done["cars_per_frame"]:
        out.append(f"cars per frame {cars:.1f} < {done['cars_per_frame']:g}")
    real_size = real["objects"]["car"][1]
    if size > done["car_size_factor"] * real_size:
        out.append(f"median car size {size:.0f} px > {done['car_size_factor']:g} x {real_size:g}")
    return out
