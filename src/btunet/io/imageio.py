"""Read images and stacks from disk, and turn any array into model-ready planes.

Conventions: the last two axes are spatial (Y, X); a trailing axis of 3 or 4 is RGB(A) when
the array has at least three axes; every other leading axis (T, Z, ...) indexes planes. An
image with named axes (``btunet.io.axes``, e.g. "ZCYX") is first brought into this order.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from ..base.atomic import atomic_path
from ..base.errors import BTUnetError, Cancelled
from .tiff_reader import LazyTiff, UnreadableImage, no_bool

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
# Planes are read whole into memory (and several float copies are made of them): refuse larger
# ones before reading any pixel data. BTUNET_MAX_PLANE_PIXELS raises the limit; --zarr streams.
# Measured peak RSS of `predict` on one uint8 plane (unet, base_filters 16, CPU): the network's
# tiles cost a fixed ~1.3-1.6 GB (PyTorch, 4 tiles of 1024²) or ~3.0 GB (ONNX Runtime, one
# 2048² tile, the default for planes of 4 Mpx and more); on top of that each plane pixel costs
# ~16 B (PyTorch: float32 plane, blended logits, weights, probability), ~45 B on the ONNX path
# (3.0 GB at 4096², 5.2 GB at 8192²), and ~41 B more for instance ids (distance watershed).
# 4096² keeps the worst case near 3.7 GB, within a laptop's memory; 8192² reached 5.2-8 GB.
MAX_PLANE_PIXELS = 4096 * 4096


def max_plane_pixels() -> int:
    """The per-plane pixel budget of the in-memory readers (``BTUNET_MAX_PLANE_PIXELS`` overrides)."""
    raw = os.environ.get("BTUNET_MAX_PLANE_PIXELS")
    if raw is None:
        return MAX_PLANE_PIXELS
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):  # not a number, NaN, or infinite
        value = 0
    if value < 1:
        raise BTUnetError(f"BTUNET_MAX_PLANE_PIXELS must be a finite positive number of pixels "
                          f"(default {MAX_PLANE_PIXELS}), got {raw!r}")
    return value


def is_decode_error(exc: BaseException) -> bool:
    """Raised by an image or array decoder (tifffile, imagecodecs, PIL, zarr, zlib), not by btunet."""
    import zlib
    if isinstance(exc, (tifffile.TiffFileError, zlib.error, EOFError)):
        return True
    if type(exc).__module__.split(".")[0] in ("imagecodecs", "PIL", "numcodecs"):
        return True
    tb, module = exc.__traceback__, ""
    while tb is not None:  # where it was raised: a plain ValueError from inside a decoder
        module, tb = tb.tb_frame.f_globals.get("__name__", ""), tb.tb_next
    return isinstance(exc, Exception) and module.split(".")[0] in (
        "tifffile", "imagecodecs", "PIL", "zarr", "numcodecs", "imageio")


def _plane_yx(shape: tuple[int, ...]) -> tuple[int, int]:
    """(Y, X) of one plane of ``shape`` (a trailing RGB axis is not spatial)."""
    rgb = len(shape) >= 3 and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4
    y, x = shape[-3:-1] if rgb else shape[-2:]
    return int(y), int(x)


#: What to do about a plane above the in-memory budget, for images that ``predict`` reads.
PREDICT_ADVICE = "predict it block by block with --zarr, crop it, or raise BTUNET_MAX_PLANE_PIXELS"
#: The same for label images (masks, predictions scored by ``evaluate``): no block-wise reader.
LABELS_ADVICE = "crop it (and the image it goes with) or raise BTUNET_MAX_PLANE_PIXELS"


def _declared_bytes(tif: tifffile.TiffFile) -> int:
    """The fewest bytes the pixels of an uncompressed first series take in the file.

    Samples of fewer than 8 bits (1-bit masks, 12-bit cameras) are packed, each row padded to a
    whole byte, so a valid 1-bit file holds an eighth of its bytes as unpacked pixels."""
    series, page = tif.series[0], tif.pages[0]
    n, bits = int(np.prod(series.shape, dtype=np.int64)), int(page.bitspersample)
    if bits % 8 == 0:
        return n * np.dtype(series.dtype).itemsize
    row = int(page.imagewidth) * (int(page.samplesperpixel) if int(page.planarconfig) == 1 else 1)
    return n // max(row, 1) * -(-row * bits // 8)


def inspect_image(path: str | os.PathLike, budget: bool = True,
                  advice: str = PREDICT_ADVICE) -> tuple[int, ...]:
    """The declared shape, from the file header only; UnreadableImage when the file cannot be used.

    Refuses empty images, uncompressed TIFFs that declare more pixel bytes than the file holds
    (truncated or damaged), and, with ``budget``, planes above :func:`max_plane_pixels` (with
    ``advice``), so a tiny file that declares a huge image never allocates its memory.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with _tifffile_errors() as logged, tifffile.TiffFile(path) as tif:
                shape = tuple(int(n) for n in tif.series[0].shape)
                compressed = int(tif.pages[0].compression) != 1
                declared = _declared_bytes(tif)
            if logged:  # tifffile reads around damage (e.g. keeps the first page of a cut stack)
                raise UnreadableImage(f"cannot read image {path}: damaged TIFF ({logged[0]})")
            if not compressed:
                size = path.stat().st_size
                if declared > size:
                    raise UnreadableImage(f"cannot read image {path}: it declares {declared:,} bytes of "
                                          f"pixels but the file holds {size:,} (truncated or damaged)")
        else:
            from PIL import Image
            with Image.open(path) as im:
                shape = (im.size[1], im.size[0]) + ((len(im.getbands()),) if len(im.getbands()) > 1 else ())
    except UnreadableImage:
        raise
    except Exception as exc:  # the readers raise many types for corrupt files
        raise UnreadableImage(f"cannot read image {path}: {exc}") from exc
    if len(shape) < 2 or 0 in shape:
        raise UnreadableImage(f"cannot read image {path}: it is empty (shape {shape})")
    y, x = _plane_yx(shape)
    if budget and y * x > max_plane_pixels():
        raise UnreadableImage(f"{path.name} has planes of {y} x {x} pixels, more than the "
                              f"{max_plane_pixels():,} read into memory at once; {advice}")
    return shape


@contextlib.contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    """Collect the errors tifffile logs (instead of raising) while parsing a file, silently."""
    import logging
    logger, found = logging.getLogger("tifffile"), []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    handler, propagate = Collect(logging.ERROR), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


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


def read_image(path: str | os.PathLike, advice: str = PREDICT_ADVICE) -> np.ndarray:
    """Read one TIFF/PNG/JPEG into a numpy array; unreadable or too large files raise UnreadableImage
    (``advice``: what to do about a plane above the budget)."""
    path = Path(path)
    inspect_image(path, advice=advice)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return no_bool(tifffile.imread(path))
        from skimage.io import imread
        return no_bool(np.asarray(imread(path)))
    except Exception as exc:  # the readers raise many types for corrupt files
        raise UnreadableImage(f"cannot read image {path}: {exc}") from exc


def read_mask(path: str | os.PathLike, what: str = "mask") -> np.ndarray:
    """Read a label image (a mask, a prediction to score) with the checks of :func:`read_image`, and
    refuse NaN, infinite or fractional labels (BTUnetError naming the file): they are not labels."""
    from ..labels.annotations import check_label_values
    labels = read_image(path, advice=LABELS_ADVICE)
    check_label_values(labels, f"{what} {Path(path).name}")
    return labels


def read_images(paths: Iterable[str | os.PathLike], masks: bool = False) -> list[tuple[Path, np.ndarray]]:
    """Read every readable file (``masks``: as label images, ``read_mask``); unreadable ones are
    skipped with a warning naming them."""
    images, files = [], list_images(paths)
    for path in files:
        try:
            images.append((path, read_mask(path) if masks else read_image(path)))
        except BTUnetError as exc:
            if len(files) == 1:  # nothing else to go on with: the file's own reason
                raise
            warnings.warn(f"skipping {path.name}: {exc}", stacklevel=2)
    if not images:
        what = "masks" if masks else "images"
        raise BTUnetError(f"no readable {what} found (supported: " + ", ".join(IMAGE_SUFFIXES) + ")")
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
    """(Y, X) or (Y, X, n) -> (channels, Y, X) float32; RGB->gray by mean, gray->RGB by copy.

    n channels pass as they are when the model has n; else alpha (a 4th channel) is dropped and
    the rest become gray (mean), copied into each of the model's channels."""
    plane = np.asarray(plane, dtype=np.float32)
    if rgb:
        plane = np.moveaxis(plane, -1, 0)
        if plane.shape[0] != channels:
            plane = plane[:3]
            if plane.shape[0] != channels:
                plane = np.repeat(plane.mean(axis=0, keepdims=True), channels, axis=0)
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
            except BaseException as exc:  # noqa: BLE001 - any failure is reported in the caller's thread
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
    """Open an image without loading it whole where possible: TIFF stacks are read page by page.

    Planes above the in-memory budget are refused (UnreadableImage) before any pixel is read.
    """
    path = Path(path)
    inspect_image(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            stack = LazyTiff(path)
        except UnreadableImage:  # read whole, which says why it cannot
            return read_image(path)
        if stack.paged:
            return stack
        stack.close()  # planes that are not pages: read whole
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
