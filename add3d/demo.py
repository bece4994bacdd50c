"""The demo (``add3d demo``): the whole ADD pipeline on synthetic KITTI-format data, on a laptop CPU.

Stages, each timed and printed: make a synthetic dataset -> train the RGB baseline -> train the depth
teacher -> distil the teacher into an ADD student -> evaluate all three with the KITTI metric ->
write ``report.md`` / ``report.html`` / ``results.json`` with the table, pictures and the exact
commands that reproduce every step.
"""

from __future__ import annotations

import json
import multiprocessing
import shlex
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from add3d.data.dataset import KittiDataset
from add3d.data.loader import build_loader
from add3d.data.mono_dataset import IMAGENET_MEAN, IMAGENET_STD, build_mono_dataset
from add3d.data.synthetic import generate_dataset
from add3d.engine.checkpoints import load_checkpoint
from add3d.engine.config import config_to_dict, load_config, shipped_configs_dir
from add3d.engine.inference import evaluate_predictions, load_detector, predict_split, resolve_device, write_predictions
from add3d.engine.probes import common_depth_errors, depth_probes, format_probes, match_depths
from add3d.engine.trainer import LAST_CHECKPOINT, train
from add3d.errors import Add3dError
from add3d.fileio import atomic_write_text
from add3d.viz.report import plot_pr_curves, plot_side_by_side, plot_teacher_input, results_table, write_report

# Budgets: the full demo takes ~9.6 minutes on 2 quiet CPU cores (2026-12-06, with the frame cache of the synthetic
# configs; 10.6 without it, same numbers); --quick is a ~3 minute smoke check.
# The learning rate drops x0.1 after epoch 7 of 12 (the configs drop it after 10): the depth teacher
# sharpens its depth at the low rate (benchmark teacher: median relative depth error 0.061 -> 0.030
# in its 4 low-rate epochs; the baseline 0.060 -> 0.057). Measured on 2 quiet cores, seed 0:
# milestone 10 gave 8.9 min, teacher / ADD / baseline AP3D 6.76 / 2.79 / 2.03 and a teacher depth
# error 0.77x the baseline's; milestone 7 gave 9.7 min, 8.48 / 3.05 / 1.71 and 0.62x; a 16-epoch
# teacher with 10-epoch students gave 11.1 min, 6.09 / 1.92 / 1.77 and 0.74x. On the same data, teachers
# with the step after epoch 5, or at lr 1e-3 with the step after 7, had median relative depth errors
# 0.074 and 0.078 against this teacher's 0.054 (baseline 0.087): this budget is the best tried.
# The same training code on a second machine of the same kind gave 4.02 / 2.87 / 1.96 and 0.067 against 0.079
# (0.85x): machine numerics over 720 steps move these single-seed figures that much.
# Seven single levers at this budget (loss weight, lr, batch, jitter, fill, pooled depth) left the
# ratio at 0.58-0.87x: docs/RESULTS.md, "The demo's teacher". Over four seeds this recipe gives 0.74x on
# matched cars (0.61-0.85x) and 0.62x on all labelled cars; a dense depth term, jitter on half the
# samples, a log-depth loss and 20 epochs did not lower it (docs/RESULTS.md, "Four seeds of the demo's teacher"):
# at this budget the same network trained only to copy its depth input is no more precise at the cars'
# centres (0.69x the baseline's error; benchmarks/depth_copy_probe.py, docs/RESULTS.md "Why the teacher stops near 0.6x").
# With data.depth_region in the teacher's recipe (2026-12-06, seed 0): 9.73 / 1.47 / 1.41 and 0.49x on
# matched cars; the previous teacher on that machine and data 4.59 with a student of 1.08. Over four seeds of
# students of that teacher (one thread each): ADD 2.00 +- 0.38 against the baseline's 1.27 +- 0.44 (p = 0.029);
# with the heatmap response term weighted by the gradient rule (configs/monodle/synthetic_add.yaml)
# 2.49 +- 0.69, seed 0 3.42; the demo's two-thread student (below) is another draw: 2.73, in 9.6 min
# (docs/RESULTS.md, "The demo's student over four seeds").
FULL = {"frames": 640, "epochs": {"baseline": 12, "teacher": 12, "add": 12},
        "milestones": {"baseline": 7, "teacher": 7, "add": 7}}
QUICK = {"frames": 64, "epochs": {"baseline": 1, "teacher": 1, "add": 1}, "milestones": {}}
MODELS = ("baseline", "teacher", "add")
MODEL_TITLES = {"baseline": "baseline (RGB)", "teacher": "teacher (RGB + depth)", "add": "ADD student (RGB)"}
CONFIG_FILES = {
    "baseline": "monodle/synthetic.yaml",
    "teacher": "monodle/synthetic_teacher.yaml",
    "add": "monodle/synthetic_add.yaml",
}
OVERLAPS = {"0.7": "default", "0.5": "loose"}


@dataclass
class Stage:
    name: str
    command: str
    seconds: float = 0.0


@dataclass
class DemoRun:
    out_dir: Path
    quick: bool
    seed: int
    stages: list[Stage] = field(default_factory=list)

    def stage(self, name: str, argv: list[str], action):
        """Run ``action()`` as a named stage; record its reproducing command and wall time."""
        command = self.announce(name, argv)
        start = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - start
        self.stages.append(Stage(name, command, seconds))
        print(f"    done in {seconds:.0f} s", flush=True)
        return result

    def announce(self, name: str, argv: list[str], note: str = "") -> str:
        command = " ".join(shlex.quote(a) for a in ["add3d", *argv])
        print(f"\n=== [{len(self.stages) + 1}] {name}{note}\n    $ {command}", flush=True)
        return command


def train_overrides(run: DemoRun, model: str, data_root: Path, teacher_checkpoint: Path | None,
                    threads: int | None = None) -> list[str]:
    budget = QUICK if run.quick else FULL
    overrides = [
        f"data.root={data_root}",
        f"train.out_dir={run.out_dir / model}",
        f"train.epochs={budget['epochs'][model]}",
        f"train.seed={run.seed}",
        f"train.eval_every={-1}",
        # The benchmark's teacher averages its weights (train.ema_decay in its config); over the demo's
        # 720 steps the average did not help (seed 0: teacher AP3D 3.45 and median relative depth error
        # 0.073 with decay 0.995, 4.02 and 0.067 without), so the demo trains plain weights.
        "train.ema_decay=null",
    ]
    milestone = budget["milestones"].get(model)
    overrides.append(f"schedule.milestones=[{'' if milestone is None else milestone}]")
    if teacher_checkpoint is not None:
        overrides.append(f"teacher.checkpoint={teacher_checkpoint}")
    if threads is not None:
        overrides.append(f"train.threads={threads}")
    return overrides


def evaluate_model(cfg, checkpoint: Path, out_dir: Path) -> tuple[dict, dict, dict]:
    """(results by overlap, precision curves at 0.5, detections by frame) on the val split."""
    dataset, predictions = predict_split(cfg, checkpoint, cfg.data.val_split)
    write_predictions(predictions, out_dir / "predictions")
    ground_truth = {frame_id: dataset.ground_truth(i) for i, frame_id in enumerate(dataset.ids)}
    results, curves = {}, {}
    for label, overlap in OVERLAPS.items():
        result = evaluate_predictions(ground_truth, predictions, tuple(cfg.model.classes), overlap,
                                      cfg.train.eval_box2d_scale, return_curves=overlap == "loose")
        curves = result.pop("curves", curves)
        results[label] = result
    return results, curves, predictions


def make_figures(run: DemoRun, data_root: Path, predictions: dict[str, dict], curves: dict[str, dict],
                 teacher_cfg) -> list[tuple[str, str]]:
    """Pictures for the report; returns (caption, relative path) pairs."""
    figures_dir = run.out_dir / "figures"
    figures = []
    val = KittiDataset(data_root, "val")
    # The val frames with the most ground-truth cars show the differences best.
    ranked = sorted(range(len(val)), key=lambda i: -sum(o.cls_type == "Car" for o in val.read_objects(i)))
    for rank, index in enumerate(ranked[:2]):
        frame = val[index]
        shown = {MODEL_TITLES[m]: predictions[m].get(frame.frame_id, []) for m in ("baseline", "add", "teacher")}
        path = figures_dir / f"val_{frame.frame_id}.png"
        plot_side_by_side(frame.image, frame.calib.P2, frame.objects, shown, path,
                          title=f"validation frame {frame.frame_id}")
        figures.append((f"Validation frame {frame.frame_id}: baseline, ADD student and teacher", path))
    for cls in ("Car", "Pedestrian", "Cyclist"):
        path = figures_dir / f"pr_{cls.lower()}.png"
        model_curves = {MODEL_TITLES[m]: {cls: {"3d": dict(zip(("easy", "moderate", "hard"), curves[m].get(cls, {}).get("3d") or []))}}
                        for m in MODELS}
        plot_pr_curves(model_curves, cls, path, metric="3d", difficulty="moderate")
        figures.append((f"{cls} 3D precision-recall (moderate, IoU 0.5 / 0.25)", path))
    depth_set = build_mono_dataset(teacher_cfg.data, teacher_cfg.data.val_split, augment=False, with_depth=True,
                                   classes=teacher_cfg.model.classes)
    sample = depth_set[ranked[0]]
    image = sample["image"].numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    plot_teacher_input((np.clip(image, 0, 1) * 255).astype(np.uint8), sample["depth"][0].numpy(),
                       figures_dir / "teacher_input.png",
                       title=f"teacher input ({teacher_cfg.data.depth_source} depth) at network resolution")
    figures.append(("What the teacher sees: the image and its ground-truth depth channel", figures_dir / "teacher_input.png"))
    return [(caption, str(path.relative_to(run.out_dir))) for caption, path in figures]


def timed_train_stage(cfg, fresh: bool, quiet: bool) -> float:
    """:func:`train_stage` and its wall time (what the side-by-side stage's second process runs)."""
    start = time.perf_counter()
    train_stage(cfg, fresh, quiet)
    return time.perf_counter() - start


def train_stage(cfg, fresh: bool, quiet: bool = False) -> None:
    """Train one demo model, continuing what an earlier demo run in the same folder left.

    A finished run is reused, an unfinished one resumed; ``fresh`` retrains (the earlier run's files
    are kept in ``previous_<n>/``). A run made with another config is an error, not silently reused.
    """
    last = Path(cfg.train.out_dir) / LAST_CHECKPOINT
    if fresh or not last.is_file():
        train(cfg, force=fresh, quiet=quiet)
        return
    checkpoint = load_checkpoint(last)
    stored, wanted = checkpoint.get("config") or {}, config_to_dict(cfg)
    for config in (stored, wanted):
        config.get("train", {}).pop("epochs", None)
    if stored != wanted:
        raise Add3dError(f"{last}: trained with another config than this demo run's; pass --fresh to retrain")
    if int(checkpoint["epoch"]) >= cfg.train.epochs:
        print(f"    already trained ({checkpoint['epoch']} epochs): reusing {last}; --fresh retrains", flush=True)
        return
    train(cfg, resume=last, quiet=quiet)


def train_baseline_and_teacher(run: DemoRun, cfgs: dict, argvs: dict, fresh: bool, side_by_side: bool) -> None:
    """Train the baseline and the teacher: at once on two cores (the baseline in a second process,
    without progress output), or one after the other. The ADD student needs the teacher first.

    Why two processes: each training uses one thread (``train.threads: 1`` is the fastest per core
    here), so a second core would otherwise idle for a third of the demo."""
    if not side_by_side:
        for model in ("baseline", "teacher"):
            run.stage(f"train {MODEL_TITLES[model]}", argvs[model], lambda model=model: train_stage(cfgs[model], fresh))
        return
    baseline_stage = Stage(f"train {MODEL_TITLES['baseline']}", run.announce(
        f"train {MODEL_TITLES['baseline']}", argvs["baseline"],
        f" (in a second process, beside the next stage; log: {Path(cfgs['baseline'].train.out_dir) / 'train_log.jsonl'})"))
    run.stages.append(baseline_stage)
    # spawn, not fork: this process has torch (and maybe OpenCV) thread pools that a fork would copy broken.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        baseline = pool.submit(timed_train_stage, cfgs["baseline"], fresh, True)
        teacher_stage = Stage(f"train {MODEL_TITLES['teacher']}",
                              run.announce(f"train {MODEL_TITLES['teacher']}", argvs["teacher"], " (beside the baseline)"))
        run.stages.append(teacher_stage)
        teacher_stage.seconds = timed_train_stage(cfgs["teacher"], fresh, False)
        print(f"    done in {teacher_stage.seconds:.0f} s; waiting for the baseline", flush=True)
        baseline_stage.seconds = baseline.result()
    print(f"    baseline done in {baseline_stage.seconds:.0f} s", flush=True)


def logged_train_seconds(out_dir: Path) -> float:
    """Wall time of a run's epochs as its train_log.jsonl records them (also for reused runs)."""
    log = out_dir / "train_log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return float(sum(record.get("seconds", 0.0) for record in records if record.get("kind") == "epoch"))


def run_demo(out_dir: Path, quick: bool = False, seed: int = 0, workers: int = 2, fresh: bool = False) -> dict:
    """Run every stage into ``out_dir`` and write the report; returns what results.json holds.

    Rerun into the same folder, it continues: existing data and finished trainings are reused
    (``fresh`` retrains every model)."""
    total_start = time.perf_counter()
    run = DemoRun(Path(out_dir), quick, seed)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    budget = QUICK if quick else FULL
    data_root = run.out_dir / "data"
    configs = shipped_configs_dir()

    if not (data_root / "ImageSets" / "val.txt").is_file():
        run.stage("synthetic KITTI-format data",
                  ["synth", "--out", str(data_root), "--frames", str(budget["frames"]), "--scale", "0.25",
                   "--seed", str(seed), "--workers", str(workers)],
                  lambda: generate_dataset(data_root, frames=budget["frames"], scale=0.25, seed=seed,
                                           workers=workers, force=True))

    cfgs, argvs = {}, {}
    for model in MODELS:
        # The demo does not validate while training (train.eval_every -1): a run's weights are its last checkpoint.
        teacher_checkpoint = run.out_dir / "teacher" / LAST_CHECKPOINT if model == "add" else None
        # The ADD student trains alone after the two side-by-side runs: both cores are its (measured:
        # 252 s against 333 s for 720 steps; another thread count is another draw of the same seed).
        threads = 2 if model == "add" and workers >= 2 else None
        overrides = train_overrides(run, model, data_root, teacher_checkpoint, threads)
        config_path = configs / CONFIG_FILES[model]
        cfgs[model] = load_config(config_path, overrides)
        argvs[model] = ["train", str(config_path.relative_to(configs.parent)), *overrides]
    train_baseline_and_teacher(run, cfgs, argvs, fresh, side_by_side=workers >= 2)
    run.stage(f"train {MODEL_TITLES['add']}", argvs["add"], lambda: train_stage(cfgs["add"], fresh))
    train_seconds = {MODEL_TITLES[m]: logged_train_seconds(run.out_dir / m) for m in MODELS}
    checkpoints = {m: run.out_dir / m / LAST_CHECKPOINT for m in MODELS}

    results, curves, predictions = {}, {}, {}
    for model in MODELS:
        argv = ["eval", str((configs / CONFIG_FILES[model]).relative_to(configs.parent)), "--checkpoint",
                str(checkpoints[model]), f"data.root={data_root}"]
        results[model], curves[model], predictions[model] = run.stage(
            f"evaluate {MODEL_TITLES[model]}", argv,
            lambda model=model: evaluate_model(cfgs[model], checkpoints[model], run.out_dir / model))

    probes = run.stage("depth probes", ["demo", "--out", str(run.out_dir)],
                       lambda: probe_models(cfgs, checkpoints, predictions))
    figures = run.stage("figures", ["demo", "--out", str(run.out_dir)],
                        lambda: make_figures(run, data_root, predictions, curves, cfgs["teacher"]))

    table_results = {MODEL_TITLES[m]: results[m] for m in MODELS}
    results_json = {
        MODEL_TITLES[m]: {f"{metric}@{overlap}": {cls: results[m][overlap][cls][metric] for cls in results[m][overlap]}
                          for overlap in OVERLAPS for metric in ("3d", "bev", "2d", "aos")}
        for m in MODELS
    }
    for m in MODELS:
        results_json[MODEL_TITLES[m]]["probes"] = probes[m]
    results_json["_meta"] = {
        "dataset": str(data_root), "frames": budget["frames"], "quick": quick, "seed": seed,
        "train_seconds": train_seconds, "values": "AP in percent, [easy, moderate, hard]",
        "overlaps": {"0.7": "0.7/0.5/0.5 (Car/Ped/Cyc, official)", "0.5": "0.5/0.25/0.25 (loose)"},
        "box2d_scale": cfgs["baseline"].train.eval_box2d_scale,
    }
    atomic_write_text(run.out_dir / "results.json", json.dumps(results_json, indent=2) + "\n")

    verdict = judge(results)
    total = time.perf_counter() - total_start
    lines = [
        "# add3d demo: ADD on synthetic KITTI-format data",
        "",
        f"{budget['frames']} synthetic frames (310x94, 75% train / 25% val), MonoDLE with a narrow DLA backbone, "
        f"seed {seed}{', QUICK smoke-check budget: numbers are not meaningful' if quick else ''}. "
        f"Total wall time {total / 60:.1f} min. Difficulties as on full-size KITTI frames: 2D boxes are "
        f"scaled x{cfgs['baseline'].train.eval_box2d_scale:g} before the devkit's 40/25 px height limits "
        "(`train.eval_box2d_scale`).",
        "",
        "## Results (validation split, AP|R40 in percent)",
        "",
        "Car, official overlap 0.7 and loose 0.5:",
        "",
        results_table(table_results, "Car", overlaps=("0.7", "0.5"), train_seconds=train_seconds,
                      overlap_labels=("IoU 0.7", "IoU 0.5")),
        "",
    ]
    lines += ["## Does the teacher read its depth input? (add3d/engine/probes.py)", "",
              "Cars matched to labels (2D IoU >= 0.5); sensitivity: the change of predicted depth when every "
              "LiDAR point moves 1.2x farther along its ray, (z_scaled / z - 1) / 0.2 (1 = reads depth, 0 = ignores it).", ""]
    lines += [f"- {MODEL_TITLES[m]}: {format_probes(probes[m])}" for m in MODELS]
    lines += ["", "## Verdict", "", verdict, "", judge_probes(probes), "", "## Pictures", ""]
    small_classes = ("Pedestrian", "Cyclist")
    for caption, path in figures:
        if not caption.startswith(small_classes):
            lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
    lines += ["## Pedestrians and cyclists", "",
              "The synthetic scenes hold about one pedestrian and one cyclist for every four to five cars, and "
              "this budget is set for cars: these tables say how far the small classes got, not how ADD does on them"
              + (" (every value is 0 in this run)." if all_zero(table_results, small_classes) else "."), ""]
    for cls in small_classes:
        lines += [f"{cls} (the official overlap for this class, 0.5, and the loose one, 0.25):", "",
                  results_table(table_results, cls, overlaps=("0.7", "0.5"), overlap_labels=("IoU 0.5", "IoU 0.25")), ""]
    for caption, path in figures:
        if caption.startswith(small_classes):
            lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
    lines += ["## Reproduce", "", "Every stage above, as commands (run from the repository root):", "", "```"]
    lines += [f"{stage.command}    # {stage.name}: {stage.seconds:.0f} s" for stage in run.stages]
    lines += ["```", ""]
    write_report(run.out_dir, "\n".join(lines), "add3d demo")
    print(f"\nreport: {run.out_dir / 'report.md'} and report.html ({total / 60:.1f} min in all)")
    print(verdict)
    return results_json


def probe_models(cfgs: dict, checkpoints: dict, predictions: dict) -> dict[str, dict]:
    """The depth probes of every model on the val split (reusing the evaluation's detections)."""
    report = {}
    for model in MODELS:
        cfg = cfgs[model]
        device = resolve_device(cfg.train.device)
        detector = load_detector(cfg, checkpoints[model], device)
        dataset = build_mono_dataset(cfg.data, cfg.data.val_split, augment=False,
                                     with_depth=detector.input_spec.kind == "rgbd", classes=cfg.model.classes)
        truth = {frame_id: dataset.ground_truth(i) for i, frame_id in enumerate(dataset.ids)}
        report[model] = depth_probes(detector, build_loader(dataset, cfg.train.batch_size, 0), truth,
                                     detector.input_spec, device, cfg.model.score_threshold,
                                     predictions=predictions[model])
    classes = tuple(report["teacher"]["classes"])
    teacher, baseline = common_depth_errors(match_depths(truth, predictions["teacher"], classes),
                                            match_depths(truth, predictions["baseline"], classes))
    report["teacher"]["common_with_baseline"] = {"matched": teacher["matched"],
                                                 "depth_median_rel": teacher["depth_median_rel"],
                                                 "baseline_depth_median_rel": baseline["depth_median_rel"]}
    return report


def all_zero(table_results: dict, classes: tuple[str, ...]) -> bool:
    """Whether every AP of these classes, for every model, overlap and metric, is 0."""
    return all(value == 0.0
               for by_overlap in table_results.values() for by_class in by_overlap.values()
               for cls, by_metric in by_class.items() if cls in classes
               for metric in by_metric.values() for value in metric.get("R40", []))


def judge_probes(probes: dict[str, dict]) -> str:
    """Say plainly whether the teacher reads depth (sensitivity >= 0.8) and whether its median relative
    depth error on matched cars is at most half the baseline's (issue 12's bars for the demo), on the
    cars each model matched (the bar) and on the cars both matched (the same set)."""
    teacher, baseline = probes["teacher"], probes["baseline"]
    if not teacher["matched"] or not baseline["matched"]:
        return "The teacher or the baseline matched no car, so the depth probes cannot judge this run."
    sensitivity = teacher.get("sensitivity", float("nan"))
    reads = "reads its depth input" if sensitivity >= 0.8 else "does NOT read its depth input enough (below 0.8)"
    text = (f"Teacher sensitivity to depth x1.2: {sensitivity:.2f}, so the teacher {reads}. Its median relative depth "
            f"error on the cars each model matched is {teacher['depth_median_rel']:.3f} ({teacher['matched']} cars) "
            f"against the baseline's {baseline['depth_median_rel']:.3f} ({baseline['matched']} cars): "
            f"{_halves(teacher['depth_median_rel'], baseline['depth_median_rel'])}.")
    common = teacher.get("common_with_baseline")
    if common and common["matched"]:
        text += (f" On the {common['matched']} cars both matched: {common['depth_median_rel']:.3f} against "
                 f"{common['baseline_depth_median_rel']:.3f}, "
                 f"{_halves(common['depth_median_rel'], common['baseline_depth_median_rel'])}.")
    return text


def _halves(teacher: float, baseline: float) -> str:
    ratio = teacher / baseline if baseline > 0 else float("nan")
    return f"{ratio:.2f}x, {'at most half' if ratio <= 0.5 else 'MORE than half'} the baseline's"


# A margin counts as clear at this ratio: four baseline seeds at the demo's budget spread 0.92-1.83
# AP3D (docs/RESULTS.md, "The demo's student over four seeds"), so a smaller ratio can be one seed's luck.
CLEAR_MARGIN = 1.5


def judge(results: dict) -> str:
    """Say plainly whether teacher > ADD student > baseline holds on Car moderate AP3D|R40 (loose), and
    whether each step is a clear margin (a ratio of at least ``CLEAR_MARGIN``)."""
    def moderate(model: str) -> float:
        return results[model]["0.5"]["Car"]["3d"]["R40"][1]

    teacher, student, baseline = moderate("teacher"), moderate("add"), moderate("baseline")
    facts = (f"Car moderate AP3D|R40 @0.5: teacher {teacher:.2f}, ADD student {student:.2f}, baseline {baseline:.2f} "
             f"(student / baseline {_ratio(student, baseline)}, teacher / student {_ratio(teacher, student)}).")
    if teacher > student > baseline:
        if teacher >= CLEAR_MARGIN * student and student >= CLEAR_MARGIN * baseline:
            return facts + f" The expected order teacher > ADD student > baseline holds by clear margins (each at least {CLEAR_MARGIN:g}x)."
        return (facts + f" The expected order teacher > ADD student > baseline holds, but not every step by a clear margin "
                f"({CLEAR_MARGIN:g}x): one seed at this budget cannot separate them; docs/RESULTS.md has four seeds of each.")
    broken = []
    if not teacher > student:
        broken.append("the teacher is not above the ADD student")
    if not student > baseline:
        broken.append("the ADD student is not above the baseline")
    return (facts + " The expected order does NOT hold in this run: " + " and ".join(broken) + ". "
            "One seed at a CPU budget is noisy; docs/RESULTS.md has four seeds of each.")


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"
