"""Source -> normalised, model-ready planes -> probabilities: the one pipeline of the engine.

Training (``data.image_planes``, ``finetune.annotated_planes``), prediction (``predict``),
block-wise prediction (``chunked``) and the live preview (``preview``) all read planes through a
:class:`PlaneLayout` and predict them with :func:`predict_plane`, so a model sees the same values
on every path.

Conventions (as ``imageio``; ``engine_image`` first brings an image with named ``axes`` into
this order): the last two axes are Y, X; a trailing axis of 3 or 4 is RGB(A);
every other leading axis indexes planes. Intensities map [lo, hi] -> [0, 1] with ONE range for
the whole image or stack (percentiles of an even sample of its planes), so empty planes stay
dark instead of stretching their noise; NaN/inf become 0. RGB becomes gray by the channel mean
for 1-channel models; gray is copied into each channel of an RGB model.
"""
from __future__ import annotations

import copy
import operator
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit

from ..base.errors import BTUnetError
from ..core.config import OVERLAP, TILE
from ..core.metadata import Normalization
from ..core.model_check import check_model
from ..io.axes import to_engine
from ..io.imageio import is_rgb, max_plane_pixels, to_channels
from ..labels.heads import head_of, split_logits
from ..models import SegmentationModel
from ..models.fuse import fuse_batchnorm, refresh_fused
from .normalize import background_range, normalize_plane, percentile_range
from .tiling import predict_logits  # noqa: F401  (the pipeline's interface: callers import it from here)
from .uncertainty import binary_entropy

#: Test-time flips of the uncertainty map: identity, left-right, up-down, both.
FLIPS = ((), (-1,), (-2,), (-2, -1))


# --------------------------------------------------------------------------- source -> planes

def spatial_of(shape: tuple, rgb: bool) -> tuple[int, ...]:
    """(..., Y, X) of a declared shape; BTUnetError without two spatial axes."""
    spatial = tuple(int(s) for s in (shape[:-1] if rgb else shape))
    if len(spatial) < 2:
        raise BTUnetError(f"cannot read planes from an array of shape {tuple(shape)}: it needs Y and X axes")
    return spatial


def check_budget(shape: tuple, rgb: bool) -> None:
    """Refuse, from the declared shape alone, planes too large to hold in memory whole.

    The budget is ``imageio.max_plane_pixels()`` (4096 x 4096 unless ``BTUNET_MAX_PLANE_PIXELS``
    says otherwise; the measured cost per pixel is beside its constant); larger planes go block by
    block (``btunet predict --zarr``, ``btunet.infer.chunked``).
    """
    h, w = spatial_of(shape, rgb)[-2:]
    budget = max_plane_pixels()
    if h * w > budget:
        raise BTUnetError(
            f"a plane of {h} x {w} pixels is over the in-memory limit of {budget:,} pixels; "
            "predict it block by block with `btunet predict --zarr` (btunet.infer.chunked.predict_chunked), "
            "or crop it for training")


def as_image(image, what: str = "image"):
    """The API's image argument as an array with a shape (numpy, memmap, dask, zarr), or a clear
    BTUnetError: a path is opened lazily, a list of numbers becomes an array, anything else or an
    empty array is refused before any work."""
    if image is None:
        raise BTUnetError(f"no {what} given (None); pass a numpy, dask or zarr array or a file path")
    if isinstance(image, (str, os.PathLike)):
        from ..io.imageio import read_lazy
        return read_lazy(image)
    if not (hasattr(image, "shape") and hasattr(image, "dtype")):
        array = np.asarray(image) if isinstance(image, (list, tuple)) else None
        if array is None or array.dtype.kind not in "biuf":
            raise BTUnetError(f"cannot use a {type(image).__name__} as the {what}; pass a numpy, dask "
                              "or zarr array or a file path")
        image = array
    if 0 in tuple(image.shape):
        raise BTUnetError(f"the {what} is empty (shape {tuple(image.shape)})")
    return image


def engine_image(image, axes: str | None = None, rgb: bool | None = None,
                 channels: int | None = None, what: str = "image") -> tuple:
    """(image in the engine's order, whether its last axis holds channels): the one place where an
    image's ``axes`` (``btunet.io.axes``) rearrange it, a view, before it becomes planes.

    Without ``axes`` the image is taken as it is, with ``rgb`` (None: guessed, ``imageio.is_rgb``).
    ``channels``: the model's input channels, when known (a C axis of that size is then allowed).
    """
    image = as_image(image, what)
    if axes is None:
        return image, is_rgb(image) if rgb is None else bool(rgb)
    if rgb is not None:
        raise BTUnetError("give the axes or rgb, not both: a C axis in the axes is the colour axis")
    return to_engine(image, axes, channels), "C" in axes.upper()


def image_channels(image, axes: str | None = None) -> int:
    """The input channels a new model gets from an image: 3 for colour (a C axis of 3 or more
    channels, or a guessed RGB axis), else 1."""
    image, rgb = engine_image(image, axes)
    return 3 if rgb and int(image.shape[-1]) >= 3 else 1


def stack_range(source, rgb: bool, normalization: Normalization | None = None) -> tuple[float, float]:
    """The whole image's or stack's intensity range for ``normalization`` (a checkpoint's setting)."""
    norm = normalization or Normalization()
    if norm.method == "background":
        return background_range(source, rgb, norm.high)
    return percentile_range(source, rgb, norm.low, norm.high)


def plane_index(index, shape: tuple, rgb: bool) -> tuple[int, ...]:
    """``index`` as whole numbers, one per plane axis of ``shape`` and each in range, or a
    BTUnetError naming it (an API caller's slip, not an IndexError from an array library)."""
    lead = spatial_of(shape, rgb)[:-2]
    try:
        index = tuple(operator.index(i) for i in ((index,) if np.ndim(index) == 0 else index))
    except TypeError:
        raise BTUnetError(f"plane index {index!r} must be whole numbers, one per plane axis "
                          f"({len(lead)} for an array of shape {tuple(shape)})") from None
    if len(index) != len(lead):
        raise BTUnetError(f"plane index {index} does not fit an array of shape {tuple(shape)}: "
                          f"it has {len(lead)} plane axes")
    if not all(-n <= i < n for i, n in zip(index, lead, strict=True)):
        raise BTUnetError(f"plane index {index} is outside the {' x '.join(map(str, lead))} planes "
                          f"of an array of shape {tuple(shape)}")
    return index


@dataclass(frozen=True)
class PlaneLayout:
    """How an array maps to model-ready planes: plane axes, colour handling, one intensity range."""
    shape: tuple      # the source's declared shape
    rgb: bool         # a trailing RGB(A) axis
    channels: int     # the model's input channels
    lo: float         # [lo, hi] -> [0, 1], the same for every plane
    hi: float

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return spatial_of(self.shape, self.rgb)

    def indices(self) -> list[tuple[int, ...]]:
        """Index tuples of every plane, in order."""
        return list(np.ndindex(*self.spatial_shape[:-2]))

    def pixels(self, plane) -> np.ndarray:
        """One raw plane, (Y, X) or (Y, X, 3|4), -> normalised float32 (C, Y, X)."""
        return to_channels(normalize_plane(plane, self.lo, self.hi), self.rgb, self.channels)

    def read(self, source, index: tuple) -> np.ndarray:
        """Plane ``index`` of ``source``, read alone (dask/zarr/TIFF pages lazily) and normalised."""
        plane = source[self.check_index(index)]
        if hasattr(plane, "compute"):
            plane = plane.compute()
        return self.pixels(np.asarray(plane))

    def check_index(self, index) -> tuple[int, ...]:
        """``plane_index`` for this layout's array."""
        return plane_index(index, self.shape, self.rgb)

    def planes(self, source) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """(index, pixels) for every plane; only one plane is in memory at a time."""
        for index in self.indices():
            yield index, self.read(source, index)


def plane_layout(source, channels: int, *, rgb: bool | None = None, normalization: Normalization | None = None,
                 norm_range: tuple[float, float] | None = None) -> PlaneLayout:
    """Describe ``source`` for a ``channels``-input model.

    ``source``: anything with ``shape`` and indexing (numpy, memmap, dask, zarr,
    ``tiff_reader.LazyTiff``). The plane size is checked against
    the plane budget (``check_budget``) from the declared shape before anything is read. ``norm_range``
    (lo, hi) skips the percentile pass (it reads up to 16 planes).
    """
    if not hasattr(source, "shape"):
        raise BTUnetError(f"expected an image array, got {type(source).__name__}")
    rgb = is_rgb(source) if rgb is None else bool(rgb)
    shape = tuple(int(s) for s in source.shape)
    check_budget(shape, rgb)
    lo, hi = stack_range(source, rgb, normalization) if norm_range is None else norm_range
    return PlaneLayout(shape, rgb, int(channels), float(lo), float(hi))


def model_planes(source, channels: int, *, rgb: bool | None = None,
                 normalization: Normalization | None = None) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """(index, normalised float32 (C, Y, X)) for every plane of an array or an image file.

    Files are opened lazily (``imageio.read_lazy``: TIFF stacks page by page), so memory holds
    one plane however long the stack is.
    """
    opened = None
    if isinstance(source, (str, os.PathLike)):
        from ..io.imageio import read_lazy
        source = opened = read_lazy(source)
    try:
        yield from plane_layout(source, channels, rgb=rgb, normalization=normalization).planes(source)
    finally:
        if hasattr(opened, "close"):
            opened.close()


# --------------------------------------------------------------------------- plane -> probabilities

def as_model(model: SegmentationModel | str | os.PathLike, device: torch.device,
             fast: bool = False, live: bool = False) -> SegmentationModel:
    """An inference copy on ``device``: eval mode, BatchNorm folded into the convolutions, and
    channels_last when ``fast``.

    A model object is copied, never changed, so a model that is still training (a live preview)
    keeps its mode and weights. ``live`` (previews): a model still training, and its final state
    in the same thread, use one kept folded copy that is given the current weights
    (``training_copy``); the outputs are the same as a fresh copy's.
    """
    if isinstance(check_model(model), (str, os.PathLike)):
        from ..core.checkpoint import load_model
        model = load_model(model, device)
    kept = live and (model.training or _kept_here(model))
    net = training_copy(model, device) if kept else fuse_batchnorm(model).to(device)
    if fast:
        net.to(memory_format=torch.channels_last)
    return net


#: a model still training -> (its inference copy, refreshed at each preview; the thread using it)
_TRAINING_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _kept_here(model: SegmentationModel) -> bool:
    """Whether this thread previewed ``model`` while it trained (the final preview of a run)."""
    kept = _TRAINING_COPIES.get(model)
    return kept is not None and kept[1] == threading.get_ident()


def training_copy(model: SegmentationModel, device: torch.device) -> SegmentationModel:
    """The folded inference copy of a model that is still training, made once and then given its
    current weights (folded the same way, ``refresh_fused``) and metadata at each call, in the
    thread that trains it (other threads make their own).

    Copying and folding a whole model is pure Python that holds the interpreter lock for 60-250 ms
    on a loaded machine (napari's GUI thread stalled up to 1.2 s behind it at load 8); refolding
    the weights into a kept copy is tensor arithmetic."""
    net, thread = _TRAINING_COPIES.get(model, (None, None))
    if net is None or thread != threading.get_ident() or next(net.parameters()).device != device:
        net = fuse_batchnorm(model).to(device)
        _TRAINING_COPIES[model] = (net, threading.get_ident())
    else:
        refresh_fused(net, model)
    net.metadata = copy.deepcopy(getattr(model, "metadata", None))
    return net


def plane_outputs(model: SegmentationModel, pixels: np.ndarray, tile: int | None = TILE,
                  overlap: int = OVERLAP, fast: bool = True, tile_batch: int = 4) -> dict:
    """Every output of one plane as probabilities (``heads.split_logits``): ``object`` (H, W),
    ``classes`` (K+1, H, W) or None, ``boundary`` (H, W) or None."""
    spec = head_of(model)
    logits = predict_logits(model, pixels, tile, overlap, fast, tile_batch, all_channels=True)
    return split_logits(logits, spec)


def object_probability(model: SegmentationModel, pixels: np.ndarray, tile: int | None = TILE,
                       overlap: int = OVERLAP, fast: bool = True, tile_batch: int = 4) -> np.ndarray:
    """The probability (H, W) that a pixel is any object: 1 - P(background) for a class model."""
    if head_of(model).channels == 1:
        return expit(predict_logits(model, pixels, tile, overlap, fast, tile_batch)).astype(np.float32, copy=False)
    return plane_outputs(model, pixels, tile, overlap, fast, tile_batch)["object"]


def flipped_outputs(predict_fn, pixels: np.ndarray) -> list:
    """``predict_fn`` of the four test-time flips (``FLIPS``) of a (C, H, W) plane, each flipped
    back: (H, W) / (K, H, W) arrays, or dicts of them (None stays None)."""
    outs = []
    for axes in FLIPS:  # axes count from the end, so they fit (C, H, W), (K, H, W) and (H, W)
        out = predict_fn(np.ascontiguousarray(np.flip(pixels, axes)) if axes else pixels)

        def back(a, axes=axes):  # called in this iteration only; axes bound explicitly
            return a if a is None or not axes else np.flip(a, axes)

        outs.append({k: back(v) for k, v in out.items()} if isinstance(out, dict) else back(out))
    return outs


def mean_output(outs: list):
    """The float32 mean of ``flipped_outputs``, key by key for dicts: averaging the flips (nnU-Net's
    mirroring, ``PredictConfig.tta``) smooths edges that one orientation gets wrong."""
    if isinstance(outs[0], dict):
        return {k: None if v is None else np.mean([o[k] for o in outs], axis=0, dtype=np.float32)
                for k, v in outs[0].items()}
    return np.mean(outs, axis=0, dtype=np.float32)


def flip_entropy(probs: list) -> np.ndarray:
    """Binary entropy (in bits, 0 = certain, 1 = a coin toss) of the mean of the flips' object
    probabilities: high both where the model sits near 0.5 and where the flips disagree."""
    return binary_entropy(np.mean(probs, axis=0))


def uncertainty_map(model: SegmentationModel, pixels: np.ndarray, tile: int | None = TILE,
                    overlap: int = OVERLAP, fast: bool = True, tile_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(probability, uncertainty) of one (C, H, W) plane from four test-time flips (``flip_entropy``).
    The probability is the unflipped one, so labels do not change when the map is asked for."""
    probs = flipped_outputs(lambda p: object_probability(model, p, tile, overlap, fast, tile_batch), pixels)
    return probs[0].astype(np.float32), flip_entropy(probs)


def predict_plane(model: SegmentationModel, pixels: np.ndarray, *, tile: int | None = TILE,
                  overlap: int = OVERLAP, fast: bool = True, uncertainty: bool = False, tile_batch: int = 4):
    """Object probability (H, W) float32 of one normalised plane from ``PlaneLayout``.

    ``model``: an inference model (``as_model``). ``tile``: tiles blended with ``overlap``, or
    None for one pass over the whole plane. With ``uncertainty``: (probability, uncertainty).
    """
    if uncertainty:
        return uncertainty_map(model, pixels, tile, overlap, fast, tile_batch)
    return object_probability(model, pixels, tile, overlap, fast, tile_batch)


def predict_planes(model: SegmentationModel, source, layout: PlaneLayout, *, tile: int | None = TILE,
                   overlap: int = OVERLAP, fast: bool = True) -> np.ndarray:
    """Probabilities of every plane of a small in-memory ``source`` (a dask block), one array."""
    out = np.empty(layout.spatial_shape, np.float32)
    for index, pixels in layout.planes(source):
        out[index] = predict_plane(model, pixels, tile=tile, overlap=overlap, fast=fast)
    return out


__all__ = ["FLIPS", "OVERLAP", "as_image", "engine_image", "image_channels", "PlaneLayout", "TILE", "as_model",
           "check_budget", "plane_index",
           "flip_entropy", "flipped_outputs", "mean_output", "model_planes", "object_probability",
           "plane_layout", "plane_outputs", "predict_logits", "predict_plane", "predict_planes",
           "stack_range", "uncertainty_map"]
