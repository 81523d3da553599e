"""Drawing the objects in the street, each from its own seed: trees, lamps, poles, signs, traffic
lights, street furniture, people, riders and vehicles.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from segkit.synthetic.camera import ELLIPSE, Batch, Camera, Canvas, Sprite, sub_quad, world_polygon
from segkit.synthetic.palette import (
    BICYCLE,
    BUS,
    CAR,
    CAR_COLOURS,
    CLOTHES,
    DYNAMIC,
    GREENS,
    LIGHT,
    MOTORCYCLE,
    PERSON,
    POLE,
    RIDER,
    SIGN,
    SKIN,
    STATIC,
    TRAIN,
    TRUCK,
    VEGETATION,
    WALL_COLOURS,
)
from segkit.synthetic.scene import Item, Lamp, Sign, TrafficLight, Tree, TwoWheeler, Vehicle
from segkit.synthetic.world import foliage


def _grey(r: random.Random, low: float, high: float) -> np.ndarray:
    """A neutral grey with a slight random cast."""
    grey = r.uniform(low, high)
    return np.array([min(grey * r.uniform(0.95, 1.05), 1.0) for _ in range(3)])


def _draw_tree(cv: Canvas, p: Tree) -> None:
    """A street or park tree: trunk and a crown of leaves, all vegetation."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    radius, trunk = p.radius, p.trunk
    width = r.uniform(0.2, 0.4)
    (x0, y1), (x1, y0) = sp.at(-width / 2, 0), sp.at(width / 2, trunk + radius * 0.6)
    win = cv.cover(x0, y0, x1, y1)
    if win is not None:
        cv.paint(win, None, VEGETATION, _grey(r, 0.18, 0.3), sp.depth)
    blobs = [(r.gauss(0, 0.4) * radius, trunk + radius * (0.95 + r.gauss(0, 0.25)),
              radius * r.uniform(0.45, 0.75), radius * r.uniform(0.4, 0.7))
             for _ in range(r.randrange(5, 9))]
    green = np.array(r.choice(GREENS)) * r.uniform(0.85, 1.15)
    foliage(sp, blobs, green.astype(np.float32))


def _draw_lamp(cv: Canvas, p: Lamp) -> None:
    """A street lamp: a tall tapered pole with an arm over the road."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    height, width, arm = r.uniform(6, 9), r.uniform(0.12, 0.2), p.arm
    colour = _grey(r, 0.3, 0.55) if r.random() < 0.7 else np.array([0.2, 0.26, 0.22])
    sp.poly([(-width / 2, 0), (width / 2, 0), (width * 0.3, height), (-width * 0.3, height)],
            POLE, colour)
    reach = r.uniform(1.0, 2.2)
    sp.limb((0, height - 0.1), (arm * reach, height + 0.3), 0.08, POLE, colour)
    sp.rect(arm * (reach - 0.4), height + 0.12, arm * (reach + 0.35), height + 0.38, POLE,
            colour * 0.8)
    sp.draw()


def _draw_pole(cv: Canvas, p: Item) -> None:
    """A bare pole or post."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    height, width = r.uniform(1.0, 5.0), r.uniform(0.08, 0.16)
    sp.rect(-width / 2, 0, width / 2, height, POLE, _grey(r, 0.3, 0.6))
    sp.draw()


def _draw_sign(cv: Canvas, p: Sign) -> None:
    """A traffic sign on a thin pole: round, triangular or square plates; the back is grey."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    h = r.uniform(2.2, 3.2)
    sp.rect(-0.035, 0, 0.035, h + 0.3, POLE, _grey(r, 0.4, 0.6))
    back = p.back and r.random() < 0.7
    plain = _grey(r, 0.45, 0.6)
    red, white, blue = (0.7, 0.1, 0.1), (0.85, 0.85, 0.85), (0.1, 0.25, 0.6)
    shape = r.randrange(4)
    if shape == 0:
        sp.ellipse(0, h, 0.32, 0.32, SIGN, plain if back else red)
        if not back:
            sp.ellipse(0, h, 0.24, 0.24, SIGN, white if r.random() < 0.7 else blue)
    elif shape == 1:
        sp.poly([(-0.42, h - 0.3), (0.42, h - 0.3), (0, h + 0.42)], SIGN, plain if back else red)
        if not back:
            sp.poly([(-0.3, h - 0.23), (0.3, h - 0.23), (0, h + 0.28)], SIGN, white)
    else:
        colour = np.array((blue, (0.85, 0.7, 0.1), white)[r.randrange(3)])
        w = 0.3 if shape == 2 else r.uniform(0.4, 0.7)
        sp.rect(-w, h - 0.3, w, h + 0.3, SIGN, plain if back else colour)
        if not back:
            sp.rect(-w + 0.05, h - 0.25, w - 0.05, h + 0.25, SIGN, np.minimum(colour * 1.15, 1))
    if r.random() < 0.3:
        sp.rect(-0.3, h - 0.65, 0.3, h - 0.4, SIGN, plain if back else white)
    sp.draw()


def _draw_light(cv: Canvas, p: TrafficLight) -> None:
    """A traffic light on a pole, or hung from an arm over the road."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    colour = _grey(r, 0.25, 0.5)
    overhead = p.overhead
    height = r.uniform(5.6, 6.5) if overhead else r.uniform(2.6, 3.4)
    sp.rect(-0.08, 0, 0.08, height, POLE, colour)
    centre = 0.0
    if overhead:
        centre = p.arm * r.uniform(3.0, 5.0)
        sp.limb((0, height), (centre + p.arm * 0.5, height), 0.12, POLE, colour)
    top = height - (0.15 if overhead else 0.0)
    sp.rect(centre - 0.18, top - 0.95, centre + 0.18, top, LIGHT, (0.08, 0.08, 0.08))
    lit = r.randrange(3)
    for k, lamp in enumerate(((0.9, 0.15, 0.1), (0.95, 0.7, 0.1), (0.2, 0.9, 0.5))):
        sp.ellipse(centre, top - 0.17 - 0.3 * k, 0.1, 0.1, LIGHT,
                   lamp if k == lit else tuple(c * 0.25 for c in lamp))
    sp.draw()


def _draw_static(cv: Canvas, p: Item) -> None:
    """Street furniture: bins, utility boxes, advertising pillars, benches (label static)."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    kind = r.randrange(4)
    if kind == 0:
        sp.rect(-0.25, 0, 0.25, 0.95, STATIC, _grey(r, 0.2, 0.5) * (1, 1.1, 1))
    elif kind == 1:
        sp.rect(-0.45, 0, 0.45, 1.3, STATIC, _grey(r, 0.45, 0.7) * (1, 1, 0.92))
    elif kind == 2:
        sp.rect(-0.6, 0, 0.6, 2.8, STATIC, np.array(r.choice(WALL_COLOURS)))
        sp.rect(-0.55, 0.5, 0.55, 2.5, STATIC, np.array(r.choice(CAR_COLOURS)))
        sp.ellipse(0, 2.85, 0.65, 0.15, STATIC, (0.2, 0.22, 0.2))
    else:
        colour = np.array([0.35, 0.25, 0.15]) * r.uniform(0.7, 1.3)
        sp.rect(-0.9, 0.4, 0.9, 0.5, STATIC, colour)
        sp.rect(-0.9, 0.55, 0.9, 0.85, STATIC, colour * 0.9)
        for u in (-0.8, 0.7):
            sp.rect(u, 0, u + 0.1, 0.45, STATIC, (0.15, 0.15, 0.15))
    sp.draw()


def _draw_dynamic(cv: Canvas, p: Item) -> None:
    """Things that move about: wheelie bins and strollers (label dynamic)."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    colour = np.array(((0.15, 0.3, 0.15), (0.2, 0.2, 0.22), (0.15, 0.2, 0.45),
                       (0.4, 0.28, 0.15))[r.randrange(4)])
    if r.random() < 0.75:
        sp.rect(-0.3, 0.05, 0.3, 1.0, DYNAMIC, colour)
        sp.rect(-0.33, 1.0, 0.33, 1.07, DYNAMIC, colour * 0.8)
    else:
        sp.ellipse(0, 0.75, 0.35, 0.3, DYNAMIC, colour)
        sp.limb((0.2, 0.7), (0.45, 1.1), 0.04, DYNAMIC, (0.1, 0.1, 0.1))
        for u in (-0.25, 0.25):
            sp.ellipse(u, 0.12, 0.12, 0.12, DYNAMIC, (0.08, 0.08, 0.08))
    sp.draw()


def _draw_person(cv: Canvas, p: Item) -> None:
    """A pedestrian, facing the camera or walking across the view."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z, flip=r.random() < 0.5)
    _figure(sp, r, r.random() < 0.5)
    sp.draw()


def _figure(sp: Sprite, r: random.Random, sideways: bool) -> None:
    """A standing person of 1.55-1.95 m: legs, torso, arms and head."""
    h = r.uniform(1.55, 1.95)
    top = np.array(r.choice(CLOTHES)) * r.uniform(0.8, 1.2)
    legs = np.array(r.choice(CLOTHES[:4])) * r.uniform(0.8, 1.2)
    skin = np.array(r.choice(SKIN))
    hip, shoulder = 0.52 * h, 0.81 * h
    if sideways:
        stride = r.uniform(0.0, 0.22) * h
        for sign in (-1, 1):
            sp.limb((0, hip), (sign * stride, 0.02), 0.075 * h, PERSON, legs)
        sp.poly([(-0.06 * h, hip), (0.06 * h, hip), (0.07 * h, shoulder), (-0.07 * h, shoulder)],
                PERSON, top)
        sp.limb((0, shoulder - 0.03 * h), (0.1 * h, 0.5 * h), 0.05 * h, PERSON, top * 0.85)
    else:
        for sign in (-1, 1):
            sp.rect(sign * 0.015 * h, 0.0, sign * 0.1 * h, hip, PERSON, legs)
        sp.poly([(-0.1 * h, hip - 0.03 * h), (0.1 * h, hip - 0.03 * h), (0.13 * h, shoulder),
                 (-0.13 * h, shoulder)], PERSON, top)
        for sign in (-1, 1):
            sp.limb((sign * 0.12 * h, shoulder - 0.02 * h), (sign * 0.15 * h, 0.47 * h), 0.05 * h,
                    PERSON, top * 0.85)
    sp.rect(-0.025 * h, shoulder - 0.01, 0.025 * h, 0.87 * h, PERSON, skin)
    sp.ellipse(0, 0.925 * h, 0.055 * h, 0.068 * h, PERSON, skin)
    sp.ellipse(0, 0.95 * h, 0.057 * h, 0.048 * h, PERSON, (0.12, 0.09, 0.07))


def _draw_parked(cv: Canvas, p: TwoWheeler) -> None:
    """A parked bicycle or motorcycle, seen from the side at an angle."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z, squash=p.squash, flip=r.random() < 0.5)
    _motorbike(sp, r) if p.vehicle == "motorcycle" else _bike(sp, r)
    sp.draw()


def _bike(sp: Sprite, r: random.Random) -> None:
    """A bicycle from the side: two wheels whose insides are labelled bicycle, a frame, a saddle."""
    frame = np.array(r.choice(CAR_COLOURS)) * 0.9
    for u in (-0.52, 0.55):
        sp.ring(u, 0.34, 0.34, 0.05, BICYCLE, (0.07, 0.07, 0.07))
    rear, bracket, seat, head = (-0.52, 0.34), (0.0, 0.3), (-0.15, 0.85), (0.4, 0.85)
    for a, b in ((rear, bracket), (bracket, seat), (seat, rear), (bracket, head), (seat, head),
                 (head, (0.55, 0.34)), (head, (0.45, 1.02))):
        sp.limb(a, b, 0.045, BICYCLE, frame)
    sp.rect(-0.24, 0.9, -0.06, 0.95, BICYCLE, (0.08, 0.08, 0.08))
    sp.rect(0.35, 1.0, 0.55, 1.04, BICYCLE, (0.1, 0.1, 0.1))


def _draw_cyclist(cv: Canvas, p: TwoWheeler) -> None:
    """A rider on a bicycle or motorcycle: from the side when crossing, else from behind."""
    r = random.Random(p.seed)
    motor = p.vehicle == "motorcycle"
    if p.side_view:
        sp = Sprite(cv, p.x, p.z, flip=r.random() < 0.5)
        _motorbike(sp, r) if motor else _bike(sp, r)
        _seated(sp, r, motor)
    else:
        sp = Sprite(cv, p.x, p.z)
        _rear_rider(sp, r, motor)
    sp.draw()


def _motorbike(sp: Sprite, r: random.Random) -> None:
    """A motorcycle from the side: solid wheels, engine, tank and seat."""
    body = np.array(r.choice(CAR_COLOURS))
    for u in (-0.7, 0.72):
        sp.ellipse(u, 0.32, 0.32, 0.32, MOTORCYCLE, (0.06, 0.06, 0.06))
        sp.ellipse(u, 0.32, 0.15, 0.15, MOTORCYCLE, (0.4, 0.4, 0.42))
    sp.poly([(-0.45, 0.35), (0.35, 0.3), (0.55, 0.8), (-0.2, 0.8)], MOTORCYCLE, (0.2, 0.2, 0.21))
    sp.poly([(0.0, 0.78), (0.5, 0.78), (0.45, 1.0), (0.05, 0.98)], MOTORCYCLE, body)
    sp.poly([(-0.75, 0.72), (0.05, 0.78), (0.0, 0.9), (-0.7, 0.85)], MOTORCYCLE, (0.1, 0.1, 0.1))
    sp.limb((0.72, 0.32), (0.5, 1.1), 0.07, MOTORCYCLE, (0.5, 0.5, 0.52))


def _seated(sp: Sprite, r: random.Random, motor: bool) -> None:
    """A rider sitting on a bike seen from the side."""
    clothes = np.array(r.choice(CLOTHES)) * r.uniform(0.8, 1.2)
    hip = (-0.3, 0.95) if motor else (-0.2, 1.0)
    shoulder, hand, knee, foot = (0.08, 1.55), (0.45, 1.05), (0.12, 0.7), (0.02, 0.25)
    sp.limb(hip, knee, 0.15, RIDER, clothes * 0.7)
    sp.limb(knee, foot, 0.11, RIDER, clothes * 0.7)
    sp.limb(hip, shoulder, 0.32, RIDER, clothes)
    sp.limb(shoulder, hand, 0.09, RIDER, clothes * 0.9)
    head = (0.3, 0.3, 0.32) if motor else np.array(r.choice(SKIN))
    sp.ellipse(0.15, 1.72, 0.12 if motor else 0.1, 0.13 if motor else 0.12, RIDER, head)


def _rear_rider(sp: Sprite, r: random.Random, motor: bool) -> None:
    """A cyclist or motorcyclist seen from behind."""
    clothes = np.array(r.choice(CLOTHES)) * r.uniform(0.8, 1.2)
    vehicle = MOTORCYCLE if motor else BICYCLE
    sp.ellipse(0, 0.33, 0.09 if motor else 0.03, 0.33, vehicle, (0.06, 0.06, 0.06))
    if motor:
        sp.rect(-0.28, 0.4, 0.28, 0.95, vehicle, (0.18, 0.18, 0.2))
        sp.rect(-0.08, 0.75, 0.08, 0.82, vehicle, (0.7, 0.1, 0.08))
    bar = 0.42 if motor else 0.32
    sp.rect(-bar, 1.0, bar, 1.05, vehicle, (0.1, 0.1, 0.1))
    for sign in (-1, 1):
        sp.limb((sign * 0.12, 0.95), (sign * 0.14, 0.5 if motor else 0.3), 0.11, RIDER,
                clothes * 0.7)
        sp.limb((sign * 0.18, 1.45), (sign * 0.3, 1.05), 0.08, RIDER, clothes)
    sp.poly([(-0.18, 0.95), (0.18, 0.95), (0.21, 1.5), (-0.21, 1.5)], RIDER, clothes)
    head = (0.3, 0.3, 0.32) if motor else np.array(r.choice(SKIN)) * 0.4
    sp.ellipse(0, 1.65, 0.12 if motor else 0.1, 0.13 if motor else 0.12, RIDER, head)


@dataclass(frozen=True, slots=True)
class _Faces:
    """World corners (p00, p10, p11, p01) of the faces of a box that the camera sees."""

    near: np.ndarray
    top: np.ndarray | None  # seen from above: the box is lower than the camera
    side: np.ndarray | None  # the side toward the camera's line, unless the box straddles it


def _box_faces(cam: Camera, x0: float, x1: float, y0: float, y1: float, z0: float,
               z1: float) -> _Faces:
    """The faces of the box between (x0, y0, z0) and (x1, y1, z1) that the camera sees."""
    top = None
    if y1 < cam.cam_h:
        top = np.array([[x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]])
    side, x = None, (x0 if x0 > 0 else x1 if x1 < 0 else None)
    if x is not None:
        side = np.array([[x, y0, z0], [x, y0, z1], [x, y1, z1], [x, y1, z0]])
    near = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]])
    return _Faces(near=near, top=top, side=side)


def _solid(batch: Batch, faces: _Faces, label_id: int, colour: np.ndarray) -> None:
    """Add a box's visible faces, the side darker and the top lighter."""
    for face, factor in ((faces.top, 1.12), (faces.side, 0.78), (faces.near, 1.0)):
        if face is not None:
            world_polygon(batch, face, label_id, np.minimum(colour * factor, 1))


def _ground_shadow(batch: Batch, x0: float, x1: float, z0: float, z1: float) -> None:
    """Darken the road under a vehicle (the road keeps its label)."""
    world_polygon(batch, [(x0, 0.0, z0), (x1, 0.0, z0), (x1, 0.0, z1), (x0, 0.0, z1)], None,
                  None, shade=0.4)


def _wheel(batch: Batch, x: float, z: float, radius: float, label_id: int,
           hub: bool = True) -> None:
    """A wheel on a vehicle's side: tyre and hub."""
    parts = ((radius, (0.06, 0.06, 0.06)), (radius * 0.55, (0.35, 0.35, 0.37)))
    for r, colour in parts[:1 + hub]:
        world_polygon(batch, [(x, radius + r * s, z + r * c) for c, s in ELLIPSE[::2]],
                      label_id, colour)


def _draw_car(cv: Canvas, p: Vehicle) -> None:
    """A car: body, cabin, wheels, windows, lights and plate, and its shadow on the road."""
    r = random.Random(p.seed)
    x0, x1 = p.x - p.width / 2, p.x + p.width / 2
    z0, z1 = p.z, p.z + p.length
    colour = p.color.astype(np.float32)
    van = r.random() < 0.15
    belt, roof = r.uniform(0.8, 0.95), r.uniform(1.8, 2.0) if van else r.uniform(1.38, 1.55)
    a0, b0 = (0.15, 0.9) if van else (r.uniform(0.6, 1.0), r.uniform(0.9, 1.3))
    a1, b1 = a0 + (0.15 if van else r.uniform(0.35, 0.6)), b0 + r.uniform(0.5, 0.9)
    glass = np.array([0.1, 0.12, 0.15], np.float32) * r.uniform(0.8, 1.6)
    detail = cv.cam.focal * p.width / z0 > 12  # smaller cars: no hubs, windows or lights
    batch = Batch(cv, z0)
    _ground_shadow(batch, x0 + 0.05, x1 - 0.05, z0 + 0.1, z1 - 0.1)
    for xa, xb in ((x0 + 0.05, x0 + 0.3), (x1 - 0.3, x1 - 0.05)):  # wheels under the bumper
        world_polygon(batch, [(xa, 0, z0 + 0.7), (xb, 0, z0 + 0.7), (xb, 0.5, z0 + 0.7),
                              (xa, 0.5, z0 + 0.7)], CAR, (0.05, 0.05, 0.05))
    body = _box_faces(cv.cam, x0, x1, 0.25, belt, z0, z1)
    _solid(batch, body, CAR, colour)
    if body.side is not None:
        xs = body.side[0, 0]
        for zc in (z0 + 0.8, z1 - 0.85):
            _wheel(batch, xs, zc, 0.32, CAR, hub=detail)
        xc = xs + (0.1 if xs == x0 else -0.1)
        cabin = np.array([[xc, belt, z0 + a0], [xc, belt, z1 - b0], [xc, roof, z1 - b1],
                          [xc, roof, z0 + a1]])
        world_polygon(batch, cabin, CAR, colour * 0.75)
        for lo, hi in ((0.05, 0.47), (0.53, 0.95))[:2 * detail]:
            world_polygon(batch, sub_quad(cabin, lo, hi, 0.1, 0.88), CAR, glass)
    near_cabin = np.array([[x0 + 0.12, belt, z0 + a0], [x1 - 0.12, belt, z0 + a0],
                           [x1 - 0.2, roof, z0 + a1], [x0 + 0.2, roof, z0 + a1]])
    world_polygon(batch, near_cabin, CAR, np.minimum(colour * 1.05, 1))
    if detail:
        world_polygon(batch, sub_quad(near_cabin, 0.07, 0.93, 0.1, 0.88), CAR, glass * 1.3)
        _car_end(batch, body.near, colour, p.facing == "rear")
    batch.draw()


def _car_end(batch: Batch, near: np.ndarray, colour: np.ndarray, rear: bool) -> None:
    """Lamps, bumper and number plate on a car's near face."""
    lamp = (0.6, 0.08, 0.06) if rear else (0.85, 0.85, 0.8)
    for lo, hi in ((0.02, 0.2), (0.8, 0.98)):
        world_polygon(batch, sub_quad(near, lo, hi, 0.55, 0.85), CAR, lamp)
    world_polygon(batch, sub_quad(near, 0.0, 1.0, 0.0, 0.2), CAR, colour * 0.5 + 0.03)
    world_polygon(batch, sub_quad(near, 0.38, 0.62, 0.25, 0.45), CAR, (0.8, 0.8, 0.76))


def _draw_truck(cv: Canvas, p: Vehicle) -> None:
    """A lorry: a cargo box and a cab, the cab at the far end when driving away."""
    r = random.Random(p.seed)
    x0, x1, z0, z1 = p.x - 1.225, p.x + 1.225, p.z, p.z + p.length
    cab_colour = np.array(r.choice(CAR_COLOURS), np.float32)
    batch = Batch(cv, z0)
    _ground_shadow(batch, x0 - 0.2, x1 + 0.2, z0 - 0.2, z1)
    cab_near = p.facing == "front"
    split = z0 + 2.3 if cab_near else z1 - 2.3
    cab = (z0, split) if cab_near else (split + 0.3, z1)
    cargo = (split + 0.3, z1) if cab_near else (z0, split)
    parts = [(cargo, 0.6, 3.6, p.color.astype(np.float32)), (cab, 0.45, 2.9, cab_colour)]
    for (za, zb), y0, y1, colour in sorted(parts, key=lambda part: -part[0][0]):
        faces = _box_faces(cv.cam, x0, x1, y0, y1, za, zb)
        _solid(batch, faces, TRUCK, colour)
        if faces.side is not None:
            for zc in (za + 1.0, zb - 1.0):
                _wheel(batch, faces.side[0, 0], zc, 0.5, TRUCK)
        if (za, zb) == cab and cab_near:
            world_polygon(batch, sub_quad(faces.near, 0.05, 0.95, 0.55, 0.92), TRUCK,
                          (0.12, 0.14, 0.17))
        elif (za, zb) == cargo and not cab_near:
            world_polygon(batch, sub_quad(faces.near, 0.49, 0.51, 0.05, 0.97), TRUCK,
                          colour * 0.5)
    world_polygon(batch, [(x0, 0.25, z0), (x1, 0.25, z0), (x1, 0.6, z0), (x0, 0.6, z0)], TRUCK,
                  (0.1, 0.1, 0.1))
    batch.draw()


def _draw_bus(cv: Canvas, p: Vehicle) -> None:
    """A city bus: a long box with a band of windows and a large windscreen or rear window."""
    _long_vehicle(cv, p, BUS, (0.3, 3.0), 1.4, wheel_at=(2.6, 3.2))


def _draw_train(cv: Canvas, p: Vehicle) -> None:
    """A tram on rails in the street (Cityscapes' train class)."""
    _long_vehicle(cv, p, TRAIN, (0.35, 3.5), 2.0, wheel_at=(3.0, 3.0))


def _long_vehicle(cv: Canvas, p: Vehicle, label_id: int, ys: tuple[float, float], pane: float,
                  wheel_at: tuple[float, float]) -> None:
    """A bus or tram: a box with windows along the side and a windscreen at the near end."""
    x0, x1 = p.x - p.width / 2, p.x + p.width / 2
    z0, z1 = p.z, p.z + p.length
    colour = p.color.astype(np.float32)
    glass = np.array([0.12, 0.14, 0.16], np.float32)
    batch = Batch(cv, z0)
    _ground_shadow(batch, x0 - 0.2, x1 + 0.2, z0 - 0.2, z1)
    faces = _box_faces(cv.cam, x0, x1, *ys, z0, z1)
    _solid(batch, faces, label_id, colour)
    if faces.side is not None:
        side = faces.side
        panes = max(int(p.length / pane), 1)
        for k in range(panes):
            a = k / panes
            world_polygon(batch, sub_quad(side, a + 0.08 / panes, a + 0.92 / panes, 0.4, 0.85),
                          label_id, glass * (1.0 + 0.3 * (k % 3)))
        world_polygon(batch, sub_quad(side, 0.0, 1.0, 0.0, 0.12), label_id, colour * 0.4)
        for zc in (z0 + wheel_at[0], z1 - wheel_at[1]):
            _wheel(batch, side[0, 0], zc, 0.5, label_id)
    near = faces.near
    low = 0.3 if p.facing == "front" else 0.55
    world_polygon(batch, sub_quad(near, 0.05, 0.95, low, 0.86), label_id, glass)
    world_polygon(batch, sub_quad(near, 0.1, 0.9, 0.89, 0.97), label_id, (0.05, 0.05, 0.05))
    for lo, hi in ((0.03, 0.15), (0.85, 0.97)):
        world_polygon(batch, sub_quad(near, lo, hi, 0.1, 0.18), label_id, (0.85, 0.8, 0.6))
    batch.draw()


_DRAW: dict[str, Callable[[Canvas, Any], None]] = {
    "tree": _draw_tree, "lamp": _draw_lamp, "pole": _draw_pole, "sign": _draw_sign,
    "light": _draw_light, "static": _draw_static, "dynamic": _draw_dynamic,
    "person": _draw_person, "parked": _draw_parked, "cyclist": _draw_cyclist,
    "car": _draw_car, "truck": _draw_truck, "bus": _draw_bus, "train": _draw_train,
}


def draw_item(cv: Canvas, item: Item) -> None:
    """Draw one object of the scene, by its kind."""
    _DRAW[item.kind](cv, item)
