"""Configs: shipped files, _base_ inheritance, overrides, clear errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from add3d.engine.config import config_from_dict, config_to_dict, load_config, parse_override
from add3d.engine.optim import lr_factor
from add3d.errors import Add3dError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "monodle"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_kitti_config_is_the_published_schedule():
    cfg = load_config(CONFIGS / "kitti.yaml")
    assert cfg.optim.name == "adam" and cfg.optim.lr == 1.25e-3 and cfg.optim.weight_decay == 1e-5
    assert cfg.train.batch_size == 16 and cfg.train.epochs == 140
    assert cfg.schedule.warmup_epochs == 5 and cfg.schedule.milestones == [90, 120] and cfg.schedule.gamma == 0.1
    assert cfg.data.input_size == [384, 1280]
    assert (cfg.data.random_flip, cfg.data.random_crop, cfg.data.crop_scale, cfg.data.crop_shift) == (0.5, 0.5, 0.4, 0.1)
    assert (cfg.data.min_depth, cfg.data.max_depth) == (2.0, 65.0)
    assert cfg.model.name == "monodle" and cfg.model.backbone == "dla34"
    assert cfg.distill is None


def test_synthetic_config_inherits_and_overrides():
    cfg = load_config(CONFIGS / "synthetic.yaml")
    assert cfg.data.input_size == [96, 320] and cfg.model.backbone == "dla34_tiny"
    assert cfg.optim.name == "adam" and cfg.data.crop_scale == 0.4  # inherited from kitti.yaml
    assert cfg.train.eval_overlap == "loose" and cfg.train.eval_box2d_scale == 4.0


def test_base_chain_and_command_line_overrides(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  epochs: 7\n  seed: 1\noptim:\n  lr: 0.5\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "child.yaml", "_base_: ../base.yaml\ntrain:\n  seed: 2\n")
    cfg = load_config(tmp_path / "sub" / "child.yaml", ["optim.lr=0.25", "data.input_size=[64,192]", "train.grad_clip=null"])
    assert (cfg.train.epochs, cfg.train.seed, cfg.optim.lr) == (7, 2, 0.25)
    assert cfg.data.input_size == [64, 192] and cfg.train.grad_clip is None
    # round trip through a plain dict (what checkpoints store)
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path / "bad.yaml", "train:\n  epoch: 3\n")
    with pytest.raises(Add3dError, match=r"bad\.yaml.*train\.epoch"):
        load_config(path)
    with pytest.raises(Add3dError, match=r"override 'optim\.learning_rate=1'.*optim\.learning_rate"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(Add3dError, match=r"bad_section"):
        load_config(write(tmp_path / "sec.yaml", "bad_section: {}\n"))


def test_wrong_types_and_values(tmp_path):
    with pytest.raises(Add3dError, match=r"types\.yaml.*train\.epochs"):
        load_config(write(tmp_path / "types.yaml", "train:\n  epochs: many\n"))
    with pytest.raises(Add3dError, match=r"input_size"):
        load_config(None, ["data.input_size=[65,192]"])
    with pytest.raises(Add3dError, match=r"depth_source"):
        load_config(None, ["data.depth_source=radar"])
    with pytest.raises(Add3dError, match=r"optim\.name"):
        load_config(None, ["optim.name=lamb"])
    with pytest.raises(Add3dError, match=r"best_metric"):
        load_config(None, ["train.best_metric=Car/3d/moderate"])
    # One list of classes: model.classes (data.classes is gone); heatmap-only classes map onto it.
    with pytest.raises(Add3dError, match=r"data\.classes"):
        load_config(None, ["data.classes=[Car]"])
    with pytest.raises(Add3dError, match=r"heatmap_only maps 'Van' to 'Truck', which is not in model\.classes"):
        load_config(None, ["data.heatmap_only={Van: Truck}"])
    with pytest.raises(Add3dError, match=r"model\.classes lists a class twice"):
        load_config(None, ["model.classes=[Car,Car]"])
    assert load_config(None, ["model.classes=[Car]", "data.heatmap_only={Van: Car}"]).model.classes == ["Car"]
    with pytest.raises(Add3dError, match=r"depth_source"):
        load_config(None, ["model.in_channels=5"])  # a teacher needs depth
    with pytest.raises(Add3dError, match=r"eval_box2d_scale"):
        load_config(None, ["train.eval_box2d_scale=0"])
    with pytest.raises(Add3dError, match=r"data\.frame_cache_mb must be >= 0"):
        load_config(None, ["data.frame_cache_mb=-1"])


def test_distill_section_enables_add_and_is_validated(tmp_path):
    path = write(tmp_path / "add.yaml", "distill:\n  pool: 2\nteacher:\n  checkpoint: t.pth\ndata:\n  depth_source: lidar\n")
    cfg = load_config(path)
    assert cfg.distill is not None and cfg.distill.pool == 2 and cfg.teacher.checkpoint == "t.pth"
    with pytest.raises(Add3dError, match="teacher.checkpoint"):
        load_config(write(tmp_path / "noteacher.yaml", "distill: {}\ndata:\n  depth_source: lidar\n"))
    # eval / predict evaluate the student as the plain detector: no teacher needed
    assert load_config(tmp_path / "noteacher.yaml", training=False).distill is None
    with pytest.raises(Add3dError, match=r"add2\.yaml.*distill\.pool"):
        load_config(write(tmp_path / "add2.yaml", "distill:\n  pool: two\n"))


def test_yaml_and_inheritance_errors(tmp_path):
    with pytest.raises(Add3dError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_config(write(tmp_path / "broken.yaml", "train:\n  epochs: [1, 2\n"))
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(Add3dError, match="circular"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(Add3dError, match="not found"):
        load_config(write(tmp_path / "c.yaml", "_base_: missing.yaml\n"))
    with pytest.raises(Add3dError, match="mapping"):
        load_config(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(Add3dError, match="section.key=value"):
        parse_override("epochs")


def test_learning_rate_schedule():
    cfg = load_config(CONFIGS / "kitti.yaml").schedule
    base = 1.25e-3
    assert lr_factor(0, base, cfg) * base == pytest.approx(1e-5)
    assert lr_factor(2.5, base, cfg) * base == pytest.approx(1e-5 + (base - 1e-5) / 2)
    assert lr_factor(5, base, cfg) == 1.0 and lr_factor(89, base, cfg) == 1.0
    assert lr_factor(90, base, cfg) == pytest.approx(0.1) and lr_factor(139, base, cfg) == pytest.approx(0.01)


def test_removed_dead_fields_are_gone_but_old_checkpoint_configs_still_load():
    from add3d.distill.config import DistillConfig
    from add3d.engine.config import config_from_dict, config_to_dict

    assert "num_classes" not in DistillConfig.__dataclass_fields__
    config = Path(__file__).resolve().parents[1] / "configs" / "monodle" / "synthetic_add.yaml"
    stored = config_to_dict(load_config(config, ["teacher.checkpoint=t.pth"]))
    stored["distill"]["num_classes"] = 3  # what checkpoints written before the removal hold
    stored["model"]["max_objects"] = 50
    assert config_to_dict(config_from_dict(stored)) == config_to_dict(load_config(config, ["teacher.checkpoint=t.pth"]))
    with pytest.raises(Add3dError, match="num_classes"):
        load_config(config, ["teacher.checkpoint=t.pth", "distill.num_classes=3"])


def test_configs_stored_by_older_checkpoints_still_load():
    """model.max_objects, model.num_classes and data.classes had no effect and are gone; a stored
    config that still has them reads back (predict rebuilds the detector from it)."""
    stored = config_to_dict(load_config(None))
    stored["model"].update(max_objects=50, num_classes=3)
    stored["data"]["classes"] = ["Car", "Pedestrian", "Cyclist"]
    cfg = config_from_dict(stored)
    assert cfg.model.classes == ["Car", "Pedestrian", "Cyclist"]
    assert not hasattr(cfg.model, "max_objects") and not hasattr(cfg.data, "classes")
    with pytest.raises(Add3dError, match="max_objects"):
        load_config(None, ["model.max_objects=50"])


def test_run_folder_configs_written_before_the_class_list_change_load_with_a_warning(tmp_path, capsys):
    stored = config_to_dict(load_config(None))
    stored["model"]["num_classes"] = 3
    stored["data"]["classes"] = ["Car", "Pedestrian", "Cyclist"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(stored))
    cfg = load_config(path)
    assert cfg.model.classes == ["Car", "Pedestrian", "Cyclist"]
    warning = capsys.readouterr().err.strip()
    assert warning == (f"warning: {path.resolve()}: ignored data.classes, model.num_classes (removed keys without "
                       "effect; the class list is model.classes)")
