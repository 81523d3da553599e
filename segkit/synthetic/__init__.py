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

The modules, each importing only those above it:

- ``palette``: label ids by name and the colour tables;
- ``camera``: the pinhole camera, the canvas, polygon rasterising and the noise fields;
- ``scene``: the records a scene is made of, in metres;
- ``compose``: drawing those records at random, in a fixed order;
- ``world``: sky, ground, façades, walls, fences, hedges and tree crowns;
- ``objects``: trees, poles, signs, lights, furniture, people, riders and vehicles;
- ``develop``: the bonnet and borders, and developing the canvas into a photo;
- ``render``: ``render_scene``, one frame from compose to develop;
- ``writer``: ``generate`` and ``write_official_zips``, the files on disk.
"""

from segkit.synthetic.render import render_scene
from segkit.synthetic.writer import (
    DEFAULT_CITIES,
    FRAME_NUMBER,
    GENERATOR_VERSION,
    MARKER,
    MIN_SIZE,
    generate,
    write_official_zips,
)

__all__ = ["DEFAULT_CITIES", "FRAME_NUMBER", "GENERATOR_VERSION", "MARKER", "MIN_SIZE", "generate",
           "render_scene", "write_official_zips"]
