"""Checkpoints: one ``.safetensors`` file with a JSON metadata block; never pickle.

Writes go to a temporary file in the same folder and are renamed into place, so a crash or a
cancel never leaves a half-written model behind.

Every reader also takes a bioimage.io package from ``btunet export`` (a zip file or a folder) and
reads the checkpoint attached to it (``package_reader``); messages then name the package.

Reads check the file before trusting it: the header's length against the file size, the
metadata field by field (``metadata.py``), and every tensor's name, shape and byte range against
the network the metadata declares, built on the ``meta`` device (no memory). Only then are
weights read and the real network allocated. Every failure is a ``CheckpointError`` naming the
file and what is wrong.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as _deserialize
from safetensors.torch import save as _serialize

from ..base.atomic import atomic_path
from ..base.errors import BTUnetError, CheckpointError
from ..io.package_reader import Attached, attached_checkpoint, is_package
from ..models import SegmentationModel
from ..models.projector import Projector
from .metadata import FORMAT, FORMAT_VERSION, KINDS, CheckpointMetadata, ModelSpec

__all__ = ["FORMAT", "FORMAT_VERSION", "KINDS", "CheckpointMetadata", "TensorInfo", "inspect_checkpoint",
           "load_checkpoint", "load_model", "model_from_config", "model_metadata", "read_header",
           "read_metadata", "save_checkpoint", "save_model"]

#: A btunet header is a few kB (plus the names of the training files); safetensors itself
#: allows 100 MB. A larger length field is damage or tampering, refused before reading it.
MAX_HEADER_BYTES = 16 * 2**20
#: Bytes per element of each safetensors dtype.
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the header describes it (no data read)."""
    dtype: str
    shape: tuple[int, ...]


def library_versions() -> dict[str, str]:
    import numpy

    from .. import __version__
    return {"btunet": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                    metadata: dict[str, Any]) -> Path:
    """Atomically write tensors + metadata (kind, model config, provenance...).

    The metadata is checked as a reader would check it, so no file is written that btunet
    would refuse to read.
    """
    path = Path(path)
    meta = CheckpointMetadata.from_dict({**metadata, "format": FORMAT, "format_version": FORMAT_VERSION})
    stamp = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "versions": library_versions()}
    meta_dict = {**stamp, **meta.to_dict()}  # a model's own date and versions survive a re-save
    blob = _serialize({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      metadata={FORMAT: json.dumps(meta_dict)})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    return path


def read_header(path: str | os.PathLike | Attached) -> tuple[CheckpointMetadata, dict[str, TensorInfo]]:
    """The checked metadata and the tensors' names, dtypes and shapes, from the header alone."""
    path = _source(path)
    header, data_bytes = _raw_header(path)
    infos = _tensor_infos(path, header, data_bytes)
    extra = header.get("__metadata__") or {}
    if not isinstance(extra, dict) or not isinstance(extra.get(FORMAT, ""), str):
        raise CheckpointError(f"{path.name} is not a readable .safetensors checkpoint (its __metadata__ "
                              "must map names to strings)")
    if FORMAT not in extra:
        raise CheckpointError(f"{path.name} is a safetensors file but not a btunet checkpoint "
                              "(no btunet metadata)")
    try:
        raw = json.loads(extra[FORMAT])
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path.name}: damaged btunet metadata (not JSON: {exc})") from None
    try:
        meta = CheckpointMetadata.from_dict(raw)
    except CheckpointError as exc:  # a newer format: the message says what to do
        raise CheckpointError(f"{path.name}: {exc}") from None
    except BTUnetError as exc:
        raise CheckpointError(f"{path.name}: {exc} (its metadata is damaged or was edited; use the "
                              "checkpoint as btunet saved it)") from None
    return meta, infos


def inspect_checkpoint(path: str | os.PathLike | Attached, kind: str | None = None) -> CheckpointMetadata:
    """Check a checkpoint completely without reading weights: metadata, kind, tensor names and shapes."""
    path = _source(path)
    meta, infos = read_header(path)
    _check_kind(path, meta, kind)
    _check_tensors(path, meta, infos)
    return meta


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a btunet checkpoint as plain JSON (what ``btunet info`` prints)."""
    return inspect_checkpoint(path).to_dict()


def load_checkpoint(path: str | os.PathLike | Attached, kind: str | None = None
                    ) -> tuple[dict[str, torch.Tensor], CheckpointMetadata]:
    """The weights and metadata of a checked checkpoint (weights are read only after every check)."""
    path = _source(path)
    meta = inspect_checkpoint(path, kind)
    try:
        if isinstance(path, Attached):
            tensors = _deserialize(path.data)
        else:
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path.name} is not a readable .safetensors checkpoint "
                              f"({exc})") from None
    _check_finite(path, tensors)
    return tensors, meta


def model_metadata(model: SegmentationModel, **extra: Any) -> CheckpointMetadata:
    """The checked metadata of a model object (its config and ``metadata`` dict, plus ``extra``).

    Prediction reads a model's threshold and normalisation through this, whether the model was
    loaded from a file or has just been trained.
    """
    raw = {**(getattr(model, "metadata", None) or {}), **extra, "kind": "model", "model": model.config,
           "channels": model.in_channels, "format": FORMAT, "format_version": FORMAT_VERSION}
    return CheckpointMetadata.from_dict(raw)


def save_model(model: SegmentationModel, path: str | os.PathLike, **metadata: Any) -> Path:
    """Save a full segmentation model with its config, threshold and any provenance given.

    A ``model`` that is not a model object is a BTUnetError naming the argument, before anything
    is written (not an AttributeError from inside the saving)."""
    if model is None or isinstance(model, (str, os.PathLike)):
        given = "None" if model is None else f"a path ({model})"
        raise BTUnetError(f"save_model needs a model object (btunet.finetune, btunet.load_model) as model, "
                          f"not {given}")
    from .model_check import check_model
    check_model(model)  # an encoder or a wrong type, named
    return save_checkpoint(path, model.state_dict(), model_metadata(model, **metadata).to_dict())


def load_model(path: str | os.PathLike | Attached, device: str | torch.device = "cpu") -> SegmentationModel:
    """Rebuild a fine-tuned model from its checkpoint (eval mode, metadata attached)."""
    path = _source(path)
    tensors, meta = load_checkpoint(path, kind="model")
    model = meta.model.build()
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:  # the header check makes this unreachable; kept as a last guard
        raise CheckpointError(f"{path.name}: weights do not fit the {meta.model.name} "
                              f"model ({str(exc).splitlines()[0]})") from None
    model.metadata = meta.to_dict()
    return model.to(device).eval()


def model_from_config(config: dict[str, Any] | ModelSpec) -> SegmentationModel:
    spec = config if isinstance(config, ModelSpec) else ModelSpec.parse(dict(config))
    return spec.build()


# --------------------------------------------------------------------------- checks

def _source(path: str | os.PathLike | Attached) -> Path | Attached:
    """A checkpoint file, or the checkpoint attached to a package (so every reader takes packages)."""
    if isinstance(path, Attached):
        return path
    return attached_checkpoint(path) if is_package(path) else Path(path)


def _raw_header(path: Path | Attached) -> tuple[dict, int]:
    """The header JSON and the number of data bytes after it, once its length field is checked."""
    if isinstance(path, Attached):
        size = len(path.data)
    elif not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    else:
        size = path.stat().st_size
    unreadable = f"{path.name} is not a readable .safetensors checkpoint"
    if size < 8:
        raise CheckpointError(f"{unreadable} (the file is {'empty' if size == 0 else f'only {size} bytes'})")
    with io.BytesIO(path.data) if isinstance(path, Attached) else open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > size - 8:
            raise CheckpointError(f"{unreadable} (its header length field says {length} bytes but only "
                                  f"{size - 8} follow: the file is truncated or of another kind)")
        if length > MAX_HEADER_BYTES:
            raise CheckpointError(f"{unreadable} (a {length}-byte header is over the "
                                  f"{MAX_HEADER_BYTES}-byte limit)")
        data = f.read(length)
    try:
        header = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{unreadable} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{unreadable} (its header is not a JSON object)")
    return header, size - 8 - length


def _tensor_infos(path: Path | Attached, header: dict, data_bytes: int) -> dict[str, TensorInfo]:
    """Each tensor's dtype and shape, checked against its byte range inside the file."""
    infos = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem = _entry_problem(entry, data_bytes)
        if problem:
            raise CheckpointError(f"{path.name} is not a readable .safetensors checkpoint "
                                  f"(tensor {name!r}: {problem})")
        infos[name] = TensorInfo(entry["dtype"], tuple(entry["shape"]))
    return infos


def _entry_problem(entry: Any, data_bytes: int) -> str | None:
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(entry, dict):
        return "its header entry is not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(is_int(n) for n in shape):
        return f"shape {shape!r} is not a list of sizes"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(n) for n in offsets):
        return f"data_offsets {offsets!r} are not two byte offsets"
    begin, end = offsets
    if not begin <= end <= data_bytes:
        return f"its bytes {begin}-{end} lie outside the {data_bytes} data bytes (truncated file?)"
    if end - begin != math.prod(shape) * DTYPE_SIZES[dtype]:
        return f"{end - begin} bytes do not hold a {dtype} tensor of shape {tuple(shape)}"
    return None


def _check_finite(path: Path | Attached, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite weights: such a network outputs NaN, which every threshold turns
    into background, so the model would predict nothing without any error."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path.name}: weight {name} holds NaN or infinite values (training diverged "
                                  "or the file was changed); use another checkpoint")


def _check_kind(path: Path | Attached, meta: CheckpointMetadata, kind: str | None) -> None:
    if kind is None or meta.kind == kind:
        return
    hint = ("it is a pre-trained encoder: fine-tune it first" if meta.kind == "encoder"
            else "it is a fine-tuned model, not a pre-trained encoder")
    article = "an" if kind == "encoder" else "a"
    raise CheckpointError(f"{path.name} is not {article} {kind} checkpoint ({hint})")


def expected_tensors(meta: CheckpointMetadata, infos: dict[str, TensorInfo]) -> dict[str, torch.Tensor]:
    """Name -> meta-device tensor (shape and dtype, no data) of what the declared network holds.

    An encoder file holds ``encoder.*`` and, optionally, its projector ``projector.*`` (whose
    width is read from the file: any width is fine as long as the shapes agree).
    """
    with torch.device("meta"):
        net = meta.model.build()
        if meta.kind == "model":
            return dict(net.state_dict())
        state = {f"encoder.{k}": v for k, v in net.encoder.state_dict().items()}
        if any(k.startswith("projector.") for k in infos):
            first = infos.get("projector.0.weight")
            dim = first.shape[0] if first is not None and len(first.shape) == 2 and first.shape[0] > 0 else 1
            state.update({f"projector.{k}": v for k, v in
                          Projector(net.encoder.out_channels, dim).state_dict().items()})
        return state


def _check_tensors(path: Path | Attached, meta: CheckpointMetadata, infos: dict[str, TensorInfo]) -> None:
    expected = expected_tensors(meta, infos)
    problems = [f"tensor {k!r} is missing" for k in expected if k not in infos]
    problems += [f"tensor {k!r} is not part of it" for k in infos if k not in expected]
    for k, want in expected.items():
        info = infos.get(k)
        if info is None:
            continue
        if info.shape != tuple(want.shape):
            problems.append(f"tensor {k!r} has shape {info.shape}, the model needs {tuple(want.shape)}")
        elif (info.dtype in FLOAT_DTYPES) != want.dtype.is_floating_point:
            problems.append(f"tensor {k!r} is {info.dtype}, the model needs {str(want.dtype).split('.')[-1]}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{path.name}: the weights do not fit the {meta.model.name} {meta.kind} its "
                              f"metadata declares: {'; '.join(problems[:3])}{more} (damaged or edited file?)")
