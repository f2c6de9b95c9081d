"""Block-wise prediction of large images and zarr / OME-Zarr volumes with dask.

The volume is cut into blocks of one plane by ``chunks`` x ``chunks`` pixels; every block is read
with ``depth`` extra pixels on each side (``dask.array.map_overlap``), read and predicted in one
pass like a whole plane (:mod:`btunet.pipeline.planes`) and trimmed back. Blocks start on the models' 16-pixel
pooling grid and the default halo (128 px) covers the receptive field of ``unet`` and
``attention_unet``, so the result equals whole-image prediction up to float rounding, while a
worker only ever holds one block (plus the model) in memory. Intensities are normalised
with the whole-volume range, computed once before any block runs from a bounded sample: random
blocks of at most 16 planes (``normalize.sample_values``), never a whole plane of a large volume.

Blocks run on local threads, or on a ``dask.distributed`` cluster (``scheduler=``, an address or a
``Client``). Workers get a small picklable :class:`ModelRef` (the checkpoint path, or the weights
and config of a model object), never a pickled user file, and build the model once per process.
Results are written to zarr by :mod:`btunet.io.zarr_store`.
"""
from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..base.errors import BTUnetError

DEFAULT_CHUNK = 1024
DEFAULT_DEPTH = 128  # >= the receptive-field radius of unet / attention_unet (94-119 px)
_MULTIPLE = 16  # the models' down-sampling grid: blocks start on it so pooling lines up


# --------------------------------------------------------------------------- zarr input

def is_zarr(path: str | os.PathLike) -> bool:
    """A zarr array or group (v2 or v3) on disk, including OME-Zarr."""
    p = Path(path)
    return p.is_dir() and (p.suffix.lower() == ".zarr" or any(
        (p / name).exists() for name in ("zarr.json", ".zarray", ".zgroup")))


def open_zarr(path: str | os.PathLike):
    """Open a zarr array; for a group, level 0 of its OME-Zarr multiscales (or its only array)."""
    import zarr
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for broken stores
        raise BTUnetError(f"cannot open zarr {path}: {exc}") from exc
    if isinstance(node, zarr.Array):
        return node
    from ..io.axes import ome_level0
    level0 = ome_level0(dict(node.attrs))
    if level0 is not None:
        name = level0["datasets"][0]["path"]
        if name not in node:
            raise BTUnetError(f"{path}: its OME-Zarr metadata names the array {name!r}, which is not there")
        return node[name]
    arrays = [name for name, _ in node.arrays()]
    if len(arrays) == 1:
        return node[arrays[0]]
    raise BTUnetError(f"{path} is a zarr group without OME-Zarr multiscales metadata and with "
                      f"{len(arrays)} arrays ({', '.join(arrays[:5])}); give the array's path instead")


def open_image(path: str | os.PathLike):
    """A zarr array (see :func:`open_zarr`), a TIFF read region by region
    (:class:`btunet.io.tiff_reader.LazyTiff`), or a PNG/JPEG read whole."""
    from ..io.imageio import read_image
    from ..io.tiff_reader import LazyTiff
    if is_zarr(path):
        return open_zarr(path)
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        return LazyTiff(path)
    return read_image(path)


# --------------------------------------------------------------------------- the model on workers

_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


class ModelRef:
    """What a worker needs to rebuild a model: a checkpoint path, or config + weights + metadata.

    Pickles to the path or to plain tensors (never to a pickled user file); a live model object is
    used directly in the process that made the reference. Each process builds a model once.
    """

    def __init__(self, model):
        import torch  # noqa: F401  (weights are torch tensors)

        from ..core.checkpoint import inspect_checkpoint, model_metadata
        from ..core.model_check import check_model
        self._model = None
        if isinstance(check_model(model), (str, os.PathLike)):
            path = Path(model).resolve()
            self.settings = inspect_checkpoint(path, kind="model")
            stat = path.stat()
            self.path, self.config, self.state = str(path), self.settings.model.as_dict(), None
            self.metadata = self.settings.to_dict()
            self.token = f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
        else:
            self._model = model
            self.settings = model_metadata(model)
            self.path, self.config = None, dict(model.config)
            self.state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            self.metadata = dict(getattr(model, "metadata", {}))
            self.token = uuid.uuid4().hex

    @property
    def channels(self) -> int:
        return int(self.config["in_channels"])

    @property
    def normalization(self):
        """The model's ``metadata.Normalization``."""
        return self.settings.normalization

    @property
    def threshold(self) -> float:
        return self.settings.threshold

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    def get(self, device: str = "auto", fast: bool = True):
        """The inference model (``planes.as_model``), built on ``device`` the first time this
        process asks for it."""
        key = (self.token, device, fast)
        with _CACHE_LOCK:
            net = _CACHE.get(key)
            if net is None:
                from ..base.device import resolve_device
                from ..core.checkpoint import model_from_config
                from ..pipeline.planes import as_model
                dev = resolve_device(device)
                if self._model is not None:
                    net = self._model
                elif self.path is not None:
                    net = self.path
                else:
                    net = model_from_config(self.config)
                    net.load_state_dict(self.state)
                    net.metadata = self.metadata
                net = as_model(net, dev, fast)
                from ..models.runtime import fused_model  # ONNX Runtime for a large job (runtime.py)
                net = fused_model(net, "auto", getattr(self, "pixels", None))
                if len(_CACHE) >= 4:  # a few models per process at most
                    _CACHE.pop(next(iter(_CACHE)))
                _CACHE[key] = net
        return net


# --------------------------------------------------------------------------- blocks

def x_y_of(array, rgb: bool) -> tuple[int, int]:
    """The (Y, X) sides of an engine-layout array (RGB keeps its colour axis last)."""
    shape = tuple(array.shape[:-1] if rgb else array.shape)
    return shape[-2], shape[-1]


def block_halo(yx: tuple[int, ...], chunks: int, depth: int, name: str = "the image", option: str = "depth",
               instead: str = "predict it whole", error: type[BTUnetError] = BTUnetError) -> int:
    """The halo blocks are read with: none when every plane is one block (it would change
    nothing); an image thinner than the halo cannot be cut into blocks with it (``error``, naming
    ``option`` and what to do ``instead``)."""
    chunks = max(_MULTIPLE, -(-int(chunks) // _MULTIPLE) * _MULTIPLE)
    if all(side <= chunks for side in yx):
        return 0
    if min(yx) < depth:
        thinnest = min(yx) // _MULTIPLE * _MULTIPLE
        raise error(f"{name} is {yx[0]} x {yx[1]} pixels, thinner than the block overlap "
                    f"({option} {depth}); give {option} {thinnest} or {instead}")
    return depth


def axis_chunks(size: int, chunk: int, depth: int) -> tuple[int, ...]:
    """Chunk sizes along Y or X: ``chunk`` each (a multiple of 16), the remainder merged into the
    last chunk when it is thinner than ``depth`` (a block must not be thinner than its halo)."""
    sizes = [chunk] * (size // chunk)
    rest = size - chunk * len(sizes)
    if rest:
        if sizes and rest < depth:
            sizes[-1] += rest
        else:
            sizes.append(rest)
    return tuple(sizes) or (size,)


def _predict_block(block: np.ndarray, ref: ModelRef, lo: float, hi: float, rgb: bool,
                   tile: int | None, overlap: int, fast: bool, device: str) -> np.ndarray:
    """Probabilities for every plane of one block (leading axes, Y, X[, RGB]), read and predicted
    like a whole image (``planes``); an RGB block keeps its shape for map_overlap."""
    from ..pipeline.planes import PlaneLayout, predict_planes
    net = ref.get(device, fast)
    layout = PlaneLayout(block.shape, rgb, net.in_channels, lo, hi)
    out = predict_planes(net, block, layout, tile=tile, overlap=overlap, fast=fast)
    return np.broadcast_to(out[..., None], block.shape) if rgb else out


def _as_dask(array, rgb: bool, chunk: int, depth: int):
    """(leading..., Y, X[, RGB]) dask array, one plane by chunk x chunk pixels per block."""
    import dask.array as da

    from ..io.tiff_reader import LazyTiff
    shape = array.shape
    spatial = shape[:-1] if rgb else shape
    if len(spatial) < 2:
        raise BTUnetError(f"cannot predict an array of shape {shape}: it needs Y and X axes")
    lead = spatial[:-2]
    yx = tuple(axis_chunks(s, chunk, depth) for s in spatial[-2:])
    chunks = tuple((1,) * n for n in lead) + yx + (((shape[-1],),) if rgb else ())
    if isinstance(array, da.Array):
        return array.rechunk(chunks)
    if type(array).__module__.startswith("zarr"):
        return da.from_zarr(array, chunks=chunks)
    if isinstance(array, LazyTiff):
        path = str(array.path.resolve())
        return da.from_array(array, chunks=chunks, name=f"tiff-{uuid.uuid5(uuid.NAMESPACE_URL, path).hex}"
                             f"-{os.stat(path).st_mtime_ns}", meta=np.empty((0,) * array.ndim, array.dtype))
    return da.from_array(array, chunks=chunks, asarray=True)


def predict_chunked(model, array, *, chunks: int = DEFAULT_CHUNK, depth: int = DEFAULT_DEPTH,
                    scheduler=None, out: str | os.PathLike | None = None,
                    probabilities_out: str | os.PathLike | None = None,
                    output: str = "labels", threshold: float | None = None, rgb: bool | None = None,
                    axes: str | None = None,
                    device: str = "auto", fast: bool = True, tile: int | None = None, overlap: int = 128,
                    norm_range: tuple[float, float] | None = None, overwrite: bool = False,
                    num_workers: int = 1, progress: bool = False):
    """Predict ``array`` block by block.

    ``model``: a fine-tuned model or its checkpoint path (workers load the file themselves).
    ``array``: numpy / memmap / dask / zarr array, or a path (zarr, OME-Zarr level 0, TIFF, PNG);
    the last two axes are Y, X (a trailing RGB axis is allowed), every leading axis is planes,
    unless ``axes`` (``btunet.io.axes``, e.g. "CZYX") says what each axis is (a path: by default the
    axes the file declares, ``btunet.io.axes.declared``); the output then has those axes without C.
    ``chunks``: block side in pixels (rounded up to a multiple of 16); ``depth``: halo on each
    side (multiple of 16; the default 128 covers the receptive field of unet / attention_unet).
    ``tile``: None predicts each block in one pass (memory grows with ``chunks``); a number tiles
    blocks like :func:`btunet.infer.predict.predict` (``tile``, ``overlap``).

    Without ``out``: a lazy dask array of ``output`` ("labels": uint8 0/1 at ``threshold``, by
    default the model's own, or
    "probabilities": float32) — nothing runs until it is computed (e.g. as a napari layer).
    With ``out``: writes the labels (and with ``probabilities_out`` the probabilities) as zarr
    arrays, atomically, computing on ``scheduler`` (None: ``num_workers`` local threads; a
    ``dask.distributed`` address or ``Client``; or a dask scheduler name), and returns ``out``.
    """
    if output not in ("labels", "probabilities"):
        raise BTUnetError(f"output must be 'labels' or 'probabilities', not {output!r}")
    import dask
    import dask.array as da

    from ..io.axes import declared
    from ..io.zarr_store import write_zarr
    from ..pipeline.planes import engine_image, stack_range
    from ..pipeline.thresholds import resolve_threshold
    ref = model if isinstance(model, ModelRef) else ModelRef(model)
    if isinstance(array, (str, os.PathLike)):  # a file's own axes unless the caller names them
        path, array = array, open_image(array)
        if axes is None and rgb is None:
            axes = declared(path, array.shape, ref.channels).axes
    threshold = resolve_threshold(ref.threshold, threshold)
    array, rgb = engine_image(array, axes, rgb, ref.channels)
    ref.pixels = int(np.prod(array.shape[:-1] if rgb else array.shape))  # large jobs run fused
    chunks = max(_MULTIPLE, -(-int(chunks) // _MULTIPLE) * _MULTIPLE)
    depth = block_halo(x_y_of(array, rgb), chunks, max(0, -(-int(depth) // _MULTIPLE) * _MULTIPLE))
    if norm_range is None:  # whole-volume statistics, once, before any block
        norm_range = stack_range(array, rgb, ref.normalization)
    lo, hi = map(float, norm_range)

    x = _as_dask(array, rgb, chunks, depth)
    spatial_axes = (x.ndim - 3, x.ndim - 2) if rgb else (x.ndim - 2, x.ndim - 1)
    depths = {axis: (depth if axis in spatial_axes else 0) for axis in range(x.ndim)}
    ref_key = dask.delayed(ref, pure=False)  # one graph key, shipped once per worker
    prob = da.map_overlap(_predict_block, x, depth=depths, boundary="none", trim=True,
                          dtype=np.float32, meta=np.empty((0,) * x.ndim, np.float32),
                          ref=ref_key, lo=lo, hi=hi, rgb=rgb, tile=tile,
                          overlap=overlap, fast=fast, device=device)
    if rgb:
        prob = prob[..., 0]
    labels = (prob > threshold).astype(np.uint8)
    if out is None:
        return labels if output == "labels" else prob

    targets = [(labels, Path(out))] + ([(prob, Path(probabilities_out))] if probabilities_out else [])
    attrs = {"btunet": {"model": ref.path or ref.config.get("name"), "threshold": threshold,
                        "normalization_range": [lo, hi], "chunks": chunks, "depth": depth}}
    write_zarr(targets, chunks, attrs, scheduler=scheduler, num_workers=num_workers, progress=progress,
               overwrite=overwrite)
    return Path(out)


__all__ = ["ModelRef", "axis_chunks", "is_zarr", "open_image", "open_zarr", "predict_chunked"]
