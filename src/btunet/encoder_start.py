"""How a fine-tune starts from a pre-trained encoder: what differs from a fresh one besides what
it learnt, and what is done about it (docs/results_pretraining.md has the measurements).

* its BatchNorm running statistics describe pre-training patches (augmented crops of other
  images), not the images being annotated, so the first validations and any early model are
  computed with the wrong normalisation -> :func:`refit_batchnorm` re-estimates them;
* its convolution weights may have grown or shrunk (a convolution followed by BatchNorm computes
  the same function at any scale, but Adam's steps are a fixed size, so the scale would set how
  fast the encoder can still move); measured, they stay within 3 % of a fresh init's norms after
  35 epochs, so nothing is done about it;
* a fresh decoder's first gradients are large and random; passed to a pre-trained encoder at
  the full learning rate they can undo what it learnt -> :func:`encoder_lr_factor` ramps its
  learning rate up from 0 while the decoder settles (off by default: in short fine-tunes it
  cost Dice).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn


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


def encoder_lr_factor(step: int, warmup_steps: int) -> float:
    """The encoder's learning rate, relative to its full rate, at ``step`` of a warm-up that
    ramps linearly from 0 over ``warmup_steps`` (1 once it is over)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)
