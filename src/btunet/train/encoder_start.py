"""How a fine-tune starts from a pre-trained encoder: what differs from a fresh one besides what
it learnt, and what is done about it (docs/results_pretraining.md has the measurements).

* its BatchNorm running statistics describe pre-training patches (augmented crops of other
  images), not the images being annotated, so the first validations and any early model are
  computed with the wrong normalisation -> :func:`refit_batchnorm` re-estimates them;
* its convolution weights may have grown (a convolution followed by BatchNorm computes the same
  function at any scale, but Adam's steps are a fixed size, so a larger weight turns more slowly):
  within 3 % of a fresh init's norms after 35 epochs, but up to 1.6x in the deep layers after
  900 -> :func:`rescale_to_norms` brings each back to a fresh init's norm without changing what
  the network computes (measured: it changed nothing, so it is off by default);
* it has learnt to ignore what differed between its two views; where the task needs that (an
  intensity level), the encoder must move further -> its learning rate is 3x the decoder's
  (``FinetuneConfig.encoder_lr_scale``);
* a fresh decoder's first gradients are large and random; passed to a pre-trained encoder at
  the full learning rate they can undo what it learnt -> :func:`encoder_lr_factor` ramps its
  learning rate up from 0 while the decoder settles (off by default: in short fine-tunes it
  cost Dice).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

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
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    net.train(was_training)
    return n


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    """A convolution, or a Sequential of convolutions only (a separable one), as a list; else []."""
    if isinstance(module, nn.Conv2d):
        return [module]
    children = list(module.children()) if isinstance(module, nn.Sequential) else []
    return children if children and all(isinstance(c, nn.Conv2d) for c in children) else []


def conv_chains(net: nn.Module) -> list[list[nn.Conv2d]]:
    """The convolutions that feed a BatchNorm directly, one chain per BatchNorm (a separable
    convolution is a depthwise and a pointwise one, with nothing non-linear between them)."""
    chains = []
    for seq in (m for m in net.modules() if isinstance(m, nn.Sequential)):
        children = list(seq.children())
        for i, child in enumerate(children):
            if not isinstance(child, nn.modules.batchnorm._BatchNorm):
                continue
            chain: list[nn.Conv2d] = []
            for prev in reversed(children[:i]):
                convs = _convs(prev)
                if not convs:
                    break
                chain = convs + chain
            if chain:
                chains.append(chain)
    return chains


@torch.no_grad()
def rescale_to_norms(net: nn.Module, norms: dict[int, float]) -> int:
    """Scale every convolution that feeds a BatchNorm to the weight norm in ``norms`` (keyed by
    ``id(weight)``, e.g. a fresh init's), so Adam moves it as fast as it moves a fresh layer.

    The biases after it in its chain are scaled by the same factor, so the chain's output is only
    multiplied by a positive number, which the BatchNorm's batch statistics divide out: in training
    mode the network computes what it computed before. Running statistics are not adjusted (they
    are re-estimated by :func:`refit_batchnorm`). Returns how many convolutions were rescaled.
    """
    n = 0
    for chain in conv_chains(net):
        for j, conv in enumerate(chain):
            target = norms.get(id(conv.weight))
            current = float(conv.weight.norm())
            if target is None or current == 0.0:
                continue
            factor = target / current
            conv.weight.mul_(factor)
            for later in chain[j:]:
                if later.bias is not None:
                    later.bias.mul_(factor)
            n += 1
    return n


@torch.no_grad()
def weight_norms(net: nn.Module) -> dict[int, float]:
    """Every convolution weight's norm, keyed by ``id(weight)`` (see :func:`rescale_to_norms`)."""
    return {id(m.weight): float(m.weight.norm()) for m in net.modules() if isinstance(m, nn.Conv2d)}


def encoder_lr_factor(step: int, warmup_steps: int) -> float:
    """The encoder's learning rate, relative to its full rate, at ``step`` of a warm-up that
    ramps linearly from 0 over ``warmup_steps`` (1 once it is over)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)
