"""ADD on the synthetic benchmark: teacher, baseline and ADD student over seeds, plus the ablation.

Every run is `add3d train` with the CPU configs of configs/<detector>/ and the SAME budget (epochs,
batch, input size, schedule) — only the training module differs. Runs whose metrics.json exists are
skipped, so the script can be stopped and restarted. At the end it prints (and writes to
OUT/summary.json) the validation Car AP3D|R40 (moderate, and easy/hard) of the last epoch per run and
mean / std / min / max per group.

    .venv/bin/python -m add3d synth --out /tmp/b2/synth --frames 1500 --val-fraction 0.3334 --scale 0.25 --seed 0
    .venv/bin/python benchmarks/add_synthetic.py --data /tmp/b2/synth --out /tmp/b2/runs \
        --seeds 0 1 2 3 4 --ablation-seeds 0 1

Parallel invocations on the same --out share the work: each skips runs another one has started.

``--records DIR`` keeps a benchmark that takes several sessions whole when run folders do not last
(scratch disks, CI machines): every finished run's metrics.json is copied to DIR/<run>.json with its
config.yaml, the teacher it distilled and the commit that recorded it, and the summary counts
recorded runs whose folder is gone; DIR/diagnostics/*.json (outputs of add_diagnostics.py) add a
table of depth errors at every labelled car. A run that finishes again must agree with its record
(to the 2 decimals of the docs) or the script stops: the same seed gives the same numbers on one
machine, but not on another CPU (measured: GUPNet's teacher_s0 22.28 on one machine, 23.86 on the
next), so rename one of the two.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from add3d.fileio import atomic_save, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DETECTORS = ("monodle", "gupnet", "monoflex")
ABLATIONS = {
    "no_feature": "distill.feature_distillation=false",
    "no_object": "distill.object_distillation=false",
    "no_response": "distill.response_distillation=false",
    "no_self_attention": "distill.self_attention=false",
    "no_position_encoding": "distill.position_encoding=false",
}
METRIC = "Car/3d/R40"
SECONDARY = ("bev", "2d")  # also summarised: Car moderate AP|R40 of these


def train(name: str, config: Path, overrides: list[str], out: Path, log_dir: Path, resume: bool = False) -> dict | None:
    """Run one training (unless done) and return its metrics.json.

    ``resume``: a run that was started but did not finish (no metrics.json) continues from its
    checkpoint_last.pth -- only when no other invocation is still running it.
    """
    run_dir = out / name
    metrics = run_dir / "metrics.json"
    started_before = not metrics.is_file() and (run_dir / "train_log.jsonl").is_file()
    can_resume = resume and (run_dir / "checkpoint_last.pth").is_file()
    if started_before and not can_resume:
        # Started by another invocation running in parallel (or interrupted: --resume, or delete the folder).
        print(f"[{time.strftime('%H:%M:%S')}] {name}: already started elsewhere, skipped", flush=True)
        return None
    if not metrics.is_file():
        command = [sys.executable, "-m", "add3d", "train", str(config), f"train.out_dir={run_dir}", *overrides]
        if started_before:
            command.append("--resume")
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command[2:])}", flush=True)
        started = time.time()
        with open(log_dir / f"{name}.log", "a" if started_before else "w") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: exit {code} after {time.time() - started:.0f} s", flush=True)
        if code != 0 or not metrics.is_file():
            return None
    return json.loads(metrics.read_text())


def git_commit() -> str:
    """The commit of the code that runs (with ``+dirty`` for uncommitted changes)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout
    return (head or "unknown") + ("+dirty" if dirty.strip() else "")


def same_to_2_decimals(recorded: float, measured: float | None) -> bool:
    """Equal after rounding; NaN (e.g. "no car matched with depth zeroed") reproduces NaN."""
    if measured is None:
        return False
    if math.isnan(recorded) or math.isnan(measured):
        return math.isnan(recorded) and math.isnan(measured)
    return round(float(measured), 2) == round(float(recorded), 2)


def agree(recorded: dict, measured: dict) -> list[str]:
    """Names of the recorded AP/probe values that ``measured`` does not reproduce to 2 decimals."""
    differ = []
    for section in ("last_metrics", "last_probes"):
        for key, value in recorded.get(section, {}).items():
            other = measured.get(section, {}).get(key)
            if isinstance(value, (int, float)) and not same_to_2_decimals(value, other):
                differ.append(f"{section}.{key}: recorded {value}, measured {other}")
    return differ


def read_record(path: Path, key: str | None = None) -> dict:
    """A record file's JSON (its ``key`` entry if given); a broken file stops with one line naming it."""
    try:
        value = json.loads(path.read_text())
        return value[key] if key is not None else value
    except json.JSONDecodeError as error:
        problem = f"line {error.lineno}: not valid JSON ({error.msg})"
    except (KeyError, TypeError):
        problem = f"no {key!r} entry"
    print(f"error: {path}: {problem}", file=sys.stderr)
    raise SystemExit(2)


def sync_records(out: Path, records: Path, detector: str, data: Path) -> dict[str, dict]:
    """Every run's metrics: the records in ``records`` plus the finished runs of ``out``, which are
    recorded if new and checked against their record otherwise."""
    records.mkdir(parents=True, exist_ok=True)
    runs = {path.stem: read_record(path, "metrics") for path in sorted(records.glob("*.json"))}
    for metrics_path in sorted(out.glob("*/metrics.json")):
        name, metrics = metrics_path.parent.name, json.loads(metrics_path.read_text())
        if name in runs:
            differ = agree(runs[name], metrics)
            if differ:
                print(f"error: {metrics_path} does not reproduce {records / (name + '.json')}: {differ[0]}", file=sys.stderr)
                raise SystemExit(2)
            continue
        config = yaml.safe_load((metrics_path.parent / "config.yaml").read_text())
        teacher = (config.get("teacher") or {}).get("checkpoint")
        record = {"run": name, "detector": detector, "data": str(data), "recorded_at_commit": git_commit(),
                  "teacher": Path(teacher).parent.name if teacher else None, "config": config,
                  "metrics": {key: metrics[key] for key in ("last_metrics", "last_probes", "epochs", "steps") if key in metrics}}
        atomic_write_text(records / f"{name}.json", json.dumps(record, indent=1) + "\n")
        runs[name] = metrics
    return runs


def make_rgb_teacher(baseline_checkpoint: Path, configs: Path, out: Path) -> Path:
    """A 5-channel teacher checkpoint holding an RGB baseline's weights (depth inputs weighted 0)."""
    import torch

    from add3d.distill.teacher import init_teacher_from_rgb, read_checkpoint_model, teacher_model_config
    from add3d.engine.config import load_config
    from add3d.models import build_detector

    path = out / f"rgb_teacher_from_{baseline_checkpoint.parent.name}.pth"
    if not path.is_file():
        model_cfg = load_config(configs / "synthetic.yaml").model
        teacher = init_teacher_from_rgb(build_detector(teacher_model_config(model_cfg)), read_checkpoint_model(baseline_checkpoint))
        from add3d.engine.modules import teacher_input_spec

        # The spec of the depth teachers it stands in for, so ADD's spec check accepts it (its depth weights are 0).
        spec = teacher_input_spec(load_config(configs / "synthetic_teacher.yaml"))
        state = {"model": teacher.state_dict(), "input_spec": spec.to_dict()}
        atomic_save(path, lambda tmp: torch.save(state, tmp))
    return path


def group_of(run: str) -> str:
    """A run's group: its name without the seed suffix (``add_s2`` -> ``add``, ``teacher_s0-x`` -> ``teacher``)."""
    return run.rsplit("_s", 1)[0]


def car_ap(summary: dict) -> dict[str, float]:
    """Car AP3D|R40 easy/moderate/hard of the last validation, and moderate BEV / 2D AP|R40."""
    last = summary.get("last_metrics", {})
    ap = {level: float(last.get(f"{METRIC}/{level}", float("nan"))) for level in ("easy", "moderate", "hard")}
    for kind in SECONDARY:
        ap[f"{kind}_moderate"] = float(last.get(f"Car/{kind}/R40/moderate", float("nan")))
    return ap


def describe(values: list[float]) -> dict:
    if not values:
        return {}
    return {
        "mean": round(statistics.fmean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "n": len(values),
    }


def permutation_p_value(group: list[float], baseline: list[float]) -> float:
    """One-sided exact permutation test of mean(group) > mean(baseline).

    The share of all ways to split the pooled values into sets of the two sizes whose mean difference
    is at least the observed one. No distributional assumption; with 5 vs 5 runs the smallest
    possible value is 1/252.
    """
    pooled = group + baseline
    observed = statistics.fmean(group) - statistics.fmean(baseline)
    total = sum(pooled)
    at_least = count = 0
    for chosen in itertools.combinations(range(len(pooled)), len(group)):
        picked = sum(pooled[i] for i in chosen)
        difference = picked / len(group) - (total - picked) / len(baseline)
        at_least += difference >= observed - 1e-12
        count += 1
    return at_least / count


def paired_permutation_p_value(group: list[float], baseline: list[float]) -> float:
    """One-sided exact sign-flip test of mean(group - baseline) > 0 for runs paired by seed.

    For groups that differ in one thing only at the same seed (ADD and the depth-blind control share
    config, data order, augmentations and initialisation; only the teacher differs), the per-seed
    difference removes the seed's own draw. The share of all 2^n sign flips of the differences whose
    mean is at least the observed one: with n pairs the smallest possible value is 1/2^n.

    Exact, and counted without listing the 2^n flips (27 pairs: 134 million, hours in a Python loop;
    ``seed_power.py``'s bound evaluates the test ~40 times): every flip's sum is a flip sum of the first
    half of the differences plus one of the second half, so sorting the second half's 2^(n - n/2) sums
    and looking up, for each of the first half's, how many reach the observed total counts them all.
    """
    if len(group) != len(baseline):
        raise ValueError(f"paired groups need as many runs each, got {len(group)} and {len(baseline)}")
    differences = np.array([a - b for a, b in zip(group, baseline)], dtype=np.float64)
    half = len(differences) // 2
    first, second = (_signed_sums(part) for part in (differences[:half], differences[half:]))
    second.sort()
    threshold = differences.sum() - 1e-12
    reaching = second.size - np.searchsorted(second, threshold - first, side="left")
    return int(reaching.sum()) / (first.size * second.size)


def _signed_sums(values: np.ndarray) -> np.ndarray:
    """The sums of ``values`` under each of their 2^len sign flips."""
    sums = np.zeros(1)
    for value in values:
        sums = np.concatenate([sums + value, sums - value])
    return sums


def versus_baseline(by_group: dict[str, list[float]]) -> dict[str, dict]:
    """Gain of each group's mean over the baseline's and its permutation p-value (groups with >= 2 runs)."""
    baseline = by_group.get("baseline", [])
    if len(baseline) < 2:
        return {}
    return {
        group: {
            "mean_gain": round(statistics.fmean(values) - statistics.fmean(baseline), 2),
            "p_one_sided": round(permutation_p_value(values, baseline), 4),
            "all_above_baseline_max": min(values) > max(baseline),
        }
        for group, values in sorted(by_group.items())
        if group != "baseline" and len(values) >= 2
    }


def recorded(values) -> list[float]:
    """The values that were measured: a transcribed record may lack a figure (NaN in ``car_ap``)."""
    return [value for value in values if not math.isnan(value)]


def mean_std(stats: dict) -> str:
    """'mean ± std', the single value of a one-run group (no spread was measured), or '–' (none recorded)."""
    if not stats:
        return "–"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}" if stats["n"] > 1 else f"{stats['mean']:.2f}"


def partial(stats: dict, runs: int) -> str:
    """' (k of n)' when only k of a group's n runs recorded the figure."""
    return f" ({stats['n']} of {runs})" if stats and stats["n"] < runs else ""


def mean_of(stats: dict, runs: int) -> str:
    return (f"{stats['mean']:.2f}" if stats else "–") + partial(stats, runs)


def markdown_table(table: dict[str, dict[str, float]], versus: dict[str, dict[str, dict]]) -> str:
    """Per-group rows: moderate mean ± std over seeds, per-seed values, easy/hard means, gain and p.

    ``versus``: the summary's ``versus_baseline`` ({"moderate" | "<kind>_moderate": {group: ...}}).
    """
    groups: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for name, ap in sorted(table.items()):
        group, seed = name.rsplit("_s", 1)
        groups.setdefault(group, []).append((seed, ap))
    lines = [
        "| run | seeds | Car AP3D R40 moderate (mean ± std) | per seed | easy (mean) | hard (mean) | gain vs baseline (p) "
        "| BEV moderate (mean ± std, gain p) | 2D moderate (mean ± std, gain p) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group, runs in groups.items():
        moderate = [ap["moderate"] for _, ap in runs]
        stats = describe(moderate)
        per_seed = ", ".join(f"s{seed}: {ap['moderate']:.2f}" for seed, ap in runs)
        easy = describe(recorded(ap["easy"] for _, ap in runs))
        hard = describe(recorded(ap["hard"] for _, ap in runs))
        moderate_versus = versus.get("moderate", {}).get(group)
        gain = f"{moderate_versus['mean_gain']:+.2f} (p = {moderate_versus['p_one_sided']:.3f})" if moderate_versus else ""
        secondary = []
        for kind in SECONDARY:
            kind_stats = describe(recorded(ap[f"{kind}_moderate"] for _, ap in runs))
            kind_versus = versus.get(f"{kind}_moderate", {}).get(group)
            cell = mean_std(kind_stats) + partial(kind_stats, len(runs))
            secondary.append(cell + (f" (p = {kind_versus['p_one_sided']:.3f})" if kind_versus else ""))
        lines.append(f"| {group} | {len(runs)} | {mean_std(stats)} | {per_seed} | {mean_of(easy, len(runs))} | {mean_of(hard, len(runs))} | {gain} "
                     f"| {' | '.join(secondary)} |")
    return "\n".join(lines) + "\n"


def figure(values: dict, key: str, spec: str) -> str:
    """One table cell: ``values[key]`` formatted, or blank for a probe the run did not record (an RGB
    model has no sensitivity; a transcribed record keeps only some figures)."""
    return format(values[key], spec) if key in values else ""


def probe_table(probes: dict[str, dict]) -> str:
    """Per run: the depth probes on matched cars (sensitivity and zeroed-depth error for RGB+depth runs)."""
    lines = ["| run | matched cars | depth MAE (m) | median (m) | within 1 m | median relative | sensitivity x1.2 | MAE, depth zeroed (m) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, p in sorted(probes.items()):
        cells = [figure(p, "matched", "d"), figure(p, "depth_mae_m", ".2f"), figure(p, "depth_median_m", ".2f"),
                 figure(p, "within_1m", ".2f"), figure(p, "depth_median_rel", ".3f"), figure(p, "sensitivity", ".2f"),
                 figure(p, "zeroed_depth_mae_m", ".2f")]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


DEPTH_KEYS = ("car_depth_median_m", "car_within_1m", "depth_mae_m")


def recorded_diagnostics(records: Path) -> dict[str, dict]:
    """{run: add_diagnostics.py's figures} from DIR/diagnostics/*.json (one add_diagnostics output per file)."""
    found: dict[str, dict] = {}
    for path in sorted((records / "diagnostics").glob("*.json")):
        found.update(read_record(path))
    return found


def depth_table(diagnostics: dict[str, dict]) -> str:
    """Per run, then per group's mean: depth error at every labelled val car (the same cars for every run)."""
    lines = ["| run | all cars: median depth error (m) | within 1 m | all objects: depth MAE (m) |", "|---|---|---|---|"]
    groups: dict[str, list[dict]] = {}
    for name, figures in sorted(diagnostics.items()):
        groups.setdefault(group_of(name), []).append(figures)
        lines.append(f"| {name} | {figures['car_depth_median_m']:.3f} | {figures['car_within_1m']:.0%} | {figures['depth_mae_m']:.3f} |")
    baseline = [run["car_depth_median_m"] for run in groups.get("baseline", [])]
    for group, runs in sorted(groups.items()):
        if len(runs) > 1:
            means = [statistics.fmean(run[key] for run in runs) for key in DEPTH_KEYS]
            medians = [run["car_depth_median_m"] for run in runs]
            # One-sided: is the group's error lower than the baseline's? (the permutation test on -error)
            versus = (f" (p = {permutation_p_value([-m for m in medians], [-m for m in baseline]):.3f} lower than baseline)"
                      if group != "baseline" and len(baseline) > 1 else "")
            lines.append(f"| {group} (mean of {len(runs)}) | {means[0]:.3f}{versus} | {means[1]:.0%} | {means[2]:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic KITTI root from `add3d synth`")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--detector", choices=DETECTORS, default="monodle", help="configs/<detector>/synthetic*.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ablation-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None,
                        help="group names to run: teacher baseline add ablation rgb_teacher (default: all but rgb_teacher)")
    parser.add_argument("--rgb-teacher-from", default="baseline_s0", metavar="RUN",
                        help="rgb_teacher control: the baseline run whose weights become the (depth-blind) teacher")
    parser.add_argument("--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS),
                        help="which ablations, in this order (parallel invocations can split them)")
    parser.add_argument("--resume", action="store_true",
                        help="continue interrupted runs from their checkpoint_last.pth (only if no other invocation runs them)")
    parser.add_argument("--records", type=Path, default=None, metavar="DIR",
                        help="run records that outlive --out: finished runs are copied there, recorded runs count in the summary")
    parser.add_argument("overrides", nargs="*", help="extra overrides for EVERY run (same budget), e.g. train.epochs=8")
    args = parser.parse_args()
    configs = REPO / "configs" / args.detector
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / "logs"
    log_dir.mkdir(exist_ok=True)
    common = [f"data.root={args.data}", *args.overrides]
    groups = set(args.only) if args.only is not None else {"teacher", "baseline", "add", "ablation"}
    results: dict[str, dict] = {}

    teacher_name = f"teacher_s{args.teacher_seed}"
    teacher_checkpoint = args.out / teacher_name / "checkpoint_last.pth"
    teacher_done = args.out / teacher_name / "metrics.json"
    needs_teacher = bool(groups & {"add", "ablation"})
    if not teacher_done.is_file() and needs_teacher and "teacher" not in groups and (args.out / teacher_name).is_dir() and not args.resume:
        # Another invocation is training the teacher: wait for it instead of training a second one.
        print(f"waiting for {teacher_done}", flush=True)
        while not teacher_done.is_file():
            time.sleep(30)
    if "teacher" in groups or (needs_teacher and not teacher_done.is_file()):
        results[teacher_name] = train(teacher_name, configs / "synthetic_teacher.yaml", [*common, f"train.seed={args.teacher_seed}"],
                                      args.out, log_dir, args.resume)
    student_common = [*common, f"teacher.checkpoint={teacher_checkpoint}"]
    plan: list[tuple[str, Path, list[str]]] = []
    for seed in args.seeds:
        if "baseline" in groups:
            plan.append((f"baseline_s{seed}", configs / "synthetic.yaml", [*common, f"train.seed={seed}"]))
        if "add" in groups:
            plan.append((f"add_s{seed}", configs / "synthetic_add.yaml", [*student_common, f"train.seed={seed}"]))
    if "rgb_teacher" in groups:
        # Control: the same ADD training from a teacher that has never seen depth (a trained RGB
        # baseline, its depth/validity input weights zero), to tell depth transfer from the effect
        # of distillation itself.
        rgb_teacher = make_rgb_teacher(args.out / args.rgb_teacher_from / "checkpoint_last.pth", configs, args.out)
        for seed in args.seeds:
            plan.append((f"rgb_teacher_s{seed}", configs / "synthetic_add.yaml",
                         [*common, f"teacher.checkpoint={rgb_teacher}", f"train.seed={seed}"]))
    if "ablation" in groups:
        for seed in args.ablation_seeds:
            for name in args.ablations:
                switch = ABLATIONS[name]
                plan.append((f"{name}_s{seed}", configs / "synthetic_add.yaml", [*student_common, switch, f"train.seed={seed}"]))
    for name, config, overrides in plan:
        results[name] = train(name, config, overrides, args.out, log_dir, args.resume)

    # Collect everything present on disk (also runs of earlier invocations).
    table: dict[str, dict] = {}
    probes: dict[str, dict] = {}  # the trainer's depth probes at the last validation (add3d/engine/probes.py)
    if args.records is not None:
        runs = sync_records(args.out, args.records, args.detector, args.data)
    else:
        runs = {path.parent.name: json.loads(path.read_text()) for path in sorted(args.out.glob("*/metrics.json"))}
    for name, run_summary in sorted(runs.items()):
        table[name] = car_ap(run_summary)
        if run_summary.get("last_probes"):
            probes[name] = run_summary["last_probes"]
    by_group: dict[str, dict[str, list[float]]] = {}
    for name, ap in table.items():
        for key, value in ap.items():
            if not math.isnan(value):  # a figure a transcribed record lacks is not a value
                by_group.setdefault(key, {}).setdefault(group_of(name), []).append(value)
    summary = {
        "metric": f"{METRIC} (last epoch, validation split); *_moderate: Car/<kind>/R40/moderate",
        "runs": table,
        "moderate_by_group": {group: describe(values) for group, values in sorted(by_group.get("moderate", {}).items())},
        "versus_baseline": {key: versus_baseline(groups) for key, groups in by_group.items() if key not in ("easy", "hard")},
        "probes": probes,
        "failed": sorted(name for name, value in results.items() if value is None),
    }
    markdown = markdown_table(table, summary["versus_baseline"]) + "\n" + probe_table(probes)
    if args.records is not None and (diagnostics := recorded_diagnostics(args.records)):
        summary["diagnostics"] = diagnostics
        markdown += "\n" + depth_table(diagnostics)
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(args.out / "summary.md", markdown)
    print(json.dumps(summary, indent=2))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
