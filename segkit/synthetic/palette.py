"""Label ids by name and the colour tables that the scene, the world and the objects draw from.

Colours are reflectances (0..1) in daylight: what a surface returns of the light falling on it, before
the light, the exposure and the camera's colour cast are applied (``develop``). Real street materials
are dark: asphalt and paving return about a quarter of the light, leaves a sixth, plaster half.
"""

from __future__ import annotations

from segkit import labels

ID = {c.name: c.id for c in labels.CLASSES if c.id >= 0}
EGO, RECT_BORDER, OUT_OF_ROI, STATIC, DYNAMIC, GROUND = (
    ID[n] for n in ("ego vehicle", "rectification border", "out of roi", "static", "dynamic",
                    "ground"))
ROAD, SIDEWALK, PARKING, BUILDING, WALL, FENCE = (
    ID[n] for n in ("road", "sidewalk", "parking", "building", "wall", "fence"))
POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = (
    ID[n] for n in ("pole", "traffic light", "traffic sign", "vegetation", "terrain", "sky"))
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = (
    ID[n] for n in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"))

Colour = tuple[float, float, float]
#: Car paints, about as often as they are seen on German streets: greys, black, white, dark blue
#: first, a few reds, greens and browns.
CAR_COLOURS = ((0.03, 0.03, 0.035), (0.04, 0.04, 0.045), (0.12, 0.12, 0.13), (0.2, 0.2, 0.21),
               (0.36, 0.37, 0.38), (0.45, 0.46, 0.47), (0.62, 0.62, 0.6), (0.55, 0.55, 0.54),
               (0.05, 0.07, 0.15), (0.1, 0.14, 0.28), (0.4, 0.05, 0.04), (0.08, 0.14, 0.1),
               (0.3, 0.26, 0.2), (0.25, 0.08, 0.07), (0.5, 0.45, 0.3), (0.03, 0.05, 0.1))
#: Façade materials: (name, base colours). Plaster in pale and earthy tones, brick, sandstone and
#: concrete; each building varies its colour a little.
MATERIALS = {
    "plaster": ((0.62, 0.58, 0.49), (0.68, 0.67, 0.63), (0.63, 0.53, 0.36), (0.6, 0.46, 0.4),
                (0.48, 0.49, 0.5), (0.5, 0.54, 0.48), (0.66, 0.6, 0.54), (0.42, 0.43, 0.46),
                (0.56, 0.48, 0.43), (0.56, 0.58, 0.59), (0.72, 0.71, 0.68)),
    "brick": ((0.4, 0.2, 0.14), (0.31, 0.17, 0.13), (0.46, 0.28, 0.19), (0.54, 0.43, 0.3),
              (0.27, 0.18, 0.16)),
    "stone": ((0.5, 0.44, 0.36), (0.43, 0.38, 0.34), (0.54, 0.5, 0.46), (0.4, 0.3, 0.24)),
    "concrete": ((0.38, 0.4, 0.41), (0.48, 0.48, 0.47), (0.31, 0.32, 0.34), (0.54, 0.53, 0.49)),
}
#: Walls along the street (garden walls, barriers): the façade materials' plainer colours.
WALL_COLOURS = ((0.42, 0.4, 0.36), (0.36, 0.36, 0.35), (0.3, 0.18, 0.14), (0.45, 0.42, 0.36),
                (0.3, 0.31, 0.32), (0.5, 0.48, 0.44))
ROOFS = ((0.18, 0.09, 0.07), (0.12, 0.12, 0.13), (0.22, 0.12, 0.09), (0.09, 0.09, 0.1),
         (0.2, 0.2, 0.21))
#: Shop signs and awnings.
SIGNAGE = ((0.55, 0.06, 0.05), (0.06, 0.15, 0.42), (0.05, 0.25, 0.12), (0.6, 0.5, 0.1),
           (0.06, 0.06, 0.07), (0.62, 0.62, 0.6), (0.45, 0.15, 0.05), (0.3, 0.05, 0.2))
CLOTHES = ((0.04, 0.04, 0.05), (0.06, 0.07, 0.12), (0.15, 0.15, 0.16), (0.3, 0.27, 0.22),
           (0.45, 0.08, 0.07), (0.1, 0.16, 0.1), (0.55, 0.55, 0.55), (0.12, 0.09, 0.07),
           (0.1, 0.18, 0.35), (0.55, 0.45, 0.15), (0.45, 0.3, 0.25), (0.2, 0.2, 0.28),
           (0.6, 0.2, 0.3), (0.08, 0.25, 0.3), (0.4, 0.38, 0.3))
TROUSERS = ((0.04, 0.04, 0.05), (0.08, 0.1, 0.18), (0.12, 0.16, 0.3), (0.2, 0.19, 0.17),
            (0.3, 0.27, 0.2), (0.15, 0.15, 0.16))
SKIN = ((0.62, 0.45, 0.35), (0.5, 0.35, 0.26), (0.3, 0.2, 0.14), (0.68, 0.52, 0.42))
HAIR = ((0.05, 0.04, 0.03), (0.16, 0.1, 0.06), (0.35, 0.27, 0.15), (0.4, 0.4, 0.38),
        (0.25, 0.12, 0.06))
PAVINGS = ((0.21, 0.24, 0.2), (0.23, 0.25, 0.22), (0.19, 0.21, 0.18), (0.25, 0.26, 0.22),
           (0.22, 0.23, 0.21))
GREENS = ((0.2, 0.25, 0.15), (0.23, 0.28, 0.17), (0.17, 0.22, 0.15), (0.25, 0.29, 0.16),
          (0.26, 0.26, 0.15), (0.18, 0.23, 0.19))
