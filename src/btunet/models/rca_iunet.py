"""RCA-IUNet (Punn & Agarwal 2022): residual inception blocks of separable convolutions,
hybrid-pooling down-sampling and cross-spatial attention on the skip connections."""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .blocks import CrossSpatialAttention, HybridPool2d, separable_bn_relu
from .dropout import Dropout
from .inception_unet import HybridPoolEncoder
from .registry import register_variant


def _hybrid_branch(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(HybridPool2d(in_channels, out_channels, stride=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def _separable_pointwise(in_channels: int, out_channels: int) -> nn.Sequential:
    """Keras ``SeparableConv2D(k=1)``: per-channel scale, then 1 x 1."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 1, groups=in_channels, bias=False),
        nn.Conv2d(in_channels, out_channels, 1))


class ResidualInceptionBlock(nn.Module):
    """Two inception stages plus a 1x1 conv -> BN shortcut.

    Stage 1: separable 1x1, 3x3, 5x5 and stride-1 hybrid pooling (each -> BN -> ReLU),
    concatenated, separable 1x1. Stage 2: three separable 3x3 and hybrid pooling (each -> BN ->
    ReLU), concatenated, separable 1x1, dropout. Output = stage 2 + shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1):
        super().__init__()
        c, f = in_channels, out_channels
        self.stage1 = nn.ModuleList([separable_bn_relu(c, f, 1), separable_bn_relu(c, f, 3),
                                     separable_bn_relu(c, f, 5), _hybrid_branch(c, f)])
        self.fuse1 = _separable_pointwise(4 * f, f)
        self.stage2 = nn.ModuleList([separable_bn_relu(f, f, 3) for _ in range(3)]
                                    + [_hybrid_branch(f, f)])
        self.fuse2 = nn.Sequential(_separable_pointwise(4 * f, f), Dropout(dropout))
        self.shortcut = nn.Sequential(nn.Conv2d(c, f, 1, bias=False), nn.BatchNorm2d(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fuse1(torch.cat([branch(x) for branch in self.stage1], dim=1))
        y = self.fuse2(torch.cat([branch(y) for branch in self.stage2], dim=1))
        return y + self.shortcut(x)


class RCAIUNetDecoder(nn.Module):
    """Nearest 2x up-sampling, cross-spatial attention on each skip, residual inception block.

    The attention at level ``i`` sees encoder features only (``skips[i-1]`` pooled,
    ``skips[i]``, and ``skips[i+1]`` or the bottleneck), so the encoder stays self-contained.
    """

    def __init__(self, widths: list[int], dropout: float):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        levels = list(reversed(range(len(widths) - 1)))
        self.attention = nn.ModuleList(
            CrossSpatialAttention(widths[i - 1] if i > 0 else None, widths[i], widths[i + 1])
            for i in levels)
        self.blocks = nn.ModuleList(
            ResidualInceptionBlock(widths[i + 1] + widths[i], widths[i], dropout) for i in levels)
        self.out_channels = widths[0]

    def forward(self, skips: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        coarser = skips[1:] + [x]
        for j, (attention, block) in enumerate(zip(self.attention, self.blocks, strict=True)):
            i = len(skips) - 1 - j
            finer = skips[i - 1] if i > 0 else None
            gated = attention(finer, skips[i], coarser[i])
            x = block(torch.cat([self.up(x), gated], dim=1))
        return x


register_variant("rca_iunet", partial(HybridPoolEncoder, block=ResidualInceptionBlock), RCAIUNetDecoder)
