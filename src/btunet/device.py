"""Pick the compute device and the fast numeric path for it."""
from __future__ import annotations

import contextlib

import torch

from .errors import BTUnetError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple MPS, then the CPU; an unavailable choice is an error."""
    if name not in DEVICES:
        raise BTUnetError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise BTUnetError(f"device {name!r} was asked for but is not available here; use --device cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """A line for the user saying what actually runs the work."""
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'' if threads == 1 else 's'})"


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CPU and CUDA (no loss scaling needed, unlike fp16); nothing elsewhere."""
    if not enabled or device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
