"""The Barlow Twins projector: its own module because checkpoints check its shapes too."""
from __future__ import annotations

from torch import nn


class Projector(nn.Sequential):
    """Linear-BN-ReLU x 2, then Linear: maps the pooled bottleneck to the embedding."""

    def __init__(self, in_features: int, dim: int):
        super().__init__(
            nn.Linear(in_features, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False))
