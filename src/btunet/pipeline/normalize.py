"""Intensity normalisation, shared by training and prediction so both see the same values.

Two rules: ``percentile`` maps the whole image's 1st and 99.8th percentiles to [0, 1];
``background`` maps its background peak (the most common intensity) to 0 and its 99.8th
percentile to 1, so the fraction of the field that objects cover does not move the values.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..io.imageio import is_rgb, iter_planes, plane_indices

#: The default, stored in every checkpoint so prediction repeats what training did.
DEFAULT_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.8}


#: Planes of more pixels than this are sampled in ``WINDOW`` x ``WINDOW`` blocks at seeded random
#: places instead of being read whole: a 40000 x 40000 plane read whole for its percentiles took
#: 1.6 GB (uint8) and then 6 GB as float32, in a block-wise prediction meant to hold one block.
#: Up to this size a plane is read whole (64 MB of 32-bit pixels at most) and strided, as ever.
WHOLE_PLANE_PIXELS = 4096 * 4096
#: Side of a sampled block: each touches at most four zarr / TIFF chunks of 256 px or more, so a
#: sample reads few chunks, and 2 million pixels still come from ~30 places spread over the plane.
WINDOW = 256


def sample_values(array, rgb: bool | None = None, max_planes: int = 16, max_pixels: int = 2_000_000) -> np.ndarray:
    """The finite values of an even subsample of a whole image's or stack's planes.

    Whole-stack (not per-plane) statistics keep empty planes dark instead of stretching their
    noise; sampling keeps this cheap for stacks that do not fit in memory. A plane above
    ``WHOLE_PLANE_PIXELS`` is never read whole: random blocks of it (the same for every source of
    that shape, in memory or block-wise) give its share of the sample.
    """
    indices = plane_indices(array, rgb)
    pick = np.unique(np.linspace(0, len(indices) - 1, min(max_planes, len(indices))).astype(int))
    h, w = (int(n) for n in (array.shape[:-1] if (is_rgb(array) if rgb is None else rgb) else array.shape)[-2:])
    rng = np.random.default_rng(0)  # the same blocks for every source of this shape
    values = []
    for i in pick:
        index = tuple(indices[i])
        flat = (sample_blocks(array, index, h, w, max_pixels // len(pick), rng) if h * w > WHOLE_PLANE_PIXELS
                else _read(array[index])).reshape(-1)
        step = max(1, flat.size * len(pick) // max_pixels)
        values.append(flat[::step].astype(np.float32))
    values = np.concatenate(values)
    return values[np.isfinite(values)]


def _read(part) -> np.ndarray:
    return np.asarray(part.compute() if hasattr(part, "compute") else part)


def sample_blocks(array, index: tuple, h: int, w: int, pixels: int, rng: np.random.Generator) -> np.ndarray:
    """About ``pixels`` raw pixels of the ``h`` x ``w`` plane ``index``, as ``WINDOW``-sided blocks at
    random places stacked along Y (a colour axis kept): each block is read alone, so a lazy source
    reads only the chunks under it, whatever the plane's size."""
    bh, bw = min(WINDOW, h), min(WINDOW, w)
    count = max(1, -(-pixels // (bh * bw)))
    ys, xs = rng.integers(0, h - bh + 1, count), rng.integers(0, w - bw + 1, count)
    return np.concatenate([_read(array[index + (slice(y, y + bh), slice(x, x + bw))])
                           for y, x in zip(ys.tolist(), xs.tolist(), strict=True)])


def percentile_range(array, rgb: bool | None = None, low: float = 1.0, high: float = 99.8,
                     max_planes: int = 16, max_pixels: int = 2_000_000) -> tuple[float, float]:
    """Intensity range of a whole image or stack: its ``low`` and ``high`` percentiles."""
    finite = sample_values(array, rgb, max_planes, max_pixels)
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:  # constant image
        hi = lo + 1.0
    return float(lo), float(hi)


def background_peak(values: np.ndarray, bins: int = 256) -> float:
    """The most common intensity (the peak of a lightly smoothed histogram between the 0.1st and
    99.9th percentiles): the background level in most microscopy images.

    Unlike a low percentile, it stays where it is whatever fraction of the field objects cover,
    darker (phase contrast) or brighter (fluorescence) than the background, as long as the
    background is the largest population of alike pixels.
    """
    from scipy.ndimage import gaussian_filter1d
    lo, hi = np.percentile(values, [0.1, 99.9])
    if hi <= lo:
        return float(lo)
    counts, edges = np.histogram(values, bins, (lo, hi))
    peak = int(np.argmax(gaussian_filter1d(counts.astype(np.float64), 2.0)))
    return float((edges[peak] + edges[peak + 1]) / 2)


def background_range(array, rgb: bool | None = None, high: float = 99.8,
                     max_planes: int = 16, max_pixels: int = 2_000_000) -> tuple[float, float]:
    """Intensity range anchored on the background: (background peak, ``high`` percentile).

    The same cells map to the same values in a sparse and a crowded field, and a gain or offset
    of the raw intensities moves both ends alike.
    """
    finite = sample_values(array, rgb, max_planes, max_pixels)
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = background_peak(finite), float(np.percentile(finite, high))
    if hi <= lo:  # constant image, or objects darker than a background at the top of the range
        spread = float(np.percentile(finite, 99.8) - np.percentile(finite, 0.2))
        hi = lo + (spread if spread > 0 else 1.0)
    return float(lo), float(hi)


def normalize_plane(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] to [0, 1] (values outside are kept, not clipped); NaN/inf become 0."""
    out = (np.asarray(plane, dtype=np.float32) - lo) / (hi - lo)
    if not np.isfinite(out).all():
        warnings.warn("image contains NaN or infinite values; they are treated as background (0)",
                      stacklevel=2)
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out


__all__ = ["DEFAULT_NORMALIZATION", "WHOLE_PLANE_PIXELS", "WINDOW", "background_peak", "background_range",
           "iter_planes", "normalize_plane", "percentile_range", "sample_blocks", "sample_values"]
