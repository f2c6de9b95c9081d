"""Inference copies with every BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a per-channel affine map, so it can be merged into the preceding
convolution's weights and bias. That removes one full pass over every feature map, which is a
large share of CPU inference time for narrow U-Nets (memory-bound, not compute-bound).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _last_conv(module: nn.Module) -> tuple[nn.Module, str] | None:
    """(parent, attribute) of the convolution whose output ``module`` ends with, if any."""
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], _CONVS):
        return module, str(len(module) - 1)
    return None


def _fuse_sequential(seq: nn.Sequential, names: dict[int, str], seq_name: str,
                     pairs: list[tuple[str, str]]) -> int:
    fused = 0
    for i in range(1, len(seq)):
        bn, prev = seq[i], seq[i - 1]
        if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats:
            continue
        target = (seq, str(i - 1)) if isinstance(prev, _CONVS) else _last_conv(prev)
        if target is None:
            continue
        parent, name = target
        conv = getattr(parent, name)
        if conv.out_channels != bn.num_features:
            continue
        setattr(parent, name, fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d)))
        seq[i] = nn.Identity()
        pairs.append((_join(names[id(parent)], name), _join(seq_name, str(i))))
        fused += 1
    return fused


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with Conv -> BatchNorm pairs merged (the original is untouched).

    Outputs equal the original's in eval mode up to float rounding. The copy is for inference
    only: it has no BatchNorm left to train. ``fused_pairs`` names each (conv, BatchNorm) folded,
    so ``refresh_fused`` can give the copy later weights of the same model.
    """
    fused = copy.deepcopy(model).eval()
    names = {id(m): n for n, m in fused.named_modules()}
    pairs: list[tuple[str, str]] = []
    count = sum(_fuse_sequential(m, names, names[id(m)], pairs) for m in list(fused.modules())
                if isinstance(m, nn.Sequential))
    fused.fused_batchnorms = count
    fused.fused_pairs = pairs
    return fused


@torch.no_grad()
def refresh_fused(fused: nn.Module, model: nn.Module) -> nn.Module:
    """``fused`` (``fuse_batchnorm(model)`` made earlier) with ``model``'s current weights, folded
    exactly as ``fuse_batchnorm`` folds them, without copying the model again: a live preview
    of a training model costs tensor arithmetic, not a pure-Python copy of every module."""
    source = dict(model.named_modules())
    target = dict(fused.named_modules())
    folded = set()
    for conv_name, bn_name in fused.fused_pairs:
        conv, bn = source[conv_name], source[bn_name]
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias, transpose=isinstance(conv, nn.ConvTranspose2d))
        target[conv_name].weight.copy_(weight)
        target[conv_name].bias.copy_(bias)
        folded.add(conv_name)
    tensors = model.state_dict()
    for key, value in fused.state_dict().items():
        if key.rpartition(".")[0] not in folded:
            value.copy_(tensors[key])
    return fused


__all__ = ["fuse_batchnorm", "refresh_fused"]
