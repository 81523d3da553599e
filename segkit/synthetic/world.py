"""Rasterising the world: sky, ground with its kerbs, paving, markings, wear and shadows, façades, the
far row, walls, fences, hedges, and tree crowns (which the objects' trees share).

Colours are reflectances times the light falling on each surface (``Light.face``); the exposure and
the camera's colour cast come later (``develop``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segkit.synthetic.camera import Canvas, Sprite, Window
from segkit.synthetic.palette import (
    BUILDING,
    FENCE,
    GREENS,
    GROUND,
    ROAD,
    SIDEWALK,
    SIGNAGE,
    SKY,
    TERRAIN,
    VEGETATION,
    WALL,
    WALL_COLOURS,
    Colour,
)
from segkit.synthetic.scene import Building, Edge, FarTrees, Light, Scene, Side
from segkit.synthetic.shadows import Shadow

_TEXEL = 0.1  # metres per façade texel
_F = np.float32
_GUTTER = 0.3  # metres of setts along a kerb
_KERB = (0.22, 0.12)  # width of the kerb stone's top and height of its face, metres


def draw_sky(cv: Canvas, scene: Scene) -> None:
    """A bright overcast sky, or a blue one with clouds; the camera clips its brightest parts."""
    cam = cv.cam
    rows = min(math.floor(cam.horizon) + 1, cam.height)  # the ground covers the rows below
    t = np.clip((np.arange(rows, dtype=np.float32) + 0.5) / max(cam.horizon, 1.0), 0, 1)[:, None]
    low, mid = cv.fields.low[:rows], cv.fields.mid[:rows]
    if scene.light.clear_sky:
        top, bottom = np.array([0.34, 0.45, 0.62], _F), np.array([0.6, 0.64, 0.67], _F)
        sky = top[:, None, None] + (bottom - top)[:, None, None] * (t ** 0.7)
        cloud = np.clip(low * 0.5 + mid * 0.15 - 0.05, 0, 1) * _F(0.8)
        cv.image[:, :rows] = sky + (_F(0.75) - sky) * cloud
    else:
        top, bottom = np.array([0.6, 0.6, 0.6], _F), np.array([0.74, 0.73, 0.72], _F)
        sky = top[:, None, None] + (bottom - top)[:, None, None] * t
        cv.image[:, :rows] = sky * (_F(0.97) + _F(0.06) * low + _F(0.02) * mid)
    cv.label[:] = SKY


# --- the ground -----------------------------------------------------------------------------------

def _side_strips(side: Side, road_colour: Colour) -> list[tuple[float, int, Colour]]:
    """The strips of one side from the road edge outward: (width, label id, reflectance)."""
    setts = tuple(c * 1.15 for c in road_colour)
    strips = []
    if side.parking > _GUTTER:
        park = (0.2, 0.2, 0.19) if side.parking_label != ROAD else road_colour
        strips += [(side.parking - _GUTTER, side.parking_label, park),
                   (_GUTTER, side.parking_label, setts)]
    kerb = tuple(min(c * 1.25, 1.0) for c in side.paving)
    strips.append((_KERB[0], SIDEWALK, kerb))
    walk = side.sidewalk - _KERB[0]
    if side.cycle_lane:
        strips.append((side.cycle_lane, SIDEWALK, (0.3, 0.15, 0.12)))
        walk -= side.cycle_lane
    strips += [(walk, SIDEWALK, side.paving), (side.verge, TERRAIN, (0.11, 0.14, 0.06)),
               (math.inf, TERRAIN if side.park else GROUND, (0.22, 0.21, 0.19))]
    return strips


def _ground_zones(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strips across the street from left to right: x boundaries, label ids, reflectances."""
    a = scene.asphalt
    road_colour = (a * 0.97, a, a * 0.99)
    left, right = (_side_strips(side, road_colour) for side in scene.sides)
    inner = [scene.road[0], scene.road[1]]
    middle = [(0.0, ROAD, road_colour)]
    for k, side in enumerate(scene.sides):  # no parking strip: setts along the road's edge
        if side.parking <= _GUTTER:
            inner[k] -= side.sign * _GUTTER
            setts = (0.0, ROAD, tuple(c * 1.15 for c in road_colour))
            middle = [setts, *middle] if k == 0 else [*middle, setts]
    outer_left = abs(scene.road[0]) + np.cumsum([w for w, _, _ in left[:-1]])
    outer_right = scene.road[1] + np.cumsum([w for w, _, _ in right[:-1]])
    bounds = np.concatenate([-outer_left[::-1], _middle_bounds(scene, inner), outer_right])
    zones = [*left[::-1], *middle, *right]
    ids = np.array([z[1] for z in zones], np.uint8)
    colours = np.array([z[2] for z in zones], np.float32)
    return bounds, ids, colours


def _middle_bounds(scene: Scene, inner: list[float]) -> list[float]:
    """Boundaries between the road's own strips: its edges and, without parking, the setts."""
    out = [scene.road[0]]
    if scene.sides[0].parking <= _GUTTER:
        out.append(inner[0])
    if scene.sides[1].parking <= _GUTTER:
        out.append(inner[1])
    out.append(scene.road[1])
    return out


def draw_ground(cv: Canvas, scene: Scene, shadows: Sequence[Shadow],
                contact: Sequence[Shadow]) -> None:
    """Road, setts, kerbs, sidewalks and verges, with paving, markings, wear and shadows."""
    cam = cv.cam
    first = min(math.floor(cam.horizon) + 1, cam.height)
    d = np.arange(first, cam.height, dtype=np.float32) + 0.5 - cam.horizon
    z = cam.focal * cam.cam_h / d  # (n,) depth of each row
    x = (np.arange(cam.width, dtype=np.float32) + 0.5 - cam.cx)[None, :] * (cam.cam_h / d)[:, None]
    bounds, ids, colours = _ground_zones(scene)
    zone = np.searchsorted(bounds, x)
    road_zones = np.nonzero(ids == ROAD)[0]
    if scene.crossing:
        centre = road_zones[len(road_zones) // 2]
        zone[(z > scene.crossing[0]) & (z < scene.crossing[1])] = centre
    label, image = np.take(ids, zone), np.take(colours.T, zone, axis=1)  # image (3, rows, W)
    for patch in scene.patches:
        rows = (z > patch.z[0]) & (z < patch.z[1])
        hit = (x[rows] > patch.x[0]) & (x[rows] < patch.x[1])
        label[rows] = np.where(hit, patch.label, label[rows])
        colour = np.array(patch.color, np.float32)[:, None, None]
        image[:, rows] = np.where(hit, colour, image[:, rows])
    road = label == ROAD
    bins = _across(scene, x)
    _markings(image, x, z, road, scene, cv.fields.mid[first:], bins)
    _paving(image, x, z, label == SIDEWALK, scene, cam.focal)
    light = scene.light
    shade = np.full(label.shape, light.face(0.0, 1.0, 0.0), np.float32)
    _wear(shade, x, z, scene, bins)
    for s in shadows:
        _darken(cv, shade, first, s, 1 - s.strength * (1 - light.sky), z_near=float(z[-1]))
    for s in contact:
        _darken(cv, shade, first, s, 0.45 * light.sky, z_near=float(z[-1]))
    image *= shade
    cv.label[first:] = label
    cv.image[:, first:] = image
    cv.depth[first:] = z[:, None]
    for side in scene.sides:
        _kerb_face(cv, scene, side)


def _clip_near(corners: np.ndarray, z_near: float) -> np.ndarray:
    """The part of a convex ground polygon (k, 2) with z >= z_near (Sutherland-Hodgman)."""
    if corners[:, 1].min() >= z_near:
        return corners
    out = []
    for p, q in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        p_in, q_in = p[1] >= z_near, q[1] >= z_near
        if p_in:
            out.append(p)
        if p_in != q_in:
            t = (z_near - p[1]) / (q[1] - p[1])
            out.append(p + t * (q - p))
    return np.array(out) if len(out) >= 3 else np.empty((0, 2))


def _darken(cv: Canvas, shade: np.ndarray, first: int, s: Shadow, factor: float,
            z_near: float) -> None:
    """Lower ``shade`` (the ground's light, rows from ``first``) to ``factor`` inside ``s``."""
    corners = _clip_near(s.corners, max(z_near * 0.9, 0.3))
    if not len(corners):
        return
    cam = cv.cam
    pts = np.array([cam.project(px, 0.0, pz) for px, pz in corners.tolist()], np.float32)
    hit = cv.polygon_mask(pts)
    if hit is None:
        return
    (rows, cols), mask = hit
    if rows.stop <= first:
        return
    start = max(rows.start, first)
    mask = mask[start - rows.start:]
    win = (slice(start, rows.stop), cols)
    if s.leafy:  # sun flecks through the leaves
        mask = mask & (cv.fields.detail[win] * 0.5 + cv.fields.mid[win] < 1.9)
    local = shade[start - first:rows.stop - first, cols]
    np.minimum(local, np.where(mask, _F(factor), _F(np.inf)), out=local)


def _across(scene: Scene, x: np.ndarray) -> np.ndarray:
    """Bins of 2 cm across the road for ``x`` (rows, W), clipped to the road's edges: profiles
    across the street are looked up in them, which is cheaper than computing them per pixel."""
    low, high = scene.road
    size = int((high - low) / _BIN) + 1
    bins = (x - _F(low)) * _F(1 / _BIN)
    np.clip(bins, 0, size - 1, out=bins)
    return bins.astype(np.int32)


_BIN = 0.02  # metres per bin of a profile across the road


def _wear(shade: np.ndarray, x: np.ndarray, z: np.ndarray, scene: Scene,
          bins: np.ndarray) -> None:
    """Asphalt wear, as light lost on ``shade``: a darker oily band along each lane's middle,
    repairs and manhole covers."""
    width = scene.road[1] - scene.road[0]
    lanes = max(round(width / 3.1), 1)
    across = scene.road[0] + (np.arange(int(width / _BIN) + 1) + 0.5) * _BIN
    profile = np.ones(len(across), np.float32)
    for k in range(lanes):
        c = scene.road[0] + (k + 0.5) * width / lanes
        profile -= 0.13 * np.maximum(1 - ((across - c) / 0.6) ** 2, 0).astype(np.float32)
    profile[[0, -1]] = 1  # beyond the road's edges
    shade *= np.take(profile, bins)
    for x0, x1, z0, z1, factor in scene.repairs:
        rows = (z > z0) & (z < z1)
        hit = (x[rows] > x0) & (x[rows] < x1)
        shade[rows] = np.where(hit, shade[rows] * _F(factor), shade[rows])
    for mx, mz in scene.manholes:
        rows = np.abs(z - mz) < 0.4
        r2 = (x[rows] - mx) ** 2 + (z[rows, None] - mz) ** 2
        cover = np.where(r2 < 0.09, _F(0.75), np.where(r2 < 0.13, _F(0.55), _F(1.0)))
        shade[rows] *= cover


def _markings(image: np.ndarray, x: np.ndarray, z: np.ndarray, road: np.ndarray,
              scene: Scene, mid: np.ndarray, bins: np.ndarray) -> None:
    """Lane lines, a zebra crossing and tram rails: worn paint on the road, still labelled road."""
    lines = scene.lanes
    paint = np.zeros(x.shape, bool)
    if lines:
        across = scene.road[0] + (np.arange(int((scene.road[1] - scene.road[0]) / _BIN) + 1)
                                  + 0.5) * _BIN
        which = np.full(len(across), len(lines), np.int32)  # len(lines): no line there
        for k, m in enumerate(lines):
            which[np.abs(across - m.x) < m.width / 2] = k
        on = np.zeros((len(lines) + 1, len(z)), bool)  # (line, row): painted there
        for k, m in enumerate(lines):
            on[k] = True if m.duty >= 1 else np.mod(z + m.phase, m.period) < m.duty * m.period
        if scene.crossing:
            on[:, (z > scene.crossing[0] - 0.5) & (z < scene.crossing[1] + 0.5)] = False
        flat = np.take(which, bins) * np.int32(len(z)) + np.arange(len(z), dtype=np.int32)[:, None]
        paint = np.take(on, flat) & road
    if scene.crossing:
        rows = (z > scene.crossing[0] - 4.5) & (z < scene.crossing[0] - 0.8)
        paint[rows] |= road[rows] & (np.mod(x[rows], 1.0) < 0.5)
    rows = np.nonzero(paint.any(axis=1))[0]
    if len(rows):
        sub = slice(rows[0], rows[-1] + 1)
        worn = (0.55 + 0.12 * np.clip(mid[sub], -1.5, 1.5)).astype(np.float32)
        np.copyto(image[:, sub], worn[None] * np.array([0.97, 1.0, 0.96], _F)[:, None, None],
                  where=paint[sub])
    if scene.rails is not None:
        for rail in (scene.rails - 0.72, scene.rails + 0.72):
            np.copyto(image, np.float32(0.4), where=road & (np.abs(x - rail) < 0.05))


_MOTTLE = np.random.default_rng(4).uniform(0.9, 1.1, 256).astype(np.float32)


def _paving(image: np.ndarray, x: np.ndarray, z: np.ndarray, sidewalk: np.ndarray, scene: Scene,
            focal: float) -> None:
    """Joints between paving slabs, only where they are at least eight pixels apart, and a
    tone from slab to slab."""
    slab = min(side.slab for side in scene.sides)
    near = np.nonzero(z < focal * slab / 8)[0]  # farther joints would alias into noise
    if not len(near):
        return
    sub = slice(near[0], None)  # the rows nearest the camera, at the bottom
    walk = sidewalk[sub]
    if not walk.any():
        return
    cells_x = x[sub] * _F(1 / slab)
    cells_z = z[sub, None] * _F(1 / slab)
    joint = (cells_x - np.floor(cells_x) < 0.02 / slab) | (cells_z - np.floor(cells_z) < 0.02 / slab)
    cell = (np.floor(cells_x).astype(np.int32) * 7 + np.floor(cells_z).astype(np.int32) * 131) & 255
    factor = np.where(joint, _F(0.7), np.take(_MOTTLE, cell))
    np.multiply(image[:, sub], factor, out=image[:, sub], where=walk)


def _kerb_face(cv: Canvas, scene: Scene, side: Side) -> None:
    """The kerb stone's face, a strip a hand high along the sidewalk's edge (labelled sidewalk)."""
    hit = _side_plane(cv, side.sign * side.kerb, 0.0, scene.z_end, 0.0, _KERB[1])
    if hit is None:
        return
    win, mask, z, _ = hit
    mask &= ~_hidden(cv, win, z, strict=True)
    shade = scene.light.face(-side.sign, 0.0, 0.0)
    colour = np.array([min(c * 1.1, 1.0) for c in side.paving], np.float32) * shade
    if scene.crossing:
        mask &= ~((z > scene.crossing[0]) & (z < scene.crossing[1]))
    cv.paint(win, mask, SIDEWALK, colour, z)


# --- façades --------------------------------------------------------------------------------------

def _side_plane(cv: Canvas, x_plane: float, z0: float, z1: float, y0: float,
                y1: float) -> tuple[Window, np.ndarray, np.ndarray, np.ndarray] | None:
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


#: Ground-floor kinds of a bay and upper-floor kinds; a bay's variant is ground * 2 + upper.
_GROUND_KINDS = ("window", "door", "shop")


def _bay_plan(b: Building, r: random.Random) -> np.ndarray:
    """Variant of each of 32 bays in a row: shops in runs, doors now and then, balconies."""
    plan: list[int] = []
    while len(plan) < 32:
        if b.shop and r.random() < 0.7:
            plan += [2] * r.randrange(2, 5) + [1]
        else:
            plan += [0] * r.randrange(2, 6) + [1]
    upper = [1 if b.balconies and (r.random() < 0.7) else 0 for _ in range(32)]
    return np.array([g * 2 + u for g, u in zip(plan[:32], upper, strict=True)], np.intp)


def _material(b: Building, v: np.ndarray, cols: int, r: random.Random) -> np.ndarray:
    """The bare wall of one bay: (rows, cols) brightness of the material's pattern."""
    rows = len(v)
    wall = np.ones((rows, cols), np.float32)
    if b.material == "brick":
        noise = np.random.default_rng(b.seed).random((rows, cols), dtype=np.float32)
        wall *= 0.86 + 0.22 * noise
        wall[np.mod(v, 0.3) < 0.1] *= 1.06
    elif b.material == "stone":
        course = r.uniform(0.4, 0.6)
        joint = np.mod(v, course) < 0.05
        wall[joint] *= 0.72
        stagger = (np.floor(v / course) % 2).astype(bool)
        wall[:, :1] = np.where(stagger[:, None], wall[:, :1] * 0.72, wall[:, :1])
        tone = np.random.default_rng(b.seed).random(int(v[-1] / course) + 2)
        wall *= (0.9 + 0.2 * tone[(v / course).astype(np.intp)])[:, None]
    elif b.material == "concrete":
        wall[np.mod(v - b.ground, b.floor) < 0.06] *= 0.65
        wall[:, :1] *= 0.7
        tone = np.random.default_rng(b.seed).random(64)
        storey = np.clip(np.floor((v - b.ground) / b.floor), 0, 63).astype(np.intp)
        wall *= (0.92 + 0.16 * tone[storey])[:, None]
    else:  # plaster: a band at every floor, dirtier toward the pavement
        wall[np.abs(np.mod(v - b.ground, b.floor)) < 0.12] *= 1.1
    wall *= (0.82 + 0.18 * np.minimum(v / 3.0, 1.0))[:, None]
    return wall


@dataclass(frozen=True, slots=True)
class _Atlas:
    """A building's bays as pictures of 0.1 m texels: the street level, one storey (the same on
    every floor above it) and the top (cornice, eaves and roof), stacked in that order."""

    planes: np.ndarray  # (4, variants * rows * cols): RGB reflectance, and 1 on window glass
    cols: int
    street: int  # texel rows of the street level
    storey: int  # texel rows of one storey
    top: float  # where the top part starts, metres above the pavement
    rows: int  # of the three parts together
    plan: np.ndarray  # the variant of each of 32 bays in a row

    def row(self, b: Building, v: np.ndarray) -> np.ndarray:
        """The texel row for heights ``v`` (metres) of the façade."""
        in_storey = np.mod(v - _F(b.ground), _F(b.floor)) * _F(self.storey / b.floor)
        row = np.where(v < b.ground, v * _F(1 / _TEXEL),
                       np.where(v < self.top, self.street + in_storey,
                                self.street + self.storey + (v - _F(self.top)) * _F(1 / _TEXEL)))
        return np.clip(row.astype(np.intp), 0, self.rows - 1)


def _facade_atlas(b: Building) -> _Atlas:
    """The variants of a bay that the building has (window, door or shop at street level, times
    windows or balconies above it), each as its street level, one storey and its top.

    Built from row and column profiles, one storey standing for all, so it costs little even for
    tall buildings.
    """
    r = random.Random(b.seed)
    cols = max(round(b.bay / _TEXEL), 2)
    centre = np.abs((np.arange(cols) + 0.5) / cols - 0.5)[None, :]  # 0 mid-bay, 0.5 at its edges
    street = max(math.ceil(b.ground / _TEXEL), 1)
    storey = max(round(b.floor / _TEXEL), 1)
    top0 = max(b.height - 1.0, b.ground)
    v_street = (np.arange(street) + 0.5) * _TEXEL
    fv = ((np.arange(storey) + 0.5) / storey)[:, None]  # height within the storey, 0..1
    v_top = top0 + (np.arange(max(math.ceil((b.height + b.roof - top0) / _TEXEL), 1)) + 0.5) * _TEXEL
    # the bare walls: darker toward the pavement, a plinth, a cornice with the eaves' shade below
    walls = [_material(b, v, cols, r)[None] * b.color[:, None, None]
             for v in (v_street, b.ground + fv[:, 0] * b.floor, v_top)]
    walls[0] = np.where((v_street < 0.45)[None, :, None], walls[0] * 0.7, walls[0])
    eaves = np.clip((b.height - v_top) / 0.7, 0, 1)[:, None]
    walls[2] = walls[2] * (0.55 + 0.45 * eaves)[None]
    cornice = ((v_top > b.height - 0.9) & (v_top < b.height - 0.75))[:, None]
    walls[2] = np.where(cornice[None], b.trim[:, None, None] * 1.1, walls[2])
    top_glass = np.zeros((len(v_top), cols), bool)
    if b.roof:
        walls[2], top_glass = _roof(b, walls[2], top_glass, v_top, centre)
    tone = b.glass[:, None, None] * (1.3 - 0.6 * fv)[None]  # the sky in the upper panes
    street_tone = b.glass[:, None, None] * (1.3 - 0.6 * v_street / b.ground)[None, :, None]
    plan = _bay_plan(b, random.Random(b.seed + 1))
    used = sorted(set(plan.tolist()))  # only the variants some bay has are drawn
    uppers = {u: _upper(b, r, walls[1], tone, fv, centre, u == 1) for u in {v % 2 for v in used}}
    levels = {g: _street(b, r, walls[0], street_tone, v_street, centre, _GROUND_KINDS[g])
              for g in {v // 2 for v in used}}
    rows = street + storey + len(v_top)
    planes = np.empty((4, len(used), rows, cols), np.float32)
    planes[:3, :, street + storey:] = walls[2][:, None]
    planes[3, :, street + storey:] = top_glass
    for k, variant in enumerate(used):
        (g_picture, g_glass), (u_picture, u_glass) = levels[variant // 2], uppers[variant % 2]
        planes[:3, k, :street], planes[3, k, :street] = g_picture, g_glass
        planes[:3, k, street:street + storey], planes[3, k, street:street + storey] = (u_picture,
                                                                                        u_glass)
    compact = np.searchsorted(np.array(used), plan)  # each bay's variant among those drawn
    return _Atlas(planes.reshape(4, -1), cols, street, storey, top0, rows, compact)


def _upper(b: Building, r: random.Random, wall: np.ndarray, glass_tone: np.ndarray,
           fv: np.ndarray, centre: np.ndarray, balcony: bool) -> tuple[np.ndarray, np.ndarray]:
    """One storey above the street: a window with its frame, sill and shaded recess, or a French
    window behind a balcony whose slab shades the wall below it."""
    half, head = b.win_w / 2, 0.22 + b.win_h
    sill_from = 0.02 if balcony else 0.22
    pane = (fv > sill_from) & (fv < head) & (centre < half)
    frame = (fv > sill_from - 0.04) & (fv < head + 0.04) & (centre < half + 0.035)
    sill = (fv > sill_from - 0.07) & (fv < sill_from - 0.02) & (centre < half + 0.06)
    under = (fv > sill_from - 0.13) & (fv <= sill_from - 0.07) & (centre < half + 0.05)
    reveal = pane & ((fv > head - 0.05) | (np.abs(centre - half) < 0.04))  # the recess's shade
    mullion = pane & (centre < 0.02) & (b.win_w * b.bay > 1.0)
    picture = np.where(frame[None], b.trim[:, None, None], wall)
    picture = np.where(sill[None], np.minimum(b.trim * 1.15, 1)[:, None, None], picture)
    picture = np.where(under[None], picture * 0.7, picture)
    picture = np.where(pane[None], glass_tone, picture)
    picture = np.where(reveal[None], picture * 0.6, picture)
    picture = np.where(mullion[None], b.trim[:, None, None] * 0.9, picture)
    pane &= ~mullion
    if balcony:  # a slab at floor level with a railing in front, and its shadow below
        rail = (fv < 0.3) & (centre < 0.46)
        slab = (fv < 0.04) & (centre < 0.48)
        below = (fv > 1 - 0.35 / b.floor) & (centre < 0.48)
        if r.random() < 0.4:  # a solid parapet
            rail_mask, railing = rail, b.trim * 0.9
        else:  # bars
            rail_mask = rail & (np.arange(centre.shape[1]) % 2 == 0)[None, :]
            railing = np.array([0.07, 0.07, 0.08])
        picture = np.where(below[None], picture * 0.55, picture)
        picture = np.where(rail_mask[None], railing[:, None, None], picture)
        picture = np.where(slab[None], np.minimum(b.trim * 1.1, 1)[:, None, None], picture)
        pane &= ~rail_mask & ~slab
    return picture, pane


def _street(b: Building, r: random.Random, wall: np.ndarray, glass_tone: np.ndarray,
            v: np.ndarray, centre: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The street level of a bay (rows below the first floor): a window, a door or a shop."""
    picture = wall.copy()
    street = np.ones((len(v), 1), bool)
    if kind == "window":
        half = b.win_w / 2
        low = (v > 0.9)[:, None] & (v < b.ground - 0.5)[:, None] & (centre < half)
        picture = np.where(low[None], glass_tone * 0.9, picture)
        return picture, low
    if kind == "door":
        width = r.uniform(0.16, 0.24)
        door = (v > 0.1)[:, None] & (v < 2.3)[:, None] & (centre < width)
        door_frame = (v < 2.4)[:, None] & (centre < width + 0.04)
        wood = np.array(r.choice([(0.1, 0.07, 0.05), (0.05, 0.05, 0.06), (0.2, 0.14, 0.09)]))
        picture = np.where(door_frame[None], b.trim[:, None, None] * 0.8, picture)
        picture = np.where(door[None], wood[:, None, None], picture)
        step = (v < 0.12)[:, None] & (centre < width + 0.08)
        picture = np.where(step[None], np.array([0.4, 0.4, 0.38])[:, None, None], picture)
        return picture, np.zeros(door.shape, bool)
    return _shop(b, picture, v, centre, street)


def _shop(b: Building, picture: np.ndarray, v: np.ndarray, centre: np.ndarray,
          street: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A shop front: a wide window between pillars, a sign with letters above it, maybe an awning
    whose shade falls on the window."""
    rs = random.Random(b.seed ^ 0x5A5A)  # the same sign and awning on every shop bay
    sign_colour = np.array(rs.choice(SIGNAGE))
    letters_colour = np.array((0.75, 0.75, 0.72) if sign_colour.mean() < 0.4 else (0.05,) * 3)
    cols = centre.shape[1]
    top = b.ground - 0.85
    window = street & (v > 0.35)[:, None] & (v < top)[:, None] & (centre < 0.44)
    inside = np.array([0.05, 0.05, 0.055]) * rs.uniform(0.8, 2.0)
    goods = 1 + 0.8 * np.sin(np.arange(cols) * 1.7)[None, :] * (v < 1.6)[:, None]  # shelves
    picture = np.where(window[None], inside[:, None, None] * goods[None], picture)
    fascia = street & (v > b.ground - 0.8)[:, None] & (v < b.ground - 0.2)[:, None]
    picture = np.where(fascia[None], sign_colour[:, None, None], picture)
    letters = (fascia & (v > b.ground - 0.65)[:, None] & (v < b.ground - 0.35)[:, None]
               & (np.arange(cols) % 3 != 0)[None, :] & (centre < 0.38))
    picture = np.where(letters[None], letters_colour[:, None, None], picture)
    if rs.random() < 0.5:  # an awning over the window, striped or plain
        awning = street & (v > top - 0.55)[:, None] & (v < top)[:, None]
        colour = np.array(rs.choice(SIGNAGE))
        stripes = np.arange(cols) % 6 < 3 if rs.random() < 0.5 else np.ones(cols, bool)
        cloth = np.where(stripes[None, :], colour[:, None], np.array([0.6, 0.6, 0.57])[:, None])
        picture = np.where(awning[None], cloth[:, None, :], picture)
        shade = street & (v > top - 1.5)[:, None] & (v <= top - 0.55)[:, None]
        picture = np.where(shade[None], picture * 0.5, picture)
        window &= ~awning
    return picture, window


def _roof(b: Building, picture: np.ndarray, glass: np.ndarray, v: np.ndarray,
          centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A steep tiled roof above the eaves, with a dormer window in every bay."""
    roof = (v >= b.height)[:, None]
    rise = np.clip((v - b.height) / max(b.roof, 0.1), 0, 1)[:, None]
    tiles = np.where(np.mod(v, 0.3) < 0.06, 0.75, 1.0)[:, None] * (0.85 + 0.3 * rise)
    colour = b.roof_color[:, None, None] * tiles[None]
    picture = np.where(roof[None], colour, picture)
    dormer = roof & (rise > 0.25) & (rise < 0.7) & (centre < 0.16)
    cheek = roof & (rise > 0.2) & (rise < 0.78) & (centre < 0.22)
    picture = np.where(cheek[None], b.trim[:, None, None] * 0.8, picture)
    picture = np.where(dormer[None], b.glass[:, None, None] * 1.3, picture)
    return picture, glass | dormer


_WINDOWS = np.random.default_rng(22).uniform(0.45, 1.9, 64).astype(np.float32)
_WINDOWS[::9] = 3.5  # now and then a pane that mirrors the bright sky


def _facade(b: Building, u: np.ndarray, v: np.ndarray, light: float,
            pipes: bool = True) -> np.ndarray:
    """Façade colours (3, h, w) at wall coordinates u (along the wall) and v (up), in metres,
    in ``light``; with ``pipes``, downpipes at the building's two ends (u = z0 and z1)."""
    atlas = _facade_atlas(b)
    bay = np.floor((u - b.u0) / b.bay).astype(np.intp)  # (1|h, w)
    cols = atlas.cols
    ui = np.minimum((np.mod(u - b.u0, b.bay) * (cols / b.bay)).astype(np.intp), cols - 1)
    variant = np.take(atlas.plan, np.mod(bay, len(atlas.plan)))
    index = (variant * atlas.rows + atlas.row(b, v)) * cols + ui
    picture = np.take(atlas.planes, index, axis=1)  # (4, h, w)
    storey = np.floor((v - b.ground) / b.floor).astype(np.intp)
    window = np.take(_WINDOWS, np.mod(bay * 7 + storey * 13, len(_WINDOWS)))
    colour = picture[:3] * (1 + picture[3] * (window - 1))
    if pipes:
        pipe = (np.abs(u - b.z0 - 0.25) < 0.06) | (np.abs(u - b.z1 + 0.25) < 0.06)
        colour = np.where(pipe & (v < b.height), _F(0.14), colour)
    colour *= _F(light)
    return colour


def draw_far(cv: Canvas, scene: Scene) -> None:
    """The buildings and trees across the end of the street, and the back rows on both sides.

    They are drawn behind what is there already (depth test), so hidden ones cost little.
    """
    light = scene.light
    for side in scene.sides:
        lit = light.face(-side.sign, 0.0, 0.0) * 0.95
        for b in side.back:
            _side_wall(cv, side.sign * (side.facade + side.back_offset), b, lit, behind=True)
    far_lit = light.face(0.0, 0.0, -1.0)
    for item in scene.far:
        if isinstance(item, FarTrees):
            r = random.Random(item.seed)
            blobs = [(item.x + r.uniform(-0.5, 0.5) * item.width,
                      item.height * r.uniform(0.4, 0.8), item.width * r.uniform(0.2, 0.4),
                      item.height * r.uniform(0.3, 0.5)) for _ in range(5)]
            foliage(Sprite(cv, 0.0, scene.z_end), blobs, np.array(r.choice(GREENS)), light,
                    behind=True)
        else:
            _frontal_wall(cv, item.building, scene.z_end, item.x0, item.x1, far_lit, behind=True)


def _hidden(cv: Canvas, win: Window, depth: Any, strict: bool = False) -> np.ndarray:
    """Where something at ``depth`` is behind what is drawn already (the sky, depth 0, is not)."""
    drawn = cv.depth[win]
    return (drawn > 0) & ((drawn < depth) if strict else (drawn <= depth))


def _frontal_wall(cv: Canvas, b: Building, z: float, x0: float, x1: float, shade: float,
                  behind: bool = False) -> None:
    """A building wall facing the camera at depth z between x0 and x1 (end walls, far rows).

    With ``behind`` it only fills what is farther away than z.
    """
    cam = cv.cam
    (c0, r1), (c1, r0) = cam.project(x0, 0.0, z), cam.project(x1, b.height + b.roof, z)
    win = cv.window(min(c0, c1), r0, max(c0, c1), r1)
    if win is None:
        return
    mask = ~_hidden(cv, win, z) if behind else None
    if mask is not None and not mask.any():
        return
    xs, ys = cv.coords(win)
    u = np.abs(xs - cam.cx) * z / cam.focal
    v = cam.cam_h - (ys - cam.horizon) * z / cam.focal
    cv.paint(win, mask, BUILDING, _facade(b, u, v, shade, pipes=False), z)


def draw_side(cv: Canvas, scene: Scene, side: Side) -> None:
    """One side's buildings, far to near, with end walls where a gap shows them."""
    light = scene.light
    lit = light.face(-side.sign, 0.0, 0.0)
    opposite = scene.sides[1 if side.sign < 0 else 0]
    for b in sorted(side.buildings, key=lambda b: -b.z0):
        _side_wall(cv, side.sign * side.facade, b, lit, across=(opposite, side))
    end_lit = light.face(0.0, 0.0, -1.0) * 0.9
    reached = -math.inf  # how far along the street the previous building ended
    for b in sorted(side.buildings, key=lambda b: b.z0):
        if b.z0 > max(reached + 0.5, 0.5):  # a gap in front: the end wall shows
            x0 = side.sign * side.facade
            _frontal_wall(cv, b, b.z0, x0, x0 + side.sign * b.depth, end_lit)
        reached = b.z1


def _shade_line(light: Light, opposite: Side, side: Side, z: np.ndarray) -> np.ndarray | None:
    """On a sunlit façade, the height (1, w) below which the opposite row's shadow falls."""
    if not light.sunny or side.sign * light.sun[0] <= 0 or not opposite.buildings:
        return None
    across = (opposite.facade + side.facade) / abs(light.sun[0])  # metres the sun climbs over
    source = z - light.sun[1] * across  # where along the opposite row its ray passes
    heights = np.zeros_like(z)
    for b in opposite.buildings:
        np.copyto(heights, _F(b.height + 0.5 * b.roof), where=(source >= b.z0) & (source < b.z1))
    return heights - across


def _side_wall(cv: Canvas, x_plane: float, b: Building, shade: float, behind: bool = False,
               across: tuple[Side, Side] | None = None) -> None:
    """A building's façade along the street; with ``behind`` only where nothing nearer is;
    ``across`` (the opposite side, this side) casts the opposite row's shadow on it."""
    hit = _side_plane(cv, x_plane, b.z0, b.z1, 0.0, b.height + b.roof)
    if hit is None:
        return
    win, mask, z, y = hit
    if b.roof:  # the roof's outline: it rises from the eaves toward the middle of the building
        mask &= (y < b.height) | (np.minimum(z - b.z0, b.z1 - z) > (y - b.height) * 0.6)
    if behind:
        mask &= ~_hidden(cv, win, z)
        if not mask.any():
            return
    colour = _facade(b, z, y, shade)
    if across is not None:
        line = _shade_line(cv.light, *across, z)
        if line is not None:
            colour = np.where(y < line, colour * _F(cv.light.shaded() / shade), colour)
    cv.paint(win, mask, BUILDING, colour, z)


# --- along the building line ------------------------------------------------------------------

def draw_edge(cv: Canvas, edge: Edge) -> None:
    """A wall, fence or hedge along the street, hidden by whatever stands in front of it.

    Edges run past many objects, so they are drawn after them with a depth test instead of in
    the painter's order.
    """
    r = random.Random(edge.seed)
    hit = _side_plane(cv, edge.x, edge.z0, edge.z1, 0.0, edge.height + 0.3)
    if hit is None:
        return
    win, mask, z, y = hit
    mask = mask & ~_hidden(cv, win, z)
    kind, top = edge.kind, edge.height
    lit = cv.light.face(-math.copysign(1.0, edge.x), 0.0, 0.0)
    if kind == "hedge":
        mask = mask & (y < top + 0.2 * cv.fields.detail[win])
        green = np.array(r.choice(GREENS), np.float32) * lit
        leaves = cv.fields.detail[win] * 0.25 + cv.fields.mid[win] * 0.15
        shade = 0.55 + leaves + 0.25 * np.clip(y / top, 0, 1)
        cv.paint(win, mask, VEGETATION, green[:, None, None] * shade, z)
    elif kind == "wall":
        colour = np.array(r.choice(WALL_COLOURS), np.float32) * lit
        cap = np.where(y > top - 0.12, np.float32(1.2), np.float32(1.0))
        stains = 1 + 0.1 * cv.fields.mid[win]
        cv.paint(win, mask & (y < top), WALL, colour[:, None, None] * (cap * stains), z)
    else:
        _fence(cv, win, mask & (y < top), z, y, top, r, lit)


def _fence(cv: Canvas, win: Window, mask: np.ndarray, z: np.ndarray, y: np.ndarray,
           top: float, r: random.Random, lit: float) -> None:
    """Bars and rails; the background shows between the bars, which are still labelled fence."""
    colour = np.array(((0.1, 0.12, 0.1), (0.2, 0.2, 0.21), (0.28, 0.2, 0.13))[r.randrange(3)],
                      np.float32) * lit
    spacing = r.uniform(0.12, 0.25)
    bar = (np.mod(z, spacing) < spacing * 0.35) | (y > top - 0.1) | (np.abs(y - 0.25) < 0.05)
    cv.paint(win, mask, FENCE, None, z)
    cv.paint(win, mask & bar, None, colour, None)
    cv.shade(win, mask & ~bar, 0.75)


def foliage(sp: Sprite, blobs: Sequence[tuple[float, float, float, float]],
            green: np.ndarray, light: Light, behind: bool = False) -> None:
    """A tree crown: overlapping ellipses (u, v, ru, rv) with a leafy outline, clumps of leaves
    lit from the sun's side and darker inside and below.

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
    leaves, clumps = cv.fields.detail[win], cv.fields.mid[win]
    mask = crown + 0.1 * leaves > 0.08  # a leafy but not ragged outline, as annotators draw it
    if behind:
        mask &= ~_hidden(cv, win, sp.depth)
    xs, ys = cv.coords(win)
    left, right = min(b[0] - b[2] for b in boxes), max(b[0] + b[2] for b in boxes)
    across = (xs - left) / max(right - left, 1.0) * 2 - 1  # -1 at the crown's left, +1 right
    sunward = across * _F(-light.sun_side) if light.sunny else _F(0.0)
    depth = np.clip(crown, 0, 1)
    top_row = min(b[1] - b[3] for b in boxes)
    below = np.clip((ys - top_row) / max(rows.stop - top_row, 1.0), 0, 1)
    shade = (0.5 + 0.3 * depth + 0.2 * leaves + 0.22 * clumps - 0.3 * below
             + (0.28 * sunward if light.sunny else 0.0))
    shade = np.maximum(shade, 0.12) * _F(light.face(0.0, 0.6, -0.8))
    hue = np.stack([1 + 0.12 * clumps, np.ones_like(clumps), 1 - 0.1 * clumps])
    cv.paint(win, mask, VEGETATION, green[:, None, None] * hue * shade, sp.depth)
