"""What a painted Labels layer means, turned into per-pixel targets and loss weights.

* ``sparse`` (default when painting, as in ilastik/APOC): 0 = not annotated (ignored),
  1 = background, 2 = object; with several classes 2, 3, ..., K+1 = class 1 .. class K.
* ``dense`` (fully drawn masks): 0 = background, > 0 = object (instance ids allowed: several ids
  also teach the model where touching objects meet); with a ``region`` mask only pixels inside
  it count.
* ``classes`` (fully drawn class masks): 0 = background, k = class k.

Targets hold class indices: 0 = background, k = class k (so 1 = object with one class).

Where touching objects meet: in a dense mask, the inner border of every id; in sparse strokes,
background painted between the strokes of two objects (``stroke_boundary``).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from ..base.errors import BTUnetError
from .heads import MAX_CLASSES

#: A background stroke within this many px of two separate object strokes lies between two objects.
STROKE_REACH = 40

MaskMode = Literal["sparse", "dense", "classes"]
MASK_MODES = ("sparse", "dense", "classes")

CONVENTIONS = {
    "sparse": "sparse: 1 = background, 2 = object (2..K+1 = classes 1..K), 0 = not annotated (ignored)",
    "dense": "dense: 0 = background, any other label = object (every pixel counts)",
    "classes": "classes: 0 = background, k = class k (every pixel counts)",
}


def check_label_values(labels: np.ndarray, what: str = "an annotation") -> None:
    """Refuse labels that are not whole numbers (BTUnetError naming ``what``): NaN or infinite values
    (a probability map, a damaged float file) and fractions (0.5 is neither object nor background,
    and ``> 0`` would quietly make it an object)."""
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        return
    if not np.issubdtype(labels.dtype, np.number):
        raise BTUnetError(f"{what} must hold whole-number labels, not {labels.dtype} values")
    if not np.all(np.isfinite(labels)):
        raise BTUnetError(f"{what} holds NaN or infinite values; it must hold whole-number labels (0 = background)")
    fractional = labels[labels != np.round(labels)]
    if fractional.size:
        raise BTUnetError(f"{what} holds non-integer values (e.g. {float(fractional[0]):g}); it must hold "
                          "whole-number labels (0 = background): threshold or round a probability map first")


def _check_labels(labels: np.ndarray, mode: str) -> np.ndarray:
    if mode not in MASK_MODES:
        raise BTUnetError(f"unknown mask mode {mode!r}; choose one of: {', '.join(MASK_MODES)}")
    labels = np.asarray(labels)
    check_label_values(labels)
    if labels.size and labels.min() < 0:
        raise BTUnetError("annotations must not hold negative labels")
    return labels


def infer_classes(labels: np.ndarray, mode: str) -> int:
    """K, the number of classes the labels hold (max label - 1 for sparse, the max id for classes)."""
    return _classes_up_to(int(_check_labels(labels, mode).max(initial=0)), mode)


def _classes_up_to(top: int, mode: str) -> int:
    """K of labels whose largest value is ``top``."""
    return max(1, top - 1 if mode == "sparse" else top if mode == "classes" else 1)


def targets_and_weights(labels: np.ndarray, mode: MaskMode = "sparse", region: np.ndarray | None = None,
                        n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return float32 (target, weight): target = class index (0 = background, 1 = object or class 1,
    ...), weight 1 = pixel is annotated. ``n_classes``: K (default: inferred from ``labels``)."""
    labels = _check_labels(labels, mode)
    top = int(labels.max(initial=0))
    k = _classes_up_to(top, mode) if n_classes is None else int(n_classes)
    if mode == "sparse":
        if top > k + 1 or top > MAX_CLASSES + 1:
            found = sorted(set(np.unique(labels).tolist()) - set(range(k + 2)))
            raise BTUnetError(
                f"sparse annotations use 1 = background and 2..{k + 1} = classes, but labels "
                f"{found[:5]} were found; use mask mode 'dense' for instance masks")
        target = np.clip(labels.astype(np.float32) - 1, 0, None)
        weight = (labels > 0).astype(np.float32)
    elif mode == "classes":
        if top > k or top > MAX_CLASSES:
            raise BTUnetError(f"class masks hold ids 0..{min(k, MAX_CLASSES)}, but id {top} was found; "
                              "use mask mode 'dense' for instance masks")
        target = labels.astype(np.float32)
        weight = np.ones(labels.shape, np.float32)
    else:
        target = (labels > 0).astype(np.float32)
        weight = np.ones(labels.shape, np.float32)
    if region is not None:
        if region.shape != labels.shape:
            raise BTUnetError(f"region shape {region.shape} differs from annotation shape {labels.shape}")
        weight *= (np.asarray(region) > 0)
    return target, weight


def has_instances(labels: np.ndarray) -> bool:
    """Several object ids in one dense mask: the model can learn where objects meet."""
    labels = np.asarray(labels)
    check_label_values(labels)  # NaN has no maximum
    return int(labels.max(initial=0)) > 1


def boundary_target(labels: np.ndarray) -> np.ndarray:
    """float32 1 on the thin inner border of every object (pixels next to another id or to
    background), 0 elsewhere."""
    from skimage.segmentation import find_boundaries
    labels = np.asarray(labels)
    return find_boundaries(labels.astype(np.int64), connectivity=1, mode="inner").astype(np.float32)


def check_annotation_counts(n_object: int, n_background: int, mode: MaskMode,
                            per_class: list[int] | None = None) -> None:
    """Refuse annotations that would train a constant (and useless) model."""
    hint = ("paint object pixels with label 2 and background with label 1" if mode == "sparse"
            else "the masks need both background (0) and object (> 0) pixels")
    if n_object == 0 and n_background == 0:
        raise BTUnetError(f"no annotated pixels found; {hint}")
    if n_object == 0:
        raise BTUnetError(f"the annotations contain no object pixels; {hint}")
    if n_background == 0:
        raise BTUnetError(f"the annotations contain no background pixels; {hint}")
    if per_class is not None and len(per_class) > 1:
        missing = [k for k, n in enumerate(per_class, 1) if n == 0]
        if missing:
            label = missing[0] + 1 if mode == "sparse" else missing[0]
            raise BTUnetError(f"class {missing[0]} (label {label}) has no annotated pixels; "
                              f"annotate every class from 1 to {len(per_class)} or give fewer classes")


def stroke_boundary(labels: np.ndarray, reach: int = STROKE_REACH) -> np.ndarray:
    """float32 1 on background strokes (label 1) painted between two objects: within ``reach`` px
    of two separate object strokes (label >= 2); 0 elsewhere. A mark outside every object does no
    harm: the border map is only read inside the object mask."""
    from scipy import ndimage as ndi
    from skimage.measure import label
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.float32)
    objects = label(labels >= 2, connectivity=2)
    if objects.max() < 2 or not (labels == 1).any():
        return out
    near = np.zeros(labels.shape, np.uint16)  # how many object strokes are within reach
    for k, box in enumerate(ndi.find_objects(objects), start=1):
        box = tuple(slice(max(0, s.start - reach), s.stop + reach) for s in box)
        near[box] += ndi.distance_transform_edt(objects[box] != k) <= reach
    out[(labels == 1) & (near >= 2)] = 1.0
    return out


def has_stroke_boundary(labels: np.ndarray) -> bool:
    """Sparse strokes that mark where two objects meet (see ``stroke_boundary``), plane by plane."""
    labels = np.asarray(labels)
    planes = labels.reshape((-1,) + labels.shape[-2:]) if labels.ndim > 2 else labels[None]
    return any(stroke_boundary(p).any() for p in planes if (p >= 2).any() and (p == 1).any())
