"""What a scene is, in metres and fractions of the image size: the records that ``compose`` fills in
and the drawing modules read. Nothing here depends on the image size or draws random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from segkit.synthetic.palette import ROAD, Colour


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
    buildings: list[dict] = field(default_factory=list)
    back: list[dict] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)  # walls, fences, hedges on the building line


@dataclass
class Scene:
    """Everything about one frame, in metres and fractions of the image size."""

    horizon: float  # row of the horizon, fraction of the height
    vp: float  # column of the vanishing point, fraction of the width
    road: tuple[float, float]  # x of the left and right road edges
    asphalt: float  # grey level of the road
    lanes: list[dict]  # markings: x, width, period, duty
    sides: tuple[Side, Side]
    crossing: tuple[float, float] | None  # z range of a cross street
    z_end: float  # where the street ends in a row of buildings or trees
    far: list[dict]  # what stands at z_end
    objects: list[tuple[float, str, dict]]  # (depth for drawing order, kind, parameters)
    light: dict
    ego: dict
    rails: float | None  # x of tram rails
    patches: list[dict]  # ground label areas: x range, z range, label, colour
    seed: int  # for the textures, drawn last
