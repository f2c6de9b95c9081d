"""Time left in a training run, from the pace of its steps.

A run's total elapsed time is a poor guide to its pace: before the first step a fine-tune reads
its images and fits the forest that gives its pseudo-labels (seconds), and the first step pays
for one-off allocations. Dividing that by one step promised a user 8 minutes for a run of 4.5.
The pace here is measured from the end of the first step; the first step alone stands in until
a second one ends.
"""
from __future__ import annotations

import time
from collections.abc import Callable


class StepClock:
    """Call ``step_done()`` after every step (and whatever it includes, such as an epoch's preview);
    ``eta()`` is the seconds left for the remaining steps at the pace measured so far."""

    def __init__(self, total_steps: int, clock: Callable[[], float] = time.perf_counter):
        self.total, self.clock = int(total_steps), clock
        self.began = clock()
        self.first_done: float | None = None
        self.steps = 0

    def step_done(self) -> None:
        self.steps += 1
        if self.steps == 1:
            self.first_done = self.clock()

    def seconds_per_step(self) -> float | None:
        """None before the first step ends."""
        if self.steps == 0:
            return None
        if self.steps == 1:
            return self.first_done - self.began
        return (self.clock() - self.first_done) / (self.steps - 1)

    def eta(self) -> float:
        pace = self.seconds_per_step()
        return 0.0 if pace is None else max(0.0, pace * (self.total - self.steps))
