"""The depth probes: ~1 for a model that copies its depth input, 0 for an RGB model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from add3d.data.config import DataConfig
from add3d.data.loader import build_loader
from add3d.data.mono_dataset import build_mono_dataset
from add3d.data.transforms import apply_affine_to_points, invert_affine
from add3d.distill.teacher_input import InputSpec, decode_depth, detector_input
from add3d.engine.probes import common_depth_errors, depth_errors, depth_probes, format_probes, match_depths
from engine_helpers import make_fake_kitti

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")  # model.classes: the detected classes, in id order


class LabelLookupDetector(nn.Module):
    """Finds every labelled car (by frame id); its depth is the depth input at the box centre
    (``reads_depth``) or the label's own depth (an RGB model: it cannot see the depth input)."""

    def __init__(self, labels: dict, spec: InputSpec, reads_depth: bool):
        super().__init__()
        self.labels, self.spec, self.reads_depth = labels, spec, reads_depth
        self.in_channels = spec.in_channels

    def forward(self, image, targets=None, meta=None):
        return {"image": image}

    def decode(self, outputs, meta, score_threshold=None):
        results = []
        for i, frame_id in enumerate(meta["frame_id"]):
            to_input = invert_affine(meta["input_to_original"][i].double().numpy())
            found = []
            for label in self.labels[frame_id]:
                if label.cls_type != "Car":
                    continue
                detection = copy.deepcopy(label)
                if self.reads_depth:
                    centre = (label.box2d[:2] + label.box2d[2:]) / 2
                    u, v = apply_affine_to_points(to_input, centre[None])[0].astype(int)
                    image = outputs["image"][i]
                    detection.location[2] = float(decode_depth(image[3, v, u], image[4, v, u], self.spec))
                found.append(detection)
            results.append(found)
        return results


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = make_fake_kitti(tmp_path_factory.mktemp("probe") / "data", frames=2, val_frames=4)
    cfg = DataConfig(root=str(root), input_size=[64, 192], skip_unknown_difficulty=False, depth_source="object", depth_fill=3)
    dataset = build_mono_dataset(cfg, "val", classes=KITTI_CLASSES)
    loader = build_loader(dataset, 2, 0)
    truth = {frame_id: dataset.ground_truth(i) for i, frame_id in enumerate(dataset.ids)}
    return loader, truth


@pytest.mark.parametrize("encoding", ["linear", "log", "inverse"])
def test_a_model_that_copies_its_depth_input_has_sensitivity_one(setting, encoding):
    loader, truth = setting
    spec = InputSpec(kind="rgbd", depth_encoding=encoding, depth_fill=3)
    report = depth_probes(LabelLookupDetector(truth, spec, reads_depth=True), loader, truth, spec, torch.device("cpu"))
    assert report["matched"] == sum(o.cls_type == "Car" for labels in truth.values() for o in labels) > 0
    assert report["sensitivity"] == pytest.approx(1.0, abs=1e-3)
    assert np.isnan(report["zeroed_depth_mae_m"]) or report["zeroed_depth_mae_m"] > report["depth_mae_m"]
    assert "sensitivity to depth x1.2 1.00" in format_probes(report)


def test_an_rgb_model_has_sensitivity_zero_and_its_own_depth_error(setting):
    loader, truth = setting
    spec = InputSpec()
    report = depth_probes(LabelLookupDetector(truth, spec, reads_depth=False), loader, truth, spec,
                          torch.device("cpu"), perturb=True)
    assert report["sensitivity"] == 0.0
    assert report["depth_mae_m"] == 0.0 and report["within_1m"] == 1.0
    assert "sensitivity" not in depth_probes(LabelLookupDetector(truth, spec, False), loader, truth, spec, torch.device("cpu"))


def test_matching_needs_the_same_class_and_iou_and_uses_each_box_once(setting):
    _, truth = setting
    frame_id, labels = next((k, v) for k, v in truth.items() if any(o.cls_type == "Car" for o in v))
    car = next(o for o in labels if o.cls_type == "Car")
    shifted = copy.deepcopy(car)
    shifted.location = shifted.location + [0, 0, 2.0]
    twin = copy.deepcopy(shifted)
    far = copy.deepcopy(car)
    far.box2d = far.box2d + 1000.0
    matches = match_depths({frame_id: [car]}, {frame_id: [shifted, twin, far]})
    assert matches == {(frame_id, 0): (float(car.location[2]), float(car.location[2]) + 2.0)}
    errors = depth_errors(matches)
    assert errors["depth_mae_m"] == 2.0 and errors["within_1m"] == 0.0 and errors["matched"] == 1
    pedestrian = copy.deepcopy(shifted)
    pedestrian.cls_type = "Pedestrian"
    assert match_depths({frame_id: [car]}, {frame_id: [pedestrian]}) == {}


def test_detector_input_of_an_rgb_spec_is_the_image():
    batch = {"image": torch.ones(1, 3, 4, 4)}
    assert detector_input(batch, InputSpec()) is batch["image"]


def test_common_depth_errors_compare_two_models_on_the_objects_both_matched():
    # the baseline misses the far car the teacher matched with a 10 % error; on all matched cars the
    # teacher's median is then the 10 % one, on the common cars 1 % against the baseline's 4 %
    teacher = {("a", 0): (10.0, 10.1), ("a", 1): (20.0, 20.2), ("b", 0): (50.0, 55.0), ("b", 1): (60.0, 66.0)}
    baseline = {("a", 0): (10.0, 10.4), ("a", 1): (20.0, 19.2), ("c", 0): (30.0, 30.0)}
    assert depth_errors(teacher)["depth_median_rel"] == pytest.approx(0.055)
    on_teacher, on_baseline = common_depth_errors(teacher, baseline)
    assert on_teacher["matched"] == on_baseline["matched"] == 2
    assert on_teacher["depth_median_rel"] == pytest.approx(0.01)
    assert on_baseline["depth_median_rel"] == pytest.approx(0.04)
    assert on_baseline["depth_mae_m"] == pytest.approx(0.6)
    assert common_depth_errors(teacher, {})[0]["matched"] == 0
