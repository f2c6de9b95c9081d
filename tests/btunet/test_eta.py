"""The time left that a run reports comes from the pace of its steps, not from its set-up."""
import numpy as np

import btunet
from btunet.eta import StepClock


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_setup_before_the_clock_starts_is_not_counted():
    t = FakeClock()
    t.now = 30.0  # 30 s of reading and pseudo-labels before the loop
    clock = StepClock(100, t)
    t.now += 2.0  # a slow first step (allocations)
    clock.step_done()
    assert clock.eta() == 2.0 * 99  # the first step alone, until a second one ends
    for _ in range(9):
        t.now += 0.5
        clock.step_done()
    assert clock.seconds_per_step() == 0.5  # the first step no longer counts
    assert clock.eta() == 0.5 * 90


def test_eta_is_zero_at_the_end_and_before_any_step():
    t = FakeClock()
    clock = StepClock(3, t)
    assert clock.eta() == 0.0 and clock.seconds_per_step() is None
    for _ in range(3):
        t.now += 1.0
        clock.step_done()
    assert clock.eta() == 0.0


def test_finetune_reports_an_eta_from_its_steps_alone(small_sample, fast_finetune_config):
    import dataclasses
    images = sorted((small_sample / "images").iterdir())[:1]
    masks = sorted((small_sample / "masks").iterdir())[:1]
    seen = []
    cfg = dataclasses.replace(fast_finetune_config, epochs=2, steps_per_epoch=4, batch_size=2)
    btunet.finetune(images, masks, cfg, on_progress=seen.append)
    assert [p.step for p in seen] == list(range(1, 9))
    assert seen[-1].eta_s == 0.0
    # each estimate is the remaining steps at the pace since the first step ended, which the
    # time elapsed (set-up and first step included) over the steps after the first bounds
    for p in seen[1:-1]:
        pace = p.eta_s / (p.total_steps - p.step)
        assert 0 < pace <= p.elapsed_s / (p.step - 1) + 0.01
        assert np.isfinite(p.eta_s)
