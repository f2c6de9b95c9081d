"""Write lazy (dask) results into zarr arrays atomically, computed on local threads or a cluster.

Each array is written into a hidden temporary store next to its target and renamed into place
only when every chunk is written, so an error or a cancel leaves no half-written result.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ..base.errors import BTUnetError

LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "processes")


def write_zarr(targets: list, chunks: int, attrs: dict, *, scheduler=None, num_workers: int = 1,
               progress: bool = False, overwrite: bool = False) -> None:
    """Store every (dask array, path) of ``targets`` as a zarr array of ``chunks`` x ``chunks`` tiles.

    ``scheduler``: None (``num_workers`` local threads), a local dask scheduler name, a
    ``dask.distributed`` address or a ``Client``. Existing paths need ``overwrite``.
    """
    import dask.array as da
    targets = [(arr, Path(path)) for arr, path in targets]
    for _, path in targets:
        if path.exists() and not overwrite:
            raise BTUnetError(f"{path} exists; use --overwrite (overwrite=True) or another output")
    stores, tmps = [], []
    try:
        for arr, path in targets:
            tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
            tmps.append(tmp)
            stores.append(_create_zarr(tmp, arr, chunks, attrs))
        sources = [_regular(arr, chunks) for arr, _ in targets]
        job = da.store(sources, stores, lock=False, compute=False)
        compute(job, scheduler, num_workers, progress)
        for tmp, (_, path) in zip(tmps, targets, strict=True):
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


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


def compute(job, scheduler, num_workers: int = 1, progress: bool = False) -> None:
    """Run a dask graph locally (``scheduler`` None or a local name) or on a distributed cluster."""
    import dask
    if scheduler is None or scheduler in LOCAL_SCHEDULERS:
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


__all__ = ["compute", "write_zarr"]
