"""Procedural Cityscapes-like street scenes in the official layout, file names, zips and label ids.

Real Cityscapes needs a registered download, so the course can start from these frames instead.
Each frame is a German street seen through a car's windscreen: a pinhole camera over a flat road
with worn asphalt, markings, setts and kerbs, dark paved sidewalks, façades of plaster, brick, stone
or concrete with windows, balconies, doors, shop fronts with signs and awnings, downpipes and shade
under the eaves, trees and hedges, poles, signs and traffic lights, rows of parked cars of varied
shapes and colours and a few moving ones, people alone and in groups, cyclists, and the ego
vehicle's bonnet. A sun (on sunny frames) lights the faces turned to it and casts the shadows of
buildings, trees, poles, people and cars on the ground; overcast frames are lit by the sky alone.
The canvas is drawn larger than the frame where that is cheap and reduced (smooth edges), then
developed like a camera's picture: haze, vignetting, an exposure that clips the bright sky, the
green-leaning colour cast of the Cityscapes camera, mild sensor noise and a lens blur. Class
frequencies roughly follow Cityscapes' train split, and thin or small classes are harder than road,
sky and buildings, as on the real data; ``realism`` measures how the pixels compare with real frames.

A scene is first composed in metres (nothing depends on the image size), then rasterised, so a
512x256 frame looks like the 2048x1024 one scaled down. Each frame's random generator comes from
(seed, split, city, index), so a frame does not depend on which other frames are generated.

The modules, each importing only those above it:

- ``palette``: label ids by name and the colour tables (reflectances);
- ``camera``: the pinhole camera, the canvas, polygon rasterising and the noise fields;
- ``scene``: the records a scene is made of, in metres, and how the light falls on a surface;
- ``compose``: drawing those records at random, in a fixed order;
- ``shadows``: where the sun's shadows and the dark ground under vehicles fall, in metres;
- ``world``: sky, ground, façades, walls, fences, hedges and tree crowns;
- ``objects``: trees, poles, signs, lights, furniture, people, riders and vehicles;
- ``develop``: the bonnet and borders, and developing the canvas into a photo;
- ``render``: ``render_scene``, one frame from compose to develop;
- ``writer``: ``generate`` and ``write_official_zips``, the files on disk;
- ``realism``: grain, flat areas, colour and objects of frames, and the real figures to compare.
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
