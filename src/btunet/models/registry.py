"""Name -> builder registry (as in segmentation_models_pytorch)."""
from __future__ import annotations

from typing import Callable

from .base import SegmentationModel

Builder = Callable[..., SegmentationModel]
#: name -> builder(in_channels=, out_channels=, base_filters=, dropout=) -> SegmentationModel
MODELS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder
    return add


def create_model(name: str, in_channels: int = 1, **kwargs) -> SegmentationModel:
    """Build a variant by name; unknown names raise a ValueError listing the valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels}")
    return MODELS[name](in_channels=in_channels, **kwargs)
