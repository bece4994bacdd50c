"""Hierarchical Task Learning (HTL), GUPNet's loss-progress-based task weighting.

Why: GUPNet's 3D heads are chained -- the geometric depth divides the predicted 3D height by the
predicted 2D box height, and the ROI heads sit on the predicted 2D boxes -- so training them before
the 2D heads have settled feeds garbage into the chain. HTL therefore starts every *dependent* task
at weight 0 and raises it as its *prerequisite* tasks stop improving.

Rule (GUPNet, ICCV 2021, as its code ``Hierarchical_Task_Learning`` runs it): keep the per-epoch
mean of every loss term. Before the first epoch one pass over the training data without gradients
measures the untrained losses (its ``compute_e0_loss``; the trainer passes ``measure_losses``).
The weights of epoch e come from the ``window`` epoch means BEFORE the newest one -- epochs
e-6..e-2 for a window of 5, the seed pass counting as epoch -1; the official code computes the
weights before it appends epoch e-1's losses. The learning progress of a term is the mean drop of
its loss over 2-epoch gaps in that window, relative to the same quantity in the first full window:
``progress = 1 - relu(mean_drop / first_mean_drop)`` (1 once a term has converged). A dependent
task gets ``t ** (1 - prod(progress of its prerequisites))`` with the time factor
``t = clamp((epoch - window) / (num_epochs - window), 0, 1)`` (the official code fixes
num_epochs = 140, its schedule's length); tasks without prerequisites keep 1. Until the window is
full (the first ``window`` epochs with the seed pass, one more without) dependent tasks have weight 0.

Interface: the detector calls :meth:`record` with its loss terms on every training step and the
trainer calls ``detector.on_epoch_start(epoch, num_epochs, measure_losses)``, which calls
:meth:`start_epoch`. If the trainer never calls it, HTL stays inactive (all weights 1), so a plain
trainer still trains every head. The statistics are buffers, so they are saved in checkpoints and
resuming keeps them; epoch 0 starts from scratch, so weights used to initialise another run bring
no stale statistics.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn


class HierarchicalTaskLearning(nn.Module):
    def __init__(self, prerequisites: dict[str, list[str]], window: int = 5):
        """``prerequisites`` maps every loss term to the terms it depends on (in loss order)."""
        super().__init__()
        if window < 3:
            raise ValueError("HTL needs a window of at least 3 epochs (it compares epochs 2 apart)")
        for term, needs in prerequisites.items():
            unknown = [need for need in needs if need not in prerequisites]
            if unknown:
                raise ValueError(f"HTL term '{term}' depends on unknown term(s) {unknown}")
        self.terms = list(prerequisites)
        self.prerequisites = {term: list(needs) for term, needs in prerequisites.items()}
        self.window = window
        count = len(self.terms)
        self.register_buffer("weights", torch.ones(count))
        self.register_buffer("epoch_sum", torch.zeros(count, dtype=torch.float64))
        self.register_buffer("epoch_steps", torch.zeros((), dtype=torch.float64))
        # The window plus the newest epoch, which the official schedule leaves for the next epoch.
        self.register_buffer("history", torch.zeros(window + 1, count, dtype=torch.float64))
        self.register_buffer("history_length", torch.zeros((), dtype=torch.long))
        self.register_buffer("first_drop", torch.zeros(count, dtype=torch.float64))
        self.register_buffer("has_first_drop", torch.zeros((), dtype=torch.bool))
        self.register_buffer("active", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def reset(self) -> None:
        """Forget all statistics (HTL inactive again until the next :meth:`start_epoch`)."""
        for name, buffer in self.named_buffers():
            buffer.fill_(1 if name == "weights" else 0)

    def weight_dict(self) -> dict[str, torch.Tensor]:
        return {term: self.weights[i] for i, term in enumerate(self.terms)}

    @torch.no_grad()
    def record(self, losses: dict[str, torch.Tensor]) -> None:
        """Add one training step's (unweighted) loss terms to the current epoch's statistics."""
        values = torch.stack([losses[term].detach().to(self.epoch_sum) for term in self.terms])
        if torch.isfinite(values).all():
            self.epoch_sum += values
            self.epoch_steps += 1

    @torch.no_grad()
    def start_epoch(
        self, epoch: int, num_epochs: int, measure_losses: Optional[Callable[[], None]] = None
    ) -> dict[str, float]:
        """Close the previous epoch's statistics and set the weights for ``epoch`` (0-based).

        At epoch 0, ``measure_losses`` (one no-grad pass over the training data that calls the
        detector's loss, hence :meth:`record`) seeds the statistics with the untrained losses.
        """
        if epoch == 0:  # a new run (possibly initialised from another run's weights)
            self.reset()
            if measure_losses is not None:
                measure_losses()
        if dist.is_available() and dist.is_initialized():  # every rank must weight the same way
            dist.all_reduce(self.epoch_sum)
            dist.all_reduce(self.epoch_steps)
        if self.epoch_steps > 0:
            mean = self.epoch_sum / self.epoch_steps
            if int(self.history_length) == len(self.history):
                self.history.copy_(torch.roll(self.history, -1, dims=0))
                self.history[-1] = mean
            else:
                self.history[int(self.history_length)] = mean
                self.history_length += 1
        self.epoch_sum.zero_()
        self.epoch_steps.zero_()
        self.active.fill_(True)

        weights = torch.zeros_like(self.weights, dtype=torch.float64)
        full = int(self.history_length) == len(self.history)
        if full:
            window = self.history[:-1]  # the newest epoch counts from the next epoch on
            drop = (window[:-2] - window[2:]).mean(dim=0)
            if not bool(self.has_first_drop):
                self.first_drop.copy_(drop)
                self.has_first_drop.fill_(True)
            reference = torch.where(self.first_drop.abs() < 1e-12, torch.full_like(drop, 1e-12), self.first_drop)
            progress = 1.0 - torch.relu(drop / reference)
            span = max(num_epochs - self.window, 1)
            time_value = torch.tensor(min(max((epoch - self.window) / span, 0.0), 1.0), dtype=torch.float64)
        for i, term in enumerate(self.terms):
            needs = self.prerequisites[term]
            if not needs:
                weights[i] = 1.0
            elif full:
                control = torch.prod(torch.stack([progress[self.terms.index(need)] for need in needs]))
                weights[i] = time_value ** (1.0 - control)
        self.weights.copy_(weights.to(self.weights))
        return {term: float(self.weights[i]) for i, term in enumerate(self.terms)}
