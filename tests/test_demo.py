"""`add3d demo --quick` end to end: data, three trainings, evaluation and the report's files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from add3d.demo import judge, judge_probes
from add3d.evaluation.kitti_eval import evaluate_dirs
from test_printed_commands import REPO, dry_run


@pytest.mark.slow
def test_quick_demo_writes_an_honest_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    completed = subprocess.run([sys.executable, "-m", "add3d", "demo", "--quick", "--out", str(out)],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "report:" in completed.stdout
    results = json.loads((out / "results.json").read_text())
    models = ["baseline (RGB)", "teacher (RGB + depth)", "ADD student (RGB)"]
    assert set(models) <= set(results)
    # every number in the report is the evaluator's on the predictions the demo wrote
    assert results["_meta"]["box2d_scale"] == 4.0  # the synthetic configs' KITTI-sized difficulties
    recomputed = evaluate_dirs(out / "data/training/label_2", out / "add/predictions",
                               ids=out / "data/ImageSets/val.txt", overlap="loose",
                               box2d_scale=results["_meta"]["box2d_scale"])
    assert results["ADD student (RGB)"]["3d@0.5"]["Car"]["R40"] == pytest.approx(recomputed["Car"]["3d"]["R40"])
    for model in models:
        for key in ("3d@0.7", "bev@0.7", "3d@0.5", "bev@0.5"):
            values = results[model][key]["Car"]["R40"]
            assert len(values) == 3 and all(0.0 <= v <= 100.0 for v in values)
    assert "sensitivity" in results["teacher (RGB + depth)"]["probes"] and "sensitivity" not in results["baseline (RGB)"]["probes"]
    common = results["teacher (RGB + depth)"]["probes"]["common_with_baseline"]
    assert 0 <= common["matched"] <= min(results[m]["probes"]["matched"] for m in models[:2])
    report = (out / "report.md").read_text()
    assert "sensitivity to depth x1.2" in report
    for model in models:
        assert f"| {model} |" in report
    assert "add3d train configs/monodle/synthetic_add.yaml" in report and "teacher.checkpoint=" in report
    # every command of the report's "Reproduce" block runs as printed (dry: parsed, config loaded)
    reproduce = report.split("## Reproduce")[1].split("```")[1].strip().splitlines()
    commands = [line.split("    # ")[0] for line in reproduce]
    names = [c.split()[1] for c in commands]
    assert names[0] == "synth" and names.count("train") == 3 and names.count("eval") == 3
    # the ADD student trains alone after the side-by-side pair, on both cores
    threads = {c.split()[2]: "train.threads=2" in c.split() for c in commands if c.split()[1] == "train"}
    assert threads == {"configs/monodle/synthetic.yaml": False, "configs/monodle/synthetic_teacher.yaml": False,
                       "configs/monodle/synthetic_add.yaml": True}
    for command in commands:
        dry_run(command, REPO)
        checkpoint = re.search(r"--checkpoint (\S+)", command)
        assert checkpoint is None or Path(checkpoint.group(1)).is_file()
    for picture in ("figures/pr_car.png", "figures/teacher_input.png"):
        assert (out / picture).stat().st_size > 10_000 and picture in report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "<table>" in html


def test_demo_models_train_plain_weights(tmp_path: Path) -> None:
    """The shipped synthetic teacher averages its weights; the demo's short budget turns that off
    (measured to be no help over 720 steps), for every model, quick or full."""
    from add3d.demo import CONFIG_FILES, DemoRun, train_overrides
    from add3d.engine.config import load_config

    configs = REPO / "configs"
    assert load_config(configs / CONFIG_FILES["teacher"]).train.ema_decay == 0.998
    for quick in (False, True):
        run = DemoRun(tmp_path, quick=quick, seed=0)
        for model, config in CONFIG_FILES.items():
            teacher = tmp_path / "teacher" / "checkpoint_last.pth" if model == "add" else None
            cfg = load_config(configs / config, train_overrides(run, model, tmp_path / "data", teacher))
            assert cfg.train.ema_decay is None
            assert cfg.train.epochs == (1 if quick else 12)


def test_judge_probes_states_the_ratio_on_each_models_cars_and_on_the_common_cars():
    probes = {"baseline": {"matched": 250, "depth_median_rel": 0.10},
              "teacher": {"matched": 320, "depth_median_rel": 0.06, "sensitivity": 0.91,
                          "common_with_baseline": {"matched": 240, "depth_median_rel": 0.045,
                                                   "baseline_depth_median_rel": 0.10}}}
    text = judge_probes(probes)
    assert "sensitivity to depth x1.2: 0.91, so the teacher reads its depth input" in text
    assert "0.060 (320 cars) against the baseline's 0.100 (250 cars): 0.60x, MORE than half" in text
    assert "On the 240 cars both matched: 0.045 against 0.100, 0.45x, at most half the baseline's." in text
    del probes["teacher"]["common_with_baseline"]
    assert "both matched" not in judge_probes(probes)
    probes["baseline"]["matched"] = 0
    assert "cannot judge" in judge_probes(probes)


def test_judge_states_the_ratios_and_calls_a_margin_clear_only_at_one_and_a_half():
    def results(teacher: float, student: float, baseline: float) -> dict:
        return {model: {"0.5": {"Car": {"3d": {"R40": [0.0, value, 0.0]}}}}
                for model, value in (("teacher", teacher), ("add", student), ("baseline", baseline))}

    clear = judge(results(9.73, 3.42, 1.41))
    assert "teacher 9.73, ADD student 3.42, baseline 1.41 (student / baseline 2.43x, teacher / student 2.85x)" in clear
    assert "holds by clear margins (each at least 1.5x)" in clear
    assert "not every step by a clear margin" in judge(results(9.73, 1.47, 1.41))
    broken = judge(results(9.73, 1.41, 1.41))
    assert "does NOT hold" in broken and "the ADD student is not above the baseline" in broken
    assert "student / baseline n/a" in judge(results(2.0, 1.0, 0.0))
