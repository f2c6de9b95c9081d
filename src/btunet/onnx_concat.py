"""The `unet` decoder without its skip concatenations, for the exported graph.

Each decoder block reads ``cat([up(x), skip])``; ONNX Runtime runs that Concat as a separate
copy of two full feature maps, about a fifth of the fused network's time on a 1024² plane. Every
operator the block applies to its input first is linear per channel group: the depthwise 3x3
works channel by channel and the pointwise and shortcut 1x1 convolutions are sums over input
channels. So the block is computed on the two parts with the weights split by input channel and
summed, which ONNX Runtime fuses into the convolutions: the same function, no concatenation.
"""
from __future__ import annotations

import torch
from torch import nn

from .models.blocks import SeparableConv2d
from .models.unet import ResidualSeparableBlock, UNetDecoder


def _conv_part(conv: nn.Conv2d, channels: slice, with_bias: bool) -> nn.Conv2d:
    """The slice ``channels`` of ``conv``'s input: depthwise keeps its own channels, a dense
    convolution keeps all outputs and the matching input columns."""
    depthwise = conv.groups == conv.in_channels and conv.groups > 1
    n = len(range(conv.in_channels)[channels])
    part = nn.Conv2d(n, n if depthwise else conv.out_channels, conv.kernel_size, padding=conv.padding,
                     groups=n if depthwise else 1, bias=with_bias and conv.bias is not None)
    with torch.no_grad():
        part.weight.copy_(conv.weight[channels] if depthwise else conv.weight[:, channels])
        if part.bias is not None:
            part.bias.copy_(conv.bias[channels] if depthwise else conv.bias)
    return part


class _SplitInputBlock(nn.Module):
    """``block(cat([a, b]))`` computed as ``block`` on ``a`` and ``b`` with split weights."""

    def __init__(self, block: ResidualSeparableBlock, n_a: int):
        super().__init__()
        first = block.body[0]
        dw, pw = first[0][0], first[0][1]
        a, b = slice(0, n_a), slice(n_a, None)
        self.dw_a, self.dw_b = _conv_part(dw, a, True), _conv_part(dw, b, True)
        self.pw_a, self.pw_b = _conv_part(pw, a, True), _conv_part(pw, b, False)
        self.first_tail = nn.Sequential(*list(first)[1:])   # (folded) BatchNorm, ReLU
        self.body_tail = nn.Sequential(*list(block.body)[1:])
        shortcut = block.shortcut[0]
        self.sc_a, self.sc_b = _conv_part(shortcut, a, True), _conv_part(shortcut, b, False)
        self.shortcut_tail = nn.Sequential(*list(block.shortcut)[1:])

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = self.first_tail(self.pw_a(self.dw_a(a)) + self.pw_b(self.dw_b(b)))
        return self.body_tail(h) + self.shortcut_tail(self.sc_a(a) + self.sc_b(b))


class _SplitConcatDecoder(nn.Module):
    def __init__(self, decoder: UNetDecoder):
        super().__init__()
        self.up = decoder.up
        self.blocks = nn.ModuleList(
            _SplitInputBlock(block, block.shortcut[0].in_channels - block.shortcut[0].out_channels)
            for block in decoder.blocks)
        self.out_channels = decoder.out_channels

    def forward(self, skips: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for block, skip in zip(self.blocks, reversed(skips)):
            x = block(self.up(x), skip)
        return x


def _splittable(decoder: nn.Module) -> bool:
    return type(decoder) is UNetDecoder and all(
        type(block) is ResidualSeparableBlock and isinstance(block.body[0][0], SeparableConv2d)
        and block.shortcut[0].kernel_size == (1, 1) for block in decoder.blocks)


def without_skip_concat(net: nn.Module) -> nn.Module:
    """Swap ``net.decoder`` (in place) for the concatenation-free twin where it is a `unet` decoder."""
    if _splittable(getattr(net, "decoder", None)):
        net.decoder = _SplitConcatDecoder(net.decoder)
    return net
