"""Percentile normalisation, shared by training and prediction so both see the same values."""
from __future__ import annotations

import warnings

import numpy as np

from .imageio import iter_planes, plane_indices

#: The default, stored in every checkpoint so prediction repeats what training did.
DEFAULT_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.8}


def percentile_range(array, rgb: bool | None = None, low: float = 1.0, high: float = 99.8,
                     max_planes: int = 16, max_pixels: int = 2_000_000) -> tuple[float, float]:
    """Intensity range of a whole image or stack from an even subsample of its planes.

    Whole-stack (not per-plane) statistics keep empty planes dark instead of stretching their
    noise; sampling keeps this cheap for stacks that do not fit in memory.
    """
    indices = plane_indices(array, rgb)
    pick = np.unique(np.linspace(0, len(indices) - 1, min(max_planes, len(indices))).astype(int))
    values = []
    for i in pick:
        plane = np.asarray(array[indices[i]])
        if hasattr(plane, "compute"):
            plane = plane.compute()
        flat = plane.reshape(-1).astype(np.float32)
        step = max(1, flat.size * len(pick) // max_pixels)
        values.append(flat[::step])
    values = np.concatenate(values)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:  # constant image
        hi = lo + 1.0
    return float(lo), float(hi)


def normalize_plane(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] to [0, 1] (values outside are kept, not clipped); NaN/inf become 0."""
    out = (np.asarray(plane, dtype=np.float32) - lo) / (hi - lo)
    if not np.isfinite(out).all():
        warnings.warn("image contains NaN or infinite values; they are treated as background (0)",
                      stacklevel=2)
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out


__all__ = ["DEFAULT_NORMALIZATION", "percentile_range", "normalize_plane", "iter_planes"]
