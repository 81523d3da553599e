"""Where shadows fall on the ground, in metres: the sun's shadows of the buildings on its side of the
street, of the row at the street's end, of walls, hedges, trees, poles, signs, people and vehicles,
and the contact shadow under every vehicle in any weather.

``draw_ground`` darkens these polygons; an object standing in a building's shadow is lit by the sky
alone (``in_shadow``). Nothing here draws random numbers or depends on the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segkit.synthetic.scene import FarBuilding, FarTrees, Item, Scene, Tree, Vehicle

#: Heights (m) and widths (m) of the things whose shadows are thin bars on the ground.
_BARS = {"lamp": (7.5, 0.16), "sign": (2.9, 0.1), "light": (3.2, 0.14), "pole": (3.0, 0.12),
         "bollard": (0.9, 0.14), "person": (1.7, 0.42), "cyclist": (1.7, 0.45),
         "parked": (1.0, 0.35), "static": (1.2, 0.6), "dynamic": (1.0, 0.55)}
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))], axis=1)


@dataclass(frozen=True, slots=True)
class Shadow:
    """A convex polygon on the ground, corners (k, 2) of x and z in metres, in order."""

    corners: np.ndarray
    strength: float  # share of the direct light it takes away (1: all of it)
    leafy: bool = False  # sunlight comes through in flecks (tree crowns)


def _wall(x0: float, z0: float, x1: float, z1: float, height: float,
          sun: tuple[float, float]) -> np.ndarray:
    """The shadow of a vertical wall from (x0, z0) to (x1, z1): a parallelogram."""
    dx, dz = height * sun[0], height * sun[1]
    return np.array([(x0, z0), (x1, z1), (x1 + dx, z1 + dz), (x0 + dx, z0 + dz)])


def _bar(x: float, z: float, height: float, width: float, sun: tuple[float, float]) -> np.ndarray:
    """The shadow of an upright post of ``width`` and ``height`` standing at (x, z)."""
    length = math.hypot(*sun) or 1.0
    px, pz = -sun[1] / length * width / 2, sun[0] / length * width / 2
    tx, tz = x + height * sun[0], z + height * sun[1]
    return np.array([(x + px, z + pz), (tx + px, tz + pz), (tx - px, tz - pz), (x - px, z - pz)])


def hull(points: np.ndarray) -> np.ndarray:
    """The convex hull (k, 2) of points (n, 2), counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(map(tuple, np.asarray(points, float).tolist()))

    def half(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _vehicle(v: Vehicle, sun: tuple[float, float]) -> np.ndarray:
    """The shadow of a vehicle's box: the hull of its footprint and the footprint moved by the sun."""
    x0, x1, z0, z1 = v.footprint()
    foot = np.array([(x0, z0), (x1, z0), (x1, z1), (x0, z1)])
    top = foot + np.array(sun) * v.height * 0.85  # roofs are narrower than bodies
    return hull(np.concatenate([foot, top]))


def _tree(t: Tree, sun: tuple[float, float], elevation: float) -> list[Shadow]:
    """A trunk's bar and a crown's ellipse: the crown's shadow is stretched along the sun."""
    length = math.hypot(*sun) or 1.0
    along, across = np.array(sun) / length, np.array([-sun[1], sun[0]]) / length
    centre = np.array([t.x, t.z]) + np.array(sun) * (t.trunk + t.radius)
    semi = t.radius * 0.9, t.radius * 0.9 / max(math.sin(elevation), 0.3)
    crown = centre + _CIRCLE[:, :1] * semi[0] * across + _CIRCLE[:, 1:] * semi[1] * along
    return [Shadow(_bar(t.x, t.z, t.trunk + t.radius * 0.5, 0.3, sun), 1.0),
            Shadow(crown, 0.85, leafy=True)]


def cast(scene: Scene) -> list[Shadow]:
    """Every sun shadow of the scene (none when overcast): ``structures``, then the objects'."""
    out = structures(scene)
    if scene.light.sunny:
        for item in scene.objects:
            out += _object(item, scene.light.sun, scene.light.elevation)
    return out


def structures(scene: Scene) -> list[Shadow]:
    """The sun shadows of buildings, walls, hedges and the row at the street's end."""
    light = scene.light
    if not light.sunny:
        return []
    sun, out = light.sun, []
    for side in scene.sides:
        if side.sign * sun[0] >= 0:  # its shadows fall behind its own buildings
            continue
        x = side.sign * side.facade
        for b in side.buildings:
            out.append(Shadow(_wall(x, b.z0, x, b.z1, b.height + 0.5 * b.roof, sun), 1.0))
        back = side.sign * (side.facade + side.back_offset)
        for b in side.back:
            out.append(Shadow(_wall(back, b.z0, back, b.z1, b.height + 0.5 * b.roof, sun), 1.0))
        for e in side.edges:
            if e.kind != "fence":
                out.append(Shadow(_wall(e.x, e.z0, e.x, e.z1, e.height, sun), 1.0))
    if sun[1] < 0:  # the sun beyond the street's end: its row's shadows come toward the camera
        for item in scene.far:
            if isinstance(item, FarBuilding):
                out.append(Shadow(_wall(item.x0, scene.z_end, item.x1, scene.z_end,
                                        item.building.height, sun), 1.0))
            elif isinstance(item, FarTrees):
                out.append(Shadow(_wall(item.x - item.width / 2, scene.z_end,
                                        item.x + item.width / 2, scene.z_end, item.height, sun),
                                  0.8, leafy=True))
    return out


def _object(item: Item, sun: tuple[float, float], elevation: float) -> list[Shadow]:
    """The sun shadows of one object."""
    if isinstance(item, Tree):
        return _tree(item, sun, elevation)
    if isinstance(item, Vehicle):
        return [Shadow(_vehicle(item, sun), 1.0)]
    if item.kind in _BARS:
        height, width = _BARS[item.kind]
        return [Shadow(_bar(item.x, item.z, height, width, sun), 1.0)]
    return []


def contact(scene: Scene) -> list[Shadow]:
    """The dark ground under every vehicle, where no sky reaches, in any weather."""
    out = []
    for item in scene.objects:
        if isinstance(item, Vehicle):
            x0, x1, z0, z1 = item.footprint()
            x0, x1, z0, z1 = x0 - 0.1, x1 + 0.1, z0 - 0.05, z1 + 0.05
            out.append(Shadow(np.array([(x0, z0), (x1, z0), (x1, z1), (x0, z1)]), 1.0))
    return out


def blockers(shadows: list[Shadow]) -> list[list[list[float]]]:
    """The solid ones of ``shadows`` (not leaves) as plain corner lists, for ``in_shadow``."""
    return [s.corners.tolist() for s in shadows if s.strength >= 1 and not s.leafy]


def _inside(corners: list[list[float]], x: float, z: float) -> bool:
    """Whether (x, z) lies inside the convex polygon ``corners`` (either orientation)."""
    sign = 0.0
    for (ax, az), (bx, bz) in zip(corners, corners[1:] + corners[:1], strict=True):
        cross = (bx - ax) * (z - az) - (bz - az) * (x - ax)
        if cross * sign < 0:
            return False
        sign = cross or sign
    return True


def in_shadow(solid: list[list[list[float]]], x: float, z: float) -> bool:
    """Whether the ground at (x, z) lies in one of the ``solid`` shadows (see ``blockers``)."""
    return any(_inside(corners, x, z) for corners in solid)
