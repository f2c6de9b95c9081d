"""The time left that a run reports comes from the pace of its steps, not from its set-up."""
import numpy as np

import btunet
from btunet.base.eta import StepClock


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_setup_and_the_first_steps_are_not_counted():
    t = FakeClock()
    t.now = 30.0  # 30 s of reading and pseudo-labels before the loop
    clock = StepClock(100, t, settle=5, window=50)
    t.now += 2.0  # a slow first step (allocations)
    clock.step_done()
    for _ in range(5):
        assert clock.eta() is None  # not known before 5 steps after the first
        t.now += 0.5
        clock.step_done()
    assert clock.seconds_per_step() == 0.5  # neither the set-up nor the first step counts
    assert clock.eta() == 0.5 * 94


def test_the_pace_follows_the_latest_steps():
    t = FakeClock()
    clock = StepClock(1000, t, settle=2, window=10)
    for _ in range(20):  # a quiet machine
        t.now += 0.2
        clock.step_done()
    for _ in range(10):  # then the load doubles
        t.now += 0.4
        clock.step_done()
    assert abs(clock.seconds_per_step() - 0.4) < 1e-9
    assert abs(clock.eta() - 0.4 * 970) < 1e-6


def test_eta_is_zero_at_the_end_and_unknown_before_any_step():
    t = FakeClock()
    clock = StepClock(3, t, settle=1)
    assert clock.eta() is None and clock.seconds_per_step() is None
    for _ in range(3):
        t.now += 1.0
        clock.step_done()
    assert clock.eta() == 0.0


def test_finetune_reports_an_eta_from_its_steps_alone(small_sample, fast_finetune_config):
    import dataclasses
    images = sorted((small_sample / "images").iterdir())[:1]
    masks = sorted((small_sample / "masks").iterdir())[:1]
    seen = []
    cfg = dataclasses.replace(fast_finetune_config, epochs=2, steps_per_epoch=6, batch_size=2)
    btunet.finetune(images, masks, cfg, on_progress=seen.append)
    assert [p.step for p in seen] == list(range(1, 13))
    assert seen[-1].eta_s == 0.0
    assert all(p.eta_s is None for p in seen[:5])  # known once 5 steps after the first have ended
    # each estimate is the remaining steps at the pace since the first step ended, which the
    # time elapsed (set-up and first step included) over the steps after the first bounds
    for p in seen[5:-1]:
        pace = p.eta_s / (p.total_steps - p.step)
        assert 0 < pace <= p.elapsed_s / (p.step - 1) + 0.01
        assert np.isfinite(p.eta_s)
