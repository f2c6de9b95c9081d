"""What the widgets share in one napari session: the last pre-trained encoder and the current model.

Plain Python (no Qt, no torch import): the pre-train widget puts its encoder here so the
fine-tune widget can start from it at once, and the fine-tune widget puts its model here so the
predict widget (and a later "continue" run) can use it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from psygnal import Signal


class Session:
    """The encoder and model of this session; ``changed`` is emitted with "encoder" or "model"."""

    changed = Signal(str)

    def __init__(self) -> None:
        self.encoder: Any = None
        self.encoder_path: Path | None = None
        self.model: Any = None
        self.model_path: Path | None = None

    def set_encoder(self, encoder: Any, path: str | Path | None = None) -> None:
        self.encoder, self.encoder_path = encoder, (Path(path) if path else None)
        self.changed.emit("encoder")

    def set_model(self, model: Any, path: str | Path | None = None) -> None:
        self.model, self.model_path = model, (Path(path) if path else None)
        self.changed.emit("model")

    def clear(self) -> None:
        self.set_encoder(None)
        self.set_model(None)

    def describe_encoder(self) -> str:
        enc = self.encoder
        if enc is None:
            return "no encoder pre-trained in this session"
        meta = enc.metadata
        planes = meta.get("trained_on", {}).get("planes", "?")
        text = (f"{enc.variant} encoder, {meta.get('epochs', '?')} epochs on {planes} "
                f"plane{'' if planes == 1 else 's'}")
        return text + (f" ({self.encoder_path.name})" if self.encoder_path else "")

    def describe_model(self) -> str:
        model = self.model
        if model is None:
            return "no model trained in this session yet"
        meta = getattr(model, "metadata", {}) or {}
        text = f"{model.name}, {meta.get('epochs', '?')} epochs"
        stopped = meta.get("stopped")
        if stopped:
            text += f" (stopped: {str(stopped).replace('_', ' ')})"
        return text + (f", saved as {self.model_path.name}" if self.model_path else ", not saved")


#: The one session of this Python process.
session = Session()
