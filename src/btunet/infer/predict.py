"""Prediction of any image size and any stack: tiled, blended, streamed plane by plane.

Instance ids of a stack with a Z axis are 3-D (``PredictConfig.instances_3d``): the planes are
predicted one by one as always, then each (Z, Y, X) volume of object probabilities is labelled
as a whole, so an object keeps one id through its planes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..base.device import resolve_device
from ..base.errors import BTUnetError, Cancelled
from ..core.checkpoint import model_metadata
from ..core.config import OVERLAP, TILE, PredictConfig
from ..core.metadata import CheckpointMetadata
from ..core.model_check import check_model
from ..io.axes import declared, z_axis_of
from ..io.imageio import is_rgb, plane_indices, spatial_shape, stack_writer
from ..labels.heads import class_image, head_of
from ..labels.instances import MIN_SIZE, boundary_instances, distance_instances, link_planes, linked_axis, volume_floor
from ..models import SegmentationModel
from ..models.runtime import fused_setup
from ..pipeline.planes import (  # noqa: F401  (re-exported for callers of btunet.predict)
    FLIPS,
    as_image,
    as_model,
    check_budget,
    engine_image,
    flip_entropy,
    flipped_outputs,
    mean_output,
    plane_layout,
    plane_outputs,
    predict_logits,
    uncertainty_map,
)
from ..pipeline.reference import OutsideReferenceWarning, outside_reference
from ..pipeline.thresholds import resolve_threshold

__all__ = ["OVERLAP", "TILE", "OutsideReferenceWarning", "Prediction", "PredictConfig", "instance_labels",
           "iter_predict", "predict", "predict_logits", "predict_to_tiff", "uncertainty_map"]


def instance_labels(mask: np.ndarray, split_touching: bool = True, min_distance: int = 5,
                    min_size: int = MIN_SIZE) -> np.ndarray:
    """Connected components; optionally split touching objects by a distance-transform watershed;
    objects below ``min_size`` px dropped."""
    return distance_instances(mask, split_touching, min_distance, min_size=min_size)


@dataclass
class Prediction:
    labels: np.ndarray  # uint8 0/1 (a class model: 0 = background, k = class k), or int32 instance ids
    probabilities: np.ndarray | None   # float32 object probability, when asked for
    uncertainty: np.ndarray | None = None  # float32, 0 = certain, 1 = a coin toss (test-time flips)
    class_probabilities: np.ndarray | None = None  # float32 (K+1, ...): background, class 1..K
    #: why the image lies outside what the model knows (``btunet.pipeline.reference``), or None
    outside_reference: str | None = None


def by_borders(cfg: PredictConfig, has_boundary: bool) -> bool:
    """Whether touching objects are split along the model's learnt borders (``separation.py``)."""
    return cfg.split_touching and has_boundary and cfg.separate_by != "distance"


def separation_for(cfg: PredictConfig, stored: CheckpointMetadata) -> PredictConfig:
    """``cfg`` with the way of separating objects settled: the one asked for, else the model's."""
    if cfg.separate_by == "boundary" and stored.instances != "boundary":
        raise BTUnetError("separate_by='boundary' needs a model with learnt borders (fine-tuned with "
                          "instances='boundary', or on instance masks with instances='auto'); "
                          "this one has none: use 'distance'")
    return dataclasses.replace(cfg, separate_by=cfg.separate_by or stored.separate_by)


def plane_result(net: SegmentationModel, pixels: np.ndarray, cfg: PredictConfig, threshold: float,
                 label_instances: bool = True, min_size: int = MIN_SIZE) -> dict:
    """Probability, labels (and uncertainty, class probabilities, boundary probability) of one plane.

    Labels: instance ids with ``cfg.instances`` and ``label_instances`` (split as
    ``cfg.separate_by`` says: the learnt boundary or a distance-transform watershed), a class
    image for a class model, else 0/1 (also when the instances are labelled later, in 3-D).
    """
    spec = head_of(net)
    opts = {"tile": cfg.tile, "overlap": cfg.overlap, "fast": cfg.fast, "tile_batch": cfg.tile_batch}
    out = {"uncertainty": None}

    def outputs_of(p: np.ndarray) -> dict:
        return plane_outputs(net, p, **opts)

    if cfg.tta or cfg.uncertainty:  # one set of four flips serves both
        flips = flipped_outputs(outputs_of, pixels)
        outputs = mean_output(flips) if cfg.tta else flips[0]
        if cfg.uncertainty:
            out["uncertainty"] = flip_entropy([f["object"] for f in flips])
    else:
        outputs = outputs_of(pixels)
    prob, out["classes"] = outputs["object"], outputs["classes"]
    mask = prob > threshold
    out["boundary"] = outputs["boundary"]
    if cfg.instances and label_instances and by_borders(cfg, spec.boundary):
        labels = boundary_instances(prob, outputs["boundary"], threshold, min_size=min_size)
    elif cfg.instances and label_instances:
        labels = distance_instances(mask, cfg.split_touching, cfg.min_distance, min_size=min_size)
    elif out["classes"] is not None:
        labels = class_image(out["classes"], mask)
    else:
        labels = mask.astype(np.uint8)
    out.update(probability=prob.astype(np.float32, copy=False), labels=labels)
    return out


def iter_predict(model: SegmentationModel | str | os.PathLike, image,
                 config: PredictConfig | None = None, *, rgb: bool | None = None,
                 axes: str | None = None, **overrides) -> Iterator[tuple]:
    """Yield (plane index, probability, labels) plane by plane; only one plane is in memory.

    ``config`` / keyword ``overrides``: see ``PredictConfig``. With ``uncertainty`` each item has a
    fourth element, the plane's uncertainty map (four times the network time). Instance ids are
    labelled per plane (streaming keeps no other plane) and unique across the whole stack; ids
    linked through Z need the whole stack: ``predict``. ``axes``: as ``predict``. An image unlike
    the model's training images gives one ``OutsideReferenceWarning`` with the first plane.
    """
    cfg = PredictConfig.of(config, **overrides)
    for done, (index, out) in enumerate(_per_plane(model, image, cfg, rgb, axes)):
        if done == 0 and out["outside_reference"]:
            warnings.warn(out["outside_reference"], OutsideReferenceWarning, stacklevel=2)
        item = (index, out["probability"], out["labels"])
        yield item + (out["uncertainty"],) if cfg.uncertainty else item


def _per_plane(model, image, cfg: PredictConfig, rgb: bool | None, axes: str | None = None
               ) -> Iterator[tuple[tuple, dict]]:
    """``iter_predict`` without its warning: (index, outputs) with instance ids per plane."""
    if cfg.instances and cfg.instances_3d:
        raise BTUnetError("iter_predict labels instances plane by plane; use predict() for 3-D ids "
                          "or instances_3d=False")
    image, axes, _ = file_declared(model, image, axes, rgb)  # ids per plane: no Z spacing
    image, rgb = engine_image(image, axes, rgb, _channels(check_model(model)))
    return _results(model, image, dataclasses.replace(cfg, instances_3d=False), rgb)


def _channels(model) -> int | None:
    """A model object's input channels (None for a checkpoint path, not read here)."""
    return getattr(model, "in_channels", None)


def z_axis_of_stack(image, cfg: PredictConfig, rgb: bool | None = None) -> int | None:
    """The plane axis whose planes ``predict`` labels together (Z), or None for per-plane ids."""
    if not cfg.instances:
        return None
    rgb = is_rgb(image) if rgb is None else rgb
    return linked_axis(len(spatial_shape(image, rgb)) - 2, cfg.instances_3d, cfg.z_axis)


def _label_stack(prob: np.ndarray, boundary: np.ndarray | None, threshold: float, cfg: PredictConfig,
                 z_axis: int, min_size: int) -> np.ndarray:
    """int32 ids of every (Z, Y, X) volume of a stack's probabilities, unique in the stack; a
    model's floor (px) becomes voxels (``instances.volume_floor``) unless the caller set one."""
    sampling = (cfg.z_spacing, 1.0, 1.0)
    if cfg.min_size is None:
        min_size = volume_floor(min_size, cfg.z_spacing, prob.shape[z_axis])

    def volume(p: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        if b is not None and by_borders(cfg, True):
            return boundary_instances(p, b, threshold, min_size=min_size)
        return distance_instances(p > threshold, cfg.split_touching, cfg.min_distance, sampling, min_size)

    arrays = [prob] if boundary is None else [prob, boundary]
    return link_planes(volume, arrays, z_axis, prob.ndim - 2)


def with_axes(cfg: PredictConfig, axes: str | None) -> PredictConfig:
    """Instances follow the named axes: ids linked through Z where there is one, per plane where
    the stack has only T (a time axis is never linked); unnamed stacks keep the config's rule."""
    if not axes or not cfg.instances or cfg.instances_3d is False or cfg.z_axis is not None:
        return cfg
    z = z_axis_of(axes)
    if z is None:
        return dataclasses.replace(cfg, instances_3d=False)
    return dataclasses.replace(cfg, z_axis=z)


def file_declared(model, image, axes: str | None, rgb: bool | None) -> tuple:
    """(image, axes, Z spacing or None): a file path opened, with the axes and Z spacing it declares
    (``axes.declared``, as ``btunet predict`` reads them); axes or ``rgb`` the caller names win."""
    if not isinstance(image, (str, os.PathLike)):
        return image, axes, None
    channels = _channels(check_model(model))  # a wrong model is named before the file is read
    opened = as_image(image)
    said = declared(image, opened.shape, channels)
    return opened, said.axes if axes is None and rgb is None else axes, said.z_spacing


def settings_of(config: PredictConfig | None, overrides: dict, model, image, axes: str | None,
                rgb: bool | None) -> tuple[PredictConfig, object, str | None]:
    """(settings, image, axes): ``PredictConfig.of`` checked first, then a file path's own axes
    and Z spacing (``file_declared``); a Z spacing the caller set (a ``z_spacing`` keyword, or a
    config whose value is not the default) wins over the file's."""
    cfg = PredictConfig.of(config, **overrides)
    image, axes, z_spacing = file_declared(model, image, axes, rgb)
    given = "z_spacing" in overrides or (config is not None and config.z_spacing != PredictConfig.z_spacing)
    if z_spacing is not None and not given:
        cfg = dataclasses.replace(cfg, z_spacing=z_spacing)
    return with_axes(cfg, axes), image, axes


def _results(model, image, cfg: PredictConfig, rgb: bool | None) -> Iterator[tuple[tuple, dict]]:
    net = as_model(model, resolve_device(cfg.device), cfg.fast)
    stored = model_metadata(net)  # the threshold and normalisation the model was trained with
    threshold = resolve_threshold(stored.threshold, cfg.threshold)
    min_size = stored.min_size if cfg.min_size is None else cfg.min_size
    cfg = separation_for(cfg, stored)
    layout = plane_layout(image, net.in_channels, rgb=rgb, normalization=stored.normalization)
    unlike = outside_reference(stored.intensity_reference, image, layout)  # the same values the model sees
    per_plane = z_axis_of_stack(image, cfg, rgb) is None
    net, cfg = fused_setup(net, cfg, int(np.prod(layout.spatial_shape)))
    offset = 0
    try:
        for index, pixels in layout.planes(image):
            out = plane_result(net, pixels, cfg, threshold, label_instances=per_plane, min_size=min_size)
            out["threshold"], out["min_size"], out["separate_by"] = threshold, min_size, cfg.separate_by
            out["outside_reference"] = unlike
            if cfg.instances and per_plane:
                labels = out["labels"]
                labels[labels > 0] += offset
                offset = max(offset, int(labels.max(initial=0)))
            yield index, out
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        h, w = layout.spatial_shape[-2:]
        raise BTUnetError(f"out of memory predicting a plane of {h} x {w} pixels (tile {cfg.tile}); predict it "
                          "block by block with `btunet predict --zarr` (btunet.infer.chunked.predict_chunked), or "
                          "with a smaller tile (PredictConfig.tile)") from exc


def out_of_memory(exc: BaseException) -> bool:
    """An allocation that failed: numpy's MemoryError, torch's CPU allocator or CUDA memory, or
    ONNX Runtime's (whose errors are plain Exceptions carrying the allocator's words)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) or type(exc).__module__.startswith("onnxruntime"):
        return any(words in text for words in ("defaultcpuallocator", "out of memory", "bad_alloc",
                                               "bad allocation", "failed to allocate"))
    return False


def predict(model: SegmentationModel | str | os.PathLike, image, config: PredictConfig | None = None, *,
            rgb: bool | None = None, axes: str | None = None, on_progress: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None, out: np.ndarray | None = None,
            **overrides) -> Prediction:
    """Segment a 2-D image or an N-D stack (last two axes spatial; a trailing RGB axis is allowed).

    ``model``: a model object or a checkpoint path. ``image``: numpy, memmap, dask or zarr
    array, read one plane at a time. ``config``: a ``PredictConfig``; keyword ``overrides``
    change single settings (``predict(m, image, threshold=0.7, instances=True)``); the threshold
    defaults to the one stored with the model. ``out``: optional array (e.g. a memmap) for the
    labels. Instance ids are unique across the whole stack; on a stack with a Z axis they are 3-D
    (``instances_3d``, ``z_axis``, ``z_spacing``: one id per object through its planes; named
    ``axes`` say which axis is Z, and a stack with only T is labelled per plane).
    ``should_stop`` raises ``Cancelled``. An image unlike the model's training images (``btunet.pipeline.reference``)
    gives one ``OutsideReferenceWarning`` and sets ``Prediction.outside_reference`` to the reason.
    ``axes``: what each axis of ``image`` is (``btunet.io.axes``, e.g. "TZYX", "CYX"; default: a
    trailing 3 or 4 is colour, the rest planes); the outputs have the same axes without C.
    A file path's own axes and Z spacing (OME-TIFF, ImageJ, OME-Zarr: ``btunet.io.axes.declared``)
    are used as ``btunet predict`` uses them, unless ``axes``, ``rgb`` or ``z_spacing`` are given.
    """
    result = _predict(model, image, config, rgb=rgb, axes=axes, on_progress=on_progress, should_stop=should_stop,
                      out=out, **overrides)
    if result.outside_reference:
        warnings.warn(result.outside_reference, OutsideReferenceWarning, stacklevel=2)
    return result


def _predict(model: SegmentationModel | str | os.PathLike, image, config: PredictConfig | None = None, *,
             rgb: bool | None = None, axes: str | None = None, on_progress: Callable[[int, int], None] | None = None,
             should_stop: Callable[[], bool] | None = None, out: np.ndarray | None = None,
             **overrides) -> Prediction:
    """``predict`` without its warning."""
    cfg, image, axes = settings_of(config, overrides, model, image, axes, rgb)
    image, rgb = engine_image(image, axes, rgb, _channels(check_model(model)))
    check_budget(image.shape, rgb)  # before the outputs are allocated
    shape = spatial_shape(image, rgb)
    n = len(plane_indices(image, rgb))
    z_axis = z_axis_of_stack(image, cfg, rgb)
    try:
        labels = out if out is not None else np.zeros(shape, np.int32 if cfg.instances else np.uint8)
        probs = np.zeros(shape, np.float32) if cfg.probabilities or z_axis is not None else None
        doubts = np.zeros(shape, np.float32) if cfg.uncertainty else None
    except MemoryError:
        raise BTUnetError(f"out of memory for the outputs of a stack of {' x '.join(map(str, shape))} pixels; "
                          "stream it plane by plane (btunet.infer.predict.predict_to_tiff, iter_predict, or "
                          "`btunet predict` on a TIFF) or block by block (--zarr)") from None
    borders, threshold, min_size = None, None, MIN_SIZE
    classes, unlike = None, None
    for done, (index, item) in enumerate(_results(model, image, cfg, rgb), 1):
        labels[index], unlike = item["labels"], item["outside_reference"]
        threshold, min_size = item["threshold"], item["min_size"]
        if probs is not None:
            probs[index] = item["probability"]
        if z_axis is not None and item["boundary"] is not None and cfg.separate_by == "boundary":
            if borders is None:
                borders = np.zeros(shape, np.float32)
            borders[index] = item["boundary"]
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
    if z_axis is not None:  # 3-D ids by distance unless borders are asked for: learnt per plane, they see none in Z
        labels[...] = _label_stack(probs, borders, threshold, dataclasses.replace(cfg, separate_by=cfg.separate_by
                                                                                  or "distance"), z_axis, min_size)
    return Prediction(labels, probs if cfg.probabilities else None, doubts, classes, unlike)


def predict_to_tiff(model: SegmentationModel | str | os.PathLike, image, labels_path: str | os.PathLike,
                    probabilities_path: str | os.PathLike | None = None, *, rgb: bool | None = None,
                    axes: str | None = None,
                    uncertainty_path: str | os.PathLike | None = None,
                    on_progress: Callable[[int, int], None] | None = None,
                    config: PredictConfig | None = None, **options) -> str | None:
    """Segment ``image`` straight into TIFF files, one plane at a time; returns
    ``Prediction.outside_reference`` (and warns as ``predict`` does).

    Memory stays at a few planes however long the stack is (with a lazy ``image`` such as
    ``imageio.read_lazy``), except for 3-D instance ids: they label the whole stack's
    probabilities at once. Files appear atomically when complete. ``config`` / ``options``: as
    ``predict`` (``uncertainty`` is decided by ``uncertainty_path``).
    """
    options["uncertainty"] = uncertainty_path is not None  # decided by the path
    cfg, image, axes = settings_of(config, options, model, image, axes, rgb)
    image, rgb = engine_image(image, axes, rgb, _channels(check_model(model)))
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
        if z_axis_of_stack(image, cfg, rgb) is not None:  # 3-D ids: the stack first, then its planes
            whole = _predict(model, image, cfg, rgb=rgb, on_progress=on_progress,
                             probabilities=probabilities_path is not None)
            items = ((i, {"labels": whole.labels[i], "outside_reference": whole.outside_reference,
                          "probability": None if whole.probabilities is None else whole.probabilities[i],
                          "uncertainty": None if whole.uncertainty is None else whole.uncertainty[i]})
                     for i in plane_indices(image, rgb))
            on_progress = None
        else:
            items = _per_plane(model, image, cfg, rgb)
        unlike = None
        for done, (_, item) in enumerate(items, 1):
            put_labels(item["labels"])
            unlike = item["outside_reference"]
            if put_prob is not None:
                put_prob(item["probability"])
            if put_doubt is not None:
                put_doubt(item["uncertainty"])
            if on_progress is not None:
                on_progress(done, n)
    if unlike:
        warnings.warn(unlike, OutsideReferenceWarning, stacklevel=2)
    return unlike
