"""Composing one street in metres from a ``random.Random``: road and lanes, the two sides with their
buildings and boundary walls, the row across the end of the street, objects, light and the bonnet.

The draws come in a fixed order, so the same generator state always gives the same street.
"""

from __future__ import annotations

import math
import random
from typing import Any, TypeVar

import numpy as np

from segkit.synthetic.palette import (
    CAR_COLOURS,
    GROUND,
    MATERIALS,
    PARKING,
    PAVINGS,
    ROAD,
    ROOFS,
    WALL_COLOURS,
)
from segkit.synthetic.scene import (
    Building,
    Edge,
    Ego,
    FarBuilding,
    FarTrees,
    Item,
    Lamp,
    Lane,
    Light,
    Patch,
    Scene,
    Side,
    Sign,
    TrafficLight,
    Tree,
    TwoWheeler,
    Vehicle,
)

_I = TypeVar("_I", bound=Item)


def compose(rng: random.Random) -> Scene:
    """Draw one street in metres: geometry, buildings, objects and light; no pixel sizes."""
    lane = rng.uniform(3.0, 3.6)
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
    objects: list[Item] = []
    for side in sides:
        objects += _side_objects(rng, side, crossing, z_end)
    objects += _traffic(rng, road, lane, n_lanes, ego_lane, oncoming, sides, crossing)
    objects += _people(rng, sides, road, crossing)
    objects += _cross_traffic(rng, road, crossing, z_end)
    rails = None
    if rng.random() < 0.15 and n_lanes >= 2:
        rails = road[0] + lane * 0.5
        objects.append(_vehicle(rng, "train", rails, rng.uniform(20, 70), facing="front"))
    objects.sort(key=lambda item: -item.z)
    return Scene(
        horizon=rng.uniform(0.37, 0.47), vp=0.5 + rng.gauss(0, 0.03), road=road,
        asphalt=rng.uniform(0.22, 0.3),
        lanes=lanes, sides=sides, crossing=crossing, z_end=z_end,
        far=_far_row(rng, z_end, style), objects=objects, light=_light(rng),
        ego=Ego(side=rng.uniform(0.022, 0.03), mid=rng.uniform(0.035, 0.045),
                rectified=rng.random() < 0.3),
        rails=rails, patches=_patches(rng, sides, road),
        manholes=[(rng.uniform(road[0] + 1, road[1] - 1), rng.uniform(5, 40))
                  for _ in range(_poisson(rng, 1.2))],
        repairs=_repairs(rng, road), seed=rng.getrandbits(63))


def _lane_markings(rng: random.Random, road: tuple[float, float], lane: float,
                   n_lanes: int, oncoming: int) -> list[Lane]:
    """Dashed lane lines, a solid line between the directions, and edge lines on wide roads."""
    if rng.random() < 0.15:
        return []  # residential streets often have no markings
    marks = []
    period = rng.uniform(6, 12)
    for k in range(1, n_lanes):
        solid = k == oncoming and rng.random() < 0.5
        marks.append(Lane(x=road[0] + k * lane, width=rng.uniform(0.12, 0.16), period=period,
                          duty=1.0 if solid else rng.uniform(0.3, 0.5), phase=rng.uniform(0, 12)))
    if n_lanes >= 3 and rng.random() < 0.5:
        for edge in road:
            marks.append(Lane(x=edge - math.copysign(0.4, edge), width=0.15, period=1.0, duty=1.0,
                              phase=0.0))
    return marks


def _side(rng: random.Random, sign: int, road: tuple[float, float],
          crossing: tuple[float, float] | None, z_end: float, style: int) -> Side:
    """The ground strips, buildings and boundary walls of one side of the street."""
    edge = abs(road[0] if sign < 0 else road[1])
    parking = rng.uniform(2.0, 2.4) if rng.random() < 0.45 else 0.0
    kerb = edge + parking
    sidewalk = rng.uniform(1.8, 5.0)
    verge = rng.uniform(1.5, 5.0) if rng.random() < 0.45 else 0.0
    paving = tuple(c * rng.uniform(0.9, 1.1) for c in rng.choice(PAVINGS))
    side = Side(sign=sign, kerb=kerb, sidewalk=sidewalk, verge=verge,
                facade=kerb + sidewalk + verge, park=rng.random() < 0.15, parking=parking,
                parking_label=PARKING if rng.random() < 0.2 else ROAD,
                paving=paving, slab=rng.choice([0.2, 0.3, 0.4, 0.4, 0.5, 0.6]),
                cycle_lane=rng.uniform(1.2, 1.8) if sidewalk > 3.2 and rng.random() < 0.25 else 0.0)
    heights = ((11, 22), (6, 11), (14, 32))[style]
    if not side.park:
        side.buildings = _building_row(rng, heights, crossing, z_end, side.sidewalk, style)
    if side.park or rng.random() < 0.6:
        side.back = _building_row(rng, (heights[0] + 4, heights[1] + 10), None, z_end, 0.0, style)
        side.back_offset = rng.uniform(10, 30) + (20 if side.park else 0)
    side.edges = _edges(rng, side, crossing, z_end)
    return side


def _building_row(rng: random.Random, heights: tuple[float, float],
                  crossing: tuple[float, float] | None, z_end: float,
                  corner: float, style: int) -> list[Building]:
    """Consecutive buildings along the street with gaps, skipping a cross street."""
    row, z = [], rng.uniform(-8, 0)
    while z < z_end:
        width = rng.uniform(8, 26)
        if crossing and z < crossing[1] + corner and z + width > crossing[0] - corner:
            if z < crossing[0] - corner - 3:
                row.append(_building(rng, z, crossing[0] - corner, heights, style))
            z = crossing[1] + corner
            continue
        row.append(_building(rng, z, min(z + width, z_end), heights, style))
        z += width + (rng.uniform(3, 14) if rng.random() < 0.2 else 0.0)
    return row


#: Façade materials by street style (old town, suburb, modern blocks), with their weights.
_STYLE_MATERIALS = ({"plaster": 0.55, "brick": 0.2, "stone": 0.25},
                    {"plaster": 0.5, "brick": 0.4, "concrete": 0.1},
                    {"concrete": 0.45, "plaster": 0.45, "stone": 0.1})


def _building(rng: random.Random, z0: float, z1: float, heights: tuple[float, float],
              style: int) -> Building:
    """One building: extent along the street, height, material, window grid, shops and roof."""
    weights = _STYLE_MATERIALS[style]
    material = rng.choices(list(weights), list(weights.values()))[0]
    colour = (np.array(rng.choice(MATERIALS[material])) * rng.uniform(0.8, 1.15)
              * [rng.uniform(0.92, 1.08) for _ in range(3)])
    floor = rng.uniform(2.9, 3.6) if style != 0 else rng.uniform(3.2, 4.0)
    trim = rng.choice([(0.6, 0.6, 0.57), (0.55, 0.53, 0.48), (0.15, 0.15, 0.16),
                       tuple(np.clip(colour * 1.3, 0, 0.8))])
    return Building(z0=z0, z1=z1, height=rng.uniform(*heights), color=np.clip(colour, 0, 0.8),
                    material=material, bay=rng.uniform(2.2, 3.8), floor=floor,
                    ground=floor * rng.uniform(1.0, 1.3), win_w=rng.uniform(0.38, 0.6),
                    win_h=rng.uniform(0.45, 0.62), u0=rng.uniform(0, 3),
                    glass=np.array([0.06, 0.075, 0.09]) * rng.uniform(0.7, 1.6),
                    trim=np.array(trim), shop=rng.random() < (0.65, 0.3, 0.45)[style],
                    balconies=rng.random() < (0.3, 0.35, 0.55)[style],
                    roof=rng.uniform(1.5, 3.5) if rng.random() < (0.35, 0.45, 0.05)[style] else 0.0,
                    roof_color=np.array(rng.choice(ROOFS)) * rng.uniform(0.8, 1.2),
                    depth=rng.uniform(10, 18), seed=rng.getrandbits(32))


def _edges(rng: random.Random, side: Side, crossing: tuple[float, float] | None,
           z_end: float) -> list[Edge]:
    """Walls, fences and hedges: in gaps of the building line (all along parks), before front
    gardens, and now and then as a barrier between road and sidewalk."""
    gaps = []
    z = 0.0
    for start, stop in [*((b.z0, b.z1) for b in side.buildings), (z_end, z_end)]:
        if start - z > 1.0:
            gaps.append((z, start))
        z = max(z, stop)
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
          heights: tuple[float, float]) -> Edge:
    """A wall, fence or hedge in the plane x from z0 to z1."""
    return Edge(kind=kind, x=x, z0=z0, z1=z1, height=rng.uniform(*heights), seed=rng.getrandbits(32))


def _far_row(rng: random.Random, z_end: float, style: int) -> list[FarTrees | FarBuilding]:
    """Buildings and tree clumps across the end of the street."""
    items, x = [], rng.uniform(-90, -70)
    heights = ((12, 28), (6, 14), (15, 40))[style]
    while x < 90:
        width = rng.uniform(8, 30)
        if rng.random() < 0.3:
            items.append(FarTrees(x=x + width / 2, width=width, height=rng.uniform(6, 15),
                                  seed=rng.getrandbits(32)))
        else:
            items.append(FarBuilding(x0=x, x1=x + width,
                                     building=_building(rng, 0.0, width, heights, style)))
        x += width
    return items


def _light(rng: random.Random) -> Light:
    """Weather and camera response: sun and shadows, sky, haze, exposure, white balance.

    The white balance leans to green, as that of the Cityscapes camera does.
    """
    sunny = rng.random() < 0.45
    azimuth, elevation = rng.uniform(0, 2 * math.pi), rng.uniform(0.38, 0.95)
    reach = 1 / math.tan(elevation)  # metres of shadow per metre of height
    return Light(sunny=sunny, sun=(reach * math.cos(azimuth), reach * math.sin(azimuth)),
                 elevation=elevation, sky=rng.uniform(0.38, 0.5) if sunny else 1.0,
                 clear_sky=sunny and rng.random() < 0.6, haze=rng.uniform(150, 450),
                 exposure=rng.uniform(1.4, 1.8) * (0.95 if sunny else 1.0),
                 contrast=rng.uniform(0.95, 1.1),
                 tint=np.array([rng.uniform(0.84, 0.93), 1.0, rng.uniform(0.88, 0.98)]),
                 noise=rng.uniform(1.2, 2.4))


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson-distributed count (Knuth's method, fine for the small means used here)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _item(record: type[_I], z: float, kind: str, rng: random.Random, **params: Any) -> _I:
    """An object to draw, with its own seed (drawn after ``params``): its details come later."""
    return record(kind=kind, z=z, seed=rng.getrandbits(32), **params)


def _spots(rng: random.Random, start: float, stop: float, gap: tuple[float, float],
           crossing: tuple[float, float] | None) -> list[float]:
    """Positions along the street spaced by ``gap``, none inside a cross street."""
    out, z = [], start + rng.uniform(0, gap[1])
    while z < stop:
        if not (crossing and crossing[0] - 1 < z < crossing[1] + 1):
            out.append(float(z))
        z += rng.uniform(*gap)
    return out


def _side_objects(rng: random.Random, side: Side, crossing: tuple[float, float] | None,
                  z_end: float) -> list[Item]:
    """Trees, lamps, signs, posts, bollards, bins and parked bicycles on one sidewalk."""
    s, items = side.sign, []
    near_kerb = s * (side.kerb + 0.45)
    if side.park or rng.random() < 0.52:
        x_tree = s * (side.kerb + 0.9) if rng.random() < 0.6 else s * (side.facade - 1.2)
        big = 1.0 + side.park * 0.3
        for z in _spots(rng, 2.0, min(z_end * 0.6, 90), (7, 14), crossing):
            items.append(_item(Tree, z, "tree", rng, x=x_tree, radius=rng.uniform(2.0, 3.6) * big,
                               trunk=rng.uniform(2.2, 3.5)))
    if side.park:
        for z in _spots(rng, 4.0, min(z_end * 0.7, 110), (5, 10), crossing):
            x = s * (side.facade + rng.uniform(2, 9))
            items.append(_item(Tree, z, "tree", rng, x=x, radius=rng.uniform(2.5, 4.5),
                               trunk=rng.uniform(2.0, 4.0)))
    if rng.random() < 0.75:
        for z in _spots(rng, 3.0, min(z_end * 0.8, 140), (18, 32), crossing):
            items.append(_item(Lamp, z, "lamp", rng, x=near_kerb, arm=-s))
    for _ in range(_poisson(rng, 2.4)):
        items.append(_item(Sign, rng.uniform(5, 70), "sign", rng, x=near_kerb, back=s < 0))
    for _ in range(_poisson(rng, 1.6)):
        items.append(_item(Item, rng.uniform(5, 60), "pole", rng,
                           x=s * (side.kerb + rng.uniform(0.3, 1))))
    if rng.random() < 0.3:  # a row of bollards along the kerb
        z0, gap = rng.uniform(4, 30), rng.uniform(1.2, 2.5)
        for k in range(rng.randrange(3, 9)):
            items.append(_item(Item, z0 + k * gap, "bollard", rng, x=s * (side.kerb + 0.3)))
    for kind, mean in (("static", 2.0), ("dynamic", 0.7)):
        for _ in range(_poisson(rng, mean)):
            x = s * (side.facade - rng.uniform(0.4, 1.0)) if rng.random() < 0.6 else near_kerb
            items.append(_item(Item, rng.uniform(4, 45), kind, rng, x=x))
    if rng.random() < 0.55:
        z0 = rng.uniform(5, 30)
        for k in range(rng.randrange(1, 7)):
            items.append(_item(TwoWheeler, z0 + 0.7 * k, "parked", rng, x=s * (side.facade - 0.9),
                               vehicle="bicycle", squash=0.55))
    if rng.random() < 0.2:
        items.append(_item(TwoWheeler, rng.uniform(5, 30), "parked", rng, x=s * (side.kerb + 0.8),
                           vehicle="motorcycle", squash=0.6))
    return items


def _traffic(rng: random.Random, road: tuple[float, float], lane: float, n_lanes: int,
             ego_lane: int, oncoming: int, sides: tuple[Side, Side],
             crossing: tuple[float, float] | None) -> list[Item]:
    """Rows of parked cars along the kerbs and a few vehicles in the lanes."""
    items = []
    for side in sides:
        x = side.sign * (side.kerb - 1.05)
        # without a parking strip, cars park on the road only if they leave the ego lane free
        if rng.random() < (0.8 if side.parking else 0.45 * (abs(x) > 2.5)):
            items += _parked_row(rng, x, crossing)
    for k in range(n_lanes):
        x = road[0] + (k + 0.5) * lane
        facing = "front" if k < oncoming else "rear"
        z = rng.uniform(10, 45) if k != ego_lane else rng.uniform(22, 60)
        while z < 160 and rng.random() < 0.7:
            kind = rng.choices(["car", "truck", "bus", "motorcycle"], [0.82, 0.06, 0.05, 0.07])[0]
            z = max(z, 28.0) if kind in ("truck", "bus") else z  # big ones mostly farther off
            vehicle = _vehicle(rng, kind, x + rng.gauss(0, 0.2), z, facing=facing)
            items.append(vehicle)
            z += vehicle.length + rng.uniform(6, 30)
    if rng.random() < 0.35:
        items.append(_item(TwoWheeler, rng.uniform(8, 35), "cyclist", rng, x=road[1] - 0.7,
                           vehicle="bicycle"))
    if road[1] > 2.5 and rng.random() < 0.1:  # a bus waiting at a stop on the right
        items.append(_vehicle(rng, "bus", road[1] - 1.4, rng.uniform(20, 50), facing="rear"))
    return items


def _parked_row(rng: random.Random, x: float,
                crossing: tuple[float, float] | None) -> list[Item]:
    """Cars parked at x in groups of one to four, close enough to hide one another, with gaps
    between the groups (driveways, trees, entrances), clear of a cross street."""
    items, z = [], rng.uniform(4, 25)
    while z < 120:
        for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
            if crossing and crossing[0] - 6 < z < crossing[1] + 1:
                z = crossing[1] + 1
                break
            kind = "truck" if z > 20 and rng.random() < 0.02 else "car"
            vehicle = _vehicle(rng, kind, x + rng.gauss(0, 0.08), z,
                               facing=rng.choice(["rear", "rear", "front"]))
            items.append(vehicle)
            z += vehicle.length + rng.uniform(0.5, 1.6)
        z += rng.uniform(0.3, 1.2) * z + 4  # the next group far enough to be seen apart
    return items


#: Car bodies: width, length and height ranges in metres, and how often each is seen.
_CAR_SHAPES = {
    "saloon": ((1.75, 1.85), (4.5, 4.9), (1.42, 1.5), 0.22),
    "hatchback": ((1.7, 1.8), (3.9, 4.3), (1.45, 1.53), 0.3),
    "estate": ((1.75, 1.85), (4.6, 4.9), (1.45, 1.53), 0.2),
    "suv": ((1.82, 1.95), (4.4, 4.8), (1.62, 1.75), 0.12),
    "van": ((1.9, 2.0), (4.8, 5.4), (1.9, 2.2), 0.08),
    "small": ((1.6, 1.7), (3.4, 3.7), (1.45, 1.55), 0.08),
}


def _vehicle(rng: random.Random, kind: str, x: float, z: float,
             facing: str) -> Vehicle | TwoWheeler:
    """A vehicle standing on the road with its near end at depth z."""
    if kind == "motorcycle":
        return _item(TwoWheeler, z, "cyclist", rng, x=x, vehicle="motorcycle", length=2.2)
    shape = "box"
    if kind == "car":
        shape = rng.choices(list(_CAR_SHAPES), [v[3] for v in _CAR_SHAPES.values()])[0]
        widths, lengths, heights, _ = _CAR_SHAPES[shape]
        width, length, height = (rng.uniform(*widths), rng.uniform(*lengths),
                                 rng.uniform(*heights))
    else:
        width, length, height = {
            "truck": (2.45, rng.uniform(7, 10), 3.6),
            "bus": (2.55, rng.uniform(11, 13), 3.0),
            "train": (2.65, rng.uniform(25, 35), 3.5),
        }[kind]
    colours = CAR_COLOURS if kind == "car" else WALL_COLOURS + ((0.6, 0.6, 0.58),) * 3
    colour = np.array(rng.choice(colours)) * rng.uniform(0.85, 1.15)
    return _item(Vehicle, z, kind, rng, x=x, width=width, length=length, height=height,
                 facing=facing, color=np.clip(colour, 0, 1), shape=shape)


def _cross_traffic(rng: random.Random, road: tuple[float, float],
                   crossing: tuple[float, float] | None, z_end: float) -> list[Item]:
    """Cars seen from the side: driving along the street across the end of this one, and
    crossing or parked in a cross street."""
    items = []
    for _ in range(_poisson(rng, 2.0)):
        items.append(_vehicle(rng, "car", rng.uniform(-35, 35), z_end - rng.uniform(4, 8),
                              facing=rng.choice(["left", "right"])))
    if crossing:
        for _ in range(_poisson(rng, 0.8)):
            items.append(_vehicle(rng, "car", rng.uniform(-25, 25),
                                  rng.uniform(crossing[0] + 2, crossing[1] - 4),
                                  facing=rng.choice(["left", "right"])))
        for _ in range(_poisson(rng, 1.0)):
            side = rng.choice([-1, 1])
            x = side * (abs(road[0] if side < 0 else road[1]) + rng.uniform(4, 30))
            z = rng.choice([crossing[0] + 0.3, crossing[1] - 2.2])
            items.append(_vehicle(rng, "car", x, z, facing=rng.choice(["left", "right"])))
    return items


def _people(rng: random.Random, sides: tuple[Side, Side], road: tuple[float, float],
            crossing: tuple[float, float] | None) -> list[Item]:
    """Pedestrians on sidewalks and crossings, alone and in groups, and cyclists crossing."""
    items = []
    for _ in range(_poisson(rng, 4.5)):
        side = rng.choice(sides)
        x = side.sign * (side.kerb + rng.uniform(0.4, side.sidewalk - 0.3))
        z = rng.uniform(3.5, 45)
        for _ in range(rng.choices([1, 2, 3, 4], [0.55, 0.3, 0.1, 0.05])[0]):
            items.append(_item(Item, z + rng.uniform(-0.6, 0.6), "person", rng,
                               x=x + rng.uniform(-0.6, 0.6)))
    if crossing or rng.random() < 0.2:
        z = crossing[0] - 3 if crossing else rng.uniform(10, 30)
        for _ in range(_poisson(rng, 1.5)):
            x = rng.uniform(road[0] - 2, road[1] + 2)
            items.append(_item(Item, z + rng.uniform(-1.5, 1.5), "person", rng, x=x))
        if rng.random() < 0.5:
            items.append(_item(TwoWheeler, z, "cyclist", rng, x=rng.uniform(road[0], road[1]),
                               vehicle="bicycle", side_view=True))
    if crossing:
        for side in sides:
            items.append(_item(TrafficLight, crossing[0] - 1.5, "light", rng,
                               x=side.sign * (side.kerb + 0.4), overhead=rng.random() < 0.6,
                               arm=-side.sign))
    elif rng.random() < 0.7:  # a pedestrian light on its own
        side = rng.choice(sides)
        items.append(_item(TrafficLight, rng.uniform(8, 35), "light", rng,
                           x=side.sign * (side.kerb + 0.4), overhead=False, arm=-side.sign))
    return items


def _repairs(rng: random.Random, road: tuple[float, float]) -> list[tuple[float, ...]]:
    """Patches of newer or older asphalt: x0, x1, z0, z1 and a brightness factor."""
    out = []
    for _ in range(_poisson(rng, 1.5)):
        x0 = rng.uniform(road[0], road[1] - 1)
        z0 = rng.uniform(4, 60)
        out.append((x0, min(x0 + rng.uniform(0.8, 4), road[1]), z0, z0 + rng.uniform(1, 12),
                    rng.uniform(0.8, 1.2)))
    return out


def _patches(rng: random.Random, sides: tuple[Side, Side],
             road: tuple[float, float]) -> list[Patch]:
    """Ground that is neither road nor sidewalk: driveways across sidewalks, traffic islands."""
    patches = []
    for side in sides:
        for _ in range(_poisson(rng, 0.5)):
            z0 = rng.uniform(4, 40)
            xs = sorted((side.sign * side.kerb, side.sign * side.facade))
            patches.append(Patch(x=(xs[0], xs[1]), z=(z0, z0 + rng.uniform(3, 7)), label=GROUND,
                                 color=(0.27, 0.26, 0.25)))
    if road[1] - road[0] > 9 and rng.random() < 0.25:
        z0 = rng.uniform(8, 25)
        centre = road[0] + rng.uniform(0.3, 0.45) * (road[1] - road[0])
        width = rng.uniform(1.2, 2.5)
        patches.append(Patch(x=(centre - width / 2, centre + width / 2),
                             z=(z0, z0 + rng.uniform(8, 30)), label=GROUND, color=(0.3, 0.29, 0.27)))
    return patches
