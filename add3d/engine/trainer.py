"""The training loop shared by baselines, depth teachers and ADD students.

Read top to bottom: build data, module, optimizer and schedule; restore a checkpoint if resuming;
then for each epoch train with a progress bar, log scalars to TensorBoard, validate with the KITTI
evaluator every ``eval_every`` epochs, and write the ``last`` / ``best`` checkpoints atomically.

Reproducibility: augmentation is a function of (seed, epoch, sample), the sample order one of
(seed, epoch), and the loader never touches the global random state; checkpoints carry the model,
optimizer, scheduler, AMP scaler, counters and every global RNG state. So on CPU a run killed at
any moment and resumed from its last checkpoint ends with bitwise the same weights as a run that
was never interrupted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from add3d.data.loader import build_loader
from add3d.data.mono_dataset import MonoDataset, batch_to_device, build_mono_dataset, collate_batch
from add3d.distill.teacher import init_teacher_from_rgb, load_teacher
from add3d.distill.wrapper import DistillationModule, balance_weights
from add3d.engine.checkpoints import (
    load_checkpoint,
    load_detector_weights,
    load_module_state,
    load_weights_strictly,
    module_extra_state,
    read_model_state,
    save_checkpoint,
)
from add3d.engine.config import Config, config_to_dict, config_to_yaml
from add3d.engine.distributed import (
    DistributedContext,
    ResumableDistributedSampler,
    all_reduce_mean,
    all_reduce_min,
    barrier,
    init_distributed,
    per_process_batch_size,
    unwrap_model,
    wrap_model,
)
from add3d.engine.inference import (
    evaluate_predictions,
    flat_metrics,
    metric_value,
    predict_loader,
    resolve_device,
    set_threads,
)
from add3d.engine.modules import DetectorModule, input_spec_from_config, teacher_input_spec
from add3d.engine.optim import build_optimizer, build_scheduler
from add3d.engine.precision import amp_dtype, autocast, build_grad_scaler
from add3d.engine.probes import depth_probes, format_probes
from add3d.engine.run_folder import check_run_folder, discarded_if_no_checkpoint, move_earlier_run
from add3d.engine.seed import capture_rng_state, restore_rng_state, seed_everything
from add3d.engine.weight_ema import build_weight_ema
from add3d.errors import Add3dError
from add3d.fileio import atomic_write_text
from add3d.models import build_detector
from add3d.progress import progress

LAST_CHECKPOINT = "checkpoint_last.pth"
RESERVED_LOG_NAMES = ("loss", "lr", "kind", "epoch", "step", "seconds")
BEST_CHECKPOINT = "checkpoint_best.pth"


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # batches done in the current epoch
    global_step: int = 0
    best_metric: float = -math.inf
    bad_steps: int = 0  # consecutive non-finite losses


# ----- building blocks ------------------------------------------------------------------------------
def build_detector_from_config(cfg: Config) -> torch.nn.Module:
    detector = build_detector(cfg.model)
    if cfg.train.init_checkpoint:
        state = read_model_state(cfg.train.init_checkpoint)
        if input_spec_from_config(cfg).kind == "rgbd" and _first_conv_channels(state) == 3:
            init_teacher_from_rgb(detector, state)  # RGB weights, extra depth channels start at zero
        else:
            load_detector_weights(detector, cfg.train.init_checkpoint, require_compat=False)  # fine-tuning may switch compat
    return detector


def _first_conv_channels(state: dict) -> int | None:
    for value in state.values():
        if value.dim() == 4:
            return int(value.shape[1])
    return None


def build_training_module(cfg: Config, detector: torch.nn.Module | None = None) -> torch.nn.Module:
    """``DetectorModule`` for baselines / teachers, ADD's ``DistillationModule`` when ``cfg.distill`` is set."""
    detector = detector if detector is not None else build_detector_from_config(cfg)
    if cfg.distill is not None:
        teacher = load_teacher(cfg.model, cfg.teacher.checkpoint, teacher_input_spec(cfg))
        return DistillationModule(detector, teacher, cfg.distill)
    return DetectorModule(detector, input_spec_from_config(cfg))


def compile_detectors(module: torch.nn.Module, backend: str, device: torch.device) -> None:
    """``torch.compile`` the forward of the module's detector (and ADD's teacher), in place: the
    state dict keeps its keys, the losses and ADD's adapters stay eager. A backend that cannot
    work here (e.g. no C++ compiler for inductor on CPU) is one clear error before training."""
    try:
        torch.compile(lambda x: x * 2.0, backend=backend)(torch.ones(2, device=device))
    except Exception as error:  # torch raises many kinds (BackendCompilerFailed, InvalidCxxCompiler, ...)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise Add3dError(f"train.compile: torch.compile (backend {backend}) does not work on {device.type} here "
                         f"({reason}); set train.compile=false") from None
    for name in ("detector", "teacher"):
        network = getattr(module, name, None)
        if network is not None:
            network.compile(backend=backend)


def checkpoint_state(module, optimizer, scheduler, scaler, state: TrainState, cfg: Config, ema=None) -> dict:
    detector = unwrap_model(module).detector
    averaged = {} if ema is None else {"training_model": detector.state_dict(), "ema_updates": int(ema.n_averaged)}
    return {
        "model": (detector if ema is None else ema.module).state_dict(),  # the weights to evaluate and deploy
        **averaged,
        "module_extra": module_extra_state(unwrap_model(module)),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "global_step": state.global_step,
        "best_metric": state.best_metric,
        "rng": capture_rng_state(),
        "config": config_to_dict(cfg),
        "input_spec": input_spec_from_config(cfg).to_dict(),  # what eval / predict / export feed the model
    }


def restore_checkpoint(path: str | Path, module, optimizer, scheduler, scaler, ema=None) -> TrainState:
    checkpoint = load_checkpoint(path)
    missing = [key for key in ("model", "optimizer", "scheduler", "epoch", "rng") if key not in checkpoint]
    if missing:
        raise Add3dError(f"{path}: cannot resume, the checkpoint lacks {missing}")
    if (ema is not None) != ("training_model" in checkpoint):
        written = "with" if "training_model" in checkpoint else "without"
        raise Add3dError(f"{path}: cannot resume, the run was written {written} a weight average (train.ema_decay); "
                         "resume with the run's own train.ema_decay")
    if ema is not None:
        load_weights_strictly(ema.module, checkpoint["model"], path)
        ema.n_averaged.fill_(int(checkpoint["ema_updates"]))
        checkpoint = {**checkpoint, "model": checkpoint["training_model"]}
    load_module_state(unwrap_model(module), checkpoint, path)
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if checkpoint.get("scaler"):  # empty from a run without a scaler (CPU, or before the amp modes)
        scaler.load_state_dict(checkpoint["scaler"])
    restore_rng_state(checkpoint["rng"])
    return TrainState(
        epoch=int(checkpoint["epoch"]),
        step_in_epoch=int(checkpoint.get("step_in_epoch", 0)),
        global_step=int(checkpoint.get("global_step", 0)),
        best_metric=float(checkpoint.get("best_metric", -math.inf)),
    )


def train_step(model, micro_batches: list[dict], optimizer, scaler, cfg: Config, ctx: DistributedContext, device,
               dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One optimisation step over ``train.accumulate_steps`` micro-batches; no host sync on CUDA.

    Each micro-batch's loss is divided by their number and the gradients add up, so for a loss
    that is a per-sample mean the step equals one step on their concatenation. Returns (finite,
    values, names): ``finite`` 1.0 / 0.0 and ``values`` = [loss, *parts named by ``names``] as
    float64 device tensors, the micro-batches' mean on this process.

    A non-finite loss on ANY process skips the step on all of them (backward still runs so that
    DDP's gradient synchronisation stays in lockstep). On CPU the trainer reads ``finite`` here and
    skips the update itself; on CUDA the GradScaler skips it (its non-finite gradient check), and
    ``finite`` only feeds the on-device counters the trainer reads every ``log_every`` steps.
    """
    optimizer.zero_grad(set_to_none=True)
    count = len(micro_batches)
    total = None
    for index, batch in enumerate(micro_batches):
        batch = batch_to_device(batch, device)
        if cfg.train.channels_last:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        last = index == count - 1
        # DDP: all-reduce gradients once, after the last micro-batch.
        with model.no_sync() if ctx.enabled and not last else contextlib.nullcontext():
            with autocast(device, dtype):
                loss, logs = model(batch)
            scaler.scale(loss / count if count > 1 else loss).backward()
        names = sorted(name for name in logs if name not in RESERVED_LOG_NAMES)  # the total is reported as loss
        values = torch.stack([loss.detach().float()] + [torch.as_tensor(logs[n], device=loss.device).detach().float()
                                                        for n in names]).double()
        total = values if total is None else total + values
    values = total / count if count > 1 else total
    finite = all_reduce_min(torch.isfinite(values[0]).double(), ctx)
    if device.type != "cuda" and finite.item() < 1:
        optimizer.zero_grad(set_to_none=True)
        return finite, values, names
    if cfg.train.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.train.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return finite, values, names


class StepMeans:
    """On-device sums of the finite steps' [loss, *parts] since the last ``take``: one host sync per
    read instead of one per step."""

    def __init__(self, ctx: DistributedContext):
        self.ctx = ctx
        self.sum: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.steps = 0

    def add(self, finite: torch.Tensor, values: torch.Tensor) -> None:
        kept = torch.where(finite > 0, values, torch.zeros_like(values))  # NaN * 0 would stay NaN
        self.sum = kept if self.sum is None else self.sum + kept
        self.count = finite if self.count is None else self.count + finite
        self.steps += 1

    def take(self) -> tuple[list[float], int, int]:
        """(means over this process group's finite steps, finite steps, steps); then start afresh."""
        if self.sum is None:
            return [], 0, 0
        sums = all_reduce_mean(self.sum, self.ctx)
        count = int(self.count.item())
        means = (sums / max(count, 1)).tolist()
        steps = self.steps
        self.sum, self.count, self.steps = None, None, 0
        return means, count, steps


@torch.no_grad()
def measure_losses(model, loader, device, dtype: torch.dtype | None) -> None:
    """One pass over ``loader`` in training mode without gradients, for the loss statistics a
    detector records in its ``loss`` (GUPNet's HTL seeds its first window with the untrained
    losses, as its code's ``compute_e0_loss``; batch-norm statistics update as there)."""
    model.train()
    # no_grad: no autograd graph for a pass that never steps (and DDP then expects no reduction).
    with torch.no_grad():
        for batch in loader:
            with autocast(device, dtype):
                model(batch_to_device(batch, device))


def validate(detector, loader, dataset: MonoDataset, ground_truth: dict, device, cfg: Config,
             perturb: bool = False) -> tuple[dict, dict]:
    """(KITTI metrics, depth probes). ``perturb``: also the depth-input probes (two more passes, RGB+depth only)."""
    spec = input_spec_from_config(cfg)
    predictions = predict_loader(detector, loader, device, spec, cfg.model.score_threshold, description="validate")
    results = evaluate_predictions(ground_truth, predictions, tuple(cfg.model.classes), cfg.train.eval_overlap,
                                   cfg.train.eval_box2d_scale)
    probes = depth_probes(detector, loader, ground_truth, spec, device, cfg.model.score_threshold,
                          predictions=predictions, perturb=perturb and spec.kind == "rgbd")
    return results, probes


class JsonLog:
    """Append-only JSON-lines log of steps and epochs (``train_log.jsonl``), rank 0 only."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, **record) -> None:
        if self.path is not None:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def rewind(self, state: TrainState | None) -> None:
        """Start afresh (``None``), or keep only what happened up to a resumed checkpoint, so a run
        killed after its last checkpoint does not log those steps twice."""
        if self.path is None or not self.path.is_file():
            return
        kept = []
        if state is not None:
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by the kill
                if record.get("kind") == "step" and record.get("step", 0) <= state.global_step:
                    kept.append(line)
                elif record.get("kind") in ("epoch", "val") and record.get("epoch", 0) < state.epoch:
                    kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))


# ----- the loop -----------------------------------------------------------------------------------
def train(cfg: Config, resume: str | Path | None = None, detector: torch.nn.Module | None = None,
          force: bool = False, quiet: bool = False) -> dict:
    """Train as configured; returns ``{"best_metric", "last_metrics", "out_dir"}``.

    ``detector`` replaces ``build_detector(cfg.model)`` (tests use tiny detectors). A folder holding
    an earlier run's checkpoints is refused unless ``resume`` or ``force`` (which moves that run's
    files to ``OUT_DIR/previous_<n>/``); a run that fails before its first checkpoint leaves nothing
    behind. ``quiet``: no progress and no per-epoch lines.
    """
    check_run_folder(cfg.train.out_dir, resume, force)
    with discarded_if_no_checkpoint(cfg.train.out_dir):
        return _train(cfg, resume, detector, force, quiet)


def _train(cfg: Config, resume: str | Path | None, detector: torch.nn.Module | None, force: bool, quiet: bool) -> dict:
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    seed_everything(cfg.train.seed)
    out_dir = Path(cfg.train.out_dir)
    log = JsonLog(out_dir / "train_log.jsonl" if ctx.is_main else None)

    # Data: every process gets batch_size / world_size samples of the same global order.
    # Each process's batch is split into train.accumulate_steps micro-batches of the same order.
    batch_size = per_process_batch_size(cfg.train.batch_size, ctx)
    accumulate = cfg.train.accumulate_steps
    if batch_size % accumulate:
        raise Add3dError(f"the per-process batch {batch_size} must be divisible by train.accumulate_steps {accumulate}")
    train_set = build_mono_dataset(cfg.data, cfg.data.train_split, augment=True, seed=cfg.train.seed,
                                   classes=cfg.model.classes)
    sampler = ResumableDistributedSampler(train_set, ctx, shuffle=True, seed=cfg.train.seed, drop_last=True)
    train_loader = build_loader(train_set, batch_size // accumulate, cfg.train.workers, sampler, cfg.train.seed,
                                 cfg.train.prefetch_factor)
    steps_per_epoch = len(sampler) // batch_size
    if steps_per_epoch == 0:
        raise Add3dError(
            f"split '{cfg.data.train_split}' has {len(train_set)} frames, fewer than one batch of "
            f"{cfg.train.batch_size}; lower train.batch_size"
        )
    validating = ctx.is_main and cfg.train.eval_every >= 0
    if validating:
        # Validation runs the deployable detector: depth maps only if it is a depth teacher.
        val_set = build_mono_dataset(cfg.data, cfg.data.val_split, augment=False,
                                     with_depth=input_spec_from_config(cfg).kind == "rgbd", classes=cfg.model.classes)
        val_loader = build_loader(val_set, batch_size, cfg.train.workers, prefetch_factor=cfg.train.prefetch_factor)
        ground_truth = {frame_id: val_set.ground_truth(i) for i, frame_id in enumerate(val_set.ids)}

    # Model, optimizer, schedule, AMP.
    module = build_training_module(cfg, detector).to(device)
    if cfg.train.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest conv algorithms once
    # Made before compiling: the average stays an eager copy of the detector.
    ema = build_weight_ema(module.detector, cfg.train.ema_decay) if cfg.train.ema_decay else None
    if cfg.train.compile:
        compile_detectors(module, cfg.train.compile_backend, device)
    optimizer = build_optimizer(module, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch)
    dtype = amp_dtype(cfg.train.amp, device)
    scaler = build_grad_scaler(dtype, device)
    state = TrainState()
    if resume is not None:
        state = restore_checkpoint(resume, module, optimizer, scheduler, scaler, ema)
        if ctx.is_main and not quiet:
            print(f"resumed from {resume}: epoch {state.epoch}, step {state.step_in_epoch} of the epoch")
    if ctx.is_main:  # set up without error: only now the run folder is touched
        moved = move_earlier_run(out_dir) if force else None
        if moved is not None and not quiet:
            print(f"--force: the earlier run's files are now in {moved}")
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", config_to_yaml(cfg))
    log.rewind(state if resume is not None else None)
    if resume is None and cfg.distill is not None and cfg.distill.balance == "auto":
        # The rule measures on the first batches of epoch 0 in index order; training order is untouched.
        count = min(cfg.distill.balance_batches, len(train_set) // batch_size)
        batches = [batch_to_device(collate_batch([train_set[i] for i in range(k * batch_size, (k + 1) * batch_size)]), device)
                   for k in range(count)]
        module.train()
        weights = balance_weights(module, batches, cfg.distill.balance_target)
        log.write(kind="balance", target=cfg.distill.balance_target, batches=count, weights=weights)
        if ctx.is_main:
            print(f"distill.balance auto (gradient share {cfg.distill.balance_target:g} of the detection loss's, "
                  f"{count} batches): " + ", ".join(f"{name} {value:.4g}" for name, value in weights.items()))
    model = wrap_model(module, ctx, device, cfg.train.sync_batchnorm, cfg.train.find_unused_parameters)
    detector = unwrap_model(model).detector
    writer = None
    if ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tensorboard"))

    def save(name: str) -> None:
        if ctx.is_main:
            save_checkpoint(out_dir / name, checkpoint_state(model, optimizer, scheduler, scaler, state, cfg, ema))

    last_metrics: dict = {}
    last_probes: dict = {}
    for epoch in range(state.epoch, cfg.train.epochs):
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch, start_index=state.step_in_epoch * batch_size)
        if hasattr(detector, "on_epoch_start") and state.step_in_epoch == 0:
            # Not again when resuming mid-epoch: the hook already ran (its state is in the checkpoint).
            detector.on_epoch_start(epoch, cfg.train.epochs, lambda: measure_losses(model, train_loader, device, dtype))
        model.train()
        started = time.time()
        window, epoch_means = StepMeans(ctx), StepMeans(ctx)
        # Consecutive non-finite steps, counted on the device; read every step on CPU (where a
        # host sync is free), every log_every steps on CUDA.
        bad_run = torch.zeros((), dtype=torch.float64, device=device)
        micro_batches = iter(train_loader)
        step_groups = (list(itertools.islice(micro_batches, accumulate)) for _ in range(state.step_in_epoch, steps_per_epoch))
        bar = progress(step_groups, total=steps_per_epoch, initial=state.step_in_epoch,
                       desc=f"epoch {epoch + 1}/{cfg.train.epochs}", enabled=ctx.is_main and not quiet)
        for group in bar:
            finite, values, names = train_step(model, group, optimizer, scaler, cfg, ctx, device, dtype)
            if ema is not None:
                ema.update_parameters(detector)
            state.step_in_epoch += 1
            state.global_step += 1
            window.add(finite, values)
            epoch_means.add(finite, values)
            bad_run = (bad_run + 1) * (1 - finite)
            flush = state.global_step % cfg.train.log_every == 0 or state.step_in_epoch == steps_per_epoch
            if device.type != "cuda" or flush:
                state.bad_steps = int(bad_run.item())
                if device.type != "cuda" and state.bad_steps:
                    warnings.warn(f"non-finite loss at step {state.global_step}: step skipped ({state.bad_steps} in a row)")
                if state.bad_steps >= cfg.train.max_bad_steps:
                    raise Add3dError(
                        f"{state.bad_steps} consecutive non-finite losses (last at epoch {epoch + 1}, step "
                        f"{state.global_step}); lower optim.lr or set train.grad_clip"
                    )
            if flush:
                means, count, taken = window.take()
                if device.type == "cuda" and count < taken:
                    warnings.warn(f"{taken - count} of the {taken} steps up to step {state.global_step} had a "
                                  f"non-finite loss; the GradScaler skipped them")
                if count:
                    logs = dict(zip(names, means[1:]))
                    loss, lr = means[0], optimizer.param_groups[0]["lr"]
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
                    log.write(kind="step", epoch=epoch, step=state.global_step, lr=lr, **{**logs, "loss": loss})
                    if writer is not None:
                        writer.add_scalar("train/loss", loss, state.global_step)
                        writer.add_scalar("train/lr", lr, state.global_step)
                        for name, value in logs.items():
                            writer.add_scalar(f"train/{name}", value, state.global_step)
            scheduler.step()
            every = cfg.train.checkpoint_every_steps
            if every and state.global_step % every == 0 and state.step_in_epoch < steps_per_epoch:
                save(LAST_CHECKPOINT)
        bar.close()
        state.epoch, state.step_in_epoch = epoch + 1, 0
        totals, count, _ = epoch_means.take()
        means = dict(zip(["loss", *names], totals)) if count else {}
        log.write(kind="epoch", epoch=epoch, seconds=round(time.time() - started, 2), **means)
        if writer is not None:
            for name, value in means.items():
                writer.add_scalar(f"epoch/{name}", value, state.epoch)

        final = state.epoch == cfg.train.epochs
        if validating and (final or (cfg.train.eval_every > 0 and state.epoch % cfg.train.eval_every == 0)):
            # The depth-input probes cost two more passes: only at the end of the run.
            evaluated = detector if ema is None else ema.module
            results, probes = validate(evaluated, val_loader, val_set, ground_truth, device, cfg, perturb=final)
            last_metrics = flat_metrics(results)
            last_probes = probes
            value = metric_value(results, cfg.train.best_metric)
            log.write(kind="val", epoch=epoch, metric=cfg.train.best_metric, value=value, metrics=last_metrics,
                      probes=probes)
            if writer is not None:
                for name, number in last_metrics.items():
                    if "/R40/" in name:
                        writer.add_scalar(f"val/{name}", number, state.epoch)
            if not quiet:
                print(f"epoch {state.epoch}: {cfg.train.best_metric} = {value:.2f}; {format_probes(probes)}")
            if value > state.best_metric:
                state.best_metric = value
                save(BEST_CHECKPOINT)
        save(LAST_CHECKPOINT)
        barrier(ctx)

    if writer is not None:
        writer.close()
    summary = {"out_dir": str(out_dir), "best_metric": state.best_metric, "best_metric_name": cfg.train.best_metric,
               "last_metrics": last_metrics, "last_probes": last_probes, "epochs": state.epoch, "steps": state.global_step, "rank": ctx.rank}
    if ctx.is_main:
        atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=2, default=float))
    return summary
