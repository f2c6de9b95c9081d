"""Dense (pixel-level) Barlow Twins: the same patch points, seen in both views, must agree.

The global objective pools the bottleneck, so it only asks for one vector per patch; a
segmentation decoder reads the encoder's feature maps pixel by pixel. Here K x K points of the
patch that both crops contain are found in each view (from the crops' affines), an encoder
feature map is read there, and each point's pair of projected vectors is one Barlow Twins sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base.errors import BTUnetError
from ..models.projector import Projector

#: Encoder level read by default: skip 2 (1/4 resolution, 64 channels at base_filters 16). It feeds
#: the decoder directly, sees ~32 px of context, and a 96-px patch still has 24 x 24 cells there
#: (the 1/16 bottleneck has 6 x 6: 7 x 7 points would mostly interpolate the same few cells).
DEFAULT_LEVEL = 2
DEFAULT_POINTS = 7  # K: K x K points per patch


def shared_points(theta_a: torch.Tensor, theta_b: torch.Tensor, k: int) -> torch.Tensor:
    """(N, K*K, 2) patch coordinates (normalised x, y) on a grid over both crops' common box.

    A crop covers the box ``shift ± side`` of the patch (flips and rotations map the square onto
    itself); the points are the centres of a K x K grid on the two boxes' intersection. The
    default crop scale always leaves one at least half a patch wide; an empty one (smaller
    scales) collapses to the point between the boxes.
    """
    half_a, half_b = theta_a[:, :, :2].abs().sum(2), theta_b[:, :, :2].abs().sum(2)
    lo = torch.maximum(theta_a[:, :, 2] - half_a, theta_b[:, :, 2] - half_b)
    hi = torch.minimum(theta_a[:, :, 2] + half_a, theta_b[:, :, 2] + half_b)
    mid = (lo + hi) / 2
    lo, hi = torch.minimum(lo, mid), torch.maximum(hi, mid)
    t = (torch.arange(k, device=lo.device, dtype=lo.dtype) + 0.5) / k
    xy = lo[:, :, None] + (hi - lo)[:, :, None] * t  # (N, 2, K): x positions, y positions
    n = xy.shape[0]
    x, y = xy[:, 0, None, :].expand(n, k, k), xy[:, 1, :, None].expand(n, k, k)
    return torch.stack([x, y], dim=-1).reshape(n, k * k, 2)


def to_view(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Patch coordinates -> the view's: v = A^-1 (p - shift), the inverse of ``F.affine_grid``'s map."""
    offset = points - theta[:, None, :, 2]
    return torch.linalg.solve(theta[:, :, :2], offset.transpose(1, 2)).transpose(1, 2)


def sample_at(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N*P, C) bilinear samples of (N, C, h, w) maps at (N, P, 2) normalised view coordinates."""
    grid = points[:, :, None, :].to(features.dtype)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].permute(0, 2, 1).reshape(-1, features.shape[1])


def level_channels(encoder: nn.Module, in_channels: int, level: int) -> int:
    """Channels of an encoder level (skips 0..3, then the bottleneck), by one tiny eval pass."""
    was_training = encoder.training
    device = next(encoder.parameters()).device
    encoder.eval()
    with torch.no_grad():
        skips, bottleneck = encoder(torch.zeros(1, in_channels, 16, 16, device=device))
    encoder.train(was_training)
    levels = [*skips, bottleneck]
    if not 0 <= level < len(levels):
        raise BTUnetError(f"dense_level must be from 0 to {len(levels) - 1} for this encoder, got {level}")
    return int(levels[level].shape[1])


class DenseTwins(nn.Module):
    """Matched points of two views' feature maps -> a projector of its own -> (d_a, d_b)."""

    def __init__(self, in_channels: int, dim: int, level: int = DEFAULT_LEVEL, points: int = DEFAULT_POINTS):
        super().__init__()
        self.level, self.points = level, points
        self.projector = Projector(in_channels, dim)

    def forward(self, features_a: torch.Tensor, features_b: torch.Tensor, theta_a: torch.Tensor,
                theta_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = shared_points(theta_a.float(), theta_b.float(), self.points)
        return (self.projector(sample_at(features_a.float(), to_view(theta_a.float(), p))),
                self.projector(sample_at(features_b.float(), to_view(theta_b.float(), p))))
