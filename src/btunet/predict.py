"""Prediction of any image size and any stack: tiled, blended, streamed plane by plane."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from scipy.special import expit

from .checkpoint import load_model, model_metadata
from .config import OVERLAP, TILE, PredictConfig
from .device import autocast, resolve_device
from .errors import BTUnetError, Cancelled
from .imageio import is_rgb, iter_planes, plane_indices, spatial_shape, stack_writer, to_channels
from .models import SIZE_MULTIPLE, SegmentationModel
from .models.base import pad_to_multiple
from .models.fuse import fuse_batchnorm
from .normalize import normalize_plane, percentile_range

__all__ = ["OVERLAP", "TILE", "Prediction", "PredictConfig", "instance_labels", "iter_predict", "predict",
           "predict_logits", "predict_to_tiff", "uncertainty_map"]


def _ramp_window(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weights: 0 on the outer quarter of the overlap, raised cosine, then 1.

    Image borders get no ramp, so every pixel keeps a positive total weight.
    """
    w = np.ones(length, np.float32)
    margin = overlap // 4
    ramp = np.sin(0.5 * np.pi * (np.arange(overlap - 2 * margin) + 0.5) / (overlap - 2 * margin)) ** 2
    edge = np.concatenate([np.zeros(margin), ramp]).astype(np.float32)
    if not at_start:
        w[:len(edge)] = edge
    if not at_end:
        w[length - len(edge):] = edge[::-1]
    return w


def _tile_length(size: int, tile: int, overlap: int) -> int:
    """The shortest tile length (a multiple of 16, at most ``tile``) that covers ``size`` with as
    few tiles as ``tile`` would need: a 1104-px axis gets two 688-px tiles, not two of 1024."""
    if size <= tile:
        return size
    n = -(-(size - overlap) // (tile - overlap))
    length = -(-(size + (n - 1) * overlap) // n)
    return min(tile, -(-length // SIZE_MULTIPLE) * SIZE_MULTIPLE)


def _origins(size: int, tile: int, stride: int) -> list[int]:
    last = size - tile
    if last <= 0:
        return [0]
    return sorted(set(list(range(0, last + 1, stride)) + [last]))


@torch.no_grad()
def predict_logits(model: SegmentationModel, pixels: np.ndarray, tile: int = TILE, overlap: int = OVERLAP,
                   fast: bool = True, tile_batch: int = 4) -> np.ndarray:
    """Logits (H, W) for one normalised (C, H, W) plane.

    Tiles start on multiples of 16 so pooling grids line up with whole-image prediction, and
    each tile's outer margin (where its own zero padding distorts features) gets no weight.
    """
    if tile % SIZE_MULTIPLE or overlap % SIZE_MULTIPLE or overlap >= tile:
        raise BTUnetError(f"tile and overlap must be multiples of {SIZE_MULTIPLE}, overlap < tile")
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(pixels, np.float32))[None].to(device)
    x, h, w = pad_to_multiple(x)
    hp, wp = x.shape[-2:]
    th, tw = _tile_length(hp, tile, overlap), _tile_length(wp, tile, overlap)
    boxes = [(y, xx) for y in _origins(hp, th, th - overlap) for xx in _origins(wp, tw, tw - overlap)]
    memory = torch.channels_last if fast else torch.contiguous_format
    if len(boxes) == 1:  # the whole plane is one tile: nothing to blend
        with autocast(device, fast):
            return model(x.contiguous(memory_format=memory))[0, 0, :h, :w].float().cpu().numpy()
    out = torch.zeros(hp, wp, device=device)
    norm = torch.zeros(hp, wp, device=device)
    ramp = lambda n, size, start: torch.from_numpy(_ramp_window(n, overlap, start == 0, start + n == size)).to(device)
    for i in range(0, len(boxes), tile_batch):
        chunk = boxes[i:i + tile_batch]
        batch = torch.cat([x[..., y:y + th, xx:xx + tw] for y, xx in chunk]).contiguous(memory_format=memory)
        with autocast(device, fast):
            logits = model(batch)[:, 0].float()
        for (y, xx), tile_logits in zip(chunk, logits):
            weight = ramp(th, hp, y)[:, None] * ramp(tw, wp, xx)[None, :]
            out[y:y + th, xx:xx + tw] += weight * tile_logits
            norm[y:y + th, xx:xx + tw] += weight
    return (out / norm)[:h, :w].cpu().numpy()


#: Test-time flips of the uncertainty map: identity, left-right, up-down, both.
FLIPS = ((), (-1,), (-2,), (-2, -1))


def uncertainty_map(model: SegmentationModel, pixels: np.ndarray, tile: int = TILE, overlap: int = OVERLAP,
                    fast: bool = True, tile_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(probability, uncertainty) of one (C, H, W) plane from four test-time flips.

    Uncertainty is the binary entropy (in bits, 0 = certain, 1 = a coin toss) of the mean
    probability over the flips: it is high both where the model sits near 0.5 and where the
    flipped predictions disagree. The probability is the unflipped one, so labels do not change
    when the map is asked for.
    """
    probs = []
    for axes in FLIPS:
        flipped = np.flip(pixels, axes) if axes else pixels
        logits = predict_logits(model, np.ascontiguousarray(flipped), tile, overlap, fast, tile_batch)
        probs.append(expit(np.flip(logits, axes) if axes else logits))
    mean = np.clip(np.mean(probs, axis=0), 1e-6, 1 - 1e-6)
    entropy = -(mean * np.log2(mean) + (1 - mean) * np.log2(1 - mean))
    return probs[0].astype(np.float32), entropy.astype(np.float32)


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


def as_model(model: "SegmentationModel | str | os.PathLike", device: torch.device) -> SegmentationModel:
    """An inference copy on ``device`` with BatchNorm folded into the convolutions.

    A model object is copied, never changed, so a model that is still training (a live preview)
    keeps its mode and weights.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, device)
    return fuse_batchnorm(model).to(device)


def iter_predict(model: "SegmentationModel | str | os.PathLike", image,
                 config: Optional[PredictConfig] = None, *, rgb: Optional[bool] = None,
                 **overrides) -> Iterator[tuple]:
    """Yield (plane index, probability, labels) plane by plane; only one plane is in memory.

    ``config`` / keyword ``overrides``: see ``PredictConfig``. With ``uncertainty`` each item has a
    fourth element, the plane's uncertainty map (four times the network time). Instance ids are
    unique across the whole stack.
    """
    cfg = PredictConfig.of(config, **overrides)
    dev = resolve_device(cfg.device)
    net = as_model(model, dev)
    rgb = is_rgb(image) if rgb is None else rgb
    if len(spatial_shape(image, rgb)) < 2:
        raise BTUnetError(f"cannot predict an array of shape {image.shape}: it needs Y and X axes")
    stored = model_metadata(net)  # the threshold and normalisation the model was trained with
    threshold = stored.threshold if cfg.threshold is None else cfg.threshold
    lo, hi = percentile_range(image, rgb, stored.normalization.low, stored.normalization.high)
    if cfg.fast:
        net.to(memory_format=torch.channels_last)
    offset = 0
    for index, plane in iter_planes(image, rgb):
        pixels = to_channels(normalize_plane(plane, lo, hi), rgb, net.in_channels)
        if cfg.uncertainty:
            prob, doubt = uncertainty_map(net, pixels, cfg.tile, cfg.overlap, cfg.fast, cfg.tile_batch)
        else:
            prob = expit(predict_logits(net, pixels, cfg.tile, cfg.overlap, cfg.fast, cfg.tile_batch))
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
