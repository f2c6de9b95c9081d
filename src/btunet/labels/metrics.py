"""Segmentation metrics: per-image foreground Dice, IoU, precision, recall; per-class Dice; object
F1 at IoU 0.5, mean matched IoU and average precision at IoU 0.5:0.05:0.95; object counts, splits
and merges (where a user counts cells, one id per cell matters more than a good outline)."""
from __future__ import annotations

import numpy as np

from ..base.errors import BTUnetError
from .annotations import check_label_values

METRICS = ("dice", "iou", "precision", "recall")
#: Object counts of ``split_merge_counts`` (whole numbers per image, not fractions).
COUNTS = ("n_pred", "n_true", "splits", "merges")


def pixel_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Foreground scores of two label images (anything > 0 is foreground), without smoothing.

    Empty images: Dice and IoU are 1 when both are empty and 0 when only one is (one false
    pixel on an empty field is a miss, not half right); precision with no predicted pixel and
    recall with no true pixel are undefined, NaN (``mean_scores`` leaves them out)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise BTUnetError(f"prediction shape {pred.shape} differs from ground truth {truth.shape}")
    p, t = pred > 0, truth > 0
    tp = float(np.logical_and(p, t).sum())
    fp, fn = float(p.sum()) - tp, float(t.sum()) - tp
    nan = float("nan")
    if tp + fp + fn == 0:
        return {"dice": 1.0, "iou": 1.0, "precision": nan, "recall": nan}
    return {"dice": 2 * tp / (2 * tp + fp + fn), "iou": tp / (tp + fp + fn),
            "precision": tp / (tp + fp) if tp + fp else nan, "recall": tp / (tp + fn) if tp + fn else nan}


#: IoU thresholds of average precision (DSB2018 / StarDist): 0.5, 0.55, ..., 0.95.
AP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _overlaps(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(predicted id, true id) pairs that share pixels (2 x n), their shared px, and each image's
    object sizes by id."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise BTUnetError(f"prediction shape {pred.shape} differs from ground truth {truth.shape}")
    pred, truth = pred.ravel(), truth.ravel()
    both = (pred > 0) & (truth > 0)
    pairs, overlap = np.unique(np.stack([pred[both], truth[both]]), axis=1, return_counts=True)
    p_ids, p_sizes = np.unique(pred[pred > 0], return_counts=True)
    t_ids, t_sizes = np.unique(truth[truth > 0], return_counts=True)
    return (pairs, overlap, dict(zip(p_ids.tolist(), p_sizes.tolist(), strict=True)),
            dict(zip(t_ids.tolist(), t_sizes.tolist(), strict=True)))


def matched_ious(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int, int]:
    """IoUs of the (predicted, true) object pairs with IoU > 0.5, and the two object counts.

    Above 0.5 each object can match at most one other, so this is the optimal (Hungarian)
    matching at every threshold >= 0.5 without an assignment.
    """
    pairs, overlap, size_p, size_t = _overlaps(pred, truth)
    ious = [inter / (size_p[a] + size_t[b] - inter)
            for (a, b), inter in zip(pairs.T.tolist(), overlap.tolist(), strict=True)]
    return np.array([v for v in ious if v > 0.5], np.float64), len(size_p), len(size_t)


#: A predicted and a true object *share* an object when their overlap is at least this share of
#: the smaller of the two: a fragment lying inside a cell, or a cell lying inside a merged id.
#: A neighbour that only grazes an object's edge shares less and counts as neither.
SHARE = 0.5


def split_merge_counts(pred: np.ndarray, truth: np.ndarray, share: float = SHARE) -> dict[str, float]:
    """Object counts and how ids go wrong where cells are counted.

    ``splits``: true objects that share (``SHARE``) with 2 or more predicted objects (one cell
    given several ids, each id counted once per cell it splits); ``merges``: predicted objects that
    share with 2 or more true objects (several cells under one id). ``count_error``:
    |predicted - true| / true objects, NaN without true objects (``n_pred`` still says how many
    false objects an empty field got).
    """
    pairs, overlap, size_p, size_t = _overlaps(pred, truth)
    shared = [(a, b) for (a, b), inter in zip(pairs.T.tolist(), overlap.tolist(), strict=True)
              if inter >= share * min(size_p[a], size_t[b])]
    per_true = np.unique([b for _, b in shared], return_counts=True)[1]
    per_pred = np.unique([a for a, _ in shared], return_counts=True)[1]
    n_p, n_t = len(size_p), len(size_t)
    return {"n_pred": float(n_p), "n_true": float(n_t), "splits": float((per_true >= 2).sum()),
            "merges": float((per_pred >= 2).sum()),
            "count_error": abs(n_p - n_t) / n_t if n_t else float("nan")}


def object_scores(pred: np.ndarray, truth: np.ndarray,
                  thresholds: tuple[float, ...] = AP_THRESHOLDS) -> dict[str, float]:
    """Object F1 at IoU 0.5, mean IoU of the matched pairs, average precision, and the counts,
    splits and merges of ``split_merge_counts``.

    AP at threshold t = TP / (TP + FP + FN) (DSB2018, StarDist); ``ap`` is its mean over
    ``thresholds`` (0.5:0.05:0.95), ``ap50`` / ``ap75`` its values at 0.5 / 0.75. A pair matches
    when IoU > t. Two empty images score 1.
    """
    ious, n_p, n_t = matched_ious(pred, truth)
    counts = split_merge_counts(pred, truth)
    if n_p + n_t == 0:
        return {"object_f1": 1.0, "mean_matched_iou": 1.0, "ap": 1.0, "ap50": 1.0, "ap75": 1.0, **counts}
    ap = {t: (tp := int((ious > t).sum())) / (n_p + n_t - tp) for t in thresholds}
    return {"object_f1": 2 * len(ious) / (n_p + n_t),
            "mean_matched_iou": float(ious.mean()) if len(ious) else 0.0,
            "ap": float(np.mean(list(ap.values()))), "ap50": ap.get(0.5, float("nan")),
            "ap75": ap.get(0.75, float("nan")), **counts}


def object_f1(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> float:
    """F1 of instance matching: a predicted object matches a true one when IoU > threshold (>= 0.5)."""
    if iou_threshold < 0.5:
        raise BTUnetError("object matching needs an IoU threshold of at least 0.5")
    ious, n_p, n_t = matched_ious(pred, truth)
    return 1.0 if n_p + n_t == 0 else 2 * int((ious > iou_threshold).sum()) / (n_p + n_t)


def class_dice(pred: np.ndarray, truth: np.ndarray, classes: list[int] | None = None) -> dict[str, float]:
    """Dice of each class id (``dice_class_k``) of two class-label images; default: the ids > 0
    in either image. A class absent from both scores 1, from one of them 0 (as ``pixel_scores``)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise BTUnetError(f"prediction shape {pred.shape} differs from ground truth {truth.shape}")
    if classes is None:
        classes = sorted((set(np.unique(truth).tolist()) | set(np.unique(pred).tolist())) - {0})
    out = {}
    for k in classes:
        p, t = pred == k, truth == k
        both = int(p.sum() + t.sum())
        out[f"dice_class_{int(k)}"] = float(2 * (p & t).sum() / both) if both else 1.0
    return out


def evaluate(pred: np.ndarray, truth: np.ndarray, objects: bool = False,
             classes: list[int] | None | bool = False) -> dict[str, float]:
    """Pixel scores of one image, plus object scores (``object_scores``) when ``objects`` and the
    Dice of each class when ``classes`` (True: the ids found; or a list of ids).

    Both images hold labels: NaN, infinite or fractional values (a probability map) are refused.
    Empty truth: an empty prediction scores Dice, IoU and object scores 1, any predicted pixel 0
    (no credit for false positives on empty fields); recall is then undefined (NaN), as is
    precision of an empty prediction, and ``mean_scores`` averages over the images that define them.
    """
    check_label_values(pred, "the prediction")
    check_label_values(truth, "the ground truth")
    scores = pixel_scores(pred, truth)
    if objects:
        scores.update(object_scores(as_instances(pred), as_instances(truth)))
    if classes is not False:
        scores.update(class_dice(pred, truth, None if classes is True else classes))
    return scores


def as_instances(labels: np.ndarray) -> np.ndarray:
    """Binary masks become connected components; instance label images stay as they are."""
    labels = np.asarray(labels)
    if labels.max(initial=0) <= 1:
        from skimage.measure import label
        return label(labels > 0, connectivity=1)
    return labels


def mean_scores(per_image: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every score over the images that define it (a class absent from an image, recall of
    an empty truth: skipped); NaN when no image does."""
    keys = list(dict.fromkeys(k for s in per_image for k in s)) if per_image else list(METRICS)
    means = {}
    for k in keys:
        values = [s[k] for s in per_image if k in s and not np.isnan(s[k])]
        means[k] = float(np.mean(values)) if values else float("nan")
    return means
