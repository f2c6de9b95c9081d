"""What a painted Labels layer means, turned into per-pixel targets and loss weights.

* ``sparse`` (default when painting, as in ilastik/APOC): 0 = not annotated (ignored),
  1 = background, 2 = object.
* ``dense`` (fully drawn masks): 0 = background, > 0 = object (instance ids allowed); with a
  ``region`` mask only pixels inside it count.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import BTUnetError

MaskMode = Literal["sparse", "dense"]
MASK_MODES = ("sparse", "dense")

CONVENTIONS = {
    "sparse": "sparse: 1 = background, 2 = object, 0 = not annotated (ignored)",
    "dense": "dense: 0 = background, any other label = object (every pixel counts)",
}


def targets_and_weights(labels: np.ndarray, mode: MaskMode = "sparse",
                        region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return float32 (target, weight): target 1 = object, weight 1 = pixel is annotated."""
    if mode not in MASK_MODES:
        raise BTUnetError(f"unknown mask mode {mode!r}; choose one of: {', '.join(MASK_MODES)}")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) and not np.issubdtype(labels.dtype, np.bool_):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise BTUnetError("annotations must hold whole-number labels, got non-integer values")
    if mode == "sparse":
        unknown = set(np.unique(labels).tolist()) - {0, 1, 2}
        if unknown:
            raise BTUnetError(
                f"sparse annotations use 1 = background and 2 = object, but labels "
                f"{sorted(unknown)[:5]} were found; use mask mode 'dense' for instance masks")
        target = (labels == 2).astype(np.float32)
        weight = (labels > 0).astype(np.float32)
    else:
        target = (labels > 0).astype(np.float32)
        weight = np.ones(labels.shape, np.float32)
    if region is not None:
        if region.shape != labels.shape:
            raise BTUnetError(f"region shape {region.shape} differs from annotation shape {labels.shape}")
        weight *= (np.asarray(region) > 0)
    return target, weight


def check_annotation_counts(n_object: int, n_background: int, mode: MaskMode) -> None:
    """Refuse annotations that would train a constant (and useless) model."""
    hint = ("paint object pixels with label 2 and background with label 1" if mode == "sparse"
            else "the masks need both background (0) and object (> 0) pixels")
    if n_object == 0 and n_background == 0:
        raise BTUnetError(f"no annotated pixels found; {hint}")
    if n_object == 0:
        raise BTUnetError(f"the annotations contain no object pixels; {hint}")
    if n_background == 0:
        raise BTUnetError(f"the annotations contain no background pixels; {hint}")
