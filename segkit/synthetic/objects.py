"""Drawing the objects in the street, each from its own seed: trees, lamps, poles, bollards, signs,
traffic lights, street furniture, people, riders and vehicles, each lit by the scene's light (or by
the sky alone in a building's shadow).
"""

from __future__ import annotations

import math
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
    HAIR,
    LIGHT,
    MOTORCYCLE,
    PERSON,
    POLE,
    RIDER,
    SIGN,
    SKIN,
    STATIC,
    TRAIN,
    TROUSERS,
    TRUCK,
    VEGETATION,
    WALL_COLOURS,
)
from segkit.synthetic.scene import Item, Lamp, Sign, TrafficLight, Tree, TwoWheeler, Vehicle
from segkit.synthetic.shadows import in_shadow
from segkit.synthetic.world import foliage


def _grey(r: random.Random, low: float, high: float) -> np.ndarray:
    """A neutral grey with a slight random cast."""
    grey = r.uniform(low, high)
    return np.array([min(grey * r.uniform(0.95, 1.05), 1.0) for _ in range(3)])


def _lit(cv: Canvas, x: float, z: float, normal: tuple[float, float, float] = (0.0, 0.0, -1.0),
         round_: bool = False, shaded: bool | None = None) -> float:
    """Brightness of a surface of an object standing at (x, z) with outward ``normal``; a
    ``round_`` thing (a post, a person) also has a side toward the sun. ``shaded``: whether it
    stands in a building's shadow, when known."""
    light = cv.light
    if shaded is None:
        shaded = light.sunny and in_shadow(cv.blockers, x, z)
    if shaded:
        return light.shaded(normal[1])
    bright = light.face(*normal)
    if round_ and light.sunny:
        length = math.hypot(*light.sun) or 1.0
        bright = (bright + light.face(-light.sun[0] / length, 0.0, -light.sun[1] / length)) / 2
    return bright


def _draw_tree(cv: Canvas, p: Tree) -> None:
    """A street or park tree: trunk and a crown of leaves, all vegetation."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    radius, trunk = p.radius, p.trunk
    width = r.uniform(0.2, 0.4)
    (x0, y1), (x1, y0) = sp.at(-width / 2, 0), sp.at(width / 2, trunk + radius * 0.6)
    win = cv.cover(x0, y0, x1, y1)
    if win is not None:
        bark = _grey(r, 0.1, 0.2) * np.array([1.0, 0.95, 0.85])
        cv.paint(win, None, VEGETATION, bark * _lit(cv, p.x, p.z, round_=True), sp.depth)
    blobs = [(r.gauss(0, 0.4) * radius, trunk + radius * (0.95 + r.gauss(0, 0.25)),
              radius * r.uniform(0.45, 0.75), radius * r.uniform(0.4, 0.7))
             for _ in range(r.randrange(5, 9))]
    green = np.array(r.choice(GREENS)) * r.uniform(0.75, 1.25) * [r.uniform(0.85, 1.15), 1.0,
                                                                   r.uniform(0.8, 1.2)]
    light = cv.light
    if light.sunny and in_shadow(cv.blockers, p.x, p.z + trunk):
        green = green * (light.sky / light.face(0.0, 0.6, -0.8))
    foliage(sp, blobs, green.astype(np.float32), light)


def _draw_lamp(cv: Canvas, p: Lamp) -> None:
    """A street lamp: a tall tapered pole with an arm over the road."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    sp.brightness = _lit(cv, p.x, p.z, round_=True)
    height, width, arm = r.uniform(6, 9), r.uniform(0.09, 0.14), p.arm
    colour = _grey(r, 0.2, 0.4) if r.random() < 0.7 else np.array([0.12, 0.16, 0.13])
    sp.poly([(-width / 2, 0), (width / 2, 0), (width * 0.3, height), (-width * 0.3, height)],
            POLE, colour)
    reach = r.uniform(1.0, 2.2)
    sp.limb((0, height - 0.1), (arm * reach, height + 0.3), 0.08, POLE, colour)
    sp.rect(arm * (reach - 0.4), height + 0.12, arm * (reach + 0.35), height + 0.38, POLE,
            colour * 0.8)
    sp.draw()


def _draw_pole(cv: Canvas, p: Item) -> None:
    """A bare pole or post, maybe striped or carrying a small box."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    sp.brightness = _lit(cv, p.x, p.z, round_=True)
    height, width = r.uniform(1.0, 4.0), r.uniform(0.05, 0.1)
    colour = _grey(r, 0.2, 0.5)
    sp.rect(-width / 2, 0, width / 2, height, POLE, colour)
    if r.random() < 0.3:
        sp.rect(-width, height * 0.5, width, height * 0.5 + 0.35, POLE, _grey(r, 0.3, 0.5))
    sp.draw()


def _draw_bollard(cv: Canvas, p: Item) -> None:
    """A short post along the kerb (label pole), plain or with a reflecting band."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    sp.brightness = _lit(cv, p.x, p.z, round_=True)
    colour = _grey(r, 0.1, 0.35) if r.random() < 0.7 else np.array([0.35, 0.06, 0.05])
    sp.rect(-0.05, 0, 0.05, 0.9, POLE, colour)
    sp.rect(-0.05, 0.7, 0.05, 0.78, POLE, (0.6, 0.6, 0.58))
    sp.draw()


def _sign_plate(sp: Sprite, r: random.Random, h: float, back: bool) -> None:
    """One sign plate centred at height h: round, triangular, square, or a wide panel."""
    plain = _grey(r, 0.3, 0.45)
    red, white, blue = (0.5, 0.06, 0.05), (0.62, 0.62, 0.6), (0.06, 0.15, 0.45)
    shape = r.randrange(5)
    if shape == 0:
        sp.ellipse(0, h, 0.32, 0.32, SIGN, plain if back else red)
        if not back:
            sp.ellipse(0, h, 0.24, 0.24, SIGN, white if r.random() < 0.7 else blue)
    elif shape == 1:
        sp.poly([(-0.42, h - 0.3), (0.42, h - 0.3), (0, h + 0.42)], SIGN, plain if back else red)
        if not back:
            sp.poly([(-0.3, h - 0.23), (0.3, h - 0.23), (0, h + 0.28)], SIGN, white)
    else:
        colour = np.array((blue, (0.6, 0.48, 0.05), white, (0.05, 0.3, 0.15))[r.randrange(4)])
        w = 0.3 if shape == 2 else r.uniform(0.4, 0.8)
        tall = 0.3 if shape != 4 else 0.18
        sp.rect(-w, h - tall, w, h + tall, SIGN, plain if back else colour)
        if not back:
            sp.rect(-w + 0.05, h - tall + 0.05, w - 0.05, h + tall - 0.05, SIGN,
                    np.minimum(colour * 1.15, 1))


def _draw_sign(cv: Canvas, p: Sign) -> None:
    """A traffic sign on a thin pole, now and then with a second plate; the back is grey."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    sp.brightness = _lit(cv, p.x, p.z, round_=True)
    h = r.uniform(2.2, 3.2)
    plates = 2 if r.random() < 0.35 else 1
    sp.rect(-0.03, 0, 0.03, h + 0.3, POLE, _grey(r, 0.3, 0.5))
    back = p.back and r.random() < 0.7
    for k in range(plates):
        _sign_plate(sp, r, h - 0.75 * k, back)
    sp.draw()


def _draw_light(cv: Canvas, p: TrafficLight) -> None:
    """A traffic light on a pole, or hung from an arm over the road."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    sp.brightness = _lit(cv, p.x, p.z, round_=True)
    colour = _grey(r, 0.15, 0.35)
    overhead = p.overhead
    height = r.uniform(5.6, 6.5) if overhead else r.uniform(2.6, 3.4)
    sp.rect(-0.07, 0, 0.07, height, POLE, colour)
    centre = 0.0
    if overhead:
        centre = p.arm * r.uniform(3.0, 5.0)
        sp.limb((0, height), (centre + p.arm * 0.5, height), 0.12, POLE, colour)
    top = height - (0.15 if overhead else 0.0)
    sp.rect(centre - 0.18, top - 0.95, centre + 0.18, top, LIGHT, (0.04, 0.04, 0.04))
    lit = r.randrange(3)
    for k, lamp in enumerate(((0.9, 0.15, 0.1), (0.95, 0.7, 0.1), (0.2, 0.9, 0.5))):
        sp.ellipse(centre, top - 0.17 - 0.3 * k, 0.1, 0.1, LIGHT,
                   lamp if k == lit else tuple(c * 0.2 for c in lamp))
    sp.draw()


def _draw_static(cv: Canvas, p: Item) -> None:
    """Street furniture: bins, utility boxes, advertising pillars, benches (label static)."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    sp.brightness = _lit(cv, p.x, p.z, round_=True)
    kind = r.randrange(4)
    if kind == 0:
        sp.rect(-0.25, 0, 0.25, 0.95, STATIC, _grey(r, 0.12, 0.3) * (1, 1.1, 1))
    elif kind == 1:
        sp.rect(-0.45, 0, 0.45, 1.3, STATIC, _grey(r, 0.3, 0.5) * (1, 1, 0.92))
    elif kind == 2:
        sp.rect(-0.6, 0, 0.6, 2.8, STATIC, np.array(r.choice(WALL_COLOURS)))
        sp.rect(-0.55, 0.5, 0.55, 2.5, STATIC, np.array(r.choice(CAR_COLOURS)) + 0.1)
        sp.ellipse(0, 2.85, 0.65, 0.15, STATIC, (0.12, 0.13, 0.12))
    else:
        colour = np.array([0.25, 0.17, 0.1]) * r.uniform(0.7, 1.3)
        sp.rect(-0.9, 0.4, 0.9, 0.5, STATIC, colour)
        sp.rect(-0.9, 0.55, 0.9, 0.85, STATIC, colour * 0.9)
        for u in (-0.8, 0.7):
            sp.rect(u, 0, u + 0.1, 0.45, STATIC, (0.08, 0.08, 0.08))
    sp.draw()


def _draw_dynamic(cv: Canvas, p: Item) -> None:
    """Things that move about: wheelie bins and strollers (label dynamic)."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z)
    sp.brightness = _lit(cv, p.x, p.z, round_=True)
    colour = np.array(((0.08, 0.2, 0.08), (0.1, 0.1, 0.11), (0.08, 0.12, 0.3),
                       (0.3, 0.18, 0.08))[r.randrange(4)])
    if r.random() < 0.75:
        sp.rect(-0.3, 0.05, 0.3, 1.0, DYNAMIC, colour)
        sp.rect(-0.33, 1.0, 0.33, 1.07, DYNAMIC, colour * 0.8)
    else:
        sp.ellipse(0, 0.75, 0.35, 0.3, DYNAMIC, colour)
        sp.limb((0.2, 0.7), (0.45, 1.1), 0.04, DYNAMIC, (0.05, 0.05, 0.05))
        for u in (-0.25, 0.25):
            sp.ellipse(u, 0.12, 0.12, 0.12, DYNAMIC, (0.04, 0.04, 0.04))
    sp.draw()


def _draw_person(cv: Canvas, p: Item) -> None:
    """A pedestrian: adult or child, facing the camera, turned away or walking across."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z, flip=r.random() < 0.5)
    sp.brightness = _lit(cv, p.x, p.z, round_=True) * r.uniform(0.85, 1.15)
    _figure(sp, r, r.random() < 0.5)
    sp.draw()


def _figure(sp: Sprite, r: random.Random, sideways: bool) -> None:
    """A standing or walking person: legs, torso (a jacket or a long coat), arms, head and hair,
    maybe a bag; adults of 1.55-1.95 m, now and then a child."""
    h = r.uniform(1.0, 1.4) if r.random() < 0.15 else r.uniform(1.55, 1.95)
    build = r.uniform(0.85, 1.25)
    top = np.array(r.choice(CLOTHES)) * r.uniform(0.75, 1.25)
    legs = np.array(r.choice(TROUSERS)) * r.uniform(0.8, 1.2)
    skin, hair = np.array(r.choice(SKIN)), np.array(r.choice(HAIR))
    hip, shoulder = 0.52 * h, 0.81 * h
    coat = r.random() < 0.25  # a long coat or a dress hides the thighs
    w = 0.1 * h * build
    if sideways:
        stride = r.uniform(0.0, 0.24) * h
        for sign in (-1, 1):
            knee = (sign * stride * 0.45, 0.27 * h)
            sp.limb((0, hip), knee, 0.08 * h * build, PERSON, legs)
            sp.limb(knee, (sign * stride, 0.03), 0.065 * h, PERSON, legs)
            sp.rect(sign * stride - 0.02 * h, 0.0, sign * stride + 0.07 * h, 0.035 * h, PERSON,
                    (0.04, 0.04, 0.04))
        low = 0.3 * h if coat else hip - 0.03 * h
        sp.poly([(-0.07 * h * build, low), (0.07 * h * build, low), (0.08 * h * build, shoulder),
                 (-0.07 * h * build, shoulder)], PERSON, top)
        swing = r.uniform(-0.12, 0.12) * h
        sp.limb((0, shoulder - 0.03 * h), (swing, 0.48 * h), 0.055 * h, PERSON, top * 0.8)
        if r.random() < 0.3:  # a backpack
            sp.rect(-0.16 * h * build, 0.58 * h, -0.06 * h, 0.78 * h, PERSON, top * 0.5)
    else:
        spread = r.uniform(0.0, 0.04) * h
        for sign in (-1, 1):
            sp.poly([(sign * 0.012 * h, hip), (sign * w, hip), (sign * (w * 0.8 + spread), 0.0),
                     (sign * (0.02 * h + spread), 0.0)], PERSON, legs)
        low = 0.3 * h if coat else hip - 0.04 * h
        sp.poly([(-w * (1.15 if coat else 1.0), low), (w * (1.15 if coat else 1.0), low),
                 (w * 1.3, shoulder), (-w * 1.3, shoulder)], PERSON, top)
        for sign in (-1, 1):
            hand = (sign * (w * 1.45 + r.uniform(-0.01, 0.05) * h), r.uniform(0.44, 0.5) * h)
            sp.limb((sign * w * 1.2, shoulder - 0.02 * h), hand, 0.05 * h, PERSON, top * 0.8)
        if r.random() < 0.3:  # a bag at one side
            side = r.choice((-1, 1))
            sp.rect(side * w * 1.4, 0.38 * h, side * (w * 1.4 + 0.1 * h), 0.52 * h, PERSON,
                    np.array(r.choice(CLOTHES)) * 0.6)
    sp.rect(-0.025 * h, shoulder - 0.01, 0.025 * h, 0.87 * h, PERSON, skin)
    sp.ellipse(0, 0.925 * h, 0.055 * h, 0.068 * h, PERSON, skin)
    turned = not sideways and r.random() < 0.5  # seen from behind: hair over the whole head
    sp.ellipse(0, 0.95 * h if not turned else 0.93 * h, 0.058 * h, 0.05 * h if not turned
               else 0.07 * h, PERSON, hair)


def _draw_parked(cv: Canvas, p: TwoWheeler) -> None:
    """A parked bicycle or motorcycle, seen from the side at an angle."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z, squash=p.squash, flip=r.random() < 0.5)
    sp.brightness = _lit(cv, p.x, p.z, round_=True)
    _motorbike(sp, r) if p.vehicle == "motorcycle" else _bike(sp, r)
    sp.draw()


def _bike(sp: Sprite, r: random.Random) -> None:
    """A bicycle from the side: two wheels whose insides are labelled bicycle, a frame, a saddle."""
    frame = np.array(r.choice(CAR_COLOURS)) * 0.9
    for u in (-0.52, 0.55):
        sp.ring(u, 0.34, 0.34, 0.05, BICYCLE, (0.03, 0.03, 0.03))
    rear, bracket, seat, head = (-0.52, 0.34), (0.0, 0.3), (-0.15, 0.85), (0.4, 0.85)
    for a, b in ((rear, bracket), (bracket, seat), (seat, rear), (bracket, head), (seat, head),
                 (head, (0.55, 0.34)), (head, (0.45, 1.02))):
        sp.limb(a, b, 0.045, BICYCLE, frame)
    sp.rect(-0.24, 0.9, -0.06, 0.95, BICYCLE, (0.04, 0.04, 0.04))
    sp.rect(0.35, 1.0, 0.55, 1.04, BICYCLE, (0.05, 0.05, 0.05))


def _draw_cyclist(cv: Canvas, p: TwoWheeler) -> None:
    """A rider on a bicycle or motorcycle: from the side when crossing, else from behind."""
    r = random.Random(p.seed)
    motor = p.vehicle == "motorcycle"
    if p.side_view:
        sp = Sprite(cv, p.x, p.z, flip=r.random() < 0.5)
        sp.brightness = _lit(cv, p.x, p.z, round_=True)
        _motorbike(sp, r) if motor else _bike(sp, r)
        _seated(sp, r, motor)
    else:
        sp = Sprite(cv, p.x, p.z)
        sp.brightness = _lit(cv, p.x, p.z, round_=True)
        _rear_rider(sp, r, motor)
    sp.draw()


def _motorbike(sp: Sprite, r: random.Random) -> None:
    """A motorcycle from the side: solid wheels, engine, tank and seat."""
    body = np.array(r.choice(CAR_COLOURS)) + 0.05
    for u in (-0.7, 0.72):
        sp.ellipse(u, 0.32, 0.32, 0.32, MOTORCYCLE, (0.03, 0.03, 0.03))
        sp.ellipse(u, 0.32, 0.15, 0.15, MOTORCYCLE, (0.3, 0.3, 0.32))
    sp.poly([(-0.45, 0.35), (0.35, 0.3), (0.55, 0.8), (-0.2, 0.8)], MOTORCYCLE, (0.1, 0.1, 0.11))
    sp.poly([(0.0, 0.78), (0.5, 0.78), (0.45, 1.0), (0.05, 0.98)], MOTORCYCLE, body)
    sp.poly([(-0.75, 0.72), (0.05, 0.78), (0.0, 0.9), (-0.7, 0.85)], MOTORCYCLE, (0.05, 0.05, 0.05))
    sp.limb((0.72, 0.32), (0.5, 1.1), 0.07, MOTORCYCLE, (0.35, 0.35, 0.37))


def _seated(sp: Sprite, r: random.Random, motor: bool) -> None:
    """A rider sitting on a bike seen from the side."""
    clothes = np.array(r.choice(CLOTHES)) * r.uniform(0.8, 1.2)
    legs = np.array(r.choice(TROUSERS))
    hip = (-0.3, 0.95) if motor else (-0.2, 1.0)
    shoulder, hand, knee, foot = (0.08, 1.55), (0.45, 1.05), (0.12, 0.7), (0.02, 0.25)
    sp.limb(hip, knee, 0.15, RIDER, legs)
    sp.limb(knee, foot, 0.11, RIDER, legs)
    sp.limb(hip, shoulder, 0.32, RIDER, clothes)
    sp.limb(shoulder, hand, 0.09, RIDER, clothes * 0.85)
    head = (0.2, 0.2, 0.22) if motor else np.array(r.choice(HAIR if r.random() < 0.6 else SKIN))
    sp.ellipse(0.15, 1.72, 0.12 if motor else 0.1, 0.13 if motor else 0.12, RIDER, head)


def _rear_rider(sp: Sprite, r: random.Random, motor: bool) -> None:
    """A cyclist or motorcyclist seen from behind."""
    clothes = np.array(r.choice(CLOTHES)) * r.uniform(0.8, 1.2)
    legs = np.array(r.choice(TROUSERS))
    vehicle = MOTORCYCLE if motor else BICYCLE
    sp.ellipse(0, 0.33, 0.09 if motor else 0.03, 0.33, vehicle, (0.03, 0.03, 0.03))
    if motor:
        sp.rect(-0.28, 0.4, 0.28, 0.95, vehicle, (0.1, 0.1, 0.11))
        sp.rect(-0.08, 0.75, 0.08, 0.82, vehicle, (0.5, 0.06, 0.05))
    bar = 0.42 if motor else 0.32
    sp.rect(-bar, 1.0, bar, 1.05, vehicle, (0.05, 0.05, 0.05))
    for sign in (-1, 1):
        sp.limb((sign * 0.12, 0.95), (sign * 0.14, 0.5 if motor else 0.3), 0.11, RIDER, legs)
        sp.limb((sign * 0.18, 1.45), (sign * 0.3, 1.05), 0.08, RIDER, clothes * 0.85)
    sp.poly([(-0.18, 0.95), (0.18, 0.95), (0.21, 1.5), (-0.21, 1.5)], RIDER, clothes)
    head = (0.2, 0.2, 0.22) if motor else np.array(r.choice(HAIR))
    sp.ellipse(0, 1.65, 0.12 if motor else 0.1, 0.13 if motor else 0.12, RIDER, head)


@dataclass(frozen=True, slots=True)
class _Faces:
    """World corners (p00, p10, p11, p01) of the faces of a box that the camera sees."""

    near: np.ndarray
    top: np.ndarray | None  # seen from above: the box is lower than the camera
    side: np.ndarray | None  # the side toward the camera's line, unless the box straddles it
    side_normal: float = 0.0  # x of the side's outward normal: +1 or -1


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
    return _Faces(near=near, top=top, side=side, side_normal=-1.0 if x0 > 0 else 1.0)


@dataclass(frozen=True, slots=True)
class _Shading:
    """The light on an object's faces: top, side (toward the camera's line) and near end."""

    top: float
    side: float
    near: float


def _shading(cv: Canvas, v: Vehicle) -> _Shading:
    """How brightly the sky and the sun light a vehicle's three visible faces."""
    side = -1.0 if v.x - v.width / 2 > 0 else 1.0
    shaded = cv.light.sunny and in_shadow(cv.blockers, v.x, v.z + v.length / 2)
    return _Shading(top=_lit(cv, v.x, v.z, (0.0, 1.0, 0.0), shaded=shaded),
                    side=_lit(cv, v.x, v.z, (side, 0.0, 0.0), shaded=shaded),
                    near=_lit(cv, v.x, v.z, (0.0, 0.0, -1.0), shaded=shaded))


def _solid(batch: Batch, faces: _Faces, label_id: int, colour: np.ndarray, light: _Shading,
           sheen: float = 0.0) -> None:
    """Add a box's visible faces, each in its own light; ``sheen`` is the sky mirrored on top."""
    for face, factor, extra in ((faces.top, light.top, sheen), (faces.side, light.side, sheen / 4),
                                (faces.near, light.near, sheen / 4)):
        if face is not None:
            world_polygon(batch, face, label_id, np.minimum(colour * factor + extra, 1))


def _wheel(batch: Batch, x: float, z: float, radius: float, label_id: int,
           hub: bool = True) -> None:
    """A wheel on a vehicle's side: tyre and hub."""
    parts = ((radius, (0.03, 0.03, 0.03)), (radius * 0.55, (0.25, 0.25, 0.27)))
    for r, colour in parts[:1 + hub]:
        world_polygon(batch, [(x, radius + r * s, z + r * c) for c, s in ELLIPSE[::2]],
                      label_id, colour)


#: Where a car's cabin starts at its rear and front: (metres in from the end at the belt line,
#: at the roof), and the height of the belt line.
_CABINS = {
    "saloon": ((0.75, 1.25), (1.1, 1.85), (0.8, 0.92)),
    "hatchback": ((0.12, 0.45), (0.95, 1.7), (0.82, 0.95)),
    "estate": ((0.1, 0.25), (1.05, 1.8), (0.82, 0.95)),
    "suv": ((0.12, 0.3), (0.95, 1.6), (0.95, 1.08)),
    "van": ((0.05, 0.1), (0.55, 1.2), (1.0, 1.12)),
    "small": ((0.12, 0.4), (0.75, 1.35), (0.8, 0.92)),
}


def _draw_car(cv: Canvas, p: Vehicle) -> None:
    """A car of its shape: body, cabin, wheels and arches, windows mirroring the sky, lamps and
    plate, each face in its own light."""
    if p.across:
        _draw_car_side(cv, p)
        return
    r = random.Random(p.seed)
    x0, x1 = p.x - p.width / 2, p.x + p.width / 2
    z0, z1 = p.z, p.z + p.length
    colour = p.color.astype(np.float32)
    rear, front, belts = _CABINS.get(p.shape, _CABINS["saloon"])
    (a0, a1), (b0, b1) = (rear, front) if p.facing == "rear" else (front, rear)
    belt, roof = r.uniform(*belts), p.height
    glass = np.array([0.03, 0.035, 0.045], np.float32) * r.uniform(0.8, 1.8)
    detail = cv.cam.focal * p.width / z0 > 12  # smaller cars: no hubs, windows or lights
    light = _shading(cv, p)
    batch = Batch(cv, z0)
    for xa, xb in ((x0 + 0.05, x0 + 0.3), (x1 - 0.3, x1 - 0.05)):  # wheels under the bumper
        world_polygon(batch, [(xa, 0, z0 + 0.7), (xb, 0, z0 + 0.7), (xb, 0.5, z0 + 0.7),
                              (xa, 0.5, z0 + 0.7)], CAR, (0.02, 0.02, 0.02))
    body = _box_faces(cv.cam, x0, x1, 0.28, belt, z0, z1)
    _solid(batch, body, CAR, colour, light, sheen=0.1)
    if body.side is not None:
        side = body.side
        world_polygon(batch, sub_quad(side, 0.0, 1.0, 0.72, 0.9), CAR,
                      np.minimum(colour * light.side + 0.07, 1))  # the sky on the shoulder
        world_polygon(batch, sub_quad(side, 0.0, 1.0, 0.0, 0.3), CAR,
                      colour * light.side * 0.6)  # the sill, facing the dark road
        xs = side[0, 0]
        for zc in (z0 + 0.8, z1 - 0.85):
            world_polygon(batch, [(xs, 0.34 + 0.4 * s, zc + 0.42 * c) for c, s in ELLIPSE[::2]
                                  if s > -0.2], CAR, colour * light.side * 0.3)  # the arch
            _wheel(batch, xs, zc, 0.31, CAR, hub=detail)
        xc = xs + (0.1 if xs == x0 else -0.1)
        cabin = np.array([[xc, belt, z0 + a0], [xc, belt, z1 - b0], [xc, roof, z1 - b1],
                          [xc, roof, z0 + a1]])
        world_polygon(batch, cabin, CAR, colour * light.side * 0.9 + 0.02)
        for lo, hi in ((0.04, 0.48), (0.52, 0.96))[:2 * detail]:
            world_polygon(batch, sub_quad(cabin, lo, hi, 0.08, 0.9), CAR,
                          glass * light.side * 1.5 + 0.015)
    near_cabin = np.array([[x0 + 0.1, belt, z0 + a0], [x1 - 0.1, belt, z0 + a0],
                           [x1 - 0.2, roof, z0 + a1], [x0 + 0.2, roof, z0 + a1]])
    world_polygon(batch, near_cabin, CAR, np.minimum(colour * light.near + 0.03, 1))
    if detail:
        world_polygon(batch, sub_quad(near_cabin, 0.06, 0.94, 0.08, 0.9), CAR,
                      glass * light.near + 0.06 * light.top)  # sloping glass mirrors the sky
        _car_end(batch, body.near, colour * light.near, p.facing == "rear")
    batch.draw()


def _draw_car_side(cv: Canvas, p: Vehicle) -> None:
    """A car seen from the side, driving across the view (or parked in a cross street): body,
    cabin and windows in its shape's profile, wheels, lamps at both ends."""
    r = random.Random(p.seed)
    sp = Sprite(cv, p.x, p.z, flip=p.facing == "left")
    sp.brightness = _lit(cv, p.x, p.z)
    rear, front, belts = _CABINS.get(p.shape, _CABINS["saloon"])
    half, belt, roof = p.length / 2, r.uniform(*belts), p.height
    colour = p.color.astype(np.float32)
    sp.rect(-half, 0.28, half, belt, CAR, colour)
    sp.rect(-half, belt * 0.72, half, belt * 0.85, CAR, np.minimum(colour + 0.07, 1))
    cabin = [(-half + rear[0], belt), (half - front[0], belt), (half - front[1], roof),
             (-half + rear[1], roof)]
    sp.poly(cabin, CAR, colour * 0.9 + 0.02)
    if cv.cam.focal * p.length / p.z > 24:  # windows, lamps and hubs where they can be seen
        glass = np.array([0.04, 0.045, 0.055]) * r.uniform(1.0, 2.0)
        inset = [(u + (0.12 if k in (0, 3) else -0.12), v + (0.06 if v == belt else -0.06))
                 for k, (u, v) in enumerate(cabin)]
        sp.poly(inset, CAR, glass)
        pillar = (inset[0][0] + inset[1][0]) / 2
        sp.rect(pillar - 0.05, belt, pillar + 0.05, roof - 0.06, CAR, colour * 0.9)
        sp.rect(half - 0.12, belt - 0.3, half, belt - 0.12, CAR, (0.6, 0.6, 0.55))
        sp.rect(-half, belt - 0.3, -half + 0.1, belt - 0.12, CAR, (0.4, 0.04, 0.03))
    for u in (-half + 0.8, half - 0.85):
        sp.ellipse(u, 0.31, 0.31, 0.31, CAR, (0.03, 0.03, 0.03))
        sp.ellipse(u, 0.31, 0.17, 0.17, CAR, (0.25, 0.25, 0.27))
    sp.draw()


def _car_end(batch: Batch, near: np.ndarray, colour: np.ndarray, rear: bool) -> None:
    """Lamps, bumper and number plate on a car's near face."""
    lamp = (0.4, 0.04, 0.03) if rear else (0.6, 0.6, 0.56)
    for lo, hi in ((0.02, 0.2), (0.8, 0.98)):
        world_polygon(batch, sub_quad(near, lo, hi, 0.6, 0.85), CAR, lamp)
    world_polygon(batch, sub_quad(near, 0.0, 1.0, 0.0, 0.22), CAR, colour * 0.5 + 0.02)
    world_polygon(batch, sub_quad(near, 0.38, 0.62, 0.28, 0.46), CAR, (0.6, 0.6, 0.56))


def _draw_truck(cv: Canvas, p: Vehicle) -> None:
    """A lorry: a cargo box and a cab, the cab at the far end when driving away."""
    r = random.Random(p.seed)
    x0, x1, z0, z1 = p.x - 1.225, p.x + 1.225, p.z, p.z + p.length
    cab_colour = np.array(r.choice(CAR_COLOURS), np.float32) + 0.05
    light = _shading(cv, p)
    batch = Batch(cv, z0)
    cab_near = p.facing == "front"
    split = z0 + 2.3 if cab_near else z1 - 2.3
    cab = (z0, split) if cab_near else (split + 0.3, z1)
    cargo = (split + 0.3, z1) if cab_near else (z0, split)
    parts = [(cargo, 0.6, 3.6, p.color.astype(np.float32)), (cab, 0.45, 2.9, cab_colour)]
    for (za, zb), y0, y1, colour in sorted(parts, key=lambda part: -part[0][0]):
        faces = _box_faces(cv.cam, x0, x1, y0, y1, za, zb)
        _solid(batch, faces, TRUCK, colour, light)
        if faces.side is not None:
            for zc in (za + 1.0, zb - 1.0):
                _wheel(batch, faces.side[0, 0], zc, 0.5, TRUCK)
        if (za, zb) == cab and cab_near:
            world_polygon(batch, sub_quad(faces.near, 0.05, 0.95, 0.55, 0.92), TRUCK,
                          (0.06, 0.07, 0.09))
        elif (za, zb) == cargo and not cab_near:
            world_polygon(batch, sub_quad(faces.near, 0.49, 0.51, 0.05, 0.97), TRUCK,
                          colour * light.near * 0.5)
    world_polygon(batch, [(x0, 0.25, z0), (x1, 0.25, z0), (x1, 0.6, z0), (x0, 0.6, z0)], TRUCK,
                  (0.05, 0.05, 0.05))
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
    glass = np.array([0.05, 0.06, 0.07], np.float32)
    light = _shading(cv, p)
    batch = Batch(cv, z0)
    faces = _box_faces(cv.cam, x0, x1, *ys, z0, z1)
    _solid(batch, faces, label_id, colour, light, sheen=0.05)
    if faces.side is not None:
        side = faces.side
        panes = max(int(p.length / pane), 1)
        for k in range(panes):
            a = k / panes
            world_polygon(batch, sub_quad(side, a + 0.08 / panes, a + 0.92 / panes, 0.4, 0.85),
                          label_id, glass * (1.0 + 0.4 * (k % 3)) * light.side)
        world_polygon(batch, sub_quad(side, 0.0, 1.0, 0.0, 0.12), label_id,
                      colour * light.side * 0.4)
        for zc in (z0 + wheel_at[0], z1 - wheel_at[1]):
            _wheel(batch, side[0, 0], zc, 0.5, label_id)
    near = faces.near
    low = 0.3 if p.facing == "front" else 0.55
    world_polygon(batch, sub_quad(near, 0.05, 0.95, low, 0.86), label_id,
                  glass * light.near + 0.03)
    world_polygon(batch, sub_quad(near, 0.1, 0.9, 0.89, 0.97), label_id, (0.03, 0.03, 0.03))
    for lo, hi in ((0.03, 0.15), (0.85, 0.97)):
        world_polygon(batch, sub_quad(near, lo, hi, 0.1, 0.18), label_id, (0.6, 0.56, 0.42))
    batch.draw()


_DRAW: dict[str, Callable[[Canvas, Any], None]] = {
    "tree": _draw_tree, "lamp": _draw_lamp, "pole": _draw_pole, "bollard": _draw_bollard,
    "sign": _draw_sign, "light": _draw_light, "static": _draw_static, "dynamic": _draw_dynamic,
    "person": _draw_person, "parked": _draw_parked, "cyclist": _draw_cyclist,
    "car": _draw_car, "truck": _draw_truck, "bus": _draw_bus, "train": _draw_train,
}


def draw_item(cv: Canvas, item: Item) -> None:
    """Draw one object of the scene, by its kind."""
    _DRAW[item.kind](cv, item)
