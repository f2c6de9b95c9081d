"""Segmentation metrics: per-image foreground Dice, IoU, precision, recall; object F1 at IoU 0.5."""
from __future__ import annotations

import numpy as np

from .errors import BTUnetError

METRICS = ("dice", "iou", "precision", "recall")


def pixel_scores(pred: np.ndarray, truth: np.ndarray, smooth: float = 1.0) -> dict[str, float]:
    """Foreground scores of two label images (anything > 0 is foreground)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise BTUnetError(f"prediction shape {pred.shape} differs from ground truth {truth.shape}")
    p, t = pred > 0, truth > 0
    tp = float(np.logical_and(p, t).sum())
    fp, fn = float(p.sum()) - tp, float(t.sum()) - tp
    return {"dice": (2 * tp + smooth) / (2 * tp + fp + fn + smooth),
            "iou": (tp + smooth) / (tp + fp + fn + smooth),
            "precision": (tp + smooth) / (tp + fp + smooth),
            "recall": (tp + smooth) / (tp + fn + smooth)}


def object_f1(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> float:
    """F1 of instance matching: a predicted object matches a true one when IoU > threshold.

    With a threshold >= 0.5 each object can match at most one other, so no assignment is needed.
    """
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    both = (pred > 0) & (truth > 0)
    pairs, overlap = np.unique(np.stack([pred[both], truth[both]]), axis=1, return_counts=True)
    p_ids, p_sizes = np.unique(pred[pred > 0], return_counts=True)
    t_ids, t_sizes = np.unique(truth[truth > 0], return_counts=True)
    size_p = dict(zip(p_ids.tolist(), p_sizes.tolist()))
    size_t = dict(zip(t_ids.tolist(), t_sizes.tolist()))
    matches = sum(1 for (a, b), inter in zip(pairs.T.tolist(), overlap.tolist())
                  if inter / (size_p[a] + size_t[b] - inter) > iou_threshold)
    n_p, n_t = len(p_ids), len(t_ids)
    return 1.0 if n_p + n_t == 0 else 2 * matches / (n_p + n_t)


def evaluate(pred: np.ndarray, truth: np.ndarray, objects: bool = False) -> dict[str, float]:
    """Pixel scores of one image (plus object F1 at IoU 0.5 when ``objects``)."""
    scores = pixel_scores(pred, truth)
    if objects:
        scores["object_f1"] = object_f1(as_instances(pred), as_instances(truth))
    return scores


def as_instances(labels: np.ndarray) -> np.ndarray:
    """Binary masks become connected components; instance label images stay as they are."""
    labels = np.asarray(labels)
    if labels.max(initial=0) <= 1:
        from skimage.measure import label
        return label(labels > 0, connectivity=1)
    return labels


def mean_scores(per_image: list[dict[str, float]]) -> dict[str, float]:
    keys = per_image[0].keys() if per_image else METRICS
    return {k: float(np.mean([s[k] for s in per_image])) for k in keys}
