"""How a fine-tune starts from a pre-trained encoder, so that a short or weak pre-training costs
nothing against training from scratch (docs/results_pretraining.md has the measurements).

Three things differ between a pre-trained encoder and a fresh one besides what it learnt:

* its BatchNorm running statistics describe pre-training patches (augmented crops of other
  images), not the images being annotated, so the first validations and any early model are
  computed with the wrong normalisation -> :func:`refit_batchnorm` re-estimates them;
* its convolution weights may have grown or shrunk; a convolution followed by BatchNorm computes
  the same function at any scale, but Adam's steps are a fixed size, so the scale sets how fast
  the encoder can still move -> :func:`match_init_scale` restores the scale of a fresh init;
* a fresh decoder's first gradients are large and random; passed to a pre-trained encoder at
  the full learning rate they can undo what it learnt -> :func:`encoder_lr_factor` ramps its
  learning rate up from 0 while the decoder settles.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

#: pre-trained encoders start with their BatchNorm statistics re-estimated on the fine-tune images
ENCODER_STARTS = ("refit", "keep")


def batchnorm_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def refit_batchnorm(net: nn.Module, batches: Iterable[torch.Tensor],
                    forward: Callable[[nn.Module, torch.Tensor], object] | None = None) -> int:
    """Replace every BatchNorm's running mean and variance by their average over ``batches``.

    Each layer sees the statistics the training batches give it (train mode, equal weight per
    batch, as ``torch.optim.swa_utils.update_bn``); weights and the torch random state are left
    as they were, so the fine-tune that follows is the one it would have been. Returns the number
    of batches used.
    """
    layers = batchnorm_layers(net)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    was_training = net.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    net.train()
    n = 0
    with torch.random.fork_rng(devices=[]):  # dropout draws here must not shift the training run
        for x in batches:
            (forward or (lambda module, batch: module(batch)))(net, x)
            n += 1
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    net.train(was_training)
    return n


@torch.no_grad()
def match_init_scale(encoder: nn.Module, fresh: nn.Module) -> dict[str, float]:
    """Scale each convolution weight of ``encoder`` to the norm of the same weight in ``fresh``
    (a newly initialised encoder of the same architecture), where a BatchNorm normalises it.

    Only weights whose scale the network's function does not depend on are touched: those of a
    convolution whose output reaches a BatchNorm through other convolutions only (its bias, if
    any, is scaled with it). Returns each rescaled weight's factor.
    """
    fresh_weights = dict(fresh.named_parameters())
    factors = {}
    for name, conv in _normalised_convs(encoder):
        w, ref = conv.weight, fresh_weights[f"{name}.weight"]
        norm = float(w.norm())
        if norm == 0:
            continue
        f = float(ref.norm()) / norm
        w.mul_(f)
        if conv.bias is not None:
            conv.bias.mul_(f)
        factors[name] = f
    return factors


def _normalised_convs(encoder: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Convolutions directly followed, inside an ``nn.Sequential``, by a BatchNorm or by a
    Sequential of convolutions ending in one (a separable convolution), in that order."""
    found = []
    for prefix, seq in encoder.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        kids = list(seq.named_children())
        for (name, mod), (_, nxt) in zip(kids, kids[1:]):
            if not isinstance(nxt, nn.modules.batchnorm._BatchNorm):
                continue
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(mod, nn.Conv2d):
                found.append((full, mod))
            elif isinstance(mod, nn.Sequential) and mod and all(isinstance(c, nn.Conv2d) for c in mod):
                found += [(f"{full}.{n}", c) for n, c in mod.named_children()]
    return found


def encoder_lr_factor(step: int, warmup_steps: int) -> float:
    """The encoder's learning rate, relative to its full rate, at ``step`` of a warm-up that
    ramps linearly from 0 over ``warmup_steps`` (1 once it is over)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)
