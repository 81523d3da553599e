"""One frame: compose a street, draw it back to front (larger than the frame where that is cheap),
develop it."""

from __future__ import annotations

import random

import numpy as np

from segkit.synthetic import shadows
from segkit.synthetic.camera import Camera, Canvas, noise_fields
from segkit.synthetic.compose import compose
from segkit.synthetic.develop import develop, draw_ego, out_of_roi, reduce_labels
from segkit.synthetic.objects import draw_item
from segkit.synthetic.world import draw_edge, draw_far, draw_ground, draw_side, draw_sky

_FOCAL = 1.1  # focal length in image widths (Cityscapes: 2262 px at 2048 px)


def supersampling(width: int) -> int:
    """How many times larger than a frame ``width`` pixels wide its scene is drawn.

    Twice, up to 1024 pixels: edges then come out smooth, as a camera's are, from the average of
    four drawn pixels. A full-size frame (2048) is drawn at its size, where the lens blur spreads
    over more than a pixel and smooths the edges alone; drawing it twice as large would take four
    times as long.
    """
    return 2 if width <= 1024 else 1


def render_scene(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (H, W, 3) uint8 RGB image and (H, W) uint8 official label ids.

    The scene is drawn from ``rng`` before any pixel size is used, so the same generator state
    gives the same street at every size.
    """
    # scalar draws from Python's generator cost a tenth of numpy's, and a scene needs a thousand
    scene = compose(random.Random(int(rng.integers(2**63))))
    texture_rng = np.random.default_rng(scene.seed)
    factor = supersampling(width)
    w, h = width * factor, height * factor
    cam = Camera(w, h, _FOCAL * w, scene.vp * w, scene.horizon * h)
    blockers = shadows.blockers(shadows.structures(scene))
    cv = Canvas(cam, noise_fields(texture_rng, w, h), scene.light, blockers)
    draw_sky(cv, scene)
    draw_ground(cv, scene, shadows.cast(scene), shadows.contact(scene))
    for side in scene.sides:
        draw_side(cv, scene, side)
    draw_far(cv, scene)  # after the sides, with a depth test: most of it is hidden
    for item in scene.objects:
        draw_item(cv, item)
    for side in scene.sides:
        for edge in side.edges:
            draw_edge(cv, edge)
    draw_ego(cv, scene)
    label = reduce_labels(cv.label, factor)
    image = develop(cv, scene, texture_rng, label)
    out_of_roi(label)
    return image, label
