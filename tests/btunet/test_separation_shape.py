"""Elongated objects (rods) are split by the learnt borders when validation cannot tell."""
from __future__ import annotations

import numpy as np
import pytest

from btunet.pipeline.separation import (
    ELONGATED,
    LARGE_OBJECT_PX,
    MIN_VALIDATION_OBJECTS,
    choose_separation,
    describe_separation,
    elongation,
)


def test_elongation_of_disks_and_rods():
    labels = np.zeros((60, 120), np.int32)
    yy, xx = np.indices(labels.shape)
    labels[(yy - 15) ** 2 + (xx - 15) ** 2 <= 100] = 1      # a disk, radius 10
    labels[40:50, 10:60], labels[40:50, 60:110] = 2, 3     # two rods 10 x 50, touching end to end
    e = elongation(labels)
    assert e[0] == pytest.approx(1.0, abs=0.25)
    assert e[1] == pytest.approx(e[2]) and 3.5 < e[1] < 7.0  # each rod on its own, not one long rod
    assert elongation(np.zeros((4, 4), np.int32)).size == 0


def test_rods_choose_borders_when_validation_cannot_tell():
    small = LARGE_OBJECT_PX - 1
    tie = {"boundary": 0.95, "distance": 0.95, "objects": MIN_VALIDATION_OBJECTS - 11}
    assert choose_separation(tie, small, ELONGATED) == ("boundary", "object shape")
    assert choose_separation(tie, small, ELONGATED - 0.1) == ("distance", "object size")
    clear = {"boundary": 0.80, "distance": 0.90, "objects": MIN_VALIDATION_OBJECTS}
    assert choose_separation(clear, small, 5.0) == ("distance", "validation")   # validation still first
    line = describe_separation({"separate_by": "boundary", "separation": {
        "by": "object shape", "f1": tie, "median_object_px": 231.0, "median_elongation": 4.2}})
    assert "split by its learnt borders (chosen by object shape, median elongation 4.2" in line
