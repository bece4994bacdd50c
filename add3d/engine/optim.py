"""Optimizer and learning-rate schedule builders."""

from __future__ import annotations

import math

import torch

from add3d.engine.config import OptimConfig, ScheduleConfig


def build_optimizer(module: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Optimizer over the module's trainable parameters (a frozen teacher is skipped).

    Build it after moving the module to its device: on CUDA, Adam / AdamW use the fused kernel (one
    launch for all parameters; with a GradScaler it also skips non-finite steps without a host
    sync) and SGD the multi-tensor one. On CPU PyTorch's default per-parameter loop stays, so CPU
    runs compute what they always computed.
    """
    parameters = [p for p in module.parameters() if p.requires_grad]
    on_cuda = bool(parameters) and all(p.is_cuda for p in parameters)
    if cfg.name in ("adam", "adamw"):
        kind = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return kind(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True if on_cuda else None)
    return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           foreach=True if on_cuda else None)


def lr_factor(epoch: float, base_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate / base_lr at a (possibly fractional) epoch: cosine warm-up, then step decay."""
    if epoch < cfg.warmup_epochs:
        start = min(cfg.warmup_start_lr, base_lr)
        progress = (1 - math.cos(math.pi * epoch / cfg.warmup_epochs)) / 2
        return (start + (base_lr - start) * progress) / base_lr
    return cfg.gamma ** sum(1 for milestone in cfg.milestones if epoch >= milestone)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per ITERATION; it moves per epoch unless ``cfg.per_iteration``."""
    base_lr = optimizer.param_groups[0]["lr"]
    steps_per_epoch = max(1, steps_per_epoch)

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch if cfg.per_iteration else float(step // steps_per_epoch)
        return lr_factor(epoch, base_lr, cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
