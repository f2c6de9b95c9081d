"""Whether an image lies outside what a model knows: its training images' intensity reference.

Every image is normalised by its own percentiles (``normalize.py``), so a model sees the same
cells at the same values only while images are alike. When they are not (cells covering much of
a phase-contrast frame move the 1st percentile from the background into the cells; another
microscope), the same cells map to other values and the model can silently predict nothing.

Fine-tuning keeps, for each training image, the percentiles ``QUANTILES`` of its values *after*
the model's normalisation (what the network saw), and stores per percentile the lowest and the
highest over the training images (``metadata.IntensityReference``). Before predicting, the same
percentiles of the new image, normalised as the prediction normalises it (``planes.plane_layout``),
are compared with that band widened by ``TOLERANCE``. Both sides read an even sample of at most
16 planes and about ``MAX_PIXELS`` pixels (as ``normalize.percentile_range``), never a stack whole,
and a plane above ``normalize.WHOLE_PLANE_PIXELS`` only as random blocks (a 40000 x 40000 zarr
checked before block-wise prediction must not be read whole).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.metadata import IntensityReference, Normalization
from . import normalize
from .planes import PlaneLayout, engine_image, plane_layout

#: The percentiles of the normalised values that describe an image.
QUANTILES = (5, 25, 50, 75, 95)
#: How far (in normalised units: 0 = the image's 1st percentile, 1 = its 99.8th) a percentile may lie
#: outside the training images' band. A tenth of the range: the 5th-50th percentiles (the background)
#: of the 14 BBBC007 images, one acquisition, spread by only 0.015-0.03, while an image whose 1st
#: percentile fell into the cells (phase contrast, PhC-C2DL-PSC: median 0.29 against BBBC007's
#: 0.00-0.03) or an inverted one (median 1.0) lies far outside. The 75th and 95th percentiles also
#: follow how much of the field objects cover (BBBC007, 4.5-20 % nuclei: 0.006-0.14 and 0.21-0.56), so
#: a band from one sparse image flags a crowded image of the same kind.
TOLERANCE = 0.1
#: Only the percentiles up to the median are checked: they describe the background, which covers
#: most of any field. The upper ones follow how much of the field objects cover (the 95th of 13
#: BBBC007 images at 4.5-20 % nuclei lay at 0.42-0.56 against 0.21 for the one trained on), so
#: checking them warned on every sibling of the training image; checking up to the median warned
#: on none of them and on every image of three held-out phase-contrast and bright-field sets.
CHECKED_UP_TO = 50
#: Pixels sampled per image (an even grid over at most 16 planes).
MAX_PIXELS = 1_000_000
MAX_PLANES = 16


class OutsideReferenceWarning(UserWarning):
    """An image's intensities are unlike the model's training images (``outside_reference``)."""


def intensity_quantiles(source, layout: PlaneLayout, quantiles: Sequence[float] = QUANTILES,
                        max_pixels: int = MAX_PIXELS, max_planes: int = MAX_PLANES) -> list[float]:
    """The ``quantiles`` (percent) of ``source``'s model-ready values under ``layout``, from an even
    sample of its planes (the ones ``percentile_range`` reads) and an even grid of their pixels, or,
    for planes above ``normalize.WHOLE_PLANE_PIXELS``, random blocks of them (memory stays bounded)."""
    indices = layout.indices()
    pick = np.unique(np.linspace(0, len(indices) - 1, min(max_planes, len(indices))).astype(int))
    h, w = layout.spatial_shape[-2:]
    step = max(1, math.ceil(math.sqrt(h * w * len(pick) / max_pixels)))
    rng = np.random.default_rng(0)  # the same blocks for every source of this shape
    values = []
    for i in pick:
        index = tuple(int(k) for k in indices[i])
        if h * w > normalize.WHOLE_PLANE_PIXELS:
            plane = normalize.sample_blocks(source, index, h, w, max_pixels // len(pick), rng)
        else:
            plane = source[index]
            plane = np.asarray(plane.compute() if hasattr(plane, "compute") else plane)[::step, ::step]
        if plane.dtype.kind == "f":  # NaN/inf are 0 to the model (normalize_plane); said once, there
            plane = np.where(np.isfinite(plane), plane, layout.lo)
        values.append(layout.pixels(plane).reshape(-1))
    return [float(v) for v in np.percentile(np.concatenate(values), list(quantiles))]


def as_reference(reference) -> IntensityReference | None:
    """A checked ``IntensityReference`` from one, its JSON form, or None."""
    if reference is None or isinstance(reference, IntensityReference):
        return reference
    return IntensityReference.parse(dict(reference))


def training_reference(sources, channels: int, axes: str | None = None, previous: Mapping[str, Any] | None = None,
                       normalization: Normalization | None = None) -> dict | None:
    """The ``intensity_reference`` of a fine-tune on ``sources`` ((name, image) pairs), normalised as
    training normalises them: ``normalization``, the setting the model stores (default: ``Normalization()``).

    ``previous``: the metadata of the model a run continues; its band is widened to cover these
    images too (the union), so it still covers every image trained on. A model trained before btunet
    kept a reference gets none (its first images are unknown), and so never warns.
    """
    previous = previous or {}
    before = as_reference(previous.get("intensity_reference"))
    if before is None and previous.get("trained_on"):
        return None
    quantiles = before.quantiles if before is not None else QUANTILES
    rows = []
    for name, raw in sources:
        image, rgb = engine_image(raw, axes, None, channels, what=f"image {name}")
        layout = plane_layout(image, channels, rgb=rgb, normalization=normalization)
        rows.append(intensity_quantiles(image, layout, quantiles))
    low, high = np.min(rows, axis=0), np.max(rows, axis=0)
    if before is not None:
        low, high = np.minimum(low, before.low), np.maximum(high, before.high)
    return IntensityReference(tuple(quantiles), tuple(np.round(low, 4)), tuple(np.round(high, 4))).as_dict()


def _percentile_name(q: float) -> str:
    if q == 50:
        return "median"
    n = int(q) if q == int(q) else q
    suffix = "th" if not isinstance(n, int) or 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} percentile"


def outside_reference(reference, image, layout: PlaneLayout | None = None, *, channels: int = 1,
                      axes: str | None = None, rgb: bool | None = None,
                      normalization: Normalization | None = None) -> str | None:
    """Why ``image`` lies outside what a model knows, in one line, or None when it does not (or the
    model has no ``reference``: a checkpoint from before btunet kept one).

    ``reference``: a model's ``intensity_reference`` (``IntensityReference`` or its JSON form).
    ``layout``: how the prediction reads ``image`` (``planes.plane_layout``; then ``image`` is in the
    engine's axis order); without it one is made from ``axes`` / ``rgb``, ``channels`` and the
    model's ``normalization``. A percentile up to ``CHECKED_UP_TO`` outside the band of the training
    images widened by ``TOLERANCE`` is reported, the one furthest out.
    """
    reference = as_reference(reference)
    if reference is None:
        return None
    if layout is None:
        image, rgb = engine_image(image, axes, rgb, channels)
        layout = plane_layout(image, channels, rgb=rgb, normalization=normalization)
    values = intensity_quantiles(image, layout, reference.quantiles)
    excess = [max(lo - TOLERANCE - v, v - hi - TOLERANCE) if q <= CHECKED_UP_TO else -1.0
              for q, v, lo, hi in zip(reference.quantiles, values, reference.low, reference.high, strict=True)]
    worst = int(np.argmax(excess))
    if excess[worst] <= 0:
        return None
    return (f"intensities unlike the training images ({_percentile_name(reference.quantiles[worst])} at "
            f"{values[worst]:.2f} of the range, trained {reference.low[worst]:.2f} to {reference.high[worst]:.2f}): "
            "the model may miss objects; train on an image like it")


__all__ = ["CHECKED_UP_TO", "MAX_PIXELS", "OutsideReferenceWarning", "QUANTILES", "TOLERANCE", "as_reference",
           "intensity_quantiles", "outside_reference", "training_reference"]
