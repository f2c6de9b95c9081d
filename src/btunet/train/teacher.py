"""Pseudo-labels for the unpainted pixels, from a random forest trained on the same strokes.

Strokes say nothing about the pixels between them, and a U-Net trained on strokes alone fills
that gap from context: it memorises the strokes and spreads into the haze between objects.
A pixel classifier on multiscale features (the ilastik approach) does the opposite: it decides
every pixel from its local appearance. Its confident decisions become targets for
the U-Net ("shallow to deep", Matskevych et al. 2022), which then smooths and generalises
them; the painted pixels always keep their own label.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..base.errors import BTUnetError

SIGMA_MIN, SIGMA_MAX = 1.0, 16.0
#: ilastik's finer intensity scales (0: the raw pixel), for ``teacher_features="fine"``: with them the
#: forest can see a one-pixel rim that the filters from sigma 1 on smooth away
FINE_SIGMAS = (0.0, 0.3, 0.7)
MAX_TRAINING_PIXELS = 50_000  # a forest saturates long before; keeps a round under a second


def import_feature_modules() -> None:
    """Load every module the features and the forest need (scikit-image loads some lazily, in
    the middle of the first call), so a caller can pay for it before time-critical work."""
    import scipy.integrate  # noqa: F401  (skimage.feature.corner, lazily)
    import scipy.spatial  # noqa: F401
    import skimage.feature.corner  # noqa: F401
    import sklearn.ensemble  # noqa: F401


def pixel_features(pixels: np.ndarray) -> np.ndarray:
    """(H, W, F) multiscale intensity, edge and texture features of a normalised (C, H, W) plane.

    One worker: the per-scale threads of scikit-image only compete with the training thread and
    the GUI for the interpreter lock (and the cores), for a plane that takes well under a second."""
    from skimage.feature import multiscale_basic_features
    image = np.moveaxis(np.asarray(pixels, np.float32), 0, -1)
    return multiscale_basic_features(image, intensity=True, edges=True, texture=True,
                                     sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, channel_axis=-1,
                                     workers=1)


def fine_features(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3C) intensities of a normalised (C, H, W) plane at ``FINE_SIGMAS``."""
    from scipy.ndimage import gaussian_filter
    image = np.moveaxis(np.asarray(pixels, np.float32), 0, -1)
    return np.concatenate([image if s == 0 else gaussian_filter(image, (s, s, 0)) for s in FINE_SIGMAS], axis=-1)


def fit_forest(features: list[np.ndarray], targets: list[np.ndarray], masks: list[np.ndarray],
               seed: int = 0, n_estimators: int = 50, max_depth: int = 10):
    """A random forest on the annotated pixels (``masks``) of every plane.

    ``features`` holds either whole (H, W, F) feature planes or, already picked, the (N, F)
    features of each plane's masked pixels.
    """
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise BTUnetError("pseudo-labels need scikit-learn: pip install scikit-learn") from exc
    x = np.concatenate([f if f.ndim == 2 else f[m] for f, m in zip(features, masks, strict=True)])
    y = np.concatenate([np.rint(t[m]).astype(np.int64) for t, m in zip(targets, masks, strict=True)])
    present = np.unique(y)
    if len(present) < 2:
        raise BTUnetError("pseudo-labels need painted object and background pixels")
    if len(y) > MAX_TRAINING_PIXELS:  # an equal share of the budget for each class, so a rare one survives
        rng = np.random.default_rng(seed)
        share = MAX_TRAINING_PIXELS // len(present)
        pick = np.concatenate([rng.choice(idx, min(len(idx), share), replace=False)
                               for idx in (np.flatnonzero(y == c) for c in present)])
        x, y = x[pick], y[pick]
    return RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, n_jobs=1,
                                  random_state=seed).fit(x, y)


#: feature planes are kept between fitting and predicting up to this size, else recomputed
FEATURE_CACHE_BYTES = 1 << 30


def forest_probabilities(planes_pixels: list[np.ndarray], targets: list[np.ndarray],
                         masks: list[np.ndarray], seed: int = 0, n_classes: int = 1,
                         extra_features: Callable[[np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
    """Object probability (H, W) of every pixel of every plane, from a forest fitted on the masked
    pixels; with ``n_classes`` K >= 2 (targets = class indices) the (K+1, H, W) class probabilities.
    ``extra_features``: more (H, W, F) features of a plane beside the filters (``encoder_features``).

    Features take about 80 bytes a pixel, so for many or large planes only the annotated
    pixels' features are kept while fitting and each plane's are computed again to predict.
    """
    masks = [m > 0 for m in masks]

    def features_of(pixels: np.ndarray) -> np.ndarray:
        f = pixel_features(pixels)
        return f if extra_features is None else np.concatenate([f, extra_features(pixels)], axis=-1)

    picked, cache, size = [], [], 0
    for pixels, mask in zip(planes_pixels, masks, strict=True):
        f = features_of(pixels)
        picked.append(f[mask])
        size += f.nbytes
        cache.append(f if size <= FEATURE_CACHE_BYTES else None)
    forest = fit_forest(picked, targets, masks, seed)
    probs = []
    for pixels, f in zip(planes_pixels, cache, strict=True):
        classes = class_probabilities(forest, features_of(pixels) if f is None else f, n_classes)
        probs.append(classes[1] if n_classes == 1 else classes)
    return probs


def class_probabilities(forest, features: np.ndarray, n_classes: int) -> np.ndarray:
    """(K+1, H, W) probabilities of background and classes 1..K from (H, W, F) ``features``;
    a class nobody painted gets probability 0."""
    p = forest.predict_proba(features.reshape(-1, features.shape[-1]))
    full = np.zeros((n_classes + 1, p.shape[0]), np.float32)
    full[forest.classes_.astype(int)] = p.T
    return full.reshape((n_classes + 1,) + features.shape[:2])


def pseudo_targets(probability: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight): hard labels where the teacher is at least ``confidence`` sure, else weight 0.

    ``probability``: (H, W) object probability, or (K+1, H, W) class probabilities.
    """
    if probability.ndim == 3:
        target = np.argmax(probability, axis=0).astype(np.float32)
        return target, (probability.max(axis=0) >= confidence).astype(np.float32)
    target = (probability > 0.5).astype(np.float32)
    weight = (np.abs(2 * probability - 1) >= 2 * confidence - 1).astype(np.float32)
    return target, weight
