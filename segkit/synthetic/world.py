"""Rasterising the world: sky, ground with its markings and shadows, façades, the far row, walls,
fences and hedges, and tree crowns (which the objects' trees share).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from segkit.synthetic.camera import Camera, Canvas, Sprite, Window
from segkit.synthetic.palette import (
    BUILDING,
    CAR_COLOURS,
    FENCE,
    GREENS,
    GROUND,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    VEGETATION,
    WALL,
    WALL_COLOURS,
    Colour,
)
from segkit.synthetic.scene import Building, Edge, FarTrees, Light, Scene, Side

_TEXEL = 0.1  # metres per façade texel
_LIGHTER, _SAME = np.float32(1.15), np.float32(1.0)


def draw_sky(cv: Canvas, scene: Scene) -> None:
    """Overcast white-grey or blue sky with clouds, lighter toward the horizon."""
    cam = cv.cam
    rows = min(math.floor(cam.horizon) + 1, cam.height)  # the ground covers the rows below
    t = np.clip((np.arange(rows, dtype=np.float32) + 0.5) / max(cam.horizon, 1.0), 0, 1)
    if scene.light.clear_sky:
        top, low = np.array([0.42, 0.58, 0.82], np.float32), np.array([0.75, 0.82, 0.88], np.float32)
    else:
        top, low = np.array([0.72, 0.76, 0.8], np.float32), np.array([0.86, 0.88, 0.9], np.float32)
    sky = top[:, None, None] + (low - top)[:, None, None] * t[:, None]  # (3, rows, 1)
    cloud = np.clip(cv.fields.low[:rows] * 0.35 + cv.fields.detail[:rows] * 0.04 + 0.1, 0, 1)
    cv.image[:, :rows] = sky + (np.float32(0.93) - sky) * (cloud * np.float32(0.7))
    cv.label[:] = SKY


def _ground_zones(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Strips across the street from left to right: x boundaries, label ids, colours, road index."""
    def strips(side: Side) -> list[tuple[float, int, Colour]]:
        kerb_stone = tuple(min(c * 1.2, 1.0) for c in side.paving)
        return [(side.parking, side.parking_label, (0.4, 0.39, 0.38)),
                (0.25, SIDEWALK, kerb_stone), (side.sidewalk - 0.25, SIDEWALK, side.paving),
                (side.verge, TERRAIN, (0.33, 0.38, 0.2)),
                (math.inf, TERRAIN if side.park else GROUND, (0.42, 0.4, 0.36))]

    left, right = (strips(side) for side in scene.sides)
    outer_left = abs(scene.road[0]) + np.cumsum([w for w, _, _ in left[:-1]])
    outer_right = scene.road[1] + np.cumsum([w for w, _, _ in right[:-1]])
    bounds = np.concatenate([-outer_left[::-1], scene.road, outer_right])
    asphalt = (scene.asphalt, scene.asphalt * 1.01, scene.asphalt * 1.04)
    zones = [*left[::-1], (0.0, ROAD, asphalt), *right]
    ids = np.array([z[1] for z in zones], np.uint8)
    colours = np.array([z[2] for z in zones], np.float32)
    return bounds, ids, colours, len(left)


def draw_ground(cv: Canvas, scene: Scene) -> None:
    """Road, parking, kerbs, sidewalks and verges, with markings, paving and building shadows."""
    cam = cv.cam
    first = min(math.floor(cam.horizon) + 1, cam.height)
    d = np.arange(first, cam.height, dtype=np.float32) + 0.5 - cam.horizon
    z = cam.focal * cam.cam_h / d  # (n,) depth of each row
    x = (np.arange(cam.width, dtype=np.float32) + 0.5 - cam.cx)[None, :] * (cam.cam_h / d)[:, None]
    bounds, ids, colours, road_zone = _ground_zones(scene)
    zone = np.searchsorted(bounds, x)
    if scene.crossing:
        zone[(z > scene.crossing[0]) & (z < scene.crossing[1])] = road_zone
    label, image = np.take(ids, zone), np.take(colours.T, zone, axis=1)  # image (3, rows, W)
    for patch in scene.patches:
        rows = (z > patch.z[0]) & (z < patch.z[1])
        hit = (x[rows] > patch.x[0]) & (x[rows] < patch.x[1])
        label[rows] = np.where(hit, patch.label, label[rows])
        colour = np.array(patch.color, np.float32)[:, None, None]
        image[:, rows] = np.where(hit, colour, image[:, rows])
    road = label == ROAD
    _markings(image, x, z, road, scene)
    _paving(image, x, z, label == SIDEWALK, cam)
    _building_shadows(image, x, z, scene)
    cv.label[first:] = label
    cv.image[:, first:] = image
    cv.depth[first:] = z[:, None]


def _markings(image: np.ndarray, x: np.ndarray, z: np.ndarray, road: np.ndarray,
              scene: Scene) -> None:
    """Lane lines, a zebra crossing and tram rails: paint on the road, still labelled road."""
    paint = np.array([0.8, 0.8, 0.78], np.float32)[:, None]
    open_road = road.copy()
    if scene.crossing:
        open_road[(z > scene.crossing[0] - 0.5) & (z < scene.crossing[1] + 0.5)] = False
    for m in scene.lanes:
        hit = open_road & (np.abs(x - m.x) < m.width / 2)
        if m.duty < 1:
            hit &= (np.mod(z + m.phase, m.period) < m.duty * m.period)[:, None]
        np.copyto(image, paint[..., None], where=hit)
    if scene.crossing:
        rows = (z > scene.crossing[0] - 4.5) & (z < scene.crossing[0] - 0.8)
        stripes = road[rows] & (np.mod(x[rows], 1.0) < 0.5)
        image[:, rows] = np.where(stripes, paint[..., None], image[:, rows])
    if scene.rails is not None:
        for rail in (scene.rails - 0.72, scene.rails + 0.72):
            np.copyto(image, np.float32(0.55), where=road & (np.abs(x - rail) < 0.05))


def _paving(image: np.ndarray, x: np.ndarray, z: np.ndarray, sidewalk: np.ndarray,
            cam: Camera) -> None:
    """Joints between paving slabs, only where they are at least a dozen pixels apart."""
    slab = 0.4
    near = z < cam.focal * slab / 12  # farther joints would alias into noise
    rows, cols = np.nonzero(sidewalk & near[:, None])  # sidewalks are a small part of the ground
    joint = (np.mod(x[rows, cols], slab) < 0.03) | (np.mod(z[rows], slab) < 0.03)
    rows, cols = rows[joint], cols[joint]
    image[:, rows, cols] *= np.float32(0.82)


def _building_shadows(image: np.ndarray, x: np.ndarray, z: np.ndarray, scene: Scene) -> None:
    """On sunny days the buildings on the sun's side shade part of the street."""
    light = scene.light
    if not light.sunny:
        return
    side = scene.sides[0 if light.sun_side < 0 else 1]
    heights = np.zeros_like(z)
    for b in side.buildings:
        heights[(z >= b.z0) & (z < b.z1)] = b.height
    reach = side.facade - heights * light.shadow  # |x| where the shadow ends, per row
    shadow = side.sign * x > reach[:, None]
    np.multiply(image, np.float32(0.5), out=image, where=shadow)


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


def _facade_atlas(b: Building, shade: float) -> np.ndarray:
    """One bay of a façade, pavement to roof, as a picture of 0.1 m texels.

    Returns colour planes (3, rows * columns), rows counted up from the pavement. Built from row
    and column profiles, so it costs little even for tall buildings.
    """
    r = random.Random(b.seed)
    cols = max(round(b.bay / _TEXEL), 1)
    centre = np.abs((np.arange(cols) + 0.5) / cols - 0.5)[None, :]  # 0 mid-bay, 0.5 at its edges
    v = (np.arange(max(math.ceil(b.height / _TEXEL), 1)) + 0.5) * _TEXEL
    level = (v - b.ground) / b.floor
    storey = np.floor(level)
    fv = level - storey  # height within the storey, 0..1
    upper = (v > b.ground) & (v < b.height - 1.0)
    half, top = b.win_w / 2, 0.25 + b.win_h
    glass = (upper & (fv > 0.25) & (fv < top))[:, None] & (centre < half)
    frame = (upper & (fv > 0.2) & (fv < top + 0.05))[:, None] & (centre < half + 0.05)
    # roof band, a cornice at every storey, and grime near the pavement
    rows = (np.where(v > b.height - 0.5, 0.75, 1.0) * np.where(fv < 0.04, 0.9, 1.0)
            * (0.85 + 0.15 * np.minimum(v / 2.0, 1.0)))
    wall = rows[:, None] * b.color  # (rows, 3)
    if b.shop:
        glass |= ((v > 0.3) & (v < b.ground - 0.7))[:, None] & (centre < 0.42)
        wall[(v > b.ground - 0.6) & (v < b.ground - 0.25)] = r.choice(CAR_COLOURS)
    # each storey's panes reflect differently (sky, curtains, a lamp inside)
    panes = np.array([r.uniform(0.5, 1.7) for _ in range(int(storey[-1]) + 2)])
    glazing = b.glass[:, None] * (panes[storey.astype(int) + 1] + 0.6 * (fv - 0.25))
    wall = np.ascontiguousarray(wall.T * shade, np.float32)  # (3, rows)
    atlas = wall[..., None] * np.where(frame, _LIGHTER, _SAME)
    np.copyto(atlas, (glazing * shade)[..., None], where=glass, casting="same_kind")
    return atlas.reshape(3, -1)


def _facade(b: Building, u: np.ndarray, v: np.ndarray, shade: float) -> np.ndarray:
    """Façade colours (3, h, w) at wall coordinates u (along the wall) and v (up), in metres."""
    atlas = _facade_atlas(b, shade)
    cols = max(round(b.bay / _TEXEL), 1)  # as in the atlas
    rows = atlas.shape[1] // cols
    ui = np.minimum((np.mod(u - b.u0, b.bay) * (cols / b.bay)).astype(np.intp), cols - 1)
    vi = np.clip((v * (1 / _TEXEL)).astype(np.intp), 0, rows - 1)
    return np.take(atlas, vi * cols + ui, axis=1)


def draw_far(cv: Canvas, scene: Scene) -> None:
    """The buildings and trees across the end of the street, and the back rows on both sides.

    They are drawn behind what is there already (depth test), so hidden ones cost little.
    """
    light = scene.light
    for side in scene.sides:
        lit = _sunlit(light, side) * 0.95
        for b in side.back:
            _side_wall(cv, side.sign * (side.facade + side.back_offset), b, lit, behind=True)
    for item in scene.far:
        if isinstance(item, FarTrees):
            r = random.Random(item.seed)
            blobs = [(item.x + r.uniform(-0.5, 0.5) * item.width,
                      item.height * r.uniform(0.4, 0.8), item.width * r.uniform(0.2, 0.4),
                      item.height * r.uniform(0.3, 0.5)) for _ in range(5)]
            foliage(Sprite(cv, 0.0, scene.z_end), blobs, np.array(r.choice(GREENS)),
                    behind=True)
        else:
            _frontal_wall(cv, item.building, scene.z_end, item.x0, item.x1, 0.9, behind=True)


def _hidden(cv: Canvas, win: Window, depth: Any) -> np.ndarray:
    """Where something at ``depth`` is behind what is drawn already (the sky, depth 0, is not)."""
    drawn = cv.depth[win]
    return (drawn > 0) & (drawn <= depth)


def _frontal_wall(cv: Canvas, b: Building, z: float, x0: float, x1: float, shade: float,
                  behind: bool = False) -> None:
    """A building wall facing the camera at depth z between x0 and x1 (end walls, far rows).

    With ``behind`` it only fills what is farther away than z.
    """
    cam = cv.cam
    (c0, r1), (c1, r0) = cam.project(x0, 0.0, z), cam.project(x1, b.height, z)
    win = cv.window(min(c0, c1), r0, max(c0, c1), r1)
    if win is None:
        return
    mask = ~_hidden(cv, win, z) if behind else None
    if mask is not None and not mask.any():
        return
    xs, ys = cv.coords(win)
    u = np.abs(xs - cam.cx) * z / cam.focal
    v = cam.cam_h - (ys - cam.horizon) * z / cam.focal
    cv.paint(win, mask, BUILDING, _facade(b, u, v, shade), z)


def _sunlit(light: Light, side: Side) -> float:
    """Brightness of one side's façades: lit or in shade on sunny days."""
    if not light.sunny:
        return 1.0
    return 1.15 if light.sun_side != side.sign else 0.7


def draw_side(cv: Canvas, scene: Scene, side: Side) -> None:
    """One side's buildings, far to near, with end walls where a gap shows them."""
    lit = _sunlit(scene.light, side)
    for b in sorted(side.buildings, key=lambda b: -b.z0):
        _side_wall(cv, side.sign * side.facade, b, lit)
    reached = -math.inf  # how far along the street the previous building ended
    for b in sorted(side.buildings, key=lambda b: b.z0):
        if b.z0 > max(reached + 0.5, 0.5):  # a gap in front: the end wall shows
            x0 = side.sign * side.facade
            _frontal_wall(cv, b, b.z0, x0, x0 + side.sign * b.depth, 0.85)
        reached = b.z1


def _side_wall(cv: Canvas, x_plane: float, b: Building, shade: float, behind: bool = False) -> None:
    """A building's façade along the street; with ``behind`` only where nothing nearer is."""
    hit = _side_plane(cv, x_plane, b.z0, b.z1, 0.0, b.height)
    if hit is None:
        return
    win, mask, z, y = hit
    if behind:
        mask &= ~_hidden(cv, win, z)
        if not mask.any():
            return
    cv.paint(win, mask, BUILDING, _facade(b, z, y, shade), z)


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
    if kind == "hedge":
        mask = mask & (y < top + 0.2 * cv.fields.detail[win])
        green = np.array(r.choice(GREENS), np.float32)
        shade = 0.6 + 0.15 * cv.fields.detail[win] + 0.2 * np.clip(y / top, 0, 1)
        cv.paint(win, mask, VEGETATION, green[:, None, None] * shade, z)
    elif kind == "wall":
        colour = np.array(r.choice(WALL_COLOURS), np.float32) * 0.85
        cap = np.where(y > top - 0.12, np.float32(1.15), np.float32(1.0))
        colour = colour[:, None, None]
        cv.paint(win, mask & (y < top), WALL, colour * cap, z)
    else:
        _fence(cv, win, mask & (y < top), z, y, top, r)


def _fence(cv: Canvas, win: Window, mask: np.ndarray, z: np.ndarray, y: np.ndarray,
           top: float, r: random.Random) -> None:
    """Bars and rails; the background shows between the bars, which are still labelled fence."""
    colour = np.array(((0.22, 0.25, 0.22), (0.35, 0.35, 0.36), (0.45, 0.36, 0.26))[r.randrange(3)],
                      np.float32)
    spacing = r.uniform(0.12, 0.25)
    bar = (np.mod(z, spacing) < spacing * 0.35) | (y > top - 0.1) | (np.abs(y - 0.25) < 0.05)
    cv.paint(win, mask, FENCE, None, z)
    cv.paint(win, mask & bar, None, colour, None)
    cv.shade(win, mask & ~bar, 0.75)


def foliage(sp: Sprite, blobs: Sequence[tuple[float, float, float, float]],
            green: np.ndarray, behind: bool = False) -> None:
    """A tree crown: overlapping ellipses (u, v, ru, rv) with a leafy, noisy outline.

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
    leaves = cv.fields.detail[win]
    mask = crown + 0.1 * leaves > 0.08  # a leafy but not ragged outline, as annotators draw it
    if behind:
        mask &= ~_hidden(cv, win, sp.depth)
    shade = 0.55 + 0.35 * np.clip(crown, 0, 1) + 0.18 * leaves
    cv.paint(win, mask, VEGETATION, green[:, None, None] * shade, sp.depth)
