"""Turn user images (files, folders or arrays) into normalised float planes for training."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..base.errors import BTUnetError
from ..io.imageio import read_images
from .planes import engine_image, plane_layout

ImageSource = str | os.PathLike | np.ndarray


@dataclass
class Plane:
    """One normalised (C, H, W) plane and where it came from."""
    pixels: np.ndarray
    source: str
    index: tuple


def load_sources(images: ImageSource | Sequence[ImageSource], masks: bool = False) -> list[tuple[str, np.ndarray]]:
    """Accept a path, a folder, an array, or a list of them; return (name, array) pairs.
    ``masks``: files are label images, read with their checks (``imageio.read_mask``)."""
    if images is None:
        raise BTUnetError("no images given (None); pass a path, a folder, an array or a list of them")
    if not isinstance(images, (str, os.PathLike, np.ndarray, list, tuple)) and not hasattr(images, "shape"):
        raise BTUnetError(f"cannot read images from a {type(images).__name__}; pass a path, a folder, "
                          "an array or a list of them")
    if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "compute"):
        images = [images]
    paths = [p for p in images if isinstance(p, (str, os.PathLike))]
    arrays = [(f"array{i}", a) for i, a in enumerate(images) if not isinstance(a, (str, os.PathLike))]
    files = [(p.name, a) for p, a in read_images(paths, masks)] if paths else []
    if not files and not arrays:
        raise BTUnetError("no images given")
    return files + arrays


def image_planes(name: str, array, channels: int, rgb: bool | None = None,
                 min_size: int = 0, axes: str | None = None) -> list[Plane]:
    """Normalise an image or stack with whole-stack percentiles and split it into planes
    (``axes``: what each axis is, ``btunet.io.axes``; a C axis is the model's input channels)."""
    array = np.asarray(array) if not hasattr(array, "shape") else array
    array, rgb = engine_image(array, axes, rgb, channels, what=f"image {name}")
    layout = plane_layout(array, channels, rgb=rgb)
    return [Plane(pad_to_min_size(pixels, min_size), name, index) for index, pixels in layout.planes(array)]


def pad_to_min_size(pixels: np.ndarray, size: int, mode: str = "reflect") -> np.ndarray:
    """Pad (C, H, W) at the bottom/right so both sides are at least ``size``."""
    h, w = pixels.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return pixels
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "symmetric" if ph < 2 * h and pw < 2 * w else "edge"
    pad = [(0, 0)] * (pixels.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(pixels, pad, mode=mode) if mode != "constant" else np.pad(pixels, pad)


@dataclass
class AnnotatedPlane:
    """One plane of training data: pixels, targets and per-pixel weights (painted, pseudo, held out)."""
    pixels: np.ndarray      # (C, H, W) normalised
    target: np.ndarray      # (H, W) 1 = object
    weight: np.ndarray      # (H, W) 1 = used for training
    val_weight: np.ndarray  # (H, W) 1 = held out for validation
    source: str
    focus: np.ndarray | None = None    # (H, W) bool: patches are centred here (default: weight > 0)
    painted: np.ndarray | None = None  # (H, W) bool: the user's own training pixels
    size: tuple | None = None          # (h, w) before padding to the patch size
    val_region: np.ndarray | None = None  # (H, W) bool: the held-out blocks, whole
    boundary: np.ndarray | None = None    # (H, W) 1 = border of an object (instance masks)
    context: bool = False                    # an unpainted plane that learns from pseudo-labels only
    object_sizes: np.ndarray | None = None  # px of each instance of a dense mask
    instances: np.ndarray | None = None     # (H, W) instance ids of a dense mask (a model with borders)
