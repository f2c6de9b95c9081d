"""U-Net as in BT-Unet: residual blocks of two separable convolutions."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import conv_bn_relu
from .dropout import Dropout
from .registry import register_variant


class ResidualSeparableBlock(nn.Module):
    """2 x [separable 3x3 -> BN -> ReLU], dropout, plus a 1x1 conv -> BN shortcut."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, out_channels, separable=True),
            conv_bn_relu(out_channels, out_channels, separable=True),
            Dropout(dropout),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1),
                                      nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class UNetEncoder(nn.Module):
    def __init__(self, in_channels: int, widths: list[int], dropout: float):
        super().__init__()
        chans = [in_channels] + widths
        self.blocks = nn.ModuleList(ResidualSeparableBlock(chans[i], chans[i + 1], dropout)
                                    for i in range(len(widths)))
        self.pool = nn.MaxPool2d(2)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        for block in self.blocks[:-1]:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        return skips, self.blocks[-1](x)


class UNetDecoder(nn.Module):
    def __init__(self, widths: list[int], dropout: float):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.blocks = nn.ModuleList(
            ResidualSeparableBlock(widths[i + 1] + widths[i], widths[i], dropout)
            for i in reversed(range(len(widths) - 1)))
        self.out_channels = widths[0]

    def forward(self, skips: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for block, skip in zip(self.blocks, reversed(skips), strict=True):
            x = block(torch.cat([self.up(x), skip], dim=1))
        return x


register_variant("unet", UNetEncoder, UNetDecoder)
