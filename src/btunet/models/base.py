"""The contract every variant follows: encoder -> decoder -> head, any input size."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Every variant down-samples four times, so inputs are padded to a multiple of this.
SIZE_MULTIPLE = 16


def pad_to_multiple(x: torch.Tensor, multiple: int = SIZE_MULTIPLE) -> tuple[torch.Tensor, int, int]:
    """Pad the bottom/right of (N, C, H, W) by reflection (replication for tiny inputs)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, h, w
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), h, w


class SegmentationModel(nn.Module):
    """A U-Net variant split into the parts pre-training and fine-tuning treat differently.

    ``encoder(x)`` returns ``(skips, bottleneck)`` with skips ordered from full to lowest
    resolution; ``decoder(skips, bottleneck)`` returns full-resolution features; ``head`` maps
    them to one logit per class. ``config`` holds the keyword arguments that rebuild the model.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, head: nn.Module, config: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        self.config = dict(config)

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def in_channels(self) -> int:
        return int(self.config["in_channels"])

    @property
    def bottleneck_channels(self) -> int:
        return int(self.encoder.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for (N, C, H, W) input of any H, W (padded internally, cropped back)."""
        x, h, w = pad_to_multiple(x)
        skips, bottleneck = self.encoder(x)
        return self.head(self.decoder(skips, bottleneck))[..., :h, :w]


def level_widths(base_filters: int, depth: int = 4) -> list[int]:
    """Filters per level, the last one being the bottleneck (16 -> 16, 32, 64, 128, 256)."""
    return [base_filters * 2**i for i in range(depth + 1)]
