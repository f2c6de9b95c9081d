"""Uncertainty maps: where the live model is likely wrong, so a user knows where to paint next.

Two maps exist. ``btunet.predict(..., uncertainty=True)`` has only the model, so it measures the
model against itself (``planes.flip_entropy``: four test-time flips). While fine-tuning on
strokes there is a second opinion: the random forest the run learns its pseudo-labels from
(``teacher.py``), fitted on the same strokes. A model trained on strokes is sharp and sure of
itself, also where it is wrong (a false blob merged from haze is as dark as a real nucleus in the
flip map), while the forest decides each pixel from its local look and errs elsewhere.
``stroke_uncertainty`` asks both (benchmarks/uncertainty.py, docs/results_uncertainty.md).
"""
from __future__ import annotations

import numpy as np


def binary_entropy(probability: np.ndarray) -> np.ndarray:
    """Entropy in bits of an object probability: 0 = certain, 1 = a coin toss."""
    p = np.clip(np.asarray(probability, np.float32), 1e-6, 1 - 1e-6)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def forest_disagreement(model_probability: np.ndarray, forest_probability: np.ndarray) -> np.ndarray:
    """|p_model - p_forest|: 0 where they agree, 1 where they are sure of opposite answers."""
    return np.abs(np.asarray(model_probability, np.float32) - np.asarray(forest_probability, np.float32))


def stroke_uncertainty(model_probability: np.ndarray, forest_probability: np.ndarray) -> np.ndarray:
    """The entropy of the mean of the model's and the forest's object probabilities (bits, 0..1).

    High where either is unsure and where they disagree: a blob the model is sure of and the
    forest calls background sits at a coin toss, while pixels both call background stay dark.
    """
    mean = 0.5 * (np.asarray(model_probability, np.float32) + np.asarray(forest_probability, np.float32))
    return binary_entropy(mean)


__all__ = ["binary_entropy", "forest_disagreement", "stroke_uncertainty"]
