"""The network a fine-tune starts from: a fresh variant, or one whose encoder is pre-trained."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..base.errors import BTUnetError
from ..models import SegmentationModel, create_model
from .encoder_start import rescale_to_norms, weight_norms

if TYPE_CHECKING:
    from ..core.config import FinetuneConfig
    from .pretrain import PretrainedEncoder


def build_from_encoder(cfg: FinetuneConfig, enc: PretrainedEncoder | None, channels: int,
                       out_channels: int = 1) -> SegmentationModel:
    """A fresh variant (``out_channels``: ``heads.HeadSpec.channels``) whose encoder (if given)
    starts from pre-trained weights."""
    if enc is None:
        return create_model(cfg.model, in_channels=channels, base_filters=cfg.base_filters,
                            out_channels=out_channels)
    if enc.variant != cfg.model:
        raise BTUnetError(f"the encoder was pre-trained for {enc.variant!r} but model {cfg.model!r} "
                          f"was chosen; pick {enc.variant!r} or pre-train a {cfg.model!r} encoder")
    net = create_model(cfg.model, **{**{k: v for k, v in enc.model_config.items() if k != "name"},
                                     "out_channels": out_channels})
    fresh_norms = weight_norms(net.encoder) if cfg.encoder_rescale else None  # before the load replaces them
    net.encoder.load_state_dict(enc.encoder_state)
    if fresh_norms is not None:
        rescale_to_norms(net.encoder, fresh_norms)
    return net


__all__ = ["build_from_encoder"]
