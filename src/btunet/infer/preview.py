"""One plane of an image or stack, predicted exactly as predicting the whole stack would (the
live preview while fine-tuning)."""
from __future__ import annotations

import os

import numpy as np

from ..base.device import resolve_device
from ..base.errors import BTUnetError
from ..core.checkpoint import model_metadata
from ..core.metadata import Normalization
from ..pipeline.planes import (
    OVERLAP,
    TILE,
    PlaneLayout,
    as_model,
    check_budget,
    check_model,
    engine_image,
    plane_index,
    predict_plane,
    stack_range,
)
from ..pipeline.thresholds import resolve_threshold
from ..pipeline.uncertainty import stroke_uncertainty
from .predict import Prediction


class Previewer:
    """Predicts single planes of ``image`` (any array ``predict`` takes) on demand.

    A plane is normalised with the whole stack's intensity range, computed once per
    normalisation setting, so a preview of a plane equals that plane of ``predict(model, image)``
    on the eager path (a large job that ``predict`` runs fused agrees to float rounding; the
    preview stays eager so it never waits for an export, ``runtime.py``).
    The model is copied for inference (eval mode, BatchNorm folded), so a model that is still
    training keeps its mode and weights. The last few normalised planes are kept, since the
    plane on screen seldom changes between previews.
    """

    def __init__(self, image, rgb: bool | None = None, keep: int = 4, axes: str | None = None):
        self.image, self.rgb = engine_image(image, axes, rgb)  # plane indices: over the axes' T, Z
        self.keep = keep
        self._ranges: dict[tuple, tuple[float, float]] = {}
        self._planes: dict[tuple, np.ndarray] = {}

    def prepare(self, normalization: Normalization | None = None) -> None:
        """Check the plane size and compute the stack's range now (it reads up to 16 planes),
        instead of in the first preview."""
        self._range(normalization)

    def _range(self, normalization: Normalization | None) -> tuple[float, float]:
        norm = normalization or Normalization()
        key = (norm.low, norm.high)
        if key not in self._ranges:
            check_budget(tuple(self.image.shape), self.rgb)
            self._ranges[key] = stack_range(self.image, self.rgb, norm)
        return self._ranges[key]

    def pixels(self, index: tuple, channels: int, normalization: Normalization | None = None) -> np.ndarray:
        """The normalised (C, Y, X) plane ``index``, as the model sees it."""
        lo, hi = self._range(normalization)
        layout = PlaneLayout(tuple(self.image.shape), self.rgb, channels, lo, hi)
        index = layout.check_index(index)
        key = (index, channels, lo, hi)
        if key not in self._planes:
            pixels = layout.read(self.image, index)
            if len(self._planes) >= self.keep:
                self._planes.pop(next(iter(self._planes)))
            self._planes[key] = pixels
        return self._planes[key]

    def __call__(self, model, index: tuple = (), *, threshold: float | None = None, uncertainty: bool = False,
                 fast: bool = True, device: str | None = None, tile: int = TILE,
                 overlap: int = OVERLAP, forest: np.ndarray | None = None) -> Prediction:
        """Labels (uint8 0/1) and probability of plane ``index`` (``()`` for a 2-D image), plus
        its uncertainty map when asked. ``device``: default the model's own (``auto`` for a path).

        ``forest``: the object probability (Y, X) of this plane from a random forest on the
        strokes (``forest_preview``); with it the map is ``uncertainty.stroke_uncertainty`` (no
        extra prediction), without it the four test-time flips of ``predict(..., uncertainty=True)``.
        """
        index = plane_index(index, tuple(self.image.shape), self.rgb)  # before any work
        if device is None and not isinstance(check_model(model), (str, os.PathLike)):
            dev = next(model.parameters()).device
        else:
            dev = resolve_device(device or "auto")
        net = as_model(model, dev, fast, live=True)
        stored = model_metadata(net)  # the threshold and normalisation, read as predict reads them
        pixels = self.pixels(index, net.in_channels, stored.normalization)
        if forest is not None and np.shape(forest) != pixels.shape[-2:]:
            raise BTUnetError(f"the forest's probability has shape {np.shape(forest)}, the plane {pixels.shape[-2:]}")
        flips = uncertainty and forest is None
        result = predict_plane(net, pixels, tile=tile, overlap=overlap, fast=fast, uncertainty=flips)
        prob, doubt = result if flips else (result, None)
        if uncertainty and forest is not None:
            doubt = stroke_uncertainty(forest)
        threshold = resolve_threshold(stored.threshold, threshold)  # the given one, else the model's
        return Prediction((prob > threshold).astype(np.uint8), prob, doubt)


def preview(model, image, index: tuple = (), *, rgb: bool | None = None, **options) -> Prediction:
    """Plane ``index`` of ``image``, predicted as ``predict(model, image)`` predicts it.

    ``options``: as :meth:`Previewer.__call__`. Use a :class:`Previewer` for repeated previews
    of one image (it computes the stack's range once).
    """
    return Previewer(image, rgb)(model, index, **options)


__all__ = ["Previewer", "preview"]
