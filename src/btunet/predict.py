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
from .heads import class_image, head_of
from .instances import boundary_instances, distance_instances
from .runtime import fused_setup
from .planes import as_image, as_model, check_budget, object_probability, plane_layout, plane_outputs
from .planes import FLIPS, predict_logits, uncertainty_map  # noqa: F401  (re-exported for callers of btunet.predict)

__all__ = ["OVERLAP", "TILE", "Prediction", "PredictConfig", "instance_labels", "iter_predict", "predict",
           "predict_logits", "predict_to_tiff", "uncertainty_map"]


def instance_labels(mask: np.ndarray, split_touching: bool = True, min_distance: int = 5) -> np.ndarray:
    """Connected components; optionally split touching objects by a distance-transform watershed."""
    return distance_instances(mask, split_touching, min_distance)


@dataclass
class Prediction:
    labels: np.ndarray                    # uint8 0/1 (a class model: 0 = background, k = class k), or int32 instance ids
    probabilities: Optional[np.ndarray]   # float32 object probability, when asked for
    uncertainty: Optional[np.ndarray] = None  # float32, 0 = certain, 1 = a coin toss (test-time flips)
    class_probabilities: Optional[np.ndarray] = None  # float32 (K+1, ...): background, class 1..K


def plane_result(net: SegmentationModel, pixels: np.ndarray, cfg: PredictConfig, threshold: float) -> dict:
    """Probability, labels (and uncertainty, class probabilities) of one plane.

    Labels: instance ids with ``cfg.instances`` (from the learnt boundary when the model has
    one, else a distance-transform watershed), a class image for a class model, else 0/1.
    """
    spec = head_of(net)
    opts = dict(tile=cfg.tile, overlap=cfg.overlap, fast=cfg.fast, tile_batch=cfg.tile_batch)
    out = {"uncertainty": None, "classes": None}
    outputs = plane_outputs(net, pixels, **opts) if spec.channels > 1 else None
    if cfg.uncertainty:
        first, out["uncertainty"] = uncertainty_map(net, pixels, **opts)
    if outputs is not None:
        prob, out["classes"] = outputs["object"], outputs["classes"]
    else:
        prob = first if cfg.uncertainty else object_probability(net, pixels, **opts)
    mask = prob > threshold
    if cfg.instances and spec.boundary and cfg.split_touching:
        labels = boundary_instances(prob, outputs["boundary"], threshold)
    elif cfg.instances:
        labels = distance_instances(mask, cfg.split_touching, cfg.min_distance)
    elif out["classes"] is not None:
        labels = class_image(out["classes"], mask)
    else:
        labels = mask.astype(np.uint8)
    out.update(probability=prob.astype(np.float32, copy=False), labels=labels)
    return out


def iter_predict(model: "SegmentationModel | str | os.PathLike", image,
                 config: Optional[PredictConfig] = None, *, rgb: Optional[bool] = None,
                 **overrides) -> Iterator[tuple]:
    """Yield (plane index, probability, labels) plane by plane; only one plane is in memory.

    ``config`` / keyword ``overrides``: see ``PredictConfig``. With ``uncertainty`` each item has a
    fourth element, the plane's uncertainty map (four times the network time). Instance ids are
    unique across the whole stack.
    """
    cfg = PredictConfig.of(config, **overrides)
    image = as_image(image)
    for index, out in _results(model, image, cfg, rgb):
        item = (index, out["probability"], out["labels"])
        yield item + (out["uncertainty"],) if cfg.uncertainty else item


def _results(model, image, cfg: PredictConfig, rgb: Optional[bool]) -> Iterator[tuple[tuple, dict]]:
    net = as_model(model, resolve_device(cfg.device), cfg.fast)
    stored = model_metadata(net)  # the threshold and normalisation the model was trained with
    threshold = stored.threshold if cfg.threshold is None else cfg.threshold
    layout = plane_layout(image, net.in_channels, rgb=rgb, normalization=stored.normalization)
    net, cfg = fused_setup(net, cfg, int(np.prod(layout.spatial_shape)))
    offset = 0
    for index, pixels in layout.planes(image):
        out = plane_result(net, pixels, cfg, threshold)
        if cfg.instances:
            labels = out["labels"]
            labels[labels > 0] += offset
            offset = max(offset, int(labels.max(initial=0)))
        yield index, out


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
    image = as_image(image)
    rgb = is_rgb(image) if rgb is None else rgb
    check_budget(image.shape, rgb)  # before the outputs are allocated
    shape = spatial_shape(image, rgb)
    n = len(plane_indices(image, rgb))
    labels = out if out is not None else np.zeros(shape, np.int32 if cfg.instances else np.uint8)
    probs = np.zeros(shape, np.float32) if cfg.probabilities else None
    doubts = np.zeros(shape, np.float32) if cfg.uncertainty else None
    classes = None
    for done, (index, item) in enumerate(_results(model, image, cfg, rgb), 1):
        labels[index] = item["labels"]
        if probs is not None:
            probs[index] = item["probability"]
        if doubts is not None:
            doubts[index] = item["uncertainty"]
        if cfg.class_probabilities and item["classes"] is not None:
            if classes is None:
                classes = np.zeros((len(item["classes"]),) + tuple(shape), np.float32)
            classes[(slice(None),) + tuple(index)] = item["classes"]
        if on_progress is not None:
            on_progress(done, n)
        if should_stop is not None and should_stop() and done < n:
            raise Cancelled(f"prediction cancelled after {done} of {n} planes")
    return Prediction(labels, probs, doubts, classes)


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
    image = as_image(image)
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
