"""Block-wise prediction of large images and zarr / OME-Zarr volumes with dask.

The volume is cut into blocks of one plane by ``chunks`` x ``chunks`` pixels; every block is read
with ``depth`` extra pixels on each side (``dask.array.map_overlap``), predicted in one pass with
:func:`btunet.predict.predict_logits` and trimmed back. Blocks start on the models' 16-pixel
pooling grid and the default halo (128 px) covers the receptive field of ``unet`` and
``attention_unet``, so the result equals whole-image prediction up to float rounding, while a
worker only ever holds one block (plus the model) in memory. Intensities are normalised
with the whole-volume percentile range, computed once before any block runs.

Blocks run on local threads, or on a ``dask.distributed`` cluster (``scheduler=``, an address or a
``Client``). Workers get a small picklable :class:`ModelRef` (the checkpoint path, or the weights
and config of a model object), never a pickled user file, and build the model once per process.
"""
from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import BTUnetError

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
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return node[multiscales[0]["datasets"][0]["path"]]
    arrays = [name for name, _ in node.arrays()]
    if len(arrays) == 1:
        return node[arrays[0]]
    raise BTUnetError(f"{path} is a zarr group without OME-Zarr multiscales metadata and with "
                      f"{len(arrays)} arrays ({', '.join(arrays[:5])}); give the array's path instead")


class LazyTiff:
    """A TIFF read region by region in whichever process indexes it; pickles to its path only.

    Memory-mapped when the file allows it, otherwise read page by page through tifffile's zarr view.
    """

    def __init__(self, path: str | os.PathLike):
        import tifffile
        self.path = str(Path(path).resolve())
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                self.shape, self.dtype = tuple(series.shape), np.dtype(series.dtype)
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise BTUnetError(f"cannot read image {path}: {exc}") from exc
        self._array = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _open(self):
        if self._array is None:
            import tifffile
            try:
                self._array = tifffile.memmap(self.path, mode="r")
            except Exception:  # compressed or tiled
                import zarr
                self._array = zarr.open(tifffile.imread(self.path, aszarr=True), mode="r")
        return self._array

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self._open()[key])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)

    def __getstate__(self):
        return {**self.__dict__, "_array": None}


def open_image(path: str | os.PathLike):
    """A zarr array (see :func:`open_zarr`), a :class:`LazyTiff`, or a PNG/JPEG read whole."""
    from .imageio import read_image
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
        from .checkpoint import read_metadata
        self._model = None
        if isinstance(model, (str, os.PathLike)):
            path = Path(model).resolve()
            meta = read_metadata(path)
            if meta["kind"] != "model":
                raise BTUnetError(f"{path.name} is a pre-trained encoder: fine-tune it first")
            stat = path.stat()
            self.path, self.config, self.state = str(path), meta["model"], None
            self.metadata = meta
            self.token = f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
        else:
            self._model = model
            self.path, self.config = None, dict(model.config)
            self.state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            self.metadata = dict(getattr(model, "metadata", {}))
            self.token = uuid.uuid4().hex

    @property
    def channels(self) -> int:
        return int(self.config["in_channels"])

    @property
    def normalization(self) -> dict:
        from .normalize import DEFAULT_NORMALIZATION
        return self.metadata.get("normalization", DEFAULT_NORMALIZATION)

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    def get(self, device: str = "auto", fast: bool = True):
        """The model, built (on ``device``) the first time this process asks for it."""
        import torch
        if self._model is not None:
            return self._model
        key = (self.token, device, fast)
        with _CACHE_LOCK:
            net = _CACHE.get(key)
            if net is None:
                from .checkpoint import load_model, model_from_config
                from .device import resolve_device
                dev = resolve_device(device)
                if self.path is not None:
                    net = load_model(self.path, dev)
                else:
                    net = model_from_config(self.config)
                    net.load_state_dict(self.state)
                    net.metadata = self.metadata
                    net = net.to(dev).eval()
                if fast:
                    net.to(memory_format=torch.channels_last)
                if len(_CACHE) >= 4:  # a few models per process at most
                    _CACHE.pop(next(iter(_CACHE)))
                _CACHE[key] = net
        return net


# --------------------------------------------------------------------------- blocks

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


def _predict_block(block: np.ndarray, ref: ModelRef, lo: float, hi: float, channel_axis: bool,
                   tile: Optional[int], overlap: int, fast: bool, device: str) -> np.ndarray:
    """Probabilities for every plane of one block (leading axes, [C,] Y, X)."""
    from .imageio import to_channels
    from .normalize import normalize_plane
    from .predict import predict_logits
    net = ref.get(device, fast)
    lead = block.shape[:-3] if channel_axis else block.shape[:-2]
    out = np.empty(lead + block.shape[-2:], np.float32)
    for index in np.ndindex(*lead):
        pixels = normalize_plane(block[index], lo, hi)
        if not channel_axis:
            pixels = to_channels(pixels, False, net.in_channels)
        if tile is None:  # the whole block in one pass
            size = -(-max(pixels.shape[-2:]) // _MULTIPLE) * _MULTIPLE
            logits = predict_logits(net, np.ascontiguousarray(pixels, np.float32), max(size, 2 * _MULTIPLE),
                                    _MULTIPLE, fast)
        else:
            logits = predict_logits(net, np.ascontiguousarray(pixels, np.float32), tile, overlap, fast)
        out[index] = 1 / (1 + np.exp(-logits))
    if channel_axis:  # keep the block's shape for map_overlap; the channel axis is dropped after
        out = np.broadcast_to(out[..., None, :, :], block.shape)
    return out


def _as_dask(array, rgb: bool, channels: int, chunk: int, depth: int):
    """(leading..., [C,] Y, X) dask array, one plane by chunk x chunk pixels per block."""
    import dask.array as da
    shape = array.shape
    spatial = shape[:-1] if rgb else shape
    if len(spatial) < 2:
        raise BTUnetError(f"cannot predict an array of shape {shape}: it needs Y and X axes")
    lead = spatial[:-2]
    yx = tuple(axis_chunks(s, chunk, depth) for s in spatial[-2:])
    chunks = tuple((1,) * n for n in lead) + yx + (((shape[-1],),) if rgb else ())
    if isinstance(array, da.Array):
        x = array.rechunk(chunks)
    elif type(array).__module__.startswith("zarr"):
        x = da.from_zarr(array, chunks=chunks)
    elif isinstance(array, LazyTiff):
        stat = os.stat(array.path)
        x = da.from_array(array, chunks=chunks, name=f"tiff-{uuid.uuid5(uuid.NAMESPACE_URL, array.path).hex}"
                          f"-{stat.st_mtime_ns}", meta=np.empty((0,) * array.ndim, array.dtype))
    else:
        x = da.from_array(array, chunks=chunks, asarray=True)
    if not rgb:
        return x, False
    if channels == 1:  # RGB -> gray: the mean commutes with the (linear) normalisation
        return x[..., :3].astype(np.float32).mean(axis=-1), False
    return da.moveaxis(x[..., :3], -1, -3), True


def predict_chunked(model, array, *, chunks: int = DEFAULT_CHUNK, depth: int = DEFAULT_DEPTH,
                    scheduler=None, out: "str | os.PathLike | None" = None,
                    probabilities_out: "str | os.PathLike | None" = None,
                    output: str = "labels", threshold: float = 0.5, rgb: Optional[bool] = None,
                    device: str = "auto", fast: bool = True, tile: Optional[int] = None, overlap: int = 128,
                    norm_range: Optional[tuple[float, float]] = None, overwrite: bool = False,
                    num_workers: int = 1, progress: bool = False):
    """Predict ``array`` block by block.

    ``model``: a fine-tuned model or its checkpoint path (workers load the file themselves).
    ``array``: numpy / memmap / dask / zarr array, or a path (zarr, OME-Zarr level 0, TIFF, PNG);
    the last two axes are Y, X (a trailing RGB axis is allowed), every leading axis is planes.
    ``chunks``: block side in pixels (rounded up to a multiple of 16); ``depth``: halo on each
    side (multiple of 16; the default 128 covers the receptive field of unet / attention_unet).
    ``tile``: None predicts each block in one pass (memory grows with ``chunks``); a number tiles
    blocks like :func:`btunet.predict.predict` (``tile``, ``overlap``).

    Without ``out``: a lazy dask array of ``output`` ("labels": uint8 0/1 at ``threshold``, or
    "probabilities": float32) — nothing runs until it is computed (e.g. as a napari layer).
    With ``out``: writes the labels (and with ``probabilities_out`` the probabilities) as zarr
    arrays, atomically, computing on ``scheduler`` (None: ``num_workers`` local threads; a
    ``dask.distributed`` address or ``Client``; or a dask scheduler name), and returns ``out``.
    """
    if output not in ("labels", "probabilities"):
        raise BTUnetError(f"output must be 'labels' or 'probabilities', not {output!r}")
    import dask
    import dask.array as da

    from .imageio import is_rgb
    from .normalize import percentile_range
    if isinstance(array, (str, os.PathLike)):
        array = open_image(array)
    ref = model if isinstance(model, ModelRef) else ModelRef(model)
    rgb = is_rgb(array) if rgb is None else rgb
    chunks = max(_MULTIPLE, -(-int(chunks) // _MULTIPLE) * _MULTIPLE)
    depth = max(0, -(-int(depth) // _MULTIPLE) * _MULTIPLE)
    if norm_range is None:  # whole-volume statistics, once, before any block
        norm = ref.normalization
        norm_range = percentile_range(array, rgb, norm["low"], norm["high"])
    lo, hi = map(float, norm_range)

    x, channel_axis = _as_dask(array, rgb, ref.channels, chunks, depth)
    spatial_axes = (x.ndim - 2, x.ndim - 1)
    depths = {axis: (depth if axis in spatial_axes else 0) for axis in range(x.ndim)}
    ref_key = dask.delayed(ref, pure=False)  # one graph key, shipped once per worker
    prob = da.map_overlap(_predict_block, x, depth=depths, boundary="none", trim=True,
                          dtype=np.float32, meta=np.empty((0,) * x.ndim, np.float32),
                          ref=ref_key, lo=lo, hi=hi, channel_axis=channel_axis, tile=tile,
                          overlap=overlap, fast=fast, device=device)
    if channel_axis:
        prob = prob[..., 0, :, :]
    labels = (prob > threshold).astype(np.uint8)
    if out is None:
        return labels if output == "labels" else prob

    targets = [(labels, Path(out))] + ([(prob, Path(probabilities_out))] if probabilities_out else [])
    for _, path in targets:
        if path.exists() and not overwrite:
            raise BTUnetError(f"{path} exists; use --overwrite (overwrite=True) or another output")
    attrs = {"btunet": {"model": ref.path or ref.config.get("name"), "threshold": threshold,
                        "normalization_range": [lo, hi], "chunks": chunks, "depth": depth}}
    stores, tmps = [], []
    try:
        for arr, path in targets:
            tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
            tmps.append(tmp)
            stores.append(_create_zarr(tmp, arr, chunks, attrs))
        sources = [_regular(arr, chunks) for arr, _ in targets]
        job = da.store(sources, stores, lock=False, compute=False)
        _compute(job, scheduler, num_workers, progress)
        for tmp, (_, path) in zip(tmps, targets):
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return Path(out)


def _regular(arr, chunks: int):
    """Rechunk so every zarr chunk is written by exactly one task (merged edge chunks split)."""
    lead = arr.ndim - 2
    return arr.rechunk((1,) * lead + (chunks, chunks))


def _create_zarr(path: Path, arr, chunks: int, attrs: dict):
    import zarr
    lead = arr.ndim - 2
    z = zarr.create_array(store=str(path), shape=arr.shape, dtype=arr.dtype,
                          chunks=(1,) * lead + (min(chunks, arr.shape[-2]), min(chunks, arr.shape[-1])),
                          fill_value=0, overwrite=True)
    z.attrs.update(attrs)
    return z


def _compute(job, scheduler, num_workers: int, progress: bool) -> None:
    import dask
    if scheduler is None or scheduler in ("threads", "threading", "sync", "synchronous", "processes"):
        name = scheduler or "threads"
        if progress:
            import sys
            from dask.diagnostics import ProgressBar
            with ProgressBar(out=sys.stderr):
                dask.compute(job, scheduler=name, num_workers=num_workers)
        else:
            dask.compute(job, scheduler=name, num_workers=num_workers)
        return
    from distributed import Client
    if isinstance(scheduler, Client):
        client, own = scheduler, False
    else:
        try:
            client, own = Client(scheduler, timeout="30s"), True
        except (OSError, TimeoutError) as exc:
            raise BTUnetError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from exc
    try:
        futures = client.compute(job)
        if progress:
            from distributed import progress as show
            show(futures)
        client.gather(futures)
    finally:
        if own:
            client.close()


__all__ = ["ModelRef", "axis_chunks", "is_zarr", "open_image", "open_zarr", "predict_chunked"]
