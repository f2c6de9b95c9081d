"""The two losses of BT-Unet: Barlow Twins for pre-training, masked BCE + Dice for fine-tuning."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """C = za^T zb / N after standardising every embedding dimension over the batch."""
    z_a, z_b = z_a.float(), z_b.float()
    z_a = (z_a - z_a.mean(0)) / (z_a.std(0, unbiased=False) + eps)
    z_b = (z_b - z_b.mean(0)) / (z_b.std(0, unbiased=False) + eps)
    return z_a.T @ z_b / z_a.shape[0]


def redundancy_reduction(c: torch.Tensor, lambd: float) -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2 (Zbontar et al. 2021)."""
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


def barlow_twins_loss(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float = 5e-3) -> torch.Tensor:
    """The Barlow Twins loss of two batches of embeddings (one per augmented view)."""
    return redundancy_reduction(cross_correlation(z_a, z_b), lambd)


def global_cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``cross_correlation`` over the batch of every rank of the default process group.

    Mean, standard deviation and C = za^T zb / N use the global batch (all-reduce sums), as in
    the original Barlow Twins, so every rank gets the C one process would get on the whole
    batch. Without a (multi-rank) process group this is ``cross_correlation``.
    """
    z_a, z_b = z_a.float(), z_b.float()
    d = z_a.shape[1]
    sums = all_reduce_sum(torch.cat([z_a.sum(0), z_b.sum(0), z_a.new_tensor([z_a.shape[0]])]))
    n = sums[-1]
    c_a, c_b = z_a - sums[:d] / n, z_b - sums[d:2 * d] / n
    var = all_reduce_sum(torch.cat([c_a.pow(2).sum(0), c_b.pow(2).sum(0)])) / n
    z_a = c_a / (var[:d].sqrt() + eps)
    z_b = c_b / (var[d:].sqrt() + eps)
    return all_reduce_sum(z_a.T @ z_b) / n


def global_barlow_twins_loss(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float = 5e-3) -> torch.Tensor:
    """``barlow_twins_loss`` of the global batch, the same value on every rank.

    Gradients: each rank gets WORLD_SIZE x its part of the global loss's gradient; after DDP
    averages them over ranks, the parameters get exactly the single-process gradient.
    """
    return redundancy_reduction(global_cross_correlation(z_a, z_b), lambd)


def masked_bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                         smooth: float = 1.0) -> torch.Tensor:
    """mean(BCE, 1 - Dice) over annotated pixels only (weight 0 pixels get no gradient)."""
    logits = logits.float()
    annotated = weight.sum().clamp_min(1.0)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum") / annotated
    prob = torch.sigmoid(logits) * weight
    intersection = (prob * target).sum()
    dice = (2 * intersection + smooth) / (prob.sum() + (target * weight).sum() + smooth)
    return 0.5 * (bce + (1 - dice))


def masked_ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                        smooth: float = 1.0) -> torch.Tensor:
    """mean(cross-entropy, 1 - mean soft Dice of classes 1..K) over annotated pixels.

    ``logits`` (N, K+1, H, W); ``target`` (N, 1, H, W) class indices (0 = background);
    ``weight`` (N, 1, H, W). Background is left out of the Dice: it would dominate it.
    """
    logits = logits.float()
    index = target[:, 0].long()
    w = weight[:, 0]
    annotated = w.sum().clamp_min(1.0)
    ce = (F.cross_entropy(logits, index, reduction="none") * w).sum() / annotated
    prob = torch.softmax(logits, dim=1) * w[:, None]
    onehot = F.one_hot(index, logits.shape[1]).permute(0, 3, 1, 2).float() * w[:, None]
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    dice = (2 * inter + smooth) / (prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3)) + smooth)
    return 0.5 * (ce + (1 - dice[1:].mean()))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                      n_classes: int = 1, boundary: bool = False) -> torch.Tensor:
    """The fine-tuning loss of any head (``heads.HeadSpec``).

    ``target`` (N, 1 or 2, H, W): class indices, then (with ``boundary``) the boundary target,
    learnt with masked BCE + Dice on the same annotated pixels and added to the class loss.
    """
    classes = 1 if n_classes == 1 else n_classes + 1
    if n_classes == 1:
        loss = masked_bce_dice_loss(logits[:, :1], target[:, :1], weight)
    else:
        loss = masked_ce_dice_loss(logits[:, :classes], target[:, :1], weight)
    if boundary:
        loss = loss + masked_bce_dice_loss(logits[:, classes:classes + 1], target[:, 1:2], weight)
    return loss
