"""A simulated annotator: first strokes, then corrections where the model is wrong.

Used by the painting-loop benchmark, the headless demo and the tests, so all three measure the
same user: round 0 paints a blob inside some objects and short strokes in empty background;
each later round paints a fixed pixel budget of blobs in the largest wrong regions (or, for a
user who follows the uncertainty map, in its brightest regions), with the true label.
People paint differently, so ``first_strokes`` offers round 0 in several ``STYLES``: blobs inside
objects, strokes along them, free-hand scribbles across them, or a hurried few.
"""
from __future__ import annotations

import numpy as np


def scribbles(mask: np.ndarray, n_objects: int = 10, n_strokes: int = 8, seed: int = 0) -> np.ndarray:
    """Round 0 (sparse convention: 1 = background, 2 = object), reproducible by seed.

    A disk (radius <= 5) at the innermost point of up to ``n_objects`` objects, and
    ``n_strokes`` 3-px wide straight strokes of 40 px in background at least 4 px from any object.
    """
    from scipy import ndimage as ndi
    from skimage.draw import disk, line
    rng = np.random.default_rng(seed)
    fg = mask > 0
    inside = ndi.distance_transform_edt(fg)
    outside = ndi.distance_transform_edt(~fg)
    ann = np.zeros(mask.shape, np.uint8)
    ids = np.unique(mask[fg])
    for i in rng.choice(ids, min(n_objects, len(ids)), replace=False):
        d = np.where(mask == i, inside, 0)
        cy, cx = np.unravel_index(np.argmax(d), d.shape)
        r = float(np.clip(d.max() - 2, 1, 5))
        rr, cc = disk((cy, cx), r, shape=mask.shape)
        keep = mask[rr, cc] == i
        ann[rr[keep], cc[keep]] = 2
    safe = outside >= 4
    ys, xs = np.nonzero(safe)
    stroke = np.zeros(mask.shape, bool)
    for _ in range(n_strokes if len(ys) else 0):
        k = rng.integers(len(ys))
        angle = rng.uniform(0, np.pi)
        y1 = int(np.clip(ys[k] + 40 * np.sin(angle), 0, mask.shape[0] - 1))
        x1 = int(np.clip(xs[k] + 40 * np.cos(angle), 0, mask.shape[1] - 1))
        rr, cc = line(int(ys[k]), int(xs[k]), y1, x1)
        stroke[rr, cc] = True
    stroke = ndi.binary_dilation(stroke, iterations=1) & safe
    ann[stroke] = 1
    return ann


def paint_blob(ann: np.ndarray, region: np.ndarray, value: int, radius: int, budget: int) -> int:
    """Paint a disk of ``value`` at the innermost point of ``region`` (inside it, on unpainted
    pixels, at most ``budget`` of them) in place; return how many pixels were painted."""
    from scipy import ndimage as ndi
    inner = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    cy, cx = np.unravel_index(int(np.argmax(inner)), inner.shape)
    yy, xx = np.ogrid[:ann.shape[0], :ann.shape[1]]
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2) & region & (ann == 0)
    idx = np.flatnonzero(disk)[:budget]
    ann.flat[idx] = value
    return len(idx)


def correct(ann: np.ndarray, prediction: np.ndarray, truth: np.ndarray, budget: int = 300,
            radius: int = 4, max_regions: int = 40) -> np.ndarray:
    """One correction round guided by the truth: blobs in the largest false-positive regions
    (painted 1 = background) and false-negative regions (painted 2 = object)."""
    from skimage.measure import label
    ann = ann.copy()
    truth = truth > 0
    regions = []
    for wrong, value in (((prediction > 0) & ~truth, 1), ((prediction == 0) & truth, 2)):
        lab = label(wrong & (ann == 0), connectivity=1)
        sizes = np.bincount(lab.ravel())[1:]
        order = np.argsort(-sizes)[:max_regions]
        regions += [(int(sizes[i]), value, lab == i + 1) for i in order if sizes[i] >= 4]
    regions.sort(key=lambda r: -r[0])
    used = 0
    for _, value, region in regions:
        if used >= budget:
            break
        used += paint_blob(ann, region, value, radius, budget - used)
    return ann


def correct_by_uncertainty(ann: np.ndarray, uncertainty: np.ndarray, truth: np.ndarray, budget: int = 300,
                           radius: int = 4, level: float = 0.5) -> np.ndarray:
    """One round guided by the model's uncertainty map: the user looks where the map is
    brightest and paints what is really there (the majority true label of that region)."""
    from skimage.measure import label
    ann = ann.copy()
    truth = truth > 0
    lab = label((uncertainty >= level) & (ann == 0), connectivity=1)
    mass = np.bincount(lab.ravel(), weights=uncertainty.ravel())[1:]
    used = 0
    for i in np.argsort(-mass):
        if used >= budget:
            break
        region = lab == i + 1
        value = 2 if truth[region].mean() >= 0.5 else 1
        used += paint_blob(ann, region & (truth if value == 2 else ~truth), value, radius, budget - used)
    return ann


STYLES = ("blobs", "along", "scribble", "hurried")


def first_strokes(mask: np.ndarray, style: str = "blobs", seed: int = 0) -> np.ndarray:
    """Round 0 in one of ``STYLES`` (sparse convention), reproducible by seed.

    People paint differently, so the painting loop is measured across styles: "blobs" is
    ``scribbles`` (a disk inside 10 objects, 8 background strokes); "along" paints a 3-px stroke
    along each of up to 10 objects' long axis; "scribble" draws 4 long free-hand polylines across
    objects and gaps, each pixel taking its true label; "hurried" paints 3 disks and 3 strokes.
    ``mask`` holds instance ids (or 0/1, or booleans: then its connected components are the
    objects, except for "blobs", which stays ``scribbles`` exactly).
    """
    if style not in STYLES:
        raise ValueError(f"unknown annotator style {style!r}; allowed: {', '.join(STYLES)}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"first_strokes paints a 2-D mask, got shape {mask.shape}")
    if style == "blobs":
        return scribbles(mask, seed=seed)
    instances = _instances(mask)
    if style == "hurried":
        return scribbles(instances, n_objects=3, n_strokes=3, seed=seed)
    rng = np.random.default_rng(seed)
    if style == "along":
        return _along(instances, rng)
    return _scribble(instances, rng)


def _instances(mask: np.ndarray) -> np.ndarray:
    """Instance ids; a 0/1 or boolean mask is split into its connected components."""
    from skimage.measure import label
    if mask.dtype == bool or mask.max(initial=0) <= 1:
        return label(mask > 0, connectivity=1)
    return mask


def _outside(fg: np.ndarray) -> np.ndarray:
    """Distance to the nearest object (infinite without objects: scipy would measure from a corner)."""
    from scipy import ndimage as ndi
    return ndi.distance_transform_edt(~fg) if fg.any() else np.full(fg.shape, np.inf)


def _background_strokes(fg: np.ndarray, n: int, rng: np.random.Generator, lengths: tuple[float, float]) -> np.ndarray:
    """``n`` 3-px wide straight strokes in background at least 4 px from any object, as in ``scribbles``."""
    from scipy import ndimage as ndi
    from skimage.draw import line
    safe = _outside(fg) >= 4
    ys, xs = np.nonzero(safe)
    stroke = np.zeros(fg.shape, bool)
    for _ in range(n if len(ys) else 0):
        k = rng.integers(len(ys))
        angle, length = rng.uniform(0, np.pi), rng.uniform(*lengths)
        y1 = int(np.clip(ys[k] + length * np.sin(angle), 0, fg.shape[0] - 1))
        x1 = int(np.clip(xs[k] + length * np.cos(angle), 0, fg.shape[1] - 1))
        rr, cc = line(int(ys[k]), int(xs[k]), y1, x1)
        stroke[rr, cc] = True
    return ndi.binary_dilation(stroke, iterations=1) & safe


def _along(instances: np.ndarray, rng: np.random.Generator, n_objects: int = 10, n_strokes: int = 8) -> np.ndarray:
    """A brush stroke along the long axis of some objects, 1 px from their border where they are
    wide enough (the innermost pixels where not), plus background strokes of 40-60 px."""
    from scipy import ndimage as ndi
    from skimage.draw import line
    from skimage.measure import regionprops
    ann = np.zeros(instances.shape, np.uint8)
    props = regionprops(instances)
    for k in rng.choice(len(props), min(n_objects, len(props)), replace=False):
        p = props[k]
        inner = ndi.distance_transform_edt(np.pad(p.image, 1))[1:-1, 1:-1]
        allowed = inner >= 2 if inner.max() >= 2 else inner == inner.max()
        half = p.axis_major_length / 2
        axis = np.array([np.cos(p.orientation), np.sin(p.orientation)])
        ends = [np.clip(np.round(np.array(p.centroid_local) + s * half * axis), 0, np.array(p.image.shape) - 1)
                for s in (-1, 1)]
        stroke = np.zeros(p.image.shape, bool)
        stroke[line(*ends[0].astype(int), *ends[1].astype(int))] = True
        stroke = ndi.binary_dilation(stroke, iterations=1) & allowed
        if not stroke.any():
            stroke = inner == inner.max()
        ann[p.slice][stroke] = 2
    ann[_background_strokes(instances > 0, n_strokes, rng, (40, 60))] = 1
    return ann


def _scribble(instances: np.ndarray, rng: np.random.Generator, n_lines: int = 4) -> np.ndarray:
    """Long free-hand polylines (4-6 segments of 30-80 px) from the middle of a few objects across
    the image; each pixel takes its true label, except within 1 px of a border (left 0)."""
    from scipy import ndimage as ndi
    from skimage.draw import line
    from skimage.segmentation import find_boundaries
    shape = np.array(instances.shape)
    fg = instances > 0
    inside = ndi.distance_transform_edt(fg)
    paintable = ~find_boundaries(instances, connectivity=2, mode="thick")
    ann = np.zeros(instances.shape, np.uint8)

    def innermost(i: int) -> np.ndarray:
        return np.array(np.unravel_index(int(np.argmax(np.where(instances == i, inside, 0))), inside.shape))

    def paint(path: list[np.ndarray]) -> None:
        stroke = np.zeros(instances.shape, bool)
        for a, b in zip(path[:-1], path[1:], strict=True):
            stroke[line(*a.astype(int), *b.astype(int))] = True
        stroke = ndi.binary_dilation(stroke, iterations=1) & paintable
        ann[stroke & fg] = 2
        ann[stroke & ~fg] = 1

    ids = np.unique(instances[fg])
    starts = [innermost(i) for i in rng.choice(ids, min(n_lines, len(ids)), replace=False)]
    starts += [np.array([rng.integers(shape[0]), rng.integers(shape[1])]) for _ in range(n_lines - len(starts))]
    point = starts[0]
    for start in starts:
        path, angle = [start], rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(4, 7)):
            length = rng.uniform(30, 80)
            end = np.round(path[-1] + length * np.array([np.sin(angle), np.cos(angle)]))
            if np.any(end < 0) or np.any(end >= shape):  # turn back at the image border
                angle += np.pi
                end = np.round(path[-1] + length * np.array([np.sin(angle), np.cos(angle)]))
            path.append(np.clip(end, 0, shape - 1))
            angle += rng.uniform(-np.pi / 2, np.pi / 2)
        paint(path)
        point = path[-1]
    if fg.any() and not (ann == 2).any():  # a segment on to the nearest object's middle
        _, (ny, nx) = ndi.distance_transform_edt(~fg, return_indices=True)
        target = innermost(instances[ny[tuple(point.astype(int))], nx[tuple(point.astype(int))]])
        paint([point, target])
        ann[tuple(target)] = 2  # an object too thin to keep 1 px from its border
        point = target
    background = ~fg & paintable
    if background.any() and not (ann == 1).any():  # a segment on to the nearest clear background
        far = _outside(fg) >= 4
        target_region = far if far.any() else background
        _, (ny, nx) = ndi.distance_transform_edt(~target_region, return_indices=True)
        target = np.array([ny[tuple(point.astype(int))], nx[tuple(point.astype(int))]])
        paint([point, target])
        ann[tuple(target)] = 1
    return ann
