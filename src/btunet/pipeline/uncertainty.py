"""Uncertainty maps: where the live model is likely wrong, so a user knows where to paint next.

Two maps exist. ``btunet.predict(..., uncertainty=True)`` has only the model, so it measures the
model against itself (``planes.flip_entropy``: four test-time flips). A model trained on strokes
is sharp and sure of itself, also where it is wrong, so the flips agree on its errors.

While fine-tuning on strokes there is a better witness: the random forest fitted on the same
strokes (``teacher.py``), whose confident pixels are the run's pseudo-labels. Where the forest is
unsure, the model had neither a stroke nor a pseudo-label to learn from, and that is where its
errors gather: the edges the strokes leave open and the haze between objects.
``stroke_uncertainty`` is the forest's entropy (chosen on the tuning sets against the flips, the
model-forest disagreement, their combinations and the distance to the predicted edge:
benchmarks/uncertainty.py, docs/results_uncertainty.md).
"""
from __future__ import annotations

import numpy as np


def binary_entropy(probability: np.ndarray) -> np.ndarray:
    """Entropy in bits of an object probability: 0 = certain, 1 = a coin toss."""
    p = np.clip(np.asarray(probability, np.float32), 1e-6, 1 - 1e-6)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def forest_disagreement(model_probability: np.ndarray, forest_probability: np.ndarray) -> np.ndarray:
    """|p_model - p_forest|: 0 where they agree, 1 where they are sure of opposite answers (a
    candidate the benchmark compares; the forest is often the one that is wrong)."""
    return np.abs(np.asarray(model_probability, np.float32) - np.asarray(forest_probability, np.float32))


def stroke_uncertainty(forest_probability: np.ndarray) -> np.ndarray:
    """Where a model fine-tuned on strokes is likely wrong: the entropy (bits, 0..1) of the object
    probability of the random forest on the same strokes (``forest_preview(...).probabilities``)."""
    return binary_entropy(forest_probability)


__all__ = ["binary_entropy", "forest_disagreement", "stroke_uncertainty"]
