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


#: px: the width given to the band of doubt along an edge (benchmarks/uncertainty.py, ``ensemble_smooth``)
SMOOTH_SIGMA = 2.0


def stroke_uncertainty(model_probability: np.ndarray, forest_probability: np.ndarray,
                       sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """The entropy (bits, 0..1) of the mean of the model's and the forest's object probabilities,
    blurred by a Gaussian of ``sigma`` px first.

    The mean sits at a coin toss where they disagree (a blob the model is sure of and the forest
    calls background) and where either is unsure; the blur widens the one-pixel band where a sharp
    model crosses 0.5 to the pixel or two by which its edges are off, the errors it makes most.
    """
    mean = 0.5 * (np.asarray(model_probability, np.float32) + np.asarray(forest_probability, np.float32))
    if sigma > 0:
        from scipy.ndimage import gaussian_filter
        mean = gaussian_filter(mean, sigma)
    return binary_entropy(mean)


__all__ = ["SMOOTH_SIGMA", "binary_entropy", "forest_disagreement", "stroke_uncertainty"]
