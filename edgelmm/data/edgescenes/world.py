"""The EdgeScenes world: what a scene may contain, and how scenes are drawn at random.

The world is fixed (evaluation relies on it exactly): a 224x224 light canvas holding 1 to 6 objects,
each a circle, square, triangle or star in one of seven colours and two sizes, fully inside the canvas,
with bounding boxes at least 4 px apart. A `Scene` is the exact symbolic description of one image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

CANVAS = 224
SHAPES = ("circle", "square", "triangle", "star")
COLORS = {
    "red": (220, 38, 38), "orange": (249, 115, 22), "yellow": (234, 179, 8), "green": (22, 163, 74),
    "blue": (37, 99, 235), "purple": (147, 51, 234), "black": (30, 30, 30),
}
SIZES = {"small": (28, 40), "large": (48, 64)}  # side of the bounding box's longer edge, px
COLOR_JITTER = 15
MIN_GAP = 4  # px between any two bounding boxes
EDGE_MARGIN = 1  # px kept free at the canvas border, so anti-aliased edges stay inside
BACKGROUNDS = ("solid", "gradient", "noise")
BACKGROUND_RANGE = (200, 250)  # every background channel stays in this range
MAX_OBJECTS = 6

_STAR_INNER = 0.45  # inner / outer radius of the five-pointed star


@dataclass
class SceneObject:
    shape: str
    color: str
    size: str
    rgb: tuple[int, int, int]  # the drawn colour: nominal colour + jitter
    center: tuple[float, float]  # centre of the bounding box (x right, y down)
    extent: float  # longer side of the bounding box
    rotation: float  # degrees, counter-clockwise on screen; 0 for circles
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x0, y0, x1, y1

    def outline(self) -> list[tuple[float, float]] | None:
        """Polygon vertices in canvas pixels (None for a circle, drawn as an ellipse in `bbox`)."""
        if self.shape == "circle":
            return None
        pts = _rotated_unit_shape(self.shape, self.rotation)
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        scale = self.extent / max(x1 - x0, y1 - y0)
        pts = (pts - [(x0 + x1) / 2, (y0 + y1) / 2]) * scale + self.center
        return [tuple(p) for p in pts]


@dataclass
class Scene:
    id: str
    image: str  # file name inside the data set's images/ folder
    background: dict  # {"kind": "solid"|"gradient"|"noise", "colors": [[r,g,b], ...], ...}
    objects: list[SceneObject] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        objects = [SceneObject(**{**o, "rgb": tuple(o["rgb"]), "center": tuple(o["center"]),
                                  "bbox": tuple(o["bbox"])}) for o in d["objects"]]
        return cls(id=d["id"], image=d["image"], background=d["background"], objects=objects)


def _rotated_unit_shape(shape: str, rotation: float) -> np.ndarray:
    if shape == "square":
        angles, radii = np.deg2rad([45, 135, 225, 315]), np.ones(4)
    elif shape == "triangle":
        angles, radii = np.deg2rad([-90, 30, 150]), np.ones(3)
    elif shape == "star":
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, 1.0, _STAR_INNER)
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    angles = angles - math.radians(rotation)  # y points down: subtracting turns counter-clockwise on screen
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)  # (V, 2)


def _bbox(obj: SceneObject) -> tuple[float, float, float, float]:
    pts = obj.outline()
    if pts is None:
        r = obj.extent / 2
        return obj.center[0] - r, obj.center[1] - r, obj.center[0] + r, obj.center[1] + r
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def boxes_apart(a, b, gap: float = MIN_GAP) -> bool:
    """True when boxes (x0, y0, x1, y1) are separated by at least `gap` px along some axis."""
    return a[0] - b[2] >= gap or b[0] - a[2] >= gap or a[1] - b[3] >= gap or b[1] - a[3] >= gap


def _sample_object(rng: np.random.Generator) -> SceneObject:
    shape = SHAPES[rng.integers(len(SHAPES))]
    color = list(COLORS)[rng.integers(len(COLORS))]
    size = list(SIZES)[rng.integers(len(SIZES))]
    rgb = tuple(int(c) for c in np.clip(np.asarray(COLORS[color]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255))
    lo, hi = SIZES[size]
    extent = float(rng.integers(lo, hi + 1))
    rotation = 0.0 if shape == "circle" or rng.random() < 0.3 else round(float(rng.uniform(0, 360)), 1)
    return SceneObject(shape, color, size, rgb, (0.0, 0.0), extent, rotation)


def _place(obj: SceneObject, placed: list[SceneObject], rng: np.random.Generator, tries: int = 50) -> bool:
    """Put `obj` somewhere inside the canvas away from `placed`; False if no spot was found."""
    obj.center = (0.0, 0.0)
    x0, y0, x1, y1 = _bbox(obj)  # the box around the origin gives the half extents
    for _ in range(tries):
        cx = round(float(rng.uniform(EDGE_MARGIN - x0, CANVAS - EDGE_MARGIN - x1)), 2)
        cy = round(float(rng.uniform(EDGE_MARGIN - y0, CANVAS - EDGE_MARGIN - y1)), 2)
        obj.center = (cx, cy)
        box = _bbox(obj)
        if min(box) < 0 or max(box) > CANVAS:  # rounding pushed it out
            continue
        if all(boxes_apart(box, other.bbox) for other in placed):
            obj.bbox = tuple(round(float(v), 2) for v in box)
            return True
    return False


def _sample_background(rng: np.random.Generator) -> dict:
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    lo, hi = BACKGROUND_RANGE
    n_colors = 2 if kind == "gradient" else 1
    colors = [[int(c) for c in rng.integers(lo, hi + 1, 3)] for _ in range(n_colors)]
    background = {"kind": kind, "colors": colors}
    if kind == "gradient":
        background["direction"] = ("horizontal", "vertical", "diagonal")[rng.integers(3)]
    if kind == "noise":
        background["noise_seed"] = int(rng.integers(2**31))
        background["noise_std"] = 4.0
    return background


def sample_scene(rng: np.random.Generator, scene_id: str, image: str) -> Scene:
    """Draw one scene: background and 1-6 non-overlapping objects."""
    background = _sample_background(rng)
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    while True:  # a crowded draw that cannot be placed is redrawn; it is rare
        objects: list[SceneObject] = []
        for _ in range(n):
            obj = _sample_object(rng)
            if not _place(obj, objects, rng):
                break
            objects.append(obj)
        if len(objects) == n:
            return Scene(scene_id, image, background, objects)
