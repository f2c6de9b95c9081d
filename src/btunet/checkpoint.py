"""Checkpoints: one ``.safetensors`` file with a JSON metadata block; never pickle.

Writes go to a temporary file in the same folder and are renamed into place, so a crash or a
cancel never leaves a half-written model behind.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _serialize

from .atomic import atomic_path
from .errors import CheckpointError
from .models import MODELS, SegmentationModel, create_model

FORMAT = "btunet"
FORMAT_VERSION = 1
KINDS = ("encoder", "model")


def library_versions() -> dict[str, str]:
    import numpy
    from . import __version__
    return {"btunet": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                    metadata: dict[str, Any]) -> Path:
    """Atomically write tensors + metadata (kind, model config, provenance...)."""
    path = Path(path)
    if metadata.get("kind") not in KINDS:
        raise ValueError(f"metadata['kind'] must be one of {KINDS}")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": library_versions(), **metadata}
    blob = _serialize({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      metadata={FORMAT: json.dumps(meta)})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a btunet checkpoint (CheckpointError for anything else)."""
    from .bioimageio_package import is_package, package_metadata
    if is_package(path):  # a bioimage.io package from `btunet export`
        return package_metadata(path)
    return _open(path, tensors=False)[1]


def load_checkpoint(path: str | os.PathLike, kind: str | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = _open(path, tensors=True)
    if kind is not None and meta["kind"] != kind:
        hint = ("it is a pre-trained encoder: fine-tune it first" if meta["kind"] == "encoder"
                else "it is a fine-tuned model, not a pre-trained encoder")
        article = "an" if kind == "encoder" else "a"
        raise CheckpointError(f"{Path(path).name} is not {article} {kind} checkpoint ({hint})")
    return tensors, meta


def _open(path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(FORMAT)
            data = {k: f.get_tensor(k) for k in f.keys()} if tensors and raw else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path.name} is not a readable .safetensors checkpoint ({exc})") from exc
    if raw is None:
        raise CheckpointError(f"{path.name} is a safetensors file but not a btunet checkpoint "
                              "(no btunet metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path.name}: damaged btunet metadata ({exc})") from exc
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path.name} was written by a newer btunet (format "
                              f"{meta.get('format_version')}); upgrade btunet to read it")
    if meta.get("kind") not in KINDS or meta.get("model", {}).get("name") not in MODELS:
        raise CheckpointError(f"{path.name}: metadata lacks a known kind or model variant")
    return data, meta


def save_model(model: SegmentationModel, path: str | os.PathLike, **metadata: Any) -> Path:
    """Save a full segmentation model with its config and any provenance given."""
    meta = {**getattr(model, "metadata", {}), **metadata,
            "kind": "model", "model": model.config, "channels": model.in_channels}
    return save_checkpoint(path, model.state_dict(), meta)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> SegmentationModel:
    """Rebuild a fine-tuned model from its checkpoint (eval mode, metadata attached)."""
    from .bioimageio_package import is_package, load_package
    if is_package(path):  # a bioimage.io package from `btunet export`
        return load_package(path, device)
    tensors, meta = load_checkpoint(path, kind="model")
    model = model_from_config(meta["model"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{Path(path).name}: weights do not fit the {meta['model']['name']} "
                              f"model ({str(exc).splitlines()[0]})") from exc
    model.metadata = meta
    return model.to(device).eval()


def model_from_config(config: dict[str, Any]) -> SegmentationModel:
    kwargs = {k: v for k, v in config.items() if k != "name"}
    return create_model(config["name"], **kwargs)
