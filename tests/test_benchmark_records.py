"""benchmarks/add_synthetic.py --records: run records that outlive the run folders."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def load_script(name: str):
    """A benchmarks/ script as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_script("add_synthetic")


def finished_run(out: Path, name: str, moderate: float, teacher: str | None = None) -> None:
    run = out / name
    run.mkdir(parents=True)
    config = {"train": {"seed": 0, "epochs": 20}, "teacher": {"checkpoint": teacher}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {"last_metrics": {"Car/3d/R40/moderate": moderate}, "last_probes": {}, "epochs": 20, "steps": 2500, "rank": 0}
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_new_runs_are_recorded_and_recorded_runs_count(bench, tmp_path):
    out, records = tmp_path / "out", tmp_path / "records"
    finished_run(out, "add_s2", 22.80123, teacher=str(out / "teacher_s0" / "checkpoint_last.pth"))
    records.mkdir()
    lost = {"run": "baseline_s0", "source": "transcribed", "metrics": {"last_metrics": {"Car/3d/R40/moderate": 19.59}}}
    (records / "baseline_s0.json").write_text(json.dumps(lost))

    runs = bench.sync_records(out, records, "gupnet", tmp_path / "data")

    assert sorted(runs) == ["add_s2", "baseline_s0"]
    assert runs["baseline_s0"]["last_metrics"]["Car/3d/R40/moderate"] == 19.59
    record = json.loads((records / "add_s2.json").read_text())
    assert record["teacher"] == "teacher_s0"
    assert record["config"]["train"] == {"seed": 0, "epochs": 20}
    assert record["metrics"]["last_metrics"]["Car/3d/R40/moderate"] == 22.80123
    assert "rank" not in record["metrics"]
    # A second summary finds the same values and leaves the record as it was.
    before = (records / "add_s2.json").read_text()
    assert bench.sync_records(out, records, "gupnet", tmp_path / "data")["add_s2"]["last_metrics"] == record["metrics"]["last_metrics"]
    assert (records / "add_s2.json").read_text() == before


def test_a_rerun_must_reproduce_its_record(bench, tmp_path, capsys):
    out, records = tmp_path / "out", tmp_path / "records"
    finished_run(out, "teacher_s0", 23.86)
    records.mkdir()
    (records / "teacher_s0.json").write_text(json.dumps({"metrics": {"last_metrics": {"Car/3d/R40/moderate": 23.861}}}))
    assert "teacher_s0" in bench.sync_records(out, records, "gupnet", tmp_path)  # equal to 2 decimals

    (records / "teacher_s0.json").write_text(json.dumps({"metrics": {"last_metrics": {"Car/3d/R40/moderate": 22.28}}}))
    with pytest.raises(SystemExit) as stop:
        bench.sync_records(out, records, "gupnet", tmp_path)
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(out / "teacher_s0" / "metrics.json") in error and "recorded 22.28, measured 23.86" in error


def test_nan_probes_reproduce_nan(bench):
    """A teacher with depth zeroed matches no car: its probe is NaN in the record and in the rerun."""
    nan = float("nan")
    recorded = {"last_metrics": {"Car/3d/R40/moderate": 27.351}, "last_probes": {"zeroed_depth_mae_m": nan}}
    assert bench.agree(recorded, {"last_metrics": {"Car/3d/R40/moderate": 27.35}, "last_probes": {"zeroed_depth_mae_m": nan}}) == []
    assert bench.agree(recorded, {"last_metrics": {"Car/3d/R40/moderate": 27.35}, "last_probes": {"zeroed_depth_mae_m": 6.25}}) == [
        "last_probes.zeroed_depth_mae_m: recorded nan, measured 6.25"]
    assert bench.agree({"last_probes": {"depth_mae_m": 1.2}}, {"last_probes": {"depth_mae_m": nan}}) == [
        "last_probes.depth_mae_m: recorded 1.2, measured nan"]


def test_depth_table_means_and_one_sided_p(bench):
    def figures(median: float) -> dict:
        return {"car_depth_median_m": median, "car_within_1m": 0.5, "depth_mae_m": 2.0}

    diagnostics = {"baseline_s0": figures(1.3), "baseline_s1": figures(1.2), "add_s0": figures(1.0), "add_s1": figures(1.1),
                   "rgb_teacher_s0": figures(0.9)}
    table = bench.depth_table(diagnostics)
    # Both ADD runs below both baselines: p = 1 / C(4, 2) = 0.167; one-run groups get no mean row.
    assert "| add (mean of 2) | 1.050 (p = 0.167 lower than baseline) | 50% | 2.000 |" in table
    assert "| baseline (mean of 2) | 1.250 | 50% | 2.000 |" in table
    assert "rgb_teacher (mean" not in table and "| rgb_teacher_s0 | 0.900 | 50% | 2.000 |" in table
    assert bench.group_of("teacher_s0-session5") == "teacher"


@pytest.mark.parametrize("text, problem", [('{"metrics": {\n  "last_metrics": }', "line 2: not valid JSON (Expecting value)"),
                                           ('{"run": "baseline_s0"}', "no 'metrics' entry")])
def test_a_broken_record_is_one_line_naming_it(bench, tmp_path, capsys, text, problem):
    records = tmp_path / "records"
    records.mkdir()
    (records / "baseline_s0.json").write_text(text)
    with pytest.raises(SystemExit) as stop:
        bench.sync_records(tmp_path / "out", records, "gupnet", tmp_path)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {records / 'baseline_s0.json'}: {problem}"


def test_diagnostics_refuse_a_folder_without_a_checkpoint(tmp_path, capsys, monkeypatch):
    """A mistyped run folder is an error before any work, not a silently shorter report."""
    diagnostics = load_script("add_diagnostics")
    (tmp_path / "baseline_s0").mkdir()
    monkeypatch.setattr("sys.argv", ["add_diagnostics.py", str(tmp_path / "baseline_s0")])
    assert diagnostics.main() == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {tmp_path / 'baseline_s0' / 'checkpoint_last.pth'}: no such file (not a finished run folder)\n"


def test_diagnostics_split_the_car_depth_error_by_true_depth():
    from add3d.engine.probes import median_by_range

    truth = torch.tensor([5.0, 10.0, 20.0, 30.0, 31.0, 60.0])
    errors = torch.tensor([0.1, 0.3, 1.0, 2.0, 4.0, 9.0])
    by_range = median_by_range(errors, truth)
    assert list(by_range) == ["0-15", "15-25", "25-35", "35-50", "50+"]
    assert by_range["0-15"] == {"cars": 2, "median_m": 0.1}  # torch's median of an even count: the lower one
    assert by_range["15-25"] == {"cars": 1, "median_m": 1.0}
    assert by_range["25-35"] == {"cars": 2, "median_m": 2.0}
    assert by_range["35-50"]["cars"] == 0 and math.isnan(by_range["35-50"]["median_m"])
    assert by_range["50+"] == {"cars": 1, "median_m": 9.0}
    relative = median_by_range(errors / truth, truth, "median_rel", 4)
    assert relative["15-25"] == {"cars": 1, "median_rel": 0.05}


def test_the_copy_probe_targets_each_cells_nearest_return_and_scores_log_depth():
    probe = load_script("depth_copy_probe")
    depth = torch.zeros(1, 1, 8, 8)  # 0 = no LiDAR
    depth[0, 0, 0, 1], depth[0, 0, 2, 3] = 30.0, 12.0  # two returns in the top-left 4x4 cell
    depth[0, 0, 5, 6] = 40.0  # one in the bottom-right cell
    target = probe.nearest_return_per_cell(depth, 4)
    assert target.tolist() == [[[12.0, 0.0], [0.0, 40.0]]]
    predicted = torch.tensor([[[12.0 * math.e, 5.0], [7.0, 40.0]]])
    # Only the two cells with a return count: |ln(12e) - ln 12| = 1 and 0.
    assert probe.copy_loss(predicted, target).item() == pytest.approx(0.5)
    assert probe.copy_loss(predicted, torch.zeros_like(target)).item() == 0.0


def test_the_copy_probe_refuses_a_model_without_depth_input_or_dense_depth_head(capsys):
    probe = load_script("depth_copy_probe")
    assert probe.main([str(REPO / "configs/monodle/synthetic.yaml")]) == 2
    assert "not a depth teacher (model.in_channels must be 5)" in capsys.readouterr().err
    assert probe.main([str(REPO / "configs/gupnet/synthetic_teacher.yaml")]) == 2
    assert capsys.readouterr().err.strip().endswith("gupnet has no dense depth head to copy into (MonoDLE's has)")


def test_the_lidar_readout_reads_the_window_around_each_point():
    diagnostics = load_script("add_diagnostics")
    depth = torch.zeros(2, 1, 20, 30)  # 0 = no LiDAR
    depth[0, 0, 8:13, 3:8] = torch.arange(25.0).reshape(5, 5) + 1  # a 5x5 patch centred on (x 5, y 10)
    depth[1, 0, 0, 0] = 7.0
    centres = torch.tensor([[[5.2, 9.8], [25.0, 15.0]], [[1.0, 1.0], [0.0, 0.0]]])
    median = diagnostics.window_readout(depth, centres, 5, "median")
    assert median[0, 0].item() == 13.0  # the patch's median (1..25)
    assert math.isnan(median[0, 1].item())  # no LiDAR in that window
    assert median[1].tolist() == [7.0, 7.0]  # the one valid pixel, also from a window past the border
    mean = diagnostics.window_readout(depth, centres[:, :1], 3, "mean")
    assert mean[0, 0].item() == pytest.approx((7 + 8 + 9 + 12 + 13 + 14 + 17 + 18 + 19) / 9)


def test_a_transcribed_record_without_some_figures_is_summarised_on_the_figures_it_has(bench):
    """Records transcribed from notes may keep only AP3D moderate: the other cells say how many runs had them."""
    full = {"easy": 30.0, "moderate": 20.0, "hard": 18.0, "bev_moderate": 25.0, "2d_moderate": 40.0}
    nan = float("nan")
    partial = {"easy": nan, "moderate": 24.0, "hard": nan, "bev_moderate": nan, "2d_moderate": nan}
    table = bench.markdown_table({"add_s0": full, "add_s1": partial, "teacher_s0": partial}, {})
    add, teacher = table.splitlines()[2:4]
    assert add == "| add | 2 | 22.00 ± 2.83 | s0: 20.00, s1: 24.00 | 30.00 (1 of 2) | 18.00 (1 of 2) |  | 25.00 (1 of 2) | 40.00 (1 of 2) |"
    assert teacher == "| teacher | 1 | 24.00 | s0: 24.00 | – | – |  | – | – |"
    probes = bench.probe_table({"teacher_s0": {"sensitivity": 0.76}})
    assert probes.splitlines()[2] == "| teacher_s0 |  |  |  |  |  | 0.76 |  |"


def test_diagnostics_read_the_split_asked_for(tmp_path):
    """``--split train`` measures the frames a teacher is distilled on; the default stays validation."""
    from engine_helpers import train_one_epoch_run

    diagnostics = load_script("add_diagnostics")
    root, run, _ = train_one_epoch_run(tmp_path)
    for split, frames in (("val", ["000008", "000009", "000010"]), ("train", ["000000", "000001", "000002"])):
        scratch = tmp_path / split
        scratch.mkdir()
        _, _, dataset, truth = diagnostics.load_run(run, 3, scratch, split)
        assert list(dataset.ids) == frames and sorted(truth) == frames
        errors, ratios = diagnostics.object_errors(run, 3, scratch, split)
        assert len(ratios) == errors["cars"]
        assert errors["objects"] > 0 and errors["depth_mae_m"] > 0
    assert (root / "ImageSets" / "train.txt").read_text().split() == [f"{i:06d}" for i in range(8)]  # untouched


def test_gupnet_depth_parts_split_the_error_between_box_height_and_residual():
    diagnostics = load_script("add_diagnostics")
    truth = torch.tensor([10.0, 30.0])
    geometric = torch.tensor([8.0, 24.0])  # f*H/h on the predicted box
    predicted_height, true_height = torch.tensor([10.0, 4.0]), torch.tensor([10.0, 5.0])  # the far box 20 % short
    depth = torch.tensor([9.5, 29.0])  # residuals 1.5 and 5 m
    parts = diagnostics.gupnet_depth_parts(depth, torch.stack([geometric, predicted_height, true_height], -1), truth)
    assert parts["geometric_depth_error_m"] == {"all": 2.0, "25m+": 6.0}  # torch's median of two: the lower
    assert parts["geometric_depth_true_box_error_m"] == {"all": 2.0, "25m+": pytest.approx(10.8)}  # 24 * 4/5 = 19.2
    assert parts["box_height_rel_error"] == {"all": 0.0, "25m+": pytest.approx(0.2)}
    assert parts["residual_m"] == {"all": 1.5, "25m+": 5.0}
    # A target k * z below f*H/h is out of the positive residual's reach: 0.82 * 10 = 8.2 and 24.6 are not below 8 and 24
    assert parts["share_of_cars_below_geometric_at_depth_scale"] == {"0.82": 0.0, "0.9": 0.0, "1.0": 0.0}
    longer = torch.stack([torch.tensor([9.5, 27.0]), predicted_height, true_height], -1)
    below = diagnostics.gupnet_depth_parts(depth, longer, truth)["share_of_cars_below_geometric_at_depth_scale"]
    assert below == {"0.82": 1.0, "0.9": 0.5, "1.0": 0.0}  # 8.2 < 9.5 and 24.6 < 27; 9 < 9.5 only; 10, 30 reachable


def test_error_correlation_is_one_for_a_shared_pattern_and_refuses_other_cars():
    diagnostics = load_script("add_diagnostics")
    reference = torch.tensor([0.1, -0.2, 0.05, 0.3])
    assert diagnostics.error_correlation(2 * reference + 0.01, reference) == pytest.approx(1.0)
    assert diagnostics.error_correlation(-reference, reference) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="different cars"):
        diagnostics.error_correlation(reference[:3], reference)


def test_diagnostics_refuse_a_reference_that_scored_other_cars(tmp_path, capsys, monkeypatch):
    """Runs on different data cannot be correlated car by car: one line, exit 2, no report."""
    diagnostics = load_script("add_diagnostics")
    for name in ("teacher_s0", "add_s0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "checkpoint_last.pth").write_bytes(b"")
    cars = {"teacher_s0": 3, "add_s0": 2}
    monkeypatch.setattr(diagnostics, "object_errors", lambda run, *args: ({"cars": cars[run.name]}, torch.zeros(cars[run.name])))
    monkeypatch.setattr("sys.argv", ["add_diagnostics.py", str(tmp_path / "add_s0"), "--no-probes",
                                     "--error-reference", str(tmp_path / "teacher_s0")])
    assert diagnostics.main() == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"error: {tmp_path / 'add_s0'} against {tmp_path / 'teacher_s0'}: the runs scored different cars "
                            "(2 against 3): not the same data\n")


def depth_record(folder: Path, name: str, metres: float) -> Path:
    """An add_diagnostics.py output holding one run's all-car median depth error."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps({name: {"car_depth_median_m": metres}}))
    return path


@pytest.fixture()
def seed_power(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # seed_power imports its sibling add_synthetic, as when run as a script
    return load_script("seed_power")


def test_seed_power_needs_thirteen_seeds_for_a_one_sd_shift(seed_power):
    # 2 (z_0.95 + z_0.8)^2 = 12.37 seeds per group for a shift of one standard deviation.
    assert seed_power.seeds_needed(1.0, 1.0, 0.05, 0.8) == 13
    assert seed_power.seeds_needed(0.5, 1.0, 0.05, 0.8) == 50
    assert 0.80 < seed_power.power_at(13, 1.0, 1.0, 0.05) < 0.82
    # a huge shift still needs the seeds whose exact test can reach p <= 0.05: 3 + 3 (1/20), 5 pairs (1/32)
    assert seed_power.seeds_needed(100.0, 1.0, 0.05, 0.8) == 3
    assert seed_power.seeds_needed(100.0, 1.0, 0.05, 0.8, paired=True) == 5
    assert seed_power.exact_test_floor(0.01) == 5 and seed_power.exact_test_floor(0.01, paired=True) == 7
    assert seed_power.seeds_needed(0.0, 1.0, 0.05, 0.8) is None
    assert seed_power.seeds_needed(-0.1, 1.0, 0.05, 0.8) is None


def test_seed_power_reads_depth_records_lower_is_better(seed_power, tmp_path, capsys):
    a = [depth_record(tmp_path, f"add_s{i}", v) for i, v in enumerate([1.0, 1.1, 1.2])]
    b = [depth_record(tmp_path, f"ctl_s{i}", v) for i, v in enumerate([1.3, 1.4, 1.5])]
    code = seed_power.main(["--metric", "depth", "--a", *map(str, a), "--b", *map(str, b), "--relative-effect", "0.1"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["p_one_sided_a_better"] == pytest.approx(1 / 20)  # every A below every B, 3 + 3
    assert result["sd_used"] == pytest.approx(0.1) and result["paired"] is False
    observed = result["effects"]["observed"]
    assert observed["effect"] == pytest.approx(0.3) and observed["effect_in_sd"] == pytest.approx(3.0)
    assert observed["seeds_per_group"] == 3  # the normal approximation's 2, raised to the exact test's floor
    assert result["effects"]["relative effect 0.1"]["effect"] == pytest.approx(0.14)


def test_seed_power_names_a_record_without_the_figure(seed_power, tmp_path, capsys):
    good = depth_record(tmp_path, "a", 1.0)
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"b": {"depth_mae_m": 1.0}}))
    assert seed_power.main(["--metric", "depth", "--a", str(good), str(good), "--b", str(bad), str(good)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: no depth figure (see --help for the record kinds)"
    assert seed_power.main(["--metric", "ap3d", "--a", str(tmp_path / "none.json"), str(good), "--b", str(good), str(good)]) == 2
    assert "none.json: no such record file" in capsys.readouterr().err


def test_paired_permutation_p_flips_the_signs_of_the_per_seed_differences(bench):
    assert bench.paired_permutation_p_value([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(1 / 16)
    # differences +1, +1, -1, +3 (sum 4): the flips reaching a sum >= 4 are (+,+,-,+), (+,+,+,+), (-,+,+,+), (+,-,+,+)
    assert bench.paired_permutation_p_value([2.0, 3.0, 2.0, 7.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(4 / 16)
    with pytest.raises(ValueError, match="as many runs"):
        bench.paired_permutation_p_value([1.0, 2.0], [1.0])


def test_paired_permutation_p_counts_every_sign_flip_exactly(bench):
    def every_flip(group, baseline):  # the definition: list all 2^n flips
        differences = [a - b for a, b in zip(group, baseline)]
        flips = list(itertools.product((1.0, -1.0), repeat=len(differences)))
        return sum(sum(s * d for s, d in zip(signs, differences)) >= sum(differences) - 1e-12 for signs in flips) / len(flips)

    rng = random.Random(7)
    for n in range(0, 13):
        baseline = [rng.uniform(0.8, 1.2) for _ in range(n)]
        group = [b + rng.gauss(0.0, 0.05) for b in baseline]
        assert bench.paired_permutation_p_value(group, baseline) == every_flip(group, baseline)
        ties = [float(rng.randint(-2, 2)) for _ in range(n)]  # equal |differences|: many flips tie the observed sum
        assert bench.paired_permutation_p_value(ties, [0.0] * n) == every_flip(ties, [0.0] * n)


def test_seed_power_paired_removes_the_shared_seed_draw(seed_power, tmp_path, capsys):
    seeds = [1.0, 1.4, 0.8, 1.2]  # a large seed-to-seed draw shared by both groups
    a = [depth_record(tmp_path, f"add_s{i}", v - 0.05) for i, v in enumerate(seeds)]
    b = [depth_record(tmp_path, f"ctl_s{i}", v + (0.01 if i % 2 else -0.01)) for i, v in enumerate(seeds)]
    args = ["--metric", "depth", "--a", *map(str, a), "--b", *map(str, b)]
    assert seed_power.main(args) == 0
    unpaired = json.loads(capsys.readouterr().out)
    assert seed_power.main(args + ["--paired"]) == 0
    paired = json.loads(capsys.readouterr().out)
    assert paired["differences_a_better"] == pytest.approx([0.04, 0.06, 0.04, 0.06])
    assert paired["p_one_sided_a_better"] == pytest.approx(1 / 16)  # every pair favours A
    assert paired["correlation"] > 0.99
    assert paired["effects"]["observed"]["seeds_per_group"] < unpaired["effects"]["observed"]["seeds_per_group"]
    assert seed_power.main(["--metric", "depth", "--paired", "--a", *map(str, a), "--b", *map(str, b[:3])]) == 2
    assert "--paired needs as many A files as B files, got 4 and 3" in capsys.readouterr().err


def test_gain_upper_bound_inverts_the_permutation_test(seed_power):
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    for paired in (False, True):
        bound = seed_power.gain_upper_bound(a, b, 0.05, paired)
        shifted = lambda delta: [x - delta for x in a]
        test = seed_power.paired_permutation_p_value if paired else seed_power.permutation_p_value
        assert test(b, shifted(bound + 1e-6)) <= 0.05 < test(b, shifted(bound - 1e-3))
        assert bound > 0.5  # the observed gain is inside the bound
    # every pair gains exactly 0.5: the sign-flip bound is the gain itself
    assert seed_power.gain_upper_bound(a, b, 0.05, True) == pytest.approx(0.5, abs=1e-6)
    # two pairs: no flip set is below 1/4, so no bound at 0.05
    assert seed_power.gain_upper_bound([1.0, 2.0], [0.0, 1.0], 0.05, True) is None
