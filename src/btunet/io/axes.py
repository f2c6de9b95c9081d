"""What each axis of an image is: an axes string over T, Z, C, Y, X, and the engine's order.

``"TZYX"`` is a time series of stacks, ``"CYX"`` a 3-channel image, ``"YXC"`` an RGB picture. The
engine reads planes from arrays in ONE order: the plane axes (T, Z) as they come, then Y, X, then
the channels (C) last, if any. Because Y and X must be the last two axes apart from C, taking C
out of the input's axes gives exactly the order of the outputs: predicted labels have the input's
axes without C, with no reordering. Rearranging is a view (numpy, dask) or a lazy wrapper
(zarr, TIFF pages), never a copy of the image.

Without axes the old rule applies (``default_axes``): a trailing axis of 3 or 4 is RGB(A), every
other leading axis is planes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import BTUnetError

LETTERS = "TZCYX"
#: channel counts read as colour without asking: gray, RGB, RGBA (alpha ignored)
COLOUR_CHANNELS = (1, 3, 4)
#: tifffile's axis letters -> ours; Q (unknown) and I (image sequence) are unnamed plane axes
_TIFFFILE = {"T": "T", "Z": "Z", "C": "C", "S": "C", "Y": "Y", "X": "X", "Q": "", "I": ""}


def _shape_text(shape) -> str:
    return f"(shape {tuple(int(s) for s in shape)})"


def check_letters(axes: str) -> str:
    """``axes`` upper-cased, checked without a shape: the letters, each at most once, Y then X as
    the last two axes apart from C. BTUnetError (one line) otherwise."""
    if not isinstance(axes, str) or not axes.strip():
        raise BTUnetError(f"axes must be a string of the letters {', '.join(LETTERS)} (e.g. 'TZYX'), "
                          f"got {axes!r}")
    text = axes.strip().upper()
    bad = sorted(set(text) - set(LETTERS))
    if bad:
        raise BTUnetError(f"axes {axes!r} hold {bad[0]!r}; use the letters {', '.join(LETTERS)} "
                          "(time, depth, channels, rows, columns), e.g. 'TZYX' or 'CYX'")
    twice = sorted({c for c in text if text.count(c) > 1})
    if twice:
        raise BTUnetError(f"axes {axes!r} name {twice[0]!r} twice; each of {', '.join(LETTERS)} may "
                          "appear once")
    if not text.replace("C", "").endswith("YX"):
        raise BTUnetError(f"axes {axes!r} must end in Y then X (a C axis may follow or come before), "
                          "e.g. 'ZYX', 'CYX', 'YXC'")
    return text


def check_axes(axes: str, shape) -> str:
    """``axes`` checked against an array's ``shape`` (one letter per axis); upper-cased."""
    shape = tuple(int(s) for s in shape)
    try:
        text = check_letters(axes)
    except BTUnetError as exc:
        raise BTUnetError(f"{exc} {_shape_text(shape)}") from None
    if len(text) != len(shape):
        raise BTUnetError(f"axes {axes!r} name {len(text)} axes but the image has {len(shape)} "
                          f"{_shape_text(shape)}; use one of the letters {', '.join(LETTERS)} per axis")
    return text


def default_axes(shape) -> str | None:
    """The axes the engine assumes without being told: a trailing 3 or 4 after two axes longer than
    4 is colour (C), the last two other axes are Y, X, one leading axis is Z, two are T, Z. None
    when there are more leading axes than T and Z can name (they are still read as planes)."""
    shape = tuple(int(s) for s in shape)
    colour = len(shape) >= 3 and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4
    planes = len(shape) - 2 - int(colour)
    if planes < 0 or planes > 2:
        return None
    return ("TZ"[2 - planes:] if planes else "") + "YX" + ("C" if colour else "")


def plane_axes(axes: str) -> str:
    """The axes that index planes (T, Z), in their order."""
    return "".join(c for c in axes.upper() if c in "TZ")


def output_axes(axes: str) -> str:
    """The axes of predicted labels and probabilities: the input's without C."""
    return axes.upper().replace("C", "")


def z_axis_of(axes: str | None) -> int | None:
    """The index of Z among the plane axes (the leading axes of the labels), None without Z:
    ``z_axis_of("TZYX") == 1``, ``z_axis_of("ZCYX") == 0``, ``z_axis_of("TYX") is None``."""
    if axes is None:
        return None
    planes = plane_axes(check_letters(axes))
    return planes.index("Z") if "Z" in planes else None


def channel_axes(shape, channel_axis: int) -> str:
    """The axes string meaning "axis ``channel_axis`` (negative counts from the end) holds the
    channels": the others are Y, X last and T, Z before them (``--channel-axis``)."""
    shape = tuple(int(s) for s in shape)
    n = len(shape)
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)) or not -n <= channel_axis < n:
        raise BTUnetError(f"channel axis {channel_axis} does not exist in an image of {n} axes "
                          f"{_shape_text(shape)}; give a number from {-n} to {n - 1}")
    if n < 3:
        raise BTUnetError(f"a channel axis needs an image of at least three axes {_shape_text(shape)}")
    at = int(channel_axis) % n
    others = default_axes((8,) * (n - 1))  # Y, X and the plane axes, by count alone
    if others is None:
        raise BTUnetError(f"an image of {n} axes {_shape_text(shape)} has more plane axes than T and Z; "
                          "give --axes instead")
    return others[:at] + "C" + others[at:]


def resolve_axes(shape, axes: str | None = None, channel_axis: int | None = None) -> str | None:
    """The checked axes of an image from ``axes`` or ``channel_axis`` (one of them, or neither:
    None, the default rule)."""
    if axes is not None and channel_axis is not None:
        raise BTUnetError("give the axes or the channel axis, not both")
    if channel_axis is not None:
        return channel_axes(shape, channel_axis)
    return None if axes is None else check_axes(axes, shape)


def engine_order(axes: str) -> list[int]:
    """The input axis of every engine axis: plane axes as they come, Y, X, then C."""
    axes = axes.upper()
    letters = plane_axes(axes) + "YX" + ("C" if "C" in axes else "")
    return [axes.index(c) for c in letters]


def check_channels(axes: str, shape, model_channels: int | None = None) -> None:
    """The models take 1 or 3 channels: a C axis of 1, 3 or 4 (RGBA) is read, another size only
    when the model has exactly that many input channels."""
    if "C" not in axes.upper():
        return
    n = int(tuple(shape)[axes.upper().index("C")])
    if n in COLOUR_CHANNELS or (model_channels is not None and n == int(model_channels)):
        return
    raise BTUnetError(f"the C axis of axes {axes!r} has {n} channels {_shape_text(shape)}, but the "
                      "models take 1 or 3 input channels (4 = RGBA, alpha ignored); pick channels "
                      "before segmenting, or name that axis T or Z to segment each channel as a plane")


def to_engine(array, axes: str | None, model_channels: int | None = None):
    """``array`` in the engine's order (planes..., Y, X[, C]) given its ``axes``; None or an
    order that already is the engine's returns ``array`` itself. numpy and dask arrays are
    transposed (a view); other sources (zarr, TIFF pages) are wrapped in an :class:`AxesView`."""
    if axes is None:
        return array
    axes = check_axes(axes, array.shape)
    check_channels(axes, array.shape, model_channels)
    order = engine_order(axes)
    if order == list(range(len(order))):
        return array
    if isinstance(array, np.ndarray) or hasattr(array, "compute"):
        return np.transpose(array, order)
    return AxesView(array, order)


def from_engine(array: np.ndarray, axes: str) -> np.ndarray:
    """The inverse of :func:`to_engine` for an array in the engine's order, with the C axis
    (``array.ndim == len(axes)``) or without it (an output: the input's axes minus C)."""
    axes = check_letters(axes)
    if array.ndim != len(axes):
        axes = output_axes(axes)
    order = engine_order(axes)
    if array.ndim != len(order):
        raise BTUnetError(f"an array of shape {tuple(array.shape)} does not have the axes {axes!r}")
    return np.transpose(array, np.argsort(order))


class AxesView:
    """A lazy source seen in the engine's order: indexing reads only the part asked for from
    the wrapped source (zarr, ``tiff_reader.LazyTiff``) and transposes it."""

    def __init__(self, source, order: list[int]):
        self.source, self.order = source, list(order)
        self.shape = tuple(int(source.shape[a]) for a in self.order)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis or i is None for i in index) or len(index) > self.ndim:
            raise IndexError(f"an axes view takes ints and slices, at most {self.ndim}, got {index!r}")
        index = index + (slice(None),) * (self.ndim - len(index))
        src: list = [slice(None)] * self.ndim
        for engine_axis, axis in enumerate(self.order):
            src[axis] = index[engine_axis]
        part = self.source[tuple(src)]
        if hasattr(part, "compute"):
            part = part.compute()
        kept = [a for a in range(self.ndim) if not isinstance(src[a], (int, np.integer))]
        return np.transpose(np.asarray(part), [kept.index(a) for a in self.order if a in kept])

    def __array__(self, dtype=None, copy=None):
        array = self[tuple(slice(None) for _ in range(self.ndim))]
        return array if dtype is None else array.astype(dtype)

    def close(self) -> None:
        if hasattr(self.source, "close"):
            self.source.close()


# --------------------------------------------------------------------------- file metadata

def tifffile_axes(letters: str, shape) -> str | None:
    """Our axes for tifffile's ``series.axes``: S (samples) is C, Q/I (unnamed) become Z or T if
    those are free; None for any other letter or anything that does not check out."""
    mapped = []
    for c in letters.upper():
        if c not in _TIFFFILE:
            return None
        mapped.append(_TIFFFILE[c])
    for i, c in enumerate(mapped):
        if not c:
            free = [f for f in "ZT" if f not in mapped]
            if not free:
                return None
            mapped[i] = free[0]
    try:
        return check_axes("".join(mapped), shape)
    except BTUnetError:
        return None


def file_axes(path: str | os.PathLike) -> str | None:
    """The axes a file declares: OME-TIFF, ImageJ hyperstacks and tifffile's own ``axes``
    metadata, or OME-Zarr ``multiscales`` axes; None when the file does not say (then
    :func:`default_axes` applies) or cannot be read."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shaped = tif.is_shaped and bool((tif.shaped_metadata or [{}])[0].get("axes"))
                if not (tif.is_ome or tif.is_imagej or shaped):
                    return None
                return tifffile_axes(series.axes, series.shape)
        if path.is_dir() and any((path / n).exists() for n in ("zarr.json", ".zarray", ".zgroup")):
            return _zarr_axes(path)
    except Exception:  # noqa: BLE001 - an unreadable file says nothing; reading it reports the damage
        return None
    return None


def file_z_spacing(path: str | os.PathLike) -> float | None:
    """Z step / pixel width a TIFF declares: an ImageJ file's ``spacing`` over the pixel width of
    its XResolution, or an OME-TIFF's PhysicalSizeZ / PhysicalSizeX (in the same unit); None when
    the file does not say, or cannot be read."""
    try:
        import tifffile
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome:
                pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
                pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
                z, x = pixels.get("PhysicalSizeZ"), pixels.get("PhysicalSizeX")
                if pixels.get("PhysicalSizeZUnit", "µm") != pixels.get("PhysicalSizeXUnit", "µm"):
                    return None
            elif tif.is_imagej:
                z = (tif.imagej_metadata or {}).get("spacing")
                num, den = tif.pages[0].tags["XResolution"].value
                x = den / num if num else None
            else:
                return None
        ratio = float(z) / float(x) if z and x else None
    except Exception:  # noqa: BLE001 - an unreadable file says nothing; reading it reports the damage
        return None
    return ratio if ratio is not None and np.isfinite(ratio) and ratio > 0 else None


def ome_level0(attrs: dict) -> dict | None:
    """The first OME-Zarr ``multiscales`` entry of a group's attributes, when it is well formed
    (a dict whose ``datasets[0]["path"]`` is a name); None otherwise: metadata written by other
    tools may be anything, and what cannot be read says nothing."""
    ome = attrs.get("ome")
    multiscales = attrs.get("multiscales") or (ome.get("multiscales") if isinstance(ome, dict) else None)
    first = multiscales[0] if isinstance(multiscales, list) and multiscales else None
    datasets = first.get("datasets") if isinstance(first, dict) else None
    if not (isinstance(datasets, list) and datasets and isinstance(datasets[0], dict)
            and isinstance(datasets[0].get("path"), str)):
        return None
    return first


def _zarr_axes(path: Path) -> str | None:
    import zarr
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return None
    first = ome_level0(dict(node.attrs))
    axes = first.get("axes") if first is not None else None
    if not isinstance(axes, list):
        return None
    names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in axes]
    letters = "".join(n.upper() if len(n) == 1 and n.upper() in LETTERS else "?" for n in names)
    level0 = first["datasets"][0]["path"]
    if "?" in letters or level0 not in node:
        return None
    return tifffile_axes(letters, node[level0].shape)


@dataclass(frozen=True)
class Declared:
    """What an image file says of itself in its header; None where it says nothing usable."""
    axes: str | None = None         # what each axis is; None: the default rule (``default_axes``)
    z_spacing: float | None = None  # Z step / pixel width (3-D instance seeds)


def declared(path: str | os.PathLike, shape=None, channels: int | None = None) -> Declared:
    """What the file at ``path`` declares: the one rule of ``btunet predict``, the API given a
    path, training from files and the plugin's Axes row. What a caller names (axes, channel
    axis, Z spacing) always wins over it; the callers ask here only for what they were not told.

    Axes (``file_axes``) count only when they fit ``shape`` (the image as read) and a C axis has a
    size the model can take (``channels``: its input channels, when known); axes the default rule
    reads anyway count as not declared, so files that name the usual axes and files that name
    none are read alike (and can be trained on together); without ``shape`` the axes are the
    file's as it names them. Z spacing: ``file_z_spacing``.
    """
    own = file_axes(path)
    if own is not None and shape is not None:
        shape = tuple(int(s) for s in shape)
        try:
            own = check_axes(own, shape)
            check_channels(own, shape, channels)
        except BTUnetError:
            own = None
        if own == default_axes(shape):
            own = None
    return Declared(own, file_z_spacing(path))


__all__ = ["AxesView", "Declared", "LETTERS", "channel_axes", "check_axes", "check_channels", "check_letters",
           "declared", "default_axes", "engine_order", "file_axes", "file_z_spacing", "from_engine",
           "output_axes", "plane_axes", "resolve_axes", "tifffile_axes", "to_engine", "z_axis_of"]
