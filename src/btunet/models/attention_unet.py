"""Attention U-Net: the BT-Unet U-Net with additive attention gates on the skips."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import AttentionGate
from .registry import register_variant
from .unet import ResidualSeparableBlock, UNetEncoder


class AttentionUNetDecoder(nn.Module):
    """Nearest 2x up-sampling; each skip is gated by the coarser decoder features before the
    concatenation (Oktay et al. 2018)."""

    def __init__(self, widths: list[int], dropout: float):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        levels = list(reversed(range(len(widths) - 1)))
        self.gates = nn.ModuleList(AttentionGate(widths[i], widths[i + 1]) for i in levels)
        self.blocks = nn.ModuleList(
            ResidualSeparableBlock(widths[i + 1] + widths[i], widths[i], dropout) for i in levels)
        self.out_channels = widths[0]

    def forward(self, skips: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for gate, block, skip in zip(self.gates, self.blocks, reversed(skips), strict=True):
            x = block(torch.cat([self.up(x), gate(skip, x)], dim=1))
        return x


register_variant("attention_unet", UNetEncoder, AttentionUNetDecoder)
