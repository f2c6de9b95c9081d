"""Prediction of any image size and any stack: tiled, blended, streamed plane by plane."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from .checkpoint import model_metadata
from .config import OVERLAP, TILE, PredictConfig
from .device import resolve_device
from .errors import Cancelled
from .imageio import is_rgb, plane_indices, spatial_shape, stack_writer
from .models import SegmentationModel
from .planes import as_model, check_budget, plane_layout, predict_plane
from .planes import FLIPS, predict_logits, uncertainty_map  # noqa: F401  (re-exported for callers of btunet.predict)

__all__ = ["OVERLAP", "TILE", "Prediction", "PredictConfig", "instance_labels", "iter_predict", "predict",
           "predict_logits", "predict_to_tiff", "uncertainty_map"]


def instance_labels(mask: np.ndarray, split_touching: bool = True, min_distance: int = 5) -> np.ndarray:
    """Connected components; optionally split touching objects by a distance-transform watershed."""
    from scipy import ndimage as ndi
    from skimage.measure import label
    from skimage.segmentation import watershed
    if not split_touching:
        return label(mask, connectivity=1).astype(np.int32)
    from skimage.feature import peak_local_max
    distance = ndi.distance_transform_edt(mask)
    components = label(mask, connectivity=1)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (tiny objects) keep their own id
    missing = np.setdiff1d(np.unique(components[mask > 0]), np.unique(components[tuple(peaks.T)]))
    for i, comp in enumerate(missing, start=len(peaks) + 1):
        markers[components == comp] = i
    return watershed(-distance, markers, mask=mask).astype(np.int32)


@dataclass
class Prediction:
    labels: np.ndarray                    # uint8 0/1, or int32 instance ids
    probabilities: Optional[np.ndarray]   # float32 object probability, when asked for
    uncertainty: Optional[np.ndarray] = None  # float32, 0 = certain, 1 = a coin toss (test-time flips)


def iter_predict(model: "SegmentationModel | str | os.PathLike", image,
                 config: Optional[PredictConfig] = None, *, rgb: Optional[bool] = None,
                 **overrides) -> Iterator[tuple]:
    """Yield (plane index, probability, labels) plane by plane; only one plane is in memory.

    ``config`` / keyword ``overrides``: see ``PredictConfig``. With ``uncertainty`` each item has a
    fourth element, the plane's uncertainty map (four times the network time). Instance ids are
    unique across the whole stack.
    """
    cfg = PredictConfig.of(config, **overrides)
    net = as_model(model, resolve_device(cfg.device), cfg.fast)
    stored = model_metadata(net)  # the threshold and normalisation the model was trained with
    threshold = stored.threshold if cfg.threshold is None else cfg.threshold
    layout = plane_layout(image, net.in_channels, rgb=rgb, normalization=stored.normalization)
    offset = 0
    for index, pixels in layout.planes(image):
        result = predict_plane(net, pixels, tile=cfg.tile, overlap=cfg.overlap, fast=cfg.fast,
                               uncertainty=cfg.uncertainty, tile_batch=cfg.tile_batch)
        prob, doubt = result if cfg.uncertainty else (result, None)
        mask = prob > threshold
        if cfg.instances:
            labels = instance_labels(mask, cfg.split_touching, cfg.min_distance)
            labels[labels > 0] += offset
            offset = max(offset, int(labels.max(initial=0)))
        else:
            labels = mask.astype(np.uint8)
        item = (index, prob.astype(np.float32, copy=False), labels)
        yield item + (doubt,) if cfg.uncertainty else item


def predict(model: "SegmentationModel | str | os.PathLike", image, config: Optional[PredictConfig] = None, *,
            rgb: Optional[bool] = None, on_progress: Optional[Callable[[int, int], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None, out: Optional[np.ndarray] = None,
            **overrides) -> Prediction:
    """Segment a 2-D image or an N-D stack (last two axes spatial; a trailing RGB axis is allowed).

    ``model``: a model object or a checkpoint path. ``image``: numpy, memmap, dask or zarr
    array, read one plane at a time. ``config``: a ``PredictConfig``; keyword ``overrides``
    change single settings (``predict(m, image, threshold=0.7, instances=True)``); the threshold
    defaults to the one stored with the model. ``out``: optional array (e.g. a memmap) for the
    labels. Instance ids are unique across the whole stack. ``should_stop`` raises ``Cancelled``.
    """
    cfg = PredictConfig.of(config, **overrides)
    rgb = is_rgb(image) if rgb is None else rgb
    check_budget(image.shape, rgb)  # before the outputs are allocated
    shape = spatial_shape(image, rgb)
    n = len(plane_indices(image, rgb))
    labels = out if out is not None else np.zeros(shape, np.int32 if cfg.instances else np.uint8)
    probs = np.zeros(shape, np.float32) if cfg.probabilities else None
    doubts = np.zeros(shape, np.float32) if cfg.uncertainty else None
    for done, item in enumerate(iter_predict(model, image, cfg, rgb=rgb), 1):
        index, prob, lab = item[:3]
        labels[index] = lab
        if probs is not None:
            probs[index] = prob
        if doubts is not None:
            doubts[index] = item[3]
        if on_progress is not None:
            on_progress(done, n)
        if should_stop is not None and should_stop() and done < n:
            raise Cancelled(f"prediction cancelled after {done} of {n} planes")
    return Prediction(labels, probs, doubts)


def predict_to_tiff(model: "SegmentationModel | str | os.PathLike", image, labels_path: "str | os.PathLike",
                    probabilities_path: "str | os.PathLike | None" = None, *, rgb: Optional[bool] = None,
                    uncertainty_path: "str | os.PathLike | None" = None,
                    on_progress: Optional[Callable[[int, int], None]] = None,
                    config: Optional[PredictConfig] = None, **options) -> None:
    """Segment ``image`` straight into TIFF files, one plane at a time.

    Memory stays at a few planes however long the stack is (with a lazy ``image`` such as
    ``imageio.read_lazy``). Files appear atomically when complete. ``config`` / ``options``: as
    ``predict`` (``uncertainty`` is decided by ``uncertainty_path``).
    """
    options.pop("uncertainty", None)
    cfg = PredictConfig.of(config, **options, uncertainty=uncertainty_path is not None)
    rgb = is_rgb(image) if rgb is None else rgb
    check_budget(image.shape, rgb)  # before any file is started
    shape = spatial_shape(image, rgb)
    n = len(plane_indices(image, rgb))
    label_dtype = np.int32 if cfg.instances else np.uint8
    with contextlib.ExitStack() as files:
        put_labels = files.enter_context(stack_writer(labels_path, shape, label_dtype))
        put_prob = (files.enter_context(stack_writer(probabilities_path, shape, np.float32))
                    if probabilities_path is not None else None)
        put_doubt = (files.enter_context(stack_writer(uncertainty_path, shape, np.float32))
                     if uncertainty_path is not None else None)
        items = iter_predict(model, image, cfg, rgb=rgb)
        for done, item in enumerate(items, 1):
            put_labels(item[2])
            if put_prob is not None:
                put_prob(item[1])
            if put_doubt is not None:
                put_doubt(item[3])
            if on_progress is not None:
                on_progress(done, n)
