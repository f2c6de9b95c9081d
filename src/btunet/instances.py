"""Object masks -> instance labels: by a learnt boundary when the model has one, else by shape.

* ``boundary_instances``: seeds are the connected parts of "object and not boundary"; a
  watershed on the boundary probability grows them back over the object mask. Touching objects
  are separated where the model saw a border, whatever their shape.
* ``distance_instances``: a watershed on the distance transform of the mask (one seed per
  distance peak): needs no training, but splits elongated objects and merges objects that touch
  along a wide front.
"""
from __future__ import annotations

import numpy as np

#: Seeds smaller than this (px) are noise of the boundary map, not objects.
MIN_SEED = 8


def _label(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label
    return label(mask, connectivity=1).astype(np.int32)


def _add_unseeded(markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Components of ``mask`` without a seed (tiny objects) keep their own id."""
    components = _label(mask)
    seeded = np.unique(components[(markers > 0) & mask])
    missing = np.setdiff1d(np.unique(components[mask]), seeded)
    nxt = int(markers.max(initial=0)) + 1
    for i, comp in enumerate(missing, start=nxt):
        markers[components == comp] = i
    return markers


def boundary_instances(object_prob: np.ndarray, boundary_prob: np.ndarray, threshold: float = 0.5,
                       boundary_threshold: float = 0.5, min_seed: int = MIN_SEED) -> np.ndarray:
    """int32 instance ids from an object and a boundary probability map (a seeded watershed)."""
    from skimage.segmentation import watershed
    mask = object_prob > threshold
    seeds = _label(mask & (boundary_prob < boundary_threshold))
    sizes = np.bincount(seeds.ravel())
    small = sizes < min_seed
    small[0] = False
    seeds[small[seeds]] = 0
    markers = _add_unseeded(seeds, mask)
    return watershed(boundary_prob, markers, mask=mask).astype(np.int32)


def distance_instances(mask: np.ndarray, split_touching: bool = True, min_distance: int = 5) -> np.ndarray:
    """Connected components; optionally split touching objects by a distance-transform watershed."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed
    mask = np.asarray(mask) > 0
    if not split_touching:
        return _label(mask)
    distance = ndi.distance_transform_edt(mask)
    components = _label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    markers = _add_unseeded(markers, mask)
    return watershed(-distance, markers, mask=mask).astype(np.int32)


__all__ = ["MIN_SEED", "boundary_instances", "distance_instances"]
