"""A simulated annotator: first strokes, then corrections where the model is wrong.

Used by the painting-loop benchmark, the headless demo and the tests, so all three measure the
same user: round 0 paints a blob inside some objects and short strokes in empty background;
each later round paints a fixed pixel budget of blobs in the largest wrong regions (or, for a
user who follows the uncertainty map, in its brightest regions), with the true label.
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
