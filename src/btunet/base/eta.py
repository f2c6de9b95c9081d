"""Time left in a training run, from the pace of its latest steps.

A run's total elapsed time is a poor guide to its pace: before the first step a fine-tune reads
its images and fits the forest that gives its pseudo-labels (seconds), and the first steps pay
for one-off allocations while the plugin's quick preview shares the cores. Dividing all of that
by the steps done promised a user 8 minutes for a run of 4.5. The pace here is that of the last
``WINDOW`` steps (two epochs of the default fine-tune, so an epoch's preview and validation are
in it, and a change of load on the machine shows within a minute), and no estimate is given
before ``SETTLE`` steps have ended after the first.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

#: steps after the first before an estimate is given
SETTLE = 5
#: steps whose pace the estimate uses
WINDOW = 50


class StepClock:
    """Call ``step_done()`` after every step (and whatever it includes, such as an epoch's preview);
    ``eta()`` is the seconds left for the remaining steps at the recent pace, None until known."""

    def __init__(self, total_steps: int, clock: Callable[[], float] = time.perf_counter,
                 settle: int = SETTLE, window: int = WINDOW):
        self.total, self.clock, self.settle = int(total_steps), clock, settle
        self.ends: deque[float] = deque(maxlen=window + 1)  # end times of the latest steps
        self.steps = 0

    def step_done(self) -> None:
        self.steps += 1
        self.ends.append(self.clock())

    def seconds_per_step(self) -> float | None:
        """The mean time of the latest steps, leaving out the first step; None before ``settle``
        steps have ended after it."""
        if self.steps <= self.settle:
            return None
        return (self.clock() - self.ends[0]) / (len(self.ends) - 1)

    def eta(self) -> float | None:
        if self.steps >= self.total:
            return 0.0
        pace = self.seconds_per_step()
        return None if pace is None else pace * (self.total - self.steps)
