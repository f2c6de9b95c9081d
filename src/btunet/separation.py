"""Which way a model separates touching objects, chosen on its held-out blocks.

A model with a boundary channel can split objects along its learnt borders
(``instances.boundary_instances``) or, like every other model, by the distance transform of its
mask (``instances.distance_instances``). Which is better depends on the objects: learnt borders
win on large nuclei pressed together, the distance watershed on small round ones. Fine-tuning
on instance masks scores both on the validation blocks, as StarDist tunes its thresholds on
validation images, and stores the winner with the model (``CheckpointMetadata.separate_by``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .data import AnnotatedPlane
from .instances import SEPARATIONS, boundary_instances, distance_instances
from .metrics import matched_ious


def held_out_objects(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``labels`` with only the objects that lie at least half inside ``region``, kept whole:
    objects cut by a block's edge are neither dropped nor scored as fragments."""
    ids = labels.ravel()
    inside = np.bincount(ids, weights=region.ravel().astype(np.float64), minlength=int(ids.max(initial=0)) + 1)
    total = np.bincount(ids, minlength=len(inside))
    keep = inside * 2 >= np.maximum(total, 1)
    keep[0] = False
    return np.where(keep[labels], labels, 0)


def validation_f1(net, planes: list[AnnotatedPlane], threshold: float, min_size: int,
                  fast: bool = True) -> Optional[dict[str, float]]:
    """Object F1 (IoU > 0.5) of each way of separating, pooled over the held-out objects of dense
    instance masks; None when no plane has any."""
    from .planes import plane_outputs
    matched = {m: 0 for m in SEPARATIONS}
    counted = {m: 0 for m in SEPARATIONS}  # predicted + true objects
    n_true = 0
    for p in planes:
        if p.val_region is None or p.instances is None or not p.val_region.any():
            continue
        h, w = p.size
        region = p.val_region[:h, :w]
        truth = held_out_objects(p.instances[:h, :w], region)
        if not truth.any():
            continue
        out = plane_outputs(net, p.pixels, fast=fast)
        prob, border = out["object"][:h, :w], out["boundary"][:h, :w]
        labels = {"boundary": boundary_instances(prob, border, threshold, min_size=min_size),
                  "distance": distance_instances(prob > threshold, min_size=min_size)}
        for method in SEPARATIONS:
            ious, n_p, n_t = matched_ious(held_out_objects(labels[method], region), truth)
            matched[method] += len(ious)
            counted[method] += n_p + n_t
        n_true += len(np.unique(truth)) - 1
    if n_true == 0:
        return None
    return {m: round(2 * matched[m] / counted[m], 4) for m in SEPARATIONS}


def best_separation(scores: dict[str, float]) -> str:
    """The method with the higher F1; a tie goes to the distance watershed, which every model has."""
    return "boundary" if scores["boundary"] > scores["distance"] else "distance"


def describe_separation(metadata: dict) -> Optional[str]:
    """One line on how a fine-tuned model splits touching objects, when it chose on validation."""
    f1 = metadata.get("separation_f1")
    if not f1:
        return None
    way = "its learnt borders" if metadata.get("separate_by") == "boundary" else "a distance watershed"
    return (f"touching objects: split by {way} (validation object F1: learnt borders {f1['boundary']:.3f}, "
            f"distance watershed {f1['distance']:.3f})")


__all__ = ["SEPARATIONS", "best_separation", "describe_separation", "held_out_objects", "validation_f1"]
