"""Read images and stacks from disk, and turn any array into model-ready planes.

Conventions: the last two axes are spatial (Y, X); a trailing axis of 3 or 4 is RGB(A) when
the array has at least three axes; every other leading axis (T, Z, ...) indexes planes.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import tifffile

from .atomic import atomic_path
from .errors import BTUnetError, Cancelled

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (not recursive) into a sorted list of image files."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise BTUnetError(f"no such file or folder: {path}")
    return found


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one TIFF/PNG/JPEG into a numpy array; unreadable files raise BTUnetError."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return tifffile.imread(path)
        from skimage.io import imread
        return np.asarray(imread(path))
    except Exception as exc:  # the readers raise many types for corrupt files
        raise BTUnetError(f"cannot read image {path}: {exc}") from exc


def read_images(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, np.ndarray]]:
    """Read every readable file; unreadable ones are skipped with a warning naming them."""
    images = []
    for path in list_images(paths):
        try:
            images.append((path, read_image(path)))
        except BTUnetError as exc:
            warnings.warn(f"skipping {path.name}: {exc}", stacklevel=2)
    if not images:
        raise BTUnetError("no readable images found (supported: " + ", ".join(IMAGE_SUFFIXES) + ")")
    return images


def is_rgb(array) -> bool:
    """Guess whether the last axis holds colour channels."""
    shape = array.shape
    return len(shape) >= 3 and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4


def spatial_shape(array, rgb: bool | None = None) -> tuple[int, ...]:
    """Shape without the colour axis: (..., Y, X)."""
    rgb = is_rgb(array) if rgb is None else rgb
    return tuple(array.shape[:-1] if rgb else array.shape)


def plane_indices(array, rgb: bool | None = None) -> list[tuple[int, ...]]:
    """Index tuples for every 2-D plane of an image or stack."""
    leading = spatial_shape(array, rgb)[:-2]
    if len(spatial_shape(array, rgb)) < 2:
        raise BTUnetError(f"an image needs at least two spatial axes, got shape {array.shape}")
    return list(np.ndindex(*leading))


def to_channels(plane: np.ndarray, rgb: bool, channels: int) -> np.ndarray:
    """(Y, X) or (Y, X, 3|4) -> (channels, Y, X) float32; RGB->gray by mean, gray->RGB by copy."""
    plane = np.asarray(plane, dtype=np.float32)
    if rgb:
        plane = np.moveaxis(plane[..., :3], -1, 0)
        if channels == 1:
            plane = plane.mean(axis=0, keepdims=True)
    else:
        plane = np.repeat(plane[None], channels, axis=0)
    return np.ascontiguousarray(plane)


def iter_planes(array, rgb: bool | None = None) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Yield (index, plane) one at a time; dask/zarr/memmap planes are read lazily."""
    rgb = is_rgb(array) if rgb is None else rgb
    for index in plane_indices(array, rgb):
        plane = array[index]
        if hasattr(plane, "compute"):
            plane = plane.compute()
        yield index, np.asarray(plane)


def write_image_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a TIFF (compressed) via a temporary file and rename, so no half-written file stays."""
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, compression="zlib", photometric="rgb" if is_rgb(array) else "minisblack")


class TiffPages:
    """A TIFF stack that reads one page per plane on demand (compressed or not).

    Enough of the array interface for ``iter_planes``/``predict``: ``shape``, ``dtype``, ``ndim``
    and indexing by a tuple of plane indices. Memory holds one plane, not the file.
    """

    def __init__(self, path: str | os.PathLike):
        self._tif = tifffile.TiffFile(path)
        series = self._tif.series[0]
        self._pages = series.pages
        self.shape, self.dtype = tuple(series.shape), np.dtype(series.dtype)
        self.ndim = len(self.shape)
        self._page_shape = tuple(self._pages[0].shape) if len(self._pages) else ()
        self._leading = self.shape[:self.ndim - len(self._page_shape)]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "TiffPages | None":
        """A page reader when every plane is one page of the first series, else None."""
        try:
            stack = cls(path)
        except Exception:
            return None
        pages_ok = (len(stack._page_shape) >= 2 and len(stack._pages) == int(np.prod(stack._leading))
                    and stack.shape[len(stack._leading):] == stack._page_shape)
        if not pages_ok:
            stack.close()
            return None
        return stack

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        if len(index) == len(self._leading) and all(isinstance(i, (int, np.integer)) for i in index):
            flat = int(np.ravel_multi_index(index, self._leading)) if self._leading else 0
            return self._pages[flat].asarray()
        return self.read()[index]

    def read(self) -> np.ndarray:
        return self._tif.series[0].asarray()

    def __array__(self, dtype=None, copy=None):
        array = self.read()
        return array if dtype is None else array.astype(dtype)

    def close(self) -> None:
        self._tif.close()


@contextlib.contextmanager
def stack_writer(path: str | os.PathLike, shape: tuple[int, ...], dtype) -> Iterator[Callable[[np.ndarray], None]]:
    """Write a compressed TIFF one plane at a time; yields ``put(plane)``, called once per plane.

    A background thread hands the planes to tifffile, so memory holds a couple of planes, not
    the stack. The file appears (atomically) only when every plane was written; an error or a
    cancel leaves no file and keeps any old one.
    """
    dtype = np.dtype(dtype)
    n_planes = int(np.prod(shape[:-2]))
    planes: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def pages() -> Iterator[np.ndarray]:
        for _ in range(n_planes):
            plane = planes.get()
            if plane is None:
                raise Cancelled("the stack was not finished")
            yield plane

    def handoff(item) -> None:
        while thread.is_alive():
            try:
                planes.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        if errors:
            raise BTUnetError(f"cannot write {path}: {errors[0]}") from errors[0]

    with atomic_path(path) as tmp:
        def run() -> None:
            try:
                with tifffile.TiffWriter(tmp) as tif:
                    tif.write(pages(), shape=shape, dtype=dtype, compression="zlib", photometric="minisblack")
            except BaseException as exc:  # reported in the caller's thread
                errors.append(exc)

        thread = threading.Thread(target=run, name="btunet-tiff-writer", daemon=True)
        thread.start()

        def put(plane: np.ndarray) -> None:
            if errors:
                raise BTUnetError(f"cannot write {path}: {errors[0]}") from errors[0]
            handoff(np.ascontiguousarray(plane, dtype=dtype))

        try:
            yield put
        finally:
            handoff(None)  # ends an unfinished stack with an error, so nothing is renamed
            thread.join()
        if errors:
            raise BTUnetError(f"cannot write {path}: {errors[0]}") from errors[0]


def read_lazy(path: str | os.PathLike):
    """Open an image without loading it whole where possible: TIFF stacks are read page by page."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        stack = TiffPages.open(path)
        if stack is not None:
            return stack
    return read_image(path)


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write a label image atomically; PNG for PNG/JPEG inputs (JPEG would corrupt labels)."""
    path = Path(path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        from skimage.io import imsave
        path = path.with_suffix(".png")
        dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
        with atomic_path(path) as tmp:
            imsave(tmp, labels.astype(dtype), check_contrast=False)
        return path
    write_image_atomic(path, labels)
    return path


def pair_by_name(images: list[Path], masks: list[Path]) -> list[tuple[Path, Path]]:
    """Match masks to images by file name (without extension)."""
    by_stem = {m.stem: m for m in masks}
    missing = [i.name for i in images if i.stem not in by_stem]
    if missing:
        raise BTUnetError(f"no mask with the same name for: {', '.join(missing[:5])}"
                          + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return [(i, by_stem[i.stem]) for i in images]
