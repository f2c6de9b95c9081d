"""Which way a model separates touching objects: along its learnt borders or by their shape.

A model with a boundary channel can split objects along its learnt borders
(``instances.boundary_instances``) or, like every other model, by the distance transform of its
mask (``instances.distance_instances``). Which is better depends on the objects. The learnt
border is a band a few pixels wide: inside a small nucleus it leaves little seed and a faint
border can merge two neighbours, while the distance transform of a small round object has one
clean peak. A large nucleus has a flat or several-peaked distance map that the watershed cuts
where there is no border, and there the learnt border wins (docs/results_objects.md: BBBC007,
median nucleus 268 px, distance watershed 0.964 against 0.929; CHO, 3,288 px, 0.865 against
0.928).

So at the end of fine-tuning on instance masks both ways are scored on the held-out validation
objects (as StarDist tunes its thresholds on validation images). When there are enough of them
and one way is clearly better, it is chosen; otherwise the shape and size of the training objects
decide. The distance watershed assumes one distance peak per object: a rod has a long flat ridge
and two rods end to end a shallow neck, so it splits one rod and merges two. Objects whose area
is at least ``ELONGATED`` times the disk inscribed in them (a 3:1 ellipse) are split by the learnt
borders; the nuclei of the tuning sets measure 1.2-1.7 (median), so they keep the size rule.
The choice is stored with the model (``CheckpointMetadata.separate_by``).
"""
from __future__ import annotations

import numpy as np

from ..labels.instances import SEPARATIONS, boundary_instances, distance_instances
from ..labels.metrics import matched_ious
from .data import AnnotatedPlane

#: Validation decides only with at least this many held-out objects ...
MIN_VALIDATION_OBJECTS = 20
#: ... and an object F1 difference of at least this much; two ways within it are a tie.
CLEAR_MARGIN = 0.02
#: Otherwise objects with a median area from this many px (a radius of about 25 px) are split by
#: the learnt borders, smaller ones by the distance watershed. Set between the median nuclei of
#: cells3d (1,400 px: distance watershed better) and CHO (3,288 px: borders better).
LARGE_OBJECT_PX = 2000
#: ... or objects whose median area is at least this many times their inscribed disk (elongated:
#: rods, a 3:1 ellipse and longer) are split by the learnt borders. Set from the shape, not tuned.
ELONGATED = 3.0
#: At most this many planes are predicted for the choice, so a long stack does not add minutes.
MAX_PLANES = 16


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
                  fast: bool = True) -> dict | None:
    """Object F1 (IoU > 0.5) of each way of separating, pooled over the held-out objects of dense
    instance masks, and their number (``objects``); None when no plane has any."""
    from .planes import plane_outputs
    matched = dict.fromkeys(SEPARATIONS, 0)
    counted = dict.fromkeys(SEPARATIONS, 0)  # predicted + true objects
    n_true, n_planes = 0, 0
    for p in planes:
        if p.val_region is None or p.instances is None or not p.val_region.any() or n_planes == MAX_PLANES:
            continue
        h, w = p.size
        region = p.val_region[:h, :w]
        truth = held_out_objects(p.instances[:h, :w], region)
        if not truth.any():
            continue
        n_planes += 1
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
    return {**{m: round(2 * matched[m] / counted[m], 4) for m in SEPARATIONS}, "objects": n_true}


def choose_separation(scores: dict | None, median_object_px: float, elongation: float = 1.0) -> tuple[str, str]:
    """(way, why): by the validation scores when they are clear, else by the objects' shape
    (elongated: the borders), else by their size."""
    if scores is not None and scores["objects"] >= MIN_VALIDATION_OBJECTS:
        gap = scores["boundary"] - scores["distance"]
        if abs(gap) >= CLEAR_MARGIN:
            return ("boundary" if gap > 0 else "distance"), "validation"
    if elongation >= ELONGATED:
        return "boundary", "object shape"
    return ("boundary" if median_object_px >= LARGE_OBJECT_PX else "distance"), "object size"


def elongation(labels: np.ndarray) -> np.ndarray:
    """Area / inscribed disk of each object of an instance mask: about 1 for a disk, the axis
    ratio for an ellipse, length / width for a rod."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if not ids.size:
        return np.zeros(0)
    inside = (labels > 0) & ~find_boundaries(labels, mode="inner")  # touching objects kept apart
    radius = ndi.maximum(ndi.distance_transform_edt(inside), labels, ids) + 1.0
    area = ndi.sum_labels(np.ones(labels.shape), labels, ids)
    return np.asarray(area) / (np.pi * np.asarray(radius) ** 2)


def separation_of(net, planes: list[AnnotatedPlane], threshold: float, min_size: int, previous: dict,
                  fast: bool = True) -> tuple[str, dict | None]:
    """How a just fine-tuned model with borders separates objects, and why: chosen from instance
    masks (held-out objects, else their size), else kept from the model continued from."""
    sizes = [p.object_sizes for p in planes if p.object_sizes is not None and len(p.object_sizes)]
    if not sizes:  # strokes: the borders they taught, or what the model continued from had
        return previous.get("separate_by", "boundary"), previous.get("separation")
    median = float(np.median(np.concatenate(sizes)))
    shapes = [elongation(p.instances) for p in planes if p.instances is not None]
    shape = float(np.median(np.concatenate(shapes))) if shapes and sum(map(len, shapes)) else 1.0
    scores = validation_f1(net, planes, threshold, min_size, fast)
    way, why = choose_separation(scores, median, shape)
    return way, {"by": why, "f1": scores, "median_object_px": round(median, 1),
                 "median_elongation": round(shape, 2)}


def describe_separation(metadata: dict) -> str | None:
    """One line on how a fine-tuned model splits touching objects, when it chose at fine-tuning."""
    info = metadata.get("separation")
    if not info:
        return None
    way = "its learnt borders" if metadata.get("separate_by") == "boundary" else "a distance watershed"
    f1 = info.get("f1")
    scores = (f"validation object F1 on {f1['objects']} objects: learnt borders {f1['boundary']:.3f}, "
              f"distance watershed {f1['distance']:.3f}" if f1 else "no held-out objects")
    reason = ("chosen on validation" if info["by"] == "validation" else
              f"chosen by object shape, median elongation {info.get('median_elongation', 0):g}"
              if info["by"] == "object shape" else f"chosen by object size, median {info['median_object_px']:g} px")
    return f"touching objects: split by {way} ({reason}; {scores})"


__all__ = ["CLEAR_MARGIN", "ELONGATED", "LARGE_OBJECT_PX", "MIN_VALIDATION_OBJECTS", "SEPARATIONS", "choose_separation",
           "describe_separation", "elongation", "held_out_objects", "separation_of", "validation_f1"]
