"""Name -> builder registry (as in segmentation_models_pytorch)."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from ..base import fields
from ..base.errors import BTUnetError
from .base import SegmentationModel, level_widths

Builder = Callable[..., SegmentationModel]
#: name -> builder(in_channels=, out_channels=, base_filters=, dropout=) -> SegmentationModel
MODELS: dict[str, Builder] = {}

#: Input channels a model can have: grayscale or RGB.
CHANNELS = (1, 3)
#: Output channels (one logit per class); today every model segments one class.
MAX_OUT_CHANNELS = 16
#: Widest first level. The bottleneck is 16x wider; 128 already makes a ~1 GB inception_unet,
#: so anything above is a typo (4000 would need tens of GB before training even starts).
MAX_BASE_FILTERS = 128


def build(name: str, encoder: Callable[..., nn.Module], decoder: Callable[..., nn.Module],
          in_channels: int = 1, out_channels: int = 1, base_filters: int = 16,
          dropout: float = 0.1) -> SegmentationModel:
    """Every variant is built the same way: encoder -> decoder over the same level widths -> 1x1 head."""
    widths = level_widths(base_filters)
    return SegmentationModel(
        encoder(in_channels, widths, dropout), decoder(widths, dropout), nn.Conv2d(widths[0], out_channels, 1),
        {"name": name, "in_channels": in_channels, "out_channels": out_channels, "base_filters": base_filters,
         "dropout": dropout})


def register_variant(name: str, encoder: Callable[..., nn.Module], decoder: Callable[..., nn.Module]) -> None:
    """Add a variant: ``encoder(in_channels, widths, dropout)`` and ``decoder(widths, dropout)``."""
    MODELS[name] = partial(build, name, encoder, decoder)


def register(name: str) -> Callable[[Builder], Builder]:
    """Add a builder that does not follow the encoder -> decoder -> head pattern."""
    def add(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder
    return add


def check_model_settings(name: str, in_channels: int = 1, out_channels: int = 1, base_filters: int = 16,
                         dropout: float = 0.1, prefix: str = "") -> None:
    """Refuse a variant or size no builder should be asked for (BTUnetError naming the setting).

    ``prefix`` goes before each setting's name in messages (``model.`` for checkpoint metadata).
    """
    if not isinstance(name, str) or name not in MODELS:
        what = f"{prefix}name" if prefix else "model"
        raise BTUnetError(f"unknown {what} {name!r}; choose one of: {', '.join(MODELS)}")
    fields.whole_in(f"{prefix}in_channels", in_channels, CHANNELS, "1 (grayscale) or 3 (RGB)")
    fields.whole(f"{prefix}out_channels", out_channels, 1, MAX_OUT_CHANNELS)
    fields.whole(f"{prefix}base_filters", base_filters, 1, MAX_BASE_FILTERS)
    fields.number(f"{prefix}dropout", dropout, 0.0, 1.0, hi_open=True)


def create_model(name: str, in_channels: int = 1, **kwargs) -> SegmentationModel:
    """Build a variant by name; unknown names or sizes raise a BTUnetError (a ValueError)."""
    check_model_settings(name, in_channels, **kwargs)
    return MODELS[name](in_channels=in_channels, **kwargs)
