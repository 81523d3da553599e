"""Label ids by name and the colour tables that the scene, the world and the objects draw from."""

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
CAR_COLOURS = ((0.62, 0.63, 0.64), (0.35, 0.36, 0.38), (0.08, 0.08, 0.09), (0.82, 0.82, 0.8),
               (0.13, 0.17, 0.3), (0.5, 0.1, 0.09), (0.15, 0.25, 0.2), (0.6, 0.55, 0.45),
               (0.2, 0.2, 0.22), (0.75, 0.75, 0.74))
WALL_COLOURS = ((0.74, 0.69, 0.6), (0.78, 0.77, 0.74), (0.8, 0.72, 0.52), (0.55, 0.32, 0.26),
                (0.42, 0.27, 0.23), (0.55, 0.55, 0.54), (0.74, 0.6, 0.56), (0.62, 0.66, 0.68),
                (0.68, 0.62, 0.5), (0.45, 0.45, 0.46))
CLOTHES = ((0.1, 0.1, 0.11), (0.14, 0.16, 0.25), (0.3, 0.3, 0.32), (0.5, 0.45, 0.35),
           (0.55, 0.12, 0.12), (0.2, 0.28, 0.2), (0.65, 0.65, 0.66), (0.25, 0.2, 0.16))
SKIN = ((0.85, 0.68, 0.56), (0.7, 0.52, 0.4), (0.45, 0.32, 0.24), (0.9, 0.75, 0.65))
PAVINGS = ((0.55, 0.53, 0.52), (0.6, 0.56, 0.5), (0.58, 0.5, 0.48), (0.5, 0.5, 0.5),
           (0.62, 0.6, 0.57))
GREENS = ((0.2, 0.29, 0.12), (0.25, 0.33, 0.15), (0.16, 0.24, 0.12), (0.3, 0.36, 0.18),
          (0.36, 0.33, 0.16))
