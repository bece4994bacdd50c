"""Geometric augmentation shared by the image, its labels, its calibration and any per-pixel map.

MonoDLE's recipe (xinzhuma/monodle): optionally flip the original image horizontally (p = 0.5),
optionally pick a random crop (p = 0.5) whose size is the image size times a factor clipped to
[1 - scale, 1 + scale] and whose centre is shifted by up to 2 * shift of the image size, then map
that crop onto the network input with ONE uniform scale (set by the width) plus a translation.
Because the scale is uniform and there is no rotation, the warp is an affine map that keeps the
pinhole model: the input image's calibration is exactly ``A @ P2`` (see ``Calibration``).

Everything here works in continuous pixel coordinates (pixel i covers [i, i+1), its centre is at
i + 0.5), so a flip maps u to ``width - u`` -- the convention of
:meth:`add3d.geometry.calib.Calibration.flipped`, of the synthetic renderer and of the LiDAR depth
maps, and the one PIL's flip and affine transform use (the official MonoDLE / GUPNet pipelines).
OpenCV's ``warpAffine`` puts pixel centres at integers instead, so each warp is conjugated by a
half-pixel shift before it reaches OpenCV (``opencv_warp_matrix``); without that, a flipped image
sat 1 px off its flipped labels and a crop-resize by s moved content by (s - 1) / 2 px.
Labels come out in the INPUT image: 2D boxes in input pixels, 3D boxes in the (possibly mirrored)
rectified frame, angles mirrored. Per-pixel maps (depth, validity) are warped with nearest-neighbour
sampling so that depths of neighbouring objects never blend into depths that exist nowhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import cv2
import numpy as np

from add3d.data.kitti import Object3D
from add3d.geometry.calib import Calibration, normalize_angle


@dataclass(frozen=True)
class AugmentationParams:
    """Random choices for one sample; the identity is ``AugmentationParams()`` (no flip, no crop)."""

    flip: bool = False
    crop: bool = False
    crop_scale: float = 1.0  # crop size / image size (> 1 zooms out, < 1 zooms in)
    center_shift: tuple[float, float] = (0.0, 0.0)  # crop centre - image centre, in pixels
    depth_gain: float = 1.0  # teacher depth jitter: input depth and depth target times this, image unchanged


def sample_augmentation(
    rng: np.random.Generator,
    image_size: tuple[int, int],
    flip_probability: float = 0.5,
    crop_probability: float = 0.5,
    scale: float = 0.4,
    shift: float = 0.1,
    depth_jitter: float = 0.0,
    depth_jitter_farther_only: bool = False,
) -> AugmentationParams:
    """Draw MonoDLE's flip / crop-scale augmentation. ``image_size`` is (width, height).

    The draws happen in a fixed order (flip, crop, scale, shift x, shift y) whatever the outcome,
    so one sample's randomness never depends on another's. ``depth_jitter`` j > 0 adds a last draw,
    the depth gain exp(U(-j, j)), so the earlier draws are those of a run without jitter;
    ``depth_jitter_farther_only``: exp(U(0, j)), never nearer (the same one draw).
    """
    width, height = image_size
    flip_draw, crop_draw = rng.random(), rng.random()
    scale_draw, shift_x_draw, shift_y_draw = rng.standard_normal(3)
    low = 0.0 if depth_jitter_farther_only else -depth_jitter
    depth_gain = float(np.exp(rng.uniform(low, depth_jitter))) if depth_jitter > 0 else 1.0
    flip = bool(flip_draw < flip_probability)
    crop = bool(crop_draw < crop_probability)
    if not crop:
        return AugmentationParams(flip=flip, depth_gain=depth_gain)
    crop_scale = float(np.clip(scale_draw * scale + 1.0, 1.0 - scale, 1.0 + scale))
    shift_x = float(width * np.clip(shift_x_draw * shift, -2 * shift, 2 * shift))
    shift_y = float(height * np.clip(shift_y_draw * shift, -2 * shift, 2 * shift))
    return AugmentationParams(flip=flip, crop=True, crop_scale=crop_scale, center_shift=(shift_x, shift_y),
                              depth_gain=depth_gain)


def flip_matrix(width: float) -> np.ndarray:
    """2x3 affine of a horizontal flip of an image ``width`` pixels wide (u -> width - u)."""
    return np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0]])


def crop_resize_matrix(center: np.ndarray, crop_width: float, output_size: tuple[int, int]) -> np.ndarray:
    """2x3 affine that maps a crop centred at ``center`` and ``crop_width`` wide onto the output.

    ``output_size`` is (width, height). One scale for both axes (output width / crop width), the
    crop centre lands on the output centre -- MonoDLE's ``get_affine_transform`` without rotation.
    """
    out_w, out_h = output_size
    s = out_w / float(crop_width)
    return np.array([[s, 0.0, out_w / 2.0 - s * center[0]], [0.0, s, out_h / 2.0 - s * center[1]]])


def compose_affine(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``second o first`` (apply ``first``, then ``second``)."""
    a = np.vstack([second, [0.0, 0.0, 1.0]])
    b = np.vstack([first, [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([affine, [0.0, 0.0, 1.0]]))[:2]


def apply_affine_to_points(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,2) pixel points through a 2x3 affine."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ affine[:, :2].T + affine[:, 2]


def opencv_warp_matrix(affine: np.ndarray) -> np.ndarray:
    """The 2x3 affine in OpenCV's pixel indices (centres at integers) of a continuous-pixel ``affine``.

    Index x sits at continuous x + 0.5, so the index-space map is shift(-0.5) o affine o shift(+0.5).
    """
    to_continuous = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    to_index = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5]])
    return compose_affine(to_index, compose_affine(affine, to_continuous))


def original_to_input_matrix(
    params: AugmentationParams, image_size: tuple[int, int], output_size: tuple[int, int]
) -> np.ndarray:
    """The full 2x3 warp original image -> network input (flip first, then crop + resize)."""
    width, height = image_size
    center = np.array([width / 2.0 + params.center_shift[0], height / 2.0 + params.center_shift[1]])
    warp = crop_resize_matrix(center, width * params.crop_scale, output_size)
    if params.flip:
        warp = compose_affine(warp, flip_matrix(width))
    return warp


def camera_centre(P2: np.ndarray) -> np.ndarray:
    """The optical centre of the 3x4 projection ``P2`` in rect coordinates (the point it maps to 0).

    Not the rect origin: KITTI's camera 2 sits ~6 cm beside it (``P2[:, 3]`` holds the offset)."""
    P2 = np.asarray(P2, dtype=np.float64)
    return -np.linalg.solve(P2[:, :3], P2[:, 3])


def scale_scene(objects: list[Object3D], P2: np.ndarray, gain: float) -> list[Object3D]:
    """The labels of the scene scaled by ``gain`` about the camera centre.

    Every 3D point moves along its own ray, so it projects to the same pixel: the image, the 2D
    boxes and the angles stay as they are, while locations, depths and 3D sizes are ``gain`` times
    larger. The teacher's scene-wide depth jitter (``data.depth_jitter_scope: scene``) uses this so
    that depth and 3D size stay consistent for detectors whose depth comes from heights (GUPNet's
    f * H / h, MonoFlex's keypoint depths).
    """
    centre = camera_centre(P2)
    scaled = [copy.deepcopy(o) for o in objects]
    for obj in scaled:
        obj.location = centre + gain * (np.asarray(obj.location, dtype=np.float64) - centre)
        obj.dims = np.asarray(obj.dims, dtype=np.float64) * gain
    return scaled


def flip_object(obj: Object3D, image_width: float) -> Object3D:
    """The label of ``obj`` seen in the horizontally flipped image (calibration ``calib.flipped``)."""
    flipped = copy.deepcopy(obj)
    x1, y1, x2, y2 = obj.box2d
    flipped.box2d = np.array([image_width - x2, y1, image_width - x1, y2])
    flipped.location = obj.location * np.array([-1.0, 1.0, 1.0])
    flipped.rotation_y = float(normalize_angle(np.pi - obj.rotation_y))
    flipped.alpha = float(normalize_angle(np.pi - obj.alpha))
    return flipped


@dataclass
class AugmentedSample:
    """A frame warped onto the network input. ``maps`` holds the warped extra per-pixel maps."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, the network input before normalisation
    calib: Calibration  # calibration of ``image`` (P2 = A @ P2 of the possibly flipped frame)
    objects: list[Object3D]  # box2d in input pixels; 3D in the (possibly mirrored) rect frame
    maps: dict[str, np.ndarray]
    original_to_input: np.ndarray  # 2x3
    input_to_original: np.ndarray  # 2x3
    params: AugmentationParams


def augment_frame(
    image: np.ndarray,
    calib: Calibration,
    objects: list[Object3D],
    output_size: tuple[int, int],
    params: AugmentationParams = AugmentationParams(),
    maps: dict[str, np.ndarray] | None = None,
) -> AugmentedSample:
    """Warp image, calibration, labels and per-pixel ``maps`` ((H,W) arrays) onto the input.

    ``output_size`` is (width, height). Pixels outside the source become 0 (black image, unknown
    depth). 2D boxes are not clipped to the input, as in MonoDLE (a crop may cut through them).
    """
    height, width = image.shape[:2]
    out_w, out_h = output_size
    warp = original_to_input_matrix(params, (width, height), output_size)
    pixel_warp = opencv_warp_matrix(warp)
    warped_image = cv2.warpAffine(image, pixel_warp, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=0)
    warped_maps = {}
    for name, value in (maps or {}).items():
        if value.shape[:2] != (height, width):
            raise ValueError(f"map '{name}' is {value.shape[:2]}, the image is {(height, width)}")
        warped_maps[name] = cv2.warpAffine(value, pixel_warp, (out_w, out_h), flags=cv2.INTER_NEAREST, borderValue=0)

    frame_calib = calib.flipped(width) if params.flip else calib
    frame_objects = [flip_object(o, width) for o in objects] if params.flip else [copy.deepcopy(o) for o in objects]
    crop_warp = compose_affine(warp, flip_matrix(width)) if params.flip else warp  # warp of the flipped frame
    for obj in frame_objects:
        corners = apply_affine_to_points(crop_warp, obj.box2d.reshape(2, 2))
        obj.box2d = corners.reshape(4)
    return AugmentedSample(
        image=warped_image,
        calib=frame_calib.affine_transformed(crop_warp),
        objects=frame_objects,
        maps=warped_maps,
        original_to_input=warp,
        input_to_original=invert_affine(warp),
        params=params,
    )
