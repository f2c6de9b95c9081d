"""Inception U-Net (Punn & Agarwal 2020): inception blocks with a hybrid-pooling branch,
hybrid-pooling down-sampling and transposed-convolution up-sampling."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .blocks import HybridPool2d, pointwise_bn_relu
from .dropout import Dropout
from .registry import register_variant


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class InceptionBlock(nn.Module):
    """Parallel 1x1, 3x3, 5x5 conv and stride-1 hybrid pooling -> 1x1 (each -> BN -> ReLU),
    concatenated, then 1x1 conv -> BN -> ReLU and dropout."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList([
            pointwise_bn_relu(in_channels, out_channels),
            _conv_bn_relu(in_channels, out_channels, 3),
            _conv_bn_relu(in_channels, out_channels, 5),
            nn.Sequential(HybridPool2d(in_channels, out_channels, stride=1, bias=False),
                          nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)),
        ])
        self.fuse = nn.Sequential(pointwise_bn_relu(4 * out_channels, out_channels),
                                  Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


Block = Callable[[int, int, float], nn.Module]


class HybridPoolEncoder(nn.Module):
    """One ``block`` per level, 2x hybrid pooling between levels; the last level is the
    bottleneck. Self-contained: pre-training uses it alone."""

    def __init__(self, in_channels: int, widths: list[int], dropout: float, block: Block):
        super().__init__()
        chans = [in_channels] + widths
        self.blocks = nn.ModuleList(block(chans[i], chans[i + 1], dropout)
                                    for i in range(len(widths)))
        self.pools = nn.ModuleList(HybridPool2d(w, stride=2) for w in widths[:-1])
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        for block, pool in zip(self.blocks[:-1], self.pools, strict=True):
            x = block(x)
            skips.append(x)
            x = pool(x)
        return skips, self.blocks[-1](x)


class InceptionUNetDecoder(nn.Module):
    """2x2 stride-2 transposed conv -> BN -> ReLU, concatenate the skip, inception block."""

    def __init__(self, widths: list[int], dropout: float):
        super().__init__()
        levels = list(reversed(range(len(widths) - 1)))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2, bias=False),
                          nn.BatchNorm2d(widths[i]), nn.ReLU(inplace=True))
            for i in levels)
        self.blocks = nn.ModuleList(InceptionBlock(2 * widths[i], widths[i], dropout)
                                    for i in levels)
        self.out_channels = widths[0]

    def forward(self, skips: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return x


register_variant("inception_unet", partial(HybridPoolEncoder, block=InceptionBlock), InceptionUNetDecoder)
