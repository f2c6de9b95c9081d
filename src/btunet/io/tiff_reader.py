"""One lazy TIFF reader for both ways the engine reads a file without loading it whole.

Prediction streams a stack plane by plane (``imageio.read_lazy``): a plane is one page, decoded
on demand, so memory holds one plane however long the stack is. Block-wise prediction
(``chunked``) reads regions of planes: memory-mapped when the pixels lie uncompressed in one run,
otherwise through tifffile's zarr view, which decodes only the strips or tiles a region touches.
Both ask the same questions of the file (shape, dtype, damage), so one class answers them, and it
pickles to its path only, so a dask worker reopens the file instead of receiving its pixels.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..base.errors import BTUnetError


class UnreadableImage(BTUnetError):
    """One input cannot be read (damaged, empty, too large to hold): skip it, keep the others."""


def no_bool(array: np.ndarray) -> np.ndarray:
    """1-bit files read as bool: 0/1 uint8 (no copy), which statistics and napari take like any image."""
    return array.view(np.uint8) if array.dtype == np.bool_ else array


def _whole(key: Any, size: int) -> bool:
    """Whether one index takes a whole axis of ``size``."""
    return isinstance(key, slice) and key.indices(size) == (0, size, 1)


class LazyTiff:
    """The first series of a TIFF, read on demand: whole pages for planes, regions for blocks.

    ``shape``, ``dtype`` (bool files read as uint8) and ``ndim`` come from the header. Indexing
    by ints and slices over the plane axes with whole planes decodes one page per plane; any
    other basic index reads a region (memory map or zarr view). Damaged data surfaces only when
    it is decoded: it raises :class:`UnreadableImage` naming the file, on one line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._opening = threading.Lock()
        self._region: Any = None
        self._tif: tifffile.TiffFile | None = None
        try:
            tif = self._file()
        except Exception as exc:  # tifffile raises many types for corrupt or foreign files
            raise UnreadableImage(f"cannot read image {path}: {exc}") from exc
        try:
            series = tif.series[0]
            self.shape = tuple(int(n) for n in series.shape)
            self.dtype = np.dtype(np.uint8 if series.dtype == bool else series.dtype)
            pages = series.pages
            self._page_shape = tuple(pages[0].shape) if len(pages) else ()
            self._n_pages = len(pages)
        except Exception as exc:  # a header that parses but describes no image
            self.close()
            raise UnreadableImage(f"cannot read image {path}: {exc}") from exc
        self._leading = self.shape[:self.ndim - len(self._page_shape)]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def paged(self) -> bool:
        """Every plane is one page of the series, so a plane is read by decoding one page."""
        return (len(self._page_shape) >= 2 and self._n_pages == int(np.prod(self._leading))
                and self.shape[len(self._leading):] == self._page_shape)

    # ----------------------------------------------------------------------- reading

    def __getitem__(self, index) -> np.ndarray:
        key = self._basic(index)
        if key is None:  # fancy indexing: rare, read whole
            return self.read()[index]
        n = len(self._leading)
        lead, rest = key[:n], key[n:]
        if self.paged and all(_whole(k, s) for k, s in zip(rest, self.shape[n:], strict=True)):
            if all(isinstance(i, int) for i in lead):
                return self._decode(lambda: self._page(lead).asarray())
            return self._some_pages(lead)
        return self._decode(lambda: np.asarray(self._view()[key]).astype(self.dtype, copy=False))

    def _basic(self, index) -> tuple | None:
        """``index`` as one int or slice per axis (Ellipsis expanded), or None when it is not basic."""
        index = index if isinstance(index, tuple) else (index,)
        if any(i is None for i in index) or sum(i is Ellipsis for i in index) > 1:
            return None
        if not all(isinstance(i, (int, np.integer, slice)) or i is Ellipsis for i in index):
            return None
        if Ellipsis in index:
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (self.ndim - len(index) + 1) + index[at + 1:]
        if len(index) > self.ndim:
            raise IndexError(f"too many indices for a TIFF of shape {self.shape}: {index!r}")
        index += (slice(None),) * (self.ndim - len(index))
        for i, size in zip(index, self.shape, strict=True):
            if isinstance(i, (int, np.integer)) and not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for an axis of {size} in {self.path.name}")
        return tuple(int(i) % size if isinstance(i, (int, np.integer)) else i
                     for i, size in zip(index, self.shape, strict=True))

    def _page(self, lead: tuple[int, ...]):
        """The page of one plane; found under the file's lock, as finding it may read the file."""
        tif = self._file()
        with tif.filehandle.lock:
            return tif.series[0].pages[int(np.ravel_multi_index(lead, self._leading)) if lead else 0]

    def _some_pages(self, lead: tuple) -> np.ndarray:
        """The pages that integers and slices over the plane axes pick, read one by one (a
        channel axis among the pages: ``axes.AxesView`` reads the channels of one plane)."""
        picks = [range(*i.indices(size)) if isinstance(i, slice) else [i]
                 for i, size in zip(lead, self._leading, strict=True)]
        kept = tuple(len(p) for p, i in zip(picks, lead, strict=True) if isinstance(i, slice))
        pages = [self[tuple(p[k] for p, k in zip(picks, ix, strict=True))]
                 for ix in np.ndindex(*[len(p) for p in picks])]
        stacked = np.stack(pages) if pages else np.empty((0,) + self._page_shape, self.dtype)
        return stacked.reshape(kept + self._page_shape)

    def read(self) -> np.ndarray:
        """The whole series in memory."""
        return self._decode(self._file().series[0].asarray)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.read()
        return array if dtype is None else array.astype(dtype)

    def _decode(self, read: Callable[[], np.ndarray]) -> np.ndarray:
        """Damaged data surfaces only when it is decoded: report it as this file's fault."""
        try:
            return no_bool(read())
        except Exception as exc:  # tifffile and its codecs raise many types for damaged data
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise UnreadableImage(f"cannot read image {self.path}: {text}") from exc

    # ----------------------------------------------------------------------- file handles

    def _file(self) -> tifffile.TiffFile:
        """The open file (reopened after ``close`` or unpickling); its reads are locked, so
        threads (dask blocks) may share it."""
        with self._opening:
            if self._tif is None:
                tif = tifffile.TiffFile(self.path)
                tif.filehandle.set_lock(True)
                self._tif = tif
            return self._tif

    def _view(self):
        """An array over the pixels for region reads: a memory map where they lie uncompressed
        in one run, else tifffile's zarr view of the series."""
        if self._region is None:
            tif = self._file()
            series = tif.series[0]
            try:
                if series.dataoffset is None:
                    raise ValueError("not memory-mappable")
                dtype = np.dtype(tif.byteorder + series.dtype.char)
                region = np.memmap(self.path, dtype, "r", series.dataoffset, series.shape, "C")
            except Exception:  # noqa: BLE001 - compressed, tiled, packed or short: read through zarr
                import zarr
                region = zarr.open(series.aszarr(level=0), mode="r")
            self._region = region
        return self._region

    def close(self) -> None:
        """Release the file; a later read reopens it."""
        self._region = None
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def __enter__(self) -> LazyTiff:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ----------------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, str]:
        """Only the (absolute) path: a worker reopens the file rather than receive its data."""
        return {"path": str(self.path.resolve())}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"LazyTiff({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


__all__ = ["LazyTiff", "UnreadableImage", "no_bool"]
