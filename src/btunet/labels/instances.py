"""Object masks -> instance labels: by a learnt boundary when the model has one, else by shape.

Both work on a plane (Y, X) or a volume (Z, Y, X):

* ``boundary_instances``: seeds are the connected parts of "object and not boundary"; a
  watershed on the boundary probability grows them back over the object mask. Touching objects
  are separated where the model saw a border, whatever their shape.
* ``distance_instances``: a watershed on the distance transform of the mask, one seed per
  distance peak, peaks on one ridge merged (the path between them dips less than ``SEED_DEPTH``
  px). Plain local maxima put several seeds on the flat ridge of an elongated object, and the
  watershed between two seeds on one ridge cuts the object along a straight line. In a volume
  the regions are then merged across shallow saddles (``merge_shallow``): a lobed nucleus has
  peaks farther apart than their inscribed balls and no straight ridge between them, and the
  plane rule cut 4 of the 20 true cells3d nuclei in two or three (26 ids from the true mask).

Objects smaller than ``min_size`` px (voxels for 3-D ids) are dropped by both: specks of a few
pixels where the probability grazes the threshold are not objects, and every one of them counts
as a false object. A model stores its own floor (``size_floor`` of its training objects).

``link_planes`` labels a stack: each volume along its Z axis in 3-D (one id per object
through its planes), every other plane axis (time) plane by plane; ids are unique in the stack.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..base.errors import BTUnetError

#: Seeds smaller than this (px or voxels) are noise of the boundary map, not objects.
MIN_SEED = 8
#: Objects smaller than this (px) are dropped when nothing better is known (cellpose's default).
MIN_SIZE = 15
#: A model trained on instance masks drops objects below this share of its median training object.
SIZE_SHARE = 0.1
#: Two distance peaks seed separate objects only when the straight path between them dips this
#: many px below the lower one: a neck at least 3 px narrower than both objects' radii.
SEED_DEPTH = 3.0
#: How touching objects are split: ``boundary`` along a model's learnt borders, ``distance`` by a
#: watershed on the mask's distance transform (``separation.py`` chooses per model).
SEPARATIONS = ("boundary", "distance")


def _label(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label
    return label(mask, connectivity=1).astype(np.int32)


def drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """``labels`` without the objects of fewer than ``min_size`` px, ids renumbered 1..n."""
    if min_size <= 1 or not labels.any():
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    if not small.any():
        return labels
    keep = np.flatnonzero(~small[1:] & (sizes[1:] > 0)) + 1
    new_ids = np.zeros(len(sizes), labels.dtype)
    new_ids[keep] = np.arange(1, len(keep) + 1, dtype=labels.dtype)
    return new_ids[labels]


def object_sizes(labels: np.ndarray) -> np.ndarray:
    """px of each object of a mask: every connected region of one id (so a 0/1 mask counts its
    blobs and an instance mask its instances)."""
    from skimage.measure import label
    counts = np.bincount(label(np.asarray(labels), background=0, connectivity=1).ravel())[1:]
    return counts[counts > 0]


def size_floor(sizes: Sequence[int]) -> int:
    """The least object size (px) worth keeping, from the sizes of training objects: a tenth of
    the median object, at least ``MIN_SIZE``; ``MIN_SIZE`` when there are none."""
    sizes = np.asarray(sizes)
    return max(MIN_SIZE, int(SIZE_SHARE * np.median(sizes))) if sizes.size else MIN_SIZE


def volume_floor(min_size: int, z_spacing: float, n_planes: int) -> int:
    """The least object size (voxels) in a volume, from a plane floor (px): the floor times the
    planes an object of the median area spans (a ball: 4/3 of its radius over the Z step, at most
    ``n_planes``). The median area is the floor over ``SIZE_SHARE``. A model learns its floor from
    planes; in voxels that floor would keep every sliver of a nucleus cut by the image's edge."""
    radius = float(np.sqrt(min_size / SIZE_SHARE / np.pi))
    depth = min(4 / 3 * radius / max(float(z_spacing), 1e-6), float(n_planes))
    return max(int(min_size), int(round(min_size * depth)))


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
                       boundary_threshold: float = 0.5, min_seed: int = MIN_SEED,
                       min_size: int = MIN_SIZE) -> np.ndarray:
    """int32 instance ids from an object and a boundary probability map (a seeded watershed),
    of a plane or a volume."""
    from skimage.segmentation import watershed
    mask = object_prob > threshold
    seeds = drop_small(_label(mask & (boundary_prob < boundary_threshold)), min_seed)
    markers = _add_unseeded(seeds, mask)
    return drop_small(watershed(boundary_prob, markers, mask=mask).astype(np.int32), min_size)


def _ridge_seeds(distance: np.ndarray, peaks: np.ndarray, depth: float) -> np.ndarray:
    """Seed id of each peak: peaks joined by a straight path that never dips more than ``depth``
    below the lower of the two lie on one ridge (one object) and share an id; a neck between
    two objects dips deeper. Only peaks whose inscribed balls overlap are compared (chains of
    neighbours join the rest), so the cost stays near linear in the number of peaks."""
    from scipy.cluster.hierarchy import DisjointSet
    from scipy.spatial import cKDTree
    heights = distance[tuple(peaks.T)]
    ridges = DisjointSet(range(len(peaks)))
    for a, b in sorted(cKDTree(peaks).query_pairs(2 * float(heights.max()))):
        gap = float(np.linalg.norm(peaks[a] - peaks[b]))
        if gap > heights[a] + heights[b] or ridges.connected(a, b):
            continue
        line = np.rint(np.linspace(peaks[a], peaks[b], int(np.ceil(gap)) + 2)).astype(np.intp)
        if distance[tuple(line.T)].min() >= min(heights[a], heights[b]) - depth:
            ridges.merge(a, b)
    return _renumbered(ridges, len(peaks)) + 1


def _renumbered(sets, n: int) -> np.ndarray:
    """0..k-1 for the k sets of ``sets`` (a ``DisjointSet`` of 0..n-1), numbered in the order of
    their smallest member, whichever member the set keeps as its root."""
    _, first, inverse = np.unique([sets[i] for i in range(n)], return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int32)
    rank[np.argsort(first)] = np.arange(len(first), dtype=np.int32)
    return rank[inverse.ravel()]


def _touching_pairs(labels: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, saddle) of every pair of ids a < b that touch face to face, ``saddle`` the highest
    ``values`` on their shared face (each face scored by the lower of its two sides)."""
    found = []
    for ax in range(labels.ndim):
        lo = tuple(slice(None, -1) if i == ax else slice(None) for i in range(labels.ndim))
        hi = tuple(slice(1, None) if i == ax else slice(None) for i in range(labels.ndim))
        a, b = labels[lo], labels[hi]
        face = (a > 0) & (b > 0) & (a != b)
        found.append((np.minimum(a[face], b[face]), np.maximum(a[face], b[face]),
                      np.minimum(values[lo][face], values[hi][face])))
    a, b, v = (np.concatenate(parts) for parts in zip(*found, strict=True))
    n = int(labels.max(initial=0)) + 1
    keys, inverse = np.unique(a.astype(np.int64) * n + b, return_inverse=True)
    saddle = np.full(len(keys), -np.inf)
    np.maximum.at(saddle, inverse, v)
    return keys // n, keys % n, saddle


def merge_shallow(labels: np.ndarray, distance: np.ndarray, depth: float = SEED_DEPTH) -> np.ndarray:
    """``labels`` with touching regions merged where the best path between their distance peaks
    dips less than ``depth`` (the saddle on their shared face, highest saddles first): one object
    whatever its shape, while a neck ``depth`` px narrower than both still separates two."""
    from scipy import ndimage as ndi
    from scipy.cluster.hierarchy import DisjointSet
    n = int(labels.max(initial=0))
    if n < 2:
        return labels
    a, b, saddle = _touching_pairs(labels, distance)
    height = np.zeros(n + 1)  # each region's peak; after a merge, held by the merged set's root
    height[1:] = ndi.maximum(distance, labels, np.arange(1, n + 1))
    regions = DisjointSet(range(n + 1))
    for k in np.argsort(-saddle, kind="stable"):
        ra, rb = regions[int(a[k])], regions[int(b[k])]
        if ra != rb and saddle[k] >= min(height[ra], height[rb]) - depth:
            regions.merge(ra, rb)
            height[regions[ra]] = max(height[ra], height[rb])
    return _renumbered(regions, n + 1)[labels]


def distance_instances(mask: np.ndarray, split_touching: bool = True, min_distance: int = 5,
                       sampling: Sequence[float] | None = None, min_size: int = MIN_SIZE) -> np.ndarray:
    """Connected components; optionally split touching objects by a distance-transform watershed.

    ``sampling``: the pixel size along each axis (e.g. ``(z_spacing, 1, 1)`` for a volume whose
    Z steps are ``z_spacing`` times the pixel width), so distances and seeds are anisotropy-aware.
    A volume's regions are merged across shallow saddles (``merge_shallow``); a plane's are not:
    on BBBC007's small touching nuclei the merge cost object F1 (0.972 -> 0.959 from the true masks).
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed
    mask = np.asarray(mask) > 0
    components = _label(mask)
    if not split_touching or not mask.any():
        return drop_small(components, min_size)
    distance = ndi.distance_transform_edt(mask, sampling=sampling)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    if len(peaks):
        markers[tuple(peaks.T)] = _ridge_seeds(distance, peaks, SEED_DEPTH)
    markers = _add_unseeded(markers, mask)
    labels = watershed(-distance, markers, mask=mask).astype(np.int32)
    if mask.ndim == 3:
        labels = merge_shallow(labels, distance)
    return drop_small(labels, min_size)


def linked_axis(n_plane_axes: int, instances_3d: bool | None, z_axis: int | None) -> int | None:
    """The plane axis whose planes are labelled together (Z), or None for per-plane ids.

    ``n_plane_axes``: the leading axes that index planes (1 for Z, Y, X; 2 for T, Z, Y, X).
    ``instances_3d``: False = per plane; None = 3-D when the stack has a Z axis; True = 3-D, which
    a stack of more than one plane axis needs ``z_axis`` for. Without ``z_axis`` only a
    (Z, Y, X) stack has a Z axis (its leading one); a time axis is never linked.
    """
    if instances_3d is False or n_plane_axes == 0:
        return None
    if z_axis is not None:
        if not 0 <= int(z_axis) < n_plane_axes:
            raise BTUnetError(f"z_axis {z_axis} is not one of the stack's {n_plane_axes} plane axes "
                              f"(0..{n_plane_axes - 1}, counted before Y and X)")
        return int(z_axis)
    if n_plane_axes == 1:
        return 0
    if instances_3d:
        raise BTUnetError(f"the stack has {n_plane_axes} plane axes: say which one is Z (z_axis=1 for "
                          "T, Z, Y, X) to label objects in 3-D, or label them per plane")
    return None


def link_planes(volume_labeller: Callable[..., np.ndarray], arrays: Sequence[np.ndarray], z_axis: int,
                n_plane_axes: int) -> np.ndarray:
    """int32 ids of a stack whose Z axis is ``z_axis``: ``volume_labeller(*volumes)`` labels
    each (Z, Y, X) volume (one per index of the other plane axes, e.g. each time point); ids
    are offset so they are unique in the whole stack."""
    shape = arrays[0].shape
    out = np.zeros(shape, np.int32)
    others = [ax for ax in range(n_plane_axes) if ax != z_axis]
    offset = 0
    for rest in np.ndindex(*[shape[ax] for ax in others]):
        index: list = [slice(None)] * len(shape)
        for ax, i in zip(others, rest, strict=True):
            index[ax] = i
        labels = np.asarray(volume_labeller(*(a[tuple(index)] for a in arrays)), np.int32)
        labels[labels > 0] += offset
        offset = max(offset, int(labels.max(initial=0)))
        out[tuple(index)] = labels
    return out


__all__ = ["MIN_SEED", "SEED_DEPTH", "SEPARATIONS", "boundary_instances", "distance_instances", "link_planes",
           "linked_axis", "merge_shallow", "volume_floor"]
