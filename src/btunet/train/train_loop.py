"""The training loop fine-tuning and pre-training share: epochs of steps, the learning-rate schedule,
a stop request, a time budget, progress with an ETA, and the best weights seen.

What a step does (draw a batch, forward, backward, optimiser) stays with the caller; the loop decides
when steps run and when the run ends, the same way for both, so a stop request or a time budget
ends a fine-tune and a pre-training alike.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from ..base.eta import StepClock
from ..core.config import Progress
from .encoder_start import encoder_lr_factor

#: Why a run ended before its last step (``None`` in the metadata when it ran to the end).
CANCELLED, TIME_BUDGET, EARLY_STOPPING = "cancelled", "time_budget", "early_stopping"


class Schedule(Protocol):
    """The learning rate of every step: set before the step (``before_step``) or advanced after it."""

    def before_step(self, step: int, done: float) -> None:
        """``step``: steps done so far; ``done``: the share of the run behind (by steps or time)."""

    def after_step(self) -> None:
        """Called after every optimiser step."""


class CosineWarmup:
    """Pre-training's schedule: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int):
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
            (s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup))))))

    def before_step(self, step: int, done: float) -> None:
        pass

    def after_step(self) -> None:
        self.scheduler.step()


class FinetuneSchedule:
    """Fine-tuning's schedule: a cosine decay to 0 at the end of the run (by steps, or by the time
    budget when that comes first), or a constant rate that ``ReduceLROnPlateau`` cuts at epoch ends;
    a pre-trained encoder (group 0) joins in over ``warmup_steps`` (``encoder_start.py``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cosine: bool, warmup_steps: int, lr_patience: int):
        self.optimizer, self.cosine, self.warmup_steps = optimizer, cosine, warmup_steps
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=lr_patience)

    def before_step(self, step: int, done: float) -> None:
        groups = self.optimizer.param_groups
        if self.cosine:
            for group, base in zip(groups, self.base_lrs, strict=True):
                group["lr"] = base * 0.5 * (1 + np.cos(np.pi * min(1.0, done)))
        if step <= self.warmup_steps:
            full = groups[0]["lr"] if self.cosine else self.base_lrs[0]
            groups[0]["lr"] = full * encoder_lr_factor(step, self.warmup_steps)

    def after_step(self) -> None:
        pass

    def end_epoch(self, monitor: float) -> None:
        """The plateau rule's epoch end (the cosine decay has none)."""
        self.plateau.step(monitor)


class BestState:
    """The weights of the epoch with the lowest monitored value so far (a copy, not a reference)."""

    def __init__(self) -> None:
        self.value, self.state, self.epoch = float("inf"), None, 0

    def offer(self, value: float, model: torch.nn.Module, epoch: int) -> bool:
        """Keep ``model``'s weights if ``value`` is below the best so far; whether they were kept."""
        if not value < self.value:
            return False
        self.value, self.state, self.epoch = value, copy.deepcopy(model.state_dict()), epoch
        return True

    def waited(self, epoch: int) -> int:
        """Epochs since the best one (early stopping waits ``patience`` of them)."""
        return epoch - self.epoch


class TrainLoop:
    """``epochs`` x ``steps_per_epoch`` steps of ``run``'s ``train_step``, until a stop request, the
    time budget or the caller's epoch-end rule ends them (``stopped`` says which).

    ``start``: when the run began (``time.perf_counter``): reading data and fitting pseudo-labels
    before the first step count against ``time_budget_s`` too. No step starts that would end past
    the budget. ``final_at_budget``: the schedule reaches its end at the budget (a cosine decay to
    0), so the run ends after the step that crosses it; otherwise at the end of that epoch.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, *, schedule: Schedule | None = None,
                 should_stop: Callable[[], bool] | None = None, time_budget_s: float | None = None,
                 final_at_budget: bool = False, start: float | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.epochs, self.steps_per_epoch, self.total = epochs, steps_per_epoch, epochs * steps_per_epoch
        self.schedule, self.should_stop, self.budget = schedule, should_stop, time_budget_s
        self.final_at_budget, self.clock = final_at_budget, clock
        self.start = clock() if start is None else start
        self.step, self.epoch = 0, 0       # steps done; the current epoch (0-based)
        self.losses: list[float] = []      # the losses of the current epoch's steps
        self.stopped: str | None = None
        self.pace = StepClock(self.total, clock)  # the pace of the steps, without any set-up before them

    @property
    def epoch_end(self) -> bool:
        """Whether the step just done was the last of its epoch."""
        return len(self.losses) == self.steps_per_epoch

    def elapsed(self) -> float:
        return self.clock() - self.start

    def over_budget(self) -> bool:
        return self.budget is not None and self.elapsed() > self.budget

    def eta(self, elapsed: float | None = None) -> float | None:
        """Seconds left at the recent pace; with a time budget, what is left of it (after
        ``elapsed``, default now), or less."""
        eta = self.pace.eta()
        if self.budget:
            elapsed = self.elapsed() if elapsed is None else elapsed
            eta = max(0.0, min(self.budget - elapsed, eta if eta is not None else float("inf")))
        return eta

    def progress(self, stage: str, lr: float, **extra) -> Progress:
        """The report of the step just done (``extra``: the stage's own fields, e.g. validation)."""
        elapsed = self.elapsed()
        return Progress(stage=stage, epoch=self.epoch + 1, epochs=self.epochs, step=self.step,
                        total_steps=self.total, loss=float(np.mean(self.losses[-10:])), elapsed_s=elapsed,
                        eta_s=self.eta(elapsed), lr=lr, epoch_end=self.epoch_end, time_budget_s=self.budget, **extra)

    def _may_start(self, step_began: float) -> bool:
        """Whether another step may start: no stop request, and it would end within the budget
        (a step is assumed to take as long as the last one, its progress callback included)."""
        if self.should_stop is not None and self.should_stop():
            self.stopped = CANCELLED
            return False
        now = self.clock()
        if self.step and self.budget is not None and now - self.start + (now - step_began) > self.budget:
            self.stopped = TIME_BUDGET
            return False
        return True

    def _done(self) -> float:
        done = self.step / self.total
        if self.budget:
            done = max(done, self.elapsed() / self.budget)
        return done

    def run(self, train_step: Callable[[], torch.Tensor], after_step: Callable[[], None] | None = None,
            end_epoch: Callable[[], str | None] | None = None) -> str | None:
        """Run the steps; ``after_step`` follows each (validation, progress), ``end_epoch`` each
        epoch with steps (``epoch_end`` says if all ran) and may end the run by returning why.
        Returns why the run ended early, or None."""
        step_began = self.clock()
        for epoch in range(self.epochs):
            self.epoch, self.losses = epoch, []
            for _ in range(self.steps_per_epoch):
                if not self._may_start(step_began):
                    break
                step_began = self.clock()
                if self.schedule is not None:
                    self.schedule.before_step(self.step, self._done())
                loss = train_step()
                if self.schedule is not None:
                    self.schedule.after_step()
                self.step += 1
                self.pace.step_done()
                self.losses.append(loss.item())
                if after_step is not None:
                    after_step()
                if self.final_at_budget and self.over_budget():
                    self.stopped = TIME_BUDGET  # the schedule has reached its end: the model is final
                    break
            if self.losses and end_epoch is not None:
                self.stopped = end_epoch() or self.stopped
            if self.stopped is None and not self.final_at_budget and self.over_budget():
                self.stopped = TIME_BUDGET
            if self.stopped is not None:
                break
        return self.stopped
