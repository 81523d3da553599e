"""One frame: compose a street, draw it back to front, develop it."""

from __future__ import annotations

import random

import numpy as np

from segkit.synthetic.camera import Camera, Canvas, noise_fields
from segkit.synthetic.compose import compose
from segkit.synthetic.develop import develop, draw_ego
from segkit.synthetic.objects import draw_item
from segkit.synthetic.world import draw_edge, draw_far, draw_ground, draw_side, draw_sky

_FOCAL = 1.1  # focal length in image widths (Cityscapes: 2262 px at 2048 px)


def render_scene(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (H, W, 3) uint8 RGB image and (H, W) uint8 official label ids.

    The scene is drawn from ``rng`` before any pixel size is used, so the same generator state
    gives the same street at every size.
    """
    # scalar draws from Python's generator cost a tenth of numpy's, and a scene needs a thousand
    scene = compose(random.Random(int(rng.integers(2**63))))
    texture_rng = np.random.default_rng(scene.seed)
    cam = Camera(width, height, _FOCAL * width, scene.vp * width, scene.horizon * height)
    cv = Canvas(cam, noise_fields(texture_rng, width, height))
    draw_sky(cv, scene)
    draw_ground(cv, scene)
    for side in scene.sides:
        draw_side(cv, scene, side)
    draw_far(cv, scene)  # after the sides, with a depth test: most of it is hidden
    for item in scene.objects:
        draw_item(cv, item)
    for side in scene.sides:
        for edge in side.edges:
            draw_edge(cv, edge)
    draw_ego(cv, scene)
    image = develop(cv, scene, texture_rng)
    return image, cv.label
