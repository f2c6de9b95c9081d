"""The training loop fine-tuning and pre-training share: time budget, stop request, schedule, best weights."""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import tifffile
import torch

import btunet
from btunet.train.encoder_start import encoder_lr_factor
from btunet.train.train_loop import (
    CANCELLED,
    EARLY_STOPPING,
    TIME_BUDGET,
    BestState,
    CosineWarmup,
    FinetuneSchedule,
    TrainLoop,
)


class FakeClock:
    """Seconds that pass only when a step says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tiny_training(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, callable]:
    """A real model, optimiser and step: a linear layer fitting y = 2x."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.linspace(-1, 1, 16)[:, None]

    def step() -> torch.Tensor:
        loss = ((model(x) - 2 * x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss
    return model, optimizer, step


def test_a_full_run_does_every_step_and_reports_each():
    _, _, step = tiny_training()
    loop = TrainLoop(3, 4)
    seen = []
    assert loop.run(step, lambda: seen.append((loop.epoch, loop.step, loop.epoch_end))) is None
    assert loop.step == 12 and len(seen) == 12
    assert [s for s in seen if s[2]] == [(0, 4, True), (1, 8, True), (2, 12, True)]
    assert loop.eta() == 0.0


def test_the_time_budget_ends_the_run_before_a_step_would_overrun_it():
    clock = FakeClock()
    _, _, real_step = tiny_training()

    def step() -> torch.Tensor:
        clock.now += 1.0  # every step takes a second
        return real_step()
    loop = TrainLoop(100, 10, time_budget_s=5.5, start=clock() - 0.25, clock=clock)
    assert loop.run(step) == TIME_BUDGET
    # 0.25 s of set-up + 5 steps = 5.25 s; a sixth would end at 6.25 s, past the budget
    assert loop.step == 5 and loop.elapsed() <= 5.5
    assert 0.0 <= loop.eta() <= 0.25


def slow_fourth_step(clock: FakeClock):
    """A real training step that takes 0.1 s on ``clock``, except the fourth, which takes 5 s."""
    _, _, real_step = tiny_training()
    durations = iter([0.1] * 3 + [5.0] + [0.1] * 100)

    def step() -> torch.Tensor:
        clock.now += next(durations)
        return real_step()
    return step


@pytest.mark.parametrize(("final", "why"), [(True, TIME_BUDGET), (False, CANCELLED)])
def test_a_schedule_that_ends_at_the_budget_stops_right_after_the_step_that_crosses_it(final, why):
    """A cosine decay is at 0 once over the budget: the model is final, whatever comes next; other
    schedules end before the next step (a stop request asked then is the reason)."""
    clock = FakeClock()
    step = slow_fourth_step(clock)
    epochs = []
    loop = TrainLoop(100, 10, time_budget_s=2.0, final_at_budget=final, clock=clock)
    loop.should_stop = lambda: loop.step >= 4
    assert loop.run(step, end_epoch=lambda: epochs.append(loop.epoch_end)) == why
    assert loop.step == 4 and epochs == [False]


def test_without_final_at_budget_the_run_ends_at_the_end_of_the_epoch_over_budget():
    clock = FakeClock()
    step = slow_fourth_step(clock)
    ends = []
    loop = TrainLoop(10, 4, time_budget_s=2.0, clock=clock)
    assert loop.run(step, end_epoch=lambda: ends.append(loop.step)) == TIME_BUDGET
    assert loop.step == 4 and ends == [4]  # the slow step was the epoch's last one


@pytest.mark.parametrize("after", [0, 1, 5])
def test_a_stop_request_ends_the_run_before_the_next_step(after):
    _, _, step = tiny_training()
    loop = TrainLoop(3, 4)
    loop.should_stop = lambda: loop.step >= after
    assert loop.run(step) == CANCELLED
    assert loop.step == after


def test_the_epoch_end_rule_ends_the_run_and_says_why():
    _, _, step = tiny_training()
    loop = TrainLoop(10, 2)
    assert loop.run(step, end_epoch=lambda: EARLY_STOPPING if loop.epoch == 2 else None) == EARLY_STOPPING
    assert loop.step == 6


def test_finetune_cosine_schedule_and_encoder_warm_up_by_step():
    model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1))
    optimizer = torch.optim.Adam([{"params": model[0].parameters(), "lr": 3e-3},
                                  {"params": model[1].parameters(), "lr": 1e-3}])
    schedule = FinetuneSchedule(optimizer, cosine=True, warmup_steps=4, lr_patience=2)
    lrs = []
    loop = TrainLoop(2, 5, schedule=schedule)
    loop.run(lambda: torch.zeros(()), lambda: lrs.append([g["lr"] for g in optimizer.param_groups]))
    for step, (encoder_lr, head_lr) in enumerate(lrs):
        decay = 0.5 * (1 + math.cos(math.pi * step / 10))
        assert head_lr == pytest.approx(1e-3 * decay)
        ramp = encoder_lr_factor(step, 4) if step <= 4 else 1.0
        assert encoder_lr == pytest.approx(3e-3 * decay * ramp)
    assert lrs[0][0] == 0.0 and lrs[0][1] == pytest.approx(1e-3)


def test_finetune_plateau_schedule_keeps_the_rate_until_the_plateau_cuts_it():
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.Adam([{"params": [model.weight], "lr": 1e-3}, {"params": [model.bias], "lr": 1e-3}])
    schedule = FinetuneSchedule(optimizer, cosine=False, warmup_steps=0, lr_patience=0)
    schedule.before_step(7, 0.7)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3]
    schedule.end_epoch(1.0)
    schedule.end_epoch(2.0)  # no better: cut at once with patience 0
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-4])


def test_pretraining_schedule_warms_up_then_decays_to_zero():
    model, _, _ = tiny_training()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    schedule = CosineWarmup(optimizer, total=10, warmup=2)
    lrs = []
    loop = TrainLoop(1, 10, schedule=schedule)
    loop.run(lambda: optimizer.step() or torch.zeros(()), lambda: lrs.append(optimizer.param_groups[0]["lr"]))
    expected = [min((s + 1) / 2, 0.5 * (1 + math.cos(math.pi * min(1.0, (s - 2) / 8)))) for s in range(1, 11)]
    assert lrs == pytest.approx(expected)
    assert lrs[-1] == pytest.approx(0.0)


def test_best_state_is_a_copy_of_the_best_epoch():
    model, _, step = tiny_training()
    best = BestState()
    assert best.offer(2.0, model, 1)
    kept = copy.deepcopy(model.state_dict())
    step()
    assert not best.offer(3.0, model, 2) and not best.offer(float("nan"), model, 3)
    assert best.epoch == 1 and best.waited(4) == 3
    assert all(torch.equal(best.state[k], kept[k]) for k in kept)  # not changed by the later step


@pytest.fixture(scope="module")
def crops(sample):
    images = [tifffile.imread(p)[100:228, 100:228] for p in sample[0][:3]]
    masks = [tifffile.imread(p)[100:228, 100:228] for p in sample[1][:3]]
    return images, masks


def test_finetune_returns_the_weights_of_its_best_validation_epoch(crops, fast_finetune_config):
    torch.set_num_threads(1)
    cfg = replace(fast_finetune_config, epochs=4, lr=0.02, val_fraction=0.3, patience=10)
    states = {}

    def keep(p):
        if p.epoch_end:
            states[p.epoch] = (p.val_loss, copy.deepcopy(p.model.state_dict()))
    model = btunet.finetune(*crops, cfg, on_progress=keep)
    meta = model.metadata
    best = min(states, key=lambda e: states[e][0])
    assert meta["best_epoch"] == best and meta["epochs"] == 4
    assert meta["val_loss_history"] == [states[e][0] for e in sorted(states)]
    kept = states[best][1]
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())


def test_finetune_stops_within_one_step_of_a_stop_request(crops, fast_finetune_config):
    cfg = replace(fast_finetune_config, epochs=5)
    seen = []
    model = btunet.finetune(*crops, cfg, on_progress=seen.append, should_stop=lambda: len(seen) >= 4)
    assert [p.step for p in seen] == [1, 2, 3, 4]
    assert model.metadata["stopped"] == CANCELLED and model.metadata["epochs"] == 1


def test_finetune_ends_within_a_tiny_time_budget(crops, fast_finetune_config):
    cfg = replace(fast_finetune_config, epochs=1000, schedule="cosine", time_budget_s=1.0)
    seen = []
    model = btunet.finetune(*crops, cfg, on_progress=seen.append)
    assert model.metadata["stopped"] == TIME_BUDGET
    assert 0 < seen[-1].step < 1000 * cfg.steps_per_epoch
    assert all(p.time_budget_s == 1.0 for p in seen)
    assert seen[-1].lr < seen[0].lr  # the cosine decay follows the time spent, not the 1000 epochs


def test_pretraining_stops_within_one_step_of_a_stop_request(crops, fast_pretrain_config):
    seen = []
    encoder = btunet.pretrain(crops[0], replace(fast_pretrain_config, epochs=3), on_progress=seen.append,
                              should_stop=lambda: len(seen) >= 3)
    assert [p.step for p in seen] == [1, 2, 3]
    assert encoder.metadata["stopped_early"] is True
    # two steps an epoch: the stopped second epoch's one step counts in the history
    assert encoder.metadata["loss_history"] == pytest.approx([seen[1].loss, seen[2].loss])
    assert [p.epoch_end for p in seen] == [False, True, False]
