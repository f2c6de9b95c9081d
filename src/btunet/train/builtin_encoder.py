"""The encoder that ships with btunet: a `unet` encoder pre-trained with Barlow Twins on public
fluorescence and histology images, so fine-tuning can start from pre-trained weights without a
pre-training of one's own (``encoder="builtin"``, ``btunet finetune --encoder builtin``, the
Fine-tune widget's "built-in encoder").

It is stored in float16 (half the size); loading casts it back to float32. Its metadata says
how it was made (``provenance``: data files, epochs, steps, wall time, threads, seed, final
loss, btunet version, date). ``scripts/make_builtin_encoder.py`` writes it from the output of
``btunet pretrain``; docs/results_pretraining.md measures what it is worth.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

#: the name that selects the built-in encoder wherever an encoder file is accepted
BUILTIN = "builtin"
BUILTIN_PATH = Path(__file__).resolve().parents[1] / "data" / "encoders" / "unet.safetensors"


def is_builtin(encoder: Any) -> bool:
    return isinstance(encoder, str) and encoder == BUILTIN


def builtin_path() -> Path:
    """The packaged file (a BTUnetError if the installation lacks it)."""
    from ..base.errors import BTUnetError
    if not BUILTIN_PATH.is_file():
        raise BTUnetError(f"the built-in encoder is missing from this installation ({BUILTIN_PATH}); "
                          "reinstall napari-btunet or pass an encoder file")
    return BUILTIN_PATH


def builtin_metadata() -> dict[str, Any]:
    from ..core.checkpoint import read_metadata
    return read_metadata(builtin_path())


def describe_builtin(meta: dict[str, Any] | None = None) -> str:
    """One sentence: what the built-in encoder is and what it was trained on."""
    meta = meta if meta is not None else builtin_metadata()
    prov = meta.get("provenance") or {}
    files = prov.get("data_files") or (meta.get("trained_on") or {}).get("files", [])
    data = prov.get("data") or "unlabelled " + ", ".join(files)
    minutes = (prov.get("wall_time_s") or meta.get("seconds") or 0) / 60
    return (f"built-in {meta['model']['name']} encoder: Barlow Twins for {prov.get('epochs', meta.get('epochs'))} "
            f"epochs ({prov.get('steps', '?')} steps, {minutes:.0f} min on {prov.get('cpu_threads', '?')} CPU "
            f"thread(s)) on {data}")


def half_precision(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 weights stored as float16 (integers, e.g. BatchNorm batch counts, unchanged)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}


def write_builtin(source: str | os.PathLike, provenance: dict[str, Any],
                  out: str | os.PathLike = BUILTIN_PATH) -> Path:
    """Store the encoder ``source`` (from ``btunet pretrain``) in float16 with ``provenance``."""
    from ..core.checkpoint import load_checkpoint, save_checkpoint
    tensors, meta = load_checkpoint(source, kind="encoder")
    raw = {k: v for k, v in meta.to_dict().items() if k not in ("format", "format_version")}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(out, half_precision(tensors), {**raw, "provenance": {**provenance, "storage": "float16"}})
