"""Small networks shared by the engine tests."""
from __future__ import annotations

import torch


def with_batchnorm_statistics(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` in eval mode with non-trivial BatchNorm running statistics (so folding them matters)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()
