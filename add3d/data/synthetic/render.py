"""Render a scene through P2: z-buffered boxes over a textured ground plane and a sky.

Depth comes from :func:`add3d.geometry.raster.rasterize_polygon_depth` (exact ray/plane depth at
pixel centres), seeded with the analytic depth of the ground, so the dense depth map written next
to the image is the true rect z of what each pixel shows. Colour is painted afterwards from the
3D point under each pixel: Lambert shading from a random sun, hard shadows on the ground, and
part textures in object coordinates (headlights at the front, red lights at the back, windows,
wheels, faces), which is what makes heading recoverable from the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from add3d.data.synthetic import scene as S
from add3d.data.synthetic.camera import Rig
from add3d.geometry.boxes import BOX_FACES, box3d_corners, rotation_y_matrix
from add3d.geometry.raster import camera_rays, rasterize_polygon_depth

NEAR = 0.5  # metres; nothing in a scene is closer to the camera
MAX_DEPTH = 250.0  # beyond this (far ground at the horizon, sky) the dense depth map says 0 = unknown
FACES_PER_PART = len(BOX_FACES)
# Outward normals of BOX_FACES in the object frame (rect axes, y down): bottom, top, front, back, right, left.
LOCAL_FACE_NORMALS = np.array([[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, -1], [0, 0, 1]], dtype=float)
TOP, FRONT, BACK, RIGHT, LEFT = 1, 2, 3, 4, 5
TEXTURE_SIZE = 128


@dataclass
class RenderedFrame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32 rect z in metres, 0 = unknown (sky, beyond MAX_DEPTH)
    part_map: np.ndarray  # (H, W) int32 part index, -1 ground / sky
    object_map: np.ndarray  # (H, W) int32 scene-object index, -1 ground / sky / clutter


def _visible_faces(corners: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Indices of the faces of one box that face the camera (the others are hidden by them)."""
    centre = corners.mean(axis=0)
    face_centres = corners[BOX_FACES].mean(axis=1)
    outward = face_centres - centre
    return np.nonzero(np.einsum("fi,fi->f", outward, origin - face_centres) > 0)[0]


def _in_view(corners: np.ndarray, P2: np.ndarray, width: int, height: int) -> bool:
    if np.any(corners[:, 2] < NEAR):
        return True  # straddles the image plane: let the clipping rasteriser decide
    projected = np.concatenate([corners, np.ones((8, 1))], axis=1) @ P2.T
    uv = projected[:, :2] / projected[:, 2:3]
    return uv[:, 0].max() >= 0 and uv[:, 0].min() < width and uv[:, 1].max() >= 0 and uv[:, 1].min() < height


def _road_coordinates(scene: S.Scene, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lateral, along) metres of ground points in the road's frame."""
    road = scene.road
    c, s = np.cos(road["yaw"]), np.sin(road["yaw"])
    dx = x - road["offset"]
    return dx * c - z * s, dx * s + z * c


def _paint_ground(scene: S.Scene, points: np.ndarray, textures: np.ndarray) -> np.ndarray:
    """RGB albedo (N,3) of ground points (N,3)."""
    light = scene.lighting
    lateral, along = _road_coordinates(scene, points[:, 0], points[:, 2])
    fine = textures[0][(np.floor(lateral / 0.08).astype(np.int64) & (TEXTURE_SIZE - 1)),
                       (np.floor(along / 0.08).astype(np.int64) & (TEXTURE_SIZE - 1))]
    coarse = textures[1][(np.floor(lateral / 1.7).astype(np.int64) & (TEXTURE_SIZE - 1)),
                         (np.floor(along / 1.7).astype(np.int64) & (TEXTURE_SIZE - 1))]
    half, sidewalk = scene.road["half_width"], scene.road["sidewalk"]
    distance = np.abs(lateral)
    albedo = np.empty((len(points), 3))
    road = distance < half
    walk = (distance >= half) & (distance < half + sidewalk)
    verge = distance >= half + sidewalk
    albedo[road] = light["asphalt"] * (0.88 + 0.24 * fine[road, None]) * (0.93 + 0.14 * coarse[road, None])
    albedo[walk] = light["sidewalk"] * (0.9 + 0.2 * fine[walk, None])
    albedo[verge] = light["verge"] * (0.75 + 0.3 * fine[verge, None]) * (0.7 + 0.6 * coarse[verge, None])
    kerb = (distance >= half) & (distance < half + 0.15)
    albedo[kerb] *= 0.6
    edge_line = (distance > half - 0.4) & (distance < half - 0.25)
    dash = scene.road["dash"]
    dashed = np.mod(along, 2 * dash) < dash
    lanes = np.zeros(len(points), bool)
    position = -half + scene.road["lane_width"]
    while position < half - 1.5:
        lanes |= (np.abs(lateral - position) < 0.08) & dashed
        position += scene.road["lane_width"]
    albedo[edge_line | lanes] = 0.85
    return albedo


def _shadow_mask(scene: S.Scene, rig: Rig) -> np.ndarray:
    """(H, W) bool: ground pixels in the hard shadow of some box."""
    mask = np.zeros((rig.height, rig.width), np.uint8)
    sun, ground, P2 = scene.lighting["sun"], scene.ground, rig.calib.P2
    rise = float(sun @ ground.up)
    parts = scene.parts
    if rise <= 0.05 or len(parts) == 0:
        return mask.astype(bool)
    corners = box3d_corners(parts.dims, parts.location, parts.rotation_y).reshape(-1, 3)
    heights = np.clip(ground.height_above(corners), 0.0, None)
    cast = (corners - (heights / rise)[:, None] * sun[None, :]).reshape(-1, 8, 3)
    for points in cast:
        if np.any(points[:, 2] < NEAR):
            continue
        projected = np.concatenate([points, np.ones((8, 1))], axis=1) @ P2.T
        uv = projected[:, :2] / projected[:, 2:3]
        if uv[:, 0].max() < 0 or uv[:, 0].min() >= rig.width or uv[:, 1].max() < 0 or np.abs(uv).max() > 1e5:
            continue
        hull = cv2.convexHull(np.round((uv - 0.5) * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _paint_parts(scene: S.Scene, part: np.ndarray, face: np.ndarray, points: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Albedo (N,3) and emission flags (N,) of part pixels from their 3D points."""
    parts = scene.parts
    dims, location, ry = parts.dims[part], parts.location[part], parts.rotation_y[part]
    c, s = np.cos(ry), np.sin(ry)
    d = points - location
    qx, up, qz = c * d[:, 0] - s * d[:, 2], -d[:, 1], s * d[:, 0] + c * d[:, 2]
    ax = qx / (dims[:, 2] / 2)  # -1 back .. +1 front
    ay = up / dims[:, 0]  # 0 bottom .. 1 top
    az = np.abs(qz) / (dims[:, 1] / 2)  # 0 centre .. 1 side
    kind = parts.kind[part]
    albedo = parts.colour[part] * rng.uniform(0.96, 1.04, size=(len(part), 1))
    emissive = np.zeros(len(part), bool)

    def paint(where: np.ndarray, colour, glow: bool = False) -> None:
        albedo[where] = colour
        emissive[where] |= glow

    front, back, side = face == FRONT, face == BACK, (face == LEFT) | (face == RIGHT)
    body = kind == S.CAR_BODY
    paint(body & (ay < 0.18), (0.08, 0.08, 0.08))  # shadowed underbody / bumpers
    paint(body & front & (az > 0.45) & (az < 0.88) & (ay > 0.45) & (ay < 0.72), (1.0, 0.98, 0.85), True)
    paint(body & front & (az < 0.35) & (ay > 0.3) & (ay < 0.62), (0.12, 0.12, 0.13))  # grille
    paint(body & back & (az > 0.5) & (az < 0.92) & (ay > 0.5) & (ay < 0.78), (0.85, 0.05, 0.04), True)
    paint(body & back & (az < 0.22) & (ay > 0.28) & (ay < 0.45), (0.9, 0.9, 0.85))  # number plate
    wheel = body & side & (ay < 0.55) & ((np.abs(ax - 0.62) < 0.17) | (np.abs(ax + 0.62) < 0.17))
    paint(wheel, (0.05, 0.05, 0.05))
    cabin = kind == S.CAR_CABIN
    glass = cabin & (ay > 0.08) & (ay < 0.85)
    paint(glass & side & (np.abs(ax) < 0.85), (0.12, 0.15, 0.2))
    paint(glass & front & (az < 0.85), (0.45, 0.55, 0.65))  # windscreen reflects the sky
    paint(glass & back & (az < 0.8), (0.06, 0.07, 0.09))
    head = kind == S.PED_HEAD
    paint(head & (~front | (ay > 0.8)), (0.1, 0.07, 0.05))  # hair: the face shows only at the front
    torso = kind == S.PED_TORSO
    albedo[torso & back] *= 0.55  # backpack / darker back
    paint((kind == S.PED_LEGS) & (ay < 0.1), (0.06, 0.06, 0.06))  # shoes
    bike = kind == S.BIKE
    tyre = bike & (ay < 0.6) & ((np.abs(ax - 0.6) < 0.38) | (np.abs(ax + 0.6) < 0.38))
    paint(tyre, (0.04, 0.04, 0.04))
    paint(bike & front & (ay > 0.55) & (ay < 0.8), (1.0, 1.0, 0.9), True)
    paint(bike & back & (ay > 0.45) & (ay < 0.7), (0.9, 0.05, 0.05), True)
    building = kind == S.BUILDING
    storeys = building & (up > 1.0) & (np.mod(up, 3.0) > 1.0) & (face != TOP)  # not on the roof
    window = storeys & side & (np.mod(qx, 3.2) > 0.9) & (np.mod(qx, 3.2) < 2.3)
    window |= storeys & (front | back) & (np.mod(qz, 3.2) > 0.9) & (np.mod(qz, 3.2) < 2.3)
    albedo[window] = albedo[window] * 0.3 + 0.05
    tree = kind == S.TREE
    albedo[tree] *= rng.uniform(0.6, 1.3, size=(int(tree.sum()), 1))
    return albedo, emissive


def _sky(scene: S.Scene, rig: Rig) -> np.ndarray:
    """(H, W, 3) sky gradient, from the top of the image to the horizon row."""
    far_point = np.array([[0.0, float(scene.ground.y_at(0.0, 1e5)), 1e5]])
    horizon = float((np.concatenate([far_point, [[1.0]]], axis=1) @ rig.calib.P2.T)[0, 1] / 1e5)
    rows = np.arange(rig.height) + 0.5
    t = np.clip(rows / max(horizon, 1.0), 0.0, 1.0)[:, None]
    column = scene.lighting["sky_top"] * (1 - t) + scene.lighting["sky_bottom"] * t
    return np.broadcast_to(column[:, None, :], (rig.height, rig.width, 3))


def render(scene: S.Scene, rig: Rig, rng: np.random.Generator) -> RenderedFrame:
    """Render ``scene`` as seen by camera 2 of ``rig``; ``rng`` draws textures and sensor noise."""
    width, height, P2 = rig.width, rig.height, rig.calib.P2
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    origin, directions = camera_rays(P2, u.reshape(-1), v.reshape(-1))
    t = scene.ground.intersect(origin, directions)
    depth = (origin[2] + t).reshape(height, width)  # directions have z == 1
    part_map = np.full((height, width), -1, np.int32)

    parts = scene.parts
    all_corners = box3d_corners(parts.dims, parts.location, parts.rotation_y) if len(parts) else np.zeros((0, 8, 3))
    for index, corners in enumerate(all_corners):
        if not _in_view(corners, P2, width, height):
            continue
        for face in _visible_faces(corners, origin):
            rasterize_polygon_depth(corners[BOX_FACES[face]], P2, depth, near=NEAR, index_map=part_map,
                                    index=index * FACES_PER_PART + int(face))

    textures = rng.random((2, TEXTURE_SIZE, TEXTURE_SIZE))
    light = scene.lighting
    flat_depth, flat_ids = depth.reshape(-1), part_map.reshape(-1)
    points = origin[None, :] + (flat_depth - origin[2])[:, None] * directions
    colour = np.array(_sky(scene, rig), dtype=np.float64).reshape(-1, 3)

    ground_pixels = np.nonzero((flat_ids < 0) & np.isfinite(flat_depth))[0]
    ground_albedo = _paint_ground(scene, points[ground_pixels], textures)
    sunlit = max(float(light["sun"] @ scene.ground.up), 0.0)
    in_shadow = _shadow_mask(scene, rig).reshape(-1)[ground_pixels]
    ground_shade = light["ambient"] + (1 - light["ambient"]) * sunlit * (~in_shadow)
    haze = np.clip((flat_depth[ground_pixels] - 40.0) / 250.0, 0.0, 0.7)[:, None]
    colour[ground_pixels] = (ground_albedo * ground_shade[:, None]) * (1 - haze) + light["sky_bottom"] * haze

    part_pixels = np.nonzero(flat_ids >= 0)[0]
    if part_pixels.size:
        ids = flat_ids[part_pixels]
        part, face = ids // FACES_PER_PART, ids % FACES_PER_PART
        albedo, emissive = _paint_parts(scene, part, face, points[part_pixels], rng)
        normals = np.einsum("nij,nj->ni", rotation_y_matrix(parts.rotation_y[part]), LOCAL_FACE_NORMALS[face])
        shade = light["ambient"] + (1 - light["ambient"]) * np.clip(normals @ light["sun"], 0.0, None)
        shade = np.where(emissive, 1.0 / light["exposure"], shade)
        haze = np.clip((flat_depth[part_pixels] - 40.0) / 250.0, 0.0, 0.7)[:, None]
        colour[part_pixels] = (albedo * shade[:, None]) * (1 - haze) + light["sky_bottom"] * haze

    colour = colour.reshape(height, width, 3) * light["exposure"] * light["tint"]
    colour = cv2.GaussianBlur(colour, (3, 3), 0.6)
    colour += rng.normal(0.0, 0.012, size=colour.shape)
    image = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)

    depth = np.where(np.isfinite(depth) & (depth <= MAX_DEPTH), depth, 0.0).astype(np.float32)
    owners = np.concatenate([parts.owner, [-1]]) if len(parts) else np.array([-1])
    object_map = owners[np.where(part_map >= 0, part_map // FACES_PER_PART, -1)].astype(np.int32)
    return RenderedFrame(image=image, depth=depth, part_map=part_map, object_map=object_map)
