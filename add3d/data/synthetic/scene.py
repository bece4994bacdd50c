"""Random driving-like scenes: a road, labelled road users built from a few boxes, and clutter.

A scene is sampled in metres and radians only, before any image size is known, so the same seed
gives the same world at every resolution. Each labelled object is a union of part boxes (car: body
+ cabin; pedestrian: legs + torso + head; cyclist: bike + rider torso + head) whose enclosing box
is exactly the label's (h, w, l) box; parts keep the object's yaw, and the front (+x in the object
frame) is painted differently from the back (see ``render.py``) so heading is learnable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from add3d.data.synthetic.camera import Ground

# Part kinds: decide the texture painted on a part (render.py) and its LiDAR reflectance.
CAR_BODY, CAR_CABIN, PED_LEGS, PED_TORSO, PED_HEAD, BIKE, BUILDING, POLE, CLUTTER, TREE = range(10)

# Class size distributions (h, w, l) mean and std in metres, close to KITTI's label statistics.
SIZE_STATS = {
    "Car": ((1.53, 1.63, 3.88), (0.14, 0.10, 0.43)),
    "Van": ((2.18, 1.90, 5.08), (0.25, 0.12, 0.50)),
    "Pedestrian": ((1.76, 0.66, 0.84), (0.11, 0.12, 0.22)),
    "Cyclist": ((1.74, 0.60, 1.76), (0.09, 0.10, 0.17)),
}
CLASS_WEIGHTS = {"Car": 0.62, "Pedestrian": 0.17, "Cyclist": 0.13, "Van": 0.08}
NEAREST_DEPTH, FARTHEST_DEPTH = 4.0, 60.0  # labelled objects
DONT_CARE_DEPTHS = (62.0, 85.0)  # far road users labelled DontCare, as KITTI does
CAR_COLOURS = np.array(
    [[0.92, 0.92, 0.9], [0.1, 0.1, 0.11], [0.6, 0.62, 0.64], [0.62, 0.08, 0.07], [0.1, 0.2, 0.5],
     [0.25, 0.3, 0.28], [0.75, 0.7, 0.55], [0.35, 0.18, 0.1], [0.85, 0.75, 0.1]]
)


@dataclass
class Parts:
    """Boxes of the scene (parts of objects and clutter), as parallel arrays."""

    dims: np.ndarray  # (P, 3) h, w, l
    location: np.ndarray  # (P, 3) bottom centre, rect
    rotation_y: np.ndarray  # (P,)
    colour: np.ndarray  # (P, 3) RGB in [0, 1]
    kind: np.ndarray  # (P,) int, one of the part kinds above
    owner: np.ndarray  # (P,) index into Scene.objects, -1 for clutter

    def __len__(self) -> int:
        return len(self.kind)


@dataclass
class SceneObject:
    cls_type: str  # Car, Van, Pedestrian, Cyclist; ``dont_care`` marks far ones
    dims: np.ndarray  # (h, w, l) of the union of its parts
    location: np.ndarray  # bottom centre, rect
    rotation_y: float
    dont_care: bool = False


@dataclass
class Scene:
    ground: Ground
    objects: list[SceneObject]
    parts: Parts
    road: dict = field(default_factory=dict)  # offset, yaw, half_width, lane_width, sidewalk
    lighting: dict = field(default_factory=dict)  # sun (3,), ambient, exposure, tint (3,), sky colours


class _PartList:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, dims, location, ry, colour, kind, owner) -> None:
        self.rows.append((np.asarray(dims, float), np.asarray(location, float), float(ry),
                          np.clip(np.asarray(colour, float), 0, 1), kind, owner))

    def build(self) -> Parts:
        if not self.rows:
            return Parts(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3)),
                         np.zeros(0, int), np.zeros(0, int))
        dims, loc, ry, colour, kind, owner = zip(*self.rows)
        return Parts(np.stack(dims), np.stack(loc), np.array(ry), np.stack(colour), np.array(kind), np.array(owner))


def _offset(location: np.ndarray, ry: float, along: float, up: float) -> np.ndarray:
    """Point ``along`` metres on the object's +x axis and ``up`` metres above ``location``."""
    return location + np.array([along * np.cos(ry), -up, -along * np.sin(ry)])


def _add_object_parts(parts: _PartList, obj: SceneObject, owner: int, rng: np.random.Generator) -> None:
    h, w, l = obj.dims
    loc, ry = obj.location, obj.rotation_y
    if obj.cls_type in ("Car", "Van"):
        colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))] * rng.uniform(0.85, 1.1)
        body_h = h * (rng.uniform(0.5, 0.6) if obj.cls_type == "Car" else rng.uniform(0.4, 0.5))
        cabin_l = l * (rng.uniform(0.48, 0.62) if obj.cls_type == "Car" else rng.uniform(0.75, 0.85))
        cabin_shift = -(l - cabin_l) / 2 * (rng.uniform(0.1, 0.5) if obj.cls_type == "Car" else 1.0)
        parts.add((body_h, w, l), loc, ry, colour, CAR_BODY, owner)
        parts.add((h - body_h, w * rng.uniform(0.84, 0.92), cabin_l), _offset(loc, ry, cabin_shift, body_h),
                  ry, colour, CAR_CABIN, owner)
        return
    skin = np.array([0.87, 0.68, 0.55]) * rng.uniform(0.45, 1.05)
    shirt = rng.uniform(0.1, 0.95, size=3)
    trousers = rng.uniform(0.05, 0.5, size=3)
    head_h = h * rng.uniform(0.12, 0.14)
    if obj.cls_type == "Pedestrian":
        legs_h = h * rng.uniform(0.45, 0.5)
        parts.add((legs_h, w, l), loc, ry, trousers, PED_LEGS, owner)  # the stride: the full footprint
        parts.add((h - legs_h - head_h, w, min(l, rng.uniform(0.3, 0.45))), _offset(loc, ry, 0.0, legs_h), ry,
                  shirt, PED_TORSO, owner)
        parts.add((head_h, min(w, 0.22), min(l, 0.24)), _offset(loc, ry, 0.0, h - head_h), ry, skin, PED_HEAD, owner)
        return
    # Cyclist: the bike spans the footprint (wheels to handlebar ends), the rider's torso and head above it.
    bike_h = h * rng.uniform(0.52, 0.6)
    bike_colour = rng.uniform(0.05, 0.9, size=3)
    parts.add((bike_h, w, l), loc, ry, bike_colour, BIKE, owner)
    torso_l = min(l, rng.uniform(0.35, 0.5))
    parts.add((h - bike_h - head_h, w * rng.uniform(0.8, 1.0), torso_l), _offset(loc, ry, -0.05 * l, bike_h), ry, shirt, PED_TORSO, owner)
    parts.add((head_h, min(w, 0.22), min(l, 0.24)), _offset(loc, ry, 0.02 * l, h - head_h), ry, skin, PED_HEAD, owner)


def _sample_size(cls_type: str, rng: np.random.Generator) -> np.ndarray:
    mean, std = (np.array(v) for v in SIZE_STATS[cls_type])
    return mean + std * np.clip(rng.standard_normal(3), -2.5, 2.5)


def _road_to_rect(road: dict, lateral: float, depth: float) -> float:
    """x of the point at ``lateral`` metres across the road axis, at rect depth ``depth``."""
    return road["offset"] + (lateral + depth * np.sin(road["yaw"])) / np.cos(road["yaw"])


def _lateral_for(cls_type: str, road: dict, rng: np.random.Generator) -> float:
    half, side = road["half_width"], rng.choice([-1.0, 1.0])
    roll = rng.random()
    if cls_type in ("Car", "Van"):
        if roll < 0.6:  # in a lane
            return rng.uniform(-half + 1.2, half - 1.2)
        if roll < 0.9:  # parked along the kerb
            return side * (half - rng.uniform(0.6, 1.2))
        return side * (half + road["sidewalk"] + rng.uniform(1.5, 8.0))  # car park / side street
    if cls_type == "Pedestrian":
        if roll < 0.75:
            return side * (half + rng.uniform(0.3, road["sidewalk"] - 0.3))
        return rng.uniform(-half, half)  # crossing
    return side * (half - rng.uniform(0.4, 1.4)) if roll < 0.8 else side * (half + rng.uniform(0.3, 1.5))


def _heading_for(cls_type: str, road: dict, rng: np.random.Generator) -> float:
    along = road["yaw"] - np.pi / 2 + (np.pi if rng.random() < 0.5 else 0.0)
    aligned = {"Car": 0.75, "Van": 0.8, "Cyclist": 0.75, "Pedestrian": 0.2}[cls_type]
    if rng.random() < aligned:
        return float(along + rng.normal(0.0, 0.08))
    return float(rng.uniform(-np.pi, np.pi))


def _free(footprints: list[tuple[float, float, float]], x: float, z: float, radius: float) -> bool:
    return all((x - fx) ** 2 + (z - fz) ** 2 > (radius + fr + 0.2) ** 2 for fx, fz, fr in footprints)


def _sample_depth(rng: np.random.Generator) -> float:
    # Skewed towards the 10-35 m range where most KITTI objects are, with a tail to 60 m.
    return NEAREST_DEPTH + (FARTHEST_DEPTH - NEAREST_DEPTH) * rng.beta(1.7, 2.6)


def sample_scene(rng: np.random.Generator, ground: Ground, tan_half_fov: float = 1.0) -> Scene:
    """Draw a scene. ``tan_half_fov`` (|x| / z at the image border) keeps objects near the view."""
    road = {
        "offset": rng.uniform(-2.5, 2.5),
        "yaw": rng.normal(0.0, 0.08),
        "half_width": rng.uniform(3.5, 7.5),
        "lane_width": rng.uniform(3.0, 3.6),
        "sidewalk": rng.uniform(2.0, 4.0),
        "dash": rng.uniform(2.5, 4.0),
    }
    sun_azimuth, sun_elevation = rng.uniform(-np.pi, np.pi), rng.uniform(np.radians(15), np.radians(70))
    lighting = {
        # Unit vector towards the sun, rect frame (y down).
        "sun": np.array([np.cos(sun_elevation) * np.sin(sun_azimuth), -np.sin(sun_elevation),
                         np.cos(sun_elevation) * np.cos(sun_azimuth)]),
        "ambient": rng.uniform(0.3, 0.55),
        "exposure": rng.uniform(0.65, 1.25),
        "tint": rng.uniform(0.9, 1.1, size=3),
        "sky_top": rng.uniform([0.25, 0.4, 0.65], [0.6, 0.7, 0.95]),
        "sky_bottom": rng.uniform([0.7, 0.75, 0.8], [0.95, 0.95, 0.98]),
        "asphalt": rng.uniform(0.22, 0.45) * rng.uniform(0.95, 1.05, size=3),
        "verge": rng.choice([[0.35, 0.45, 0.22], [0.5, 0.48, 0.42], [0.45, 0.4, 0.3]]) * rng.uniform(0.8, 1.2),
        "sidewalk": rng.uniform(0.5, 0.7) * rng.uniform(0.95, 1.05, size=3),
    }
    parts = _PartList()
    objects: list[SceneObject] = []
    footprints: list[tuple[float, float, float]] = []
    classes = list(CLASS_WEIGHTS)
    weights = np.array([CLASS_WEIGHTS[c] for c in classes])
    count = int(rng.integers(3, 11))
    n_dont_care = int(rng.integers(0, 3))
    for index in range(count + n_dont_care):
        dont_care = index >= count
        cls_type = "Car" if dont_care else str(rng.choice(classes, p=weights / weights.sum()))
        dims = _sample_size(cls_type, rng)
        ry = _heading_for(cls_type, road, rng)
        radius = 0.5 * np.hypot(dims[1], dims[2])
        for _ in range(20):
            z = rng.uniform(*DONT_CARE_DEPTHS) if dont_care else _sample_depth(rng)
            x = _road_to_rect(road, _lateral_for(cls_type, road, rng), z)
            if abs(x) < z * tan_half_fov * 1.15 + 1.0 and abs(x) < 30 and _free(footprints, x, z, radius):
                break
        else:
            continue
        footprints.append((x, z, radius))
        location = np.array([x, float(ground.y_at(x, z)), z])
        objects.append(SceneObject(cls_type, dims, location, ry, dont_care))
        _add_object_parts(parts, objects[-1], len(objects) - 1, rng)
    _add_clutter(parts, road, ground, footprints, rng, tan_half_fov)
    return Scene(ground=ground, objects=objects, parts=parts.build(), road=road, lighting=lighting)


def _add_clutter(parts: _PartList, road: dict, ground: Ground, footprints: list, rng: np.random.Generator,
                 tan_half_fov: float) -> None:
    """Unlabelled boxes: buildings and trees along the road, poles and bins on the sidewalks."""
    half, sidewalk, yaw = road["half_width"], road["sidewalk"], road["yaw"]
    along_ry = yaw - np.pi / 2

    def place(lateral: float, depth: float, dims, kind: int, colour, ry: float = along_ry) -> None:
        x = _road_to_rect(road, lateral, depth)
        radius = 0.5 * np.hypot(dims[1], dims[2])
        if kind in (POLE, CLUTTER) and not _free(footprints, x, depth, radius):
            return
        if kind in (POLE, CLUTTER):
            footprints.append((x, depth, radius))
        parts.add(dims, (x, float(ground.y_at(x, depth)), depth), ry, colour, kind, -1)

    for side in (-1.0, 1.0):
        depth = rng.uniform(2.0, 15.0)
        while depth < 140.0:  # a row of buildings / trees behind the sidewalk
            length = rng.uniform(6.0, 22.0)
            if rng.random() < 0.75:
                dims = (rng.uniform(4.0, 16.0), rng.uniform(6.0, 12.0), length)
                colour = rng.uniform(0.25, 0.85) * rng.uniform(0.85, 1.15, size=3)
                kind = BUILDING
            else:
                dims = (rng.uniform(3.0, 8.0), rng.uniform(2.0, 5.0), min(length, rng.uniform(2.0, 6.0)))
                colour = np.array([0.18, 0.35, 0.12]) * rng.uniform(0.6, 1.4)
                kind = TREE
            setback = half + sidewalk + rng.uniform(0.5, 6.0) + dims[1] / 2
            if rng.random() < 0.85:
                place(side * setback, depth + length / 2, dims, kind, colour)
            depth += length + rng.uniform(0.5, 12.0)
        for _ in range(int(rng.integers(1, 5))):  # street lights / sign posts
            dims = (rng.uniform(2.5, 7.0), 0.15, 0.15)
            place(side * (half + rng.uniform(0.2, 0.6)), rng.uniform(5.0, 70.0), dims, POLE,
                  rng.uniform(0.3, 0.7) * np.ones(3))
        for _ in range(int(rng.integers(0, 4))):  # bins, boxes, bollards
            dims = rng.uniform([0.5, 0.4, 0.4], [1.3, 1.2, 1.4])
            place(side * (half + rng.uniform(0.3, sidewalk)), rng.uniform(5.0, 50.0), dims, CLUTTER,
                  rng.uniform(0.1, 0.9, size=3), rng.uniform(-np.pi, np.pi))
    # A distant wall of hills / buildings closing the view.
    far = rng.uniform(150.0, 220.0)
    parts.add((rng.uniform(8.0, 25.0), 4.0, 600.0), (road["offset"], float(ground.y_at(road["offset"], far)), far),
              yaw, rng.uniform(0.35, 0.6) * np.array([0.8, 0.85, 0.9]), BUILDING, -1)
