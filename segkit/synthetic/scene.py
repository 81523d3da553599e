"""What a scene is, in metres and fractions of the image size: the records that ``compose`` fills in
and the drawing modules read. Nothing here depends on the image size or draws random numbers.
"""

from __future__ import annotations

import math
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
    """One building: extent, height, material, window grid, shops, balconies and roof."""

    z0: float  # extent along the street (across it for the far row: 0 to its width)
    z1: float
    height: float  # of the eaves
    color: np.ndarray  # RGB reflectance of the wall
    material: str  # "plaster", "brick", "stone" or "concrete"
    bay: float  # metres from one window column to the next
    floor: float  # storey height
    ground: float  # height of the ground floor
    win_w: float  # window width, fraction of a bay
    win_h: float  # window height, fraction of a storey
    u0: float  # where the first bay starts along the wall
    glass: np.ndarray  # RGB of the panes
    trim: np.ndarray  # RGB of window frames, sills and cornices
    shop: bool  # shop fronts with signs on the ground floor
    balconies: bool  # balconies on some bays
    roof: float  # height of a steep roof seen above the eaves (0: a flat roof)
    roof_color: np.ndarray
    depth: float  # how far it reaches back from the street (its end wall)
    seed: int  # for the bays, panes, shop signs and awnings

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
    sun: tuple[float, float]  # where a shadow falls per metre of height: (x, z) metres on the ground
    elevation: float  # of the sun, radians
    sky: float  # light from the sky: what a surface in shadow gets, against 1 in full sun
    clear_sky: bool
    haze: float  # metres over which the haze thickens by a factor e
    exposure: float
    contrast: float
    tint: np.ndarray  # white balance: RGB gains
    noise: float  # spread of the sensor noise in grey levels of a 2048-pixel-wide frame

    @property
    def sun_side(self) -> int:
        """The sun's side of the street, -1 left or +1 right: shadows point away from it."""
        return -1 if self.sun[0] > 0 else 1

    def shaded(self, ny: float = 0.0) -> float:
        """Brightness of a surface facing up by ``ny`` (0: upright) in a cast shadow."""
        return self.sky * (0.75 + 0.25 * ny)

    def face(self, nx: float, ny: float, nz: float) -> float:
        """Brightness of a surface with outward unit normal (nx, ny, nz) in full light (not in a
        cast shadow): the sky's share (more for surfaces facing up) and the sun's."""
        dome = self.shaded(ny)
        if not self.sunny:
            return dome
        length = max(math.hypot(*self.sun), 1e-6)
        cos_e, sin_e = math.cos(self.elevation), math.sin(self.elevation)
        toward = (-self.sun[0] / length * cos_e, sin_e, -self.sun[1] / length * cos_e)
        incidence = max(nx * toward[0] + ny * toward[1] + nz * toward[2], 0.0)
        return dome + min((1 - self.sky) * incidence / sin_e, 1.6 - self.sky)

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
    height: float
    facing: str  # the end the camera sees, "front" or "rear", or "left" or "right" for one
    # driving across the view (its length along x, centred on x, its side at depth z)
    color: np.ndarray
    shape: str = "box"  # a car's body: "saloon", "hatchback", "estate", "van", "suv" or "small"

    @property
    def across(self) -> bool:
        """Whether it stands across the street, seen from the side."""
        return self.facing in ("left", "right")

    def footprint(self) -> tuple[float, float, float, float]:
        """x0, x1, z0, z1 of the ground it stands on."""
        if self.across:
            return self.x - self.length / 2, self.x + self.length / 2, self.z, self.z + self.width
        return self.x - self.width / 2, self.x + self.width / 2, self.z, self.z + self.length


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
    paving: Colour = (0.25, 0.26, 0.25)
    slab: float = 0.4  # size of the paving slabs in metres
    cycle_lane: float = 0.0  # width of a red cycle lane along the kerb, part of the sidewalk
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
    asphalt: float  # reflectance of the road
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
    manholes: list[tuple[float, float]]  # (x, z) of covers in the road
    repairs: list[tuple[float, float, float, float, float]]  # road patches: x0, x1, z0, z1, tone
    seed: int  # for the textures, drawn last
