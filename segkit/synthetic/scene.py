"""What a scene is, in metres and fractions of the image size: the records that ``compose`` fills in
and the drawing modules read. Nothing here depends on the image size or draws random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segkit.synthetic.palette import ROAD, Colour


@dataclass(frozen=True, slots=True)
class Lane:
    """A lane line along the street at x, dashed or (duty 1) solid."""

    x: float
    width: float
    period: float  # metres from one dash to the next
    duty: float  # painted fraction of each period
    phase: float  # metres the dashes are shifted along the street


@dataclass(frozen=True, slots=True)
class Building:
    """One building: extent, height, wall colour and window grid."""

    z0: float  # extent along the street (across it for the far row: 0 to its width)
    z1: float
    height: float
    color: np.ndarray  # RGB of the wall
    bay: float  # metres from one window column to the next
    floor: float  # storey height
    ground: float  # height of the ground floor
    win_w: float  # window width, fraction of a bay
    win_h: float  # window height, fraction of a storey
    u0: float  # where the first bay starts along the wall
    glass: np.ndarray  # RGB of the panes
    shop: bool  # shop windows on the ground floor
    depth: float  # how far it reaches back from the street (its end wall)
    seed: int  # for the panes and the shop sign


@dataclass(frozen=True, slots=True)
class Edge:
    """A wall, fence or hedge in the plane x from z0 to z1."""

    kind: str  # "wall", "fence" or "hedge"
    x: float
    z0: float
    z1: float
    height: float
    seed: int


@dataclass(frozen=True, slots=True)
class FarTrees:
    """A clump of trees across the end of the street, centred at x."""

    x: float
    width: float
    height: float
    seed: int


@dataclass(frozen=True, slots=True)
class FarBuilding:
    """A building across the end of the street, facing the camera between x0 and x1."""

    x0: float
    x1: float
    building: Building


@dataclass(frozen=True, slots=True)
class Light:
    """Weather and camera response: sun and shadows, sky, haze, exposure, white balance."""

    sunny: bool
    sun_side: int  # the sun's side of the street: -1 left, +1 right
    shadow: float  # length of a building's shadow per metre of its height
    clear_sky: bool
    haze: float  # metres over which the haze thickens by a factor e
    exposure: float
    contrast: float
    tint: np.ndarray  # white balance: RGB gains
    saturation: float
    noise: float  # spread of the sensor noise in grey levels
    blur: float  # lens blur in pixels of a 2048-pixel-wide frame


@dataclass(frozen=True, slots=True)
class Ego:
    """The recording car's bonnet, in fractions of the image height, and the rectification."""

    side: float  # height of the bonnet at the image's sides
    mid: float  # how much higher it rises in the middle
    rectified: bool  # rectification wedges at the sides of the frame


@dataclass(frozen=True, slots=True)
class Patch:
    """Ground that is neither road nor sidewalk, between two x and two z."""

    x: tuple[float, float]
    z: tuple[float, float]
    label: int
    color: Colour


@dataclass(frozen=True, slots=True)
class Item:
    """Something standing in the street; its details are drawn from ``seed`` when it is drawn."""

    kind: str  # how it is drawn: "tree", "lamp", "pole", "sign", "light", "person", ...
    z: float  # depth of its near end, which orders the drawing
    x: float
    seed: int


@dataclass(frozen=True, slots=True)
class Tree(Item):
    """A tree: crown radius and trunk height in metres."""

    radius: float
    trunk: float


@dataclass(frozen=True, slots=True)
class Lamp(Item):
    """A street lamp whose arm reaches toward ``arm`` (-1 left, +1 right)."""

    arm: int


@dataclass(frozen=True, slots=True)
class Sign(Item):
    """A traffic sign, maybe turned away from the camera."""

    back: bool


@dataclass(frozen=True, slots=True)
class TrafficLight(Item):
    """A traffic light on a post, or over the road on an arm toward ``arm``."""

    overhead: bool
    arm: int


@dataclass(frozen=True, slots=True)
class TwoWheeler(Item):
    """A bicycle or motorcycle, parked or ridden."""

    vehicle: str  # "bicycle" or "motorcycle"
    squash: float = 1.0  # foreshortening of one parked at an angle
    side_view: bool = False  # crossing the street instead of riding along it
    length: float = 0.0  # metres of road it takes in traffic


@dataclass(frozen=True, slots=True)
class Vehicle(Item):
    """A car, truck, bus or tram."""

    width: float
    length: float
    facing: str  # the end the camera sees: "front" or "rear"
    color: np.ndarray


@dataclass
class Side:
    """One side of the street; distances are |x| in metres from the camera's line."""

    sign: int  # -1 left, +1 right
    kerb: float  # where the sidewalk starts
    sidewalk: float
    verge: float  # grass strip between the sidewalk and the building line
    facade: float  # the building line
    park: bool  # trees, hedges and grass instead of buildings
    parking: float = 0.0  # width of a parking strip between road and kerb
    parking_label: int = ROAD
    paving: Colour = (0.55, 0.53, 0.52)
    buildings: list[Building] = field(default_factory=list)
    back: list[Building] = field(default_factory=list)  # a taller row behind the street's
    back_offset: float = 0.0  # how far behind the building line the back row stands
    edges: list[Edge] = field(default_factory=list)  # walls, fences, hedges on the building line


@dataclass
class Scene:
    """Everything about one frame, in metres and fractions of the image size."""

    horizon: float  # row of the horizon, fraction of the height
    vp: float  # column of the vanishing point, fraction of the width
    road: tuple[float, float]  # x of the left and right road edges
    asphalt: float  # grey level of the road
    lanes: list[Lane]
    sides: tuple[Side, Side]
    crossing: tuple[float, float] | None  # z range of a cross street
    z_end: float  # where the street ends in a row of buildings or trees
    far: list[FarTrees | FarBuilding]  # what stands at z_end
    objects: list[Item]  # far to near, the order they are drawn in
    light: Light
    ego: Ego
    rails: float | None  # x of tram rails
    patches: list[Patch]
    seed: int  # for the textures, drawn last
