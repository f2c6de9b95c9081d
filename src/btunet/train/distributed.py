"""The ``torch.distributed`` pieces of multi-process pre-training (``torchrun``).

``torchrun --nproc_per_node=N -m btunet pretrain ...`` (or any launcher that sets ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) makes :func:`btunet.train.pretrain.pretrain`
hand over to :func:`btunet.train.pretrain.pretrain_ddp`, which puts these pieces together:

* one process per device: gloo on CPU, NCCL on CUDA with rank ``r`` on ``cuda:LOCAL_RANK``
  (:func:`init_process_group`);
* each rank reads its own shard of the images (files split by rank; planes when there are fewer
  files than ranks: :func:`load_shard`) and draws ``batch_size / WORLD_SIZE`` patches per step
  (:func:`local_batch_size`), so ``--batch-size`` keeps meaning the global batch;
* the Barlow Twins cross-correlation is computed over the global batch
  (:func:`btunet.train.losses.global_barlow_twins_loss`, through :func:`all_reduce_sum`), and the
  projector's batch norm is synchronised (:class:`GlobalBatchNorm`); on CUDA the encoder's batch
  norms become ``SyncBatchNorm`` too (``BTUNET_SYNC_BN=all`` also synchronises them on CPU,
  ``projector`` never does: :func:`synchronise_batchnorm`);
* only rank 0 reports progress (and the command line writes the checkpoint on rank 0 only);
* a failing rank prints which rank failed and why (:func:`describe_failure`), then tears the
  process group down, so the other ranks fail fast (and ``torchrun`` stops them) instead of
  waiting for ever; the process group also has a timeout (``BTUNET_DIST_TIMEOUT_S``, default
  600 s) as a last resort.

Nothing here runs for a single process: ``pretrain`` keeps its own path (and results) then.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..base.errors import BTUnetError

SYNC_MODES = ("auto", "all", "projector")
DEFAULT_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------- environment

def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launched() -> bool:
    """True inside a multi-process launch (torchrun, or srun with the same variables)."""
    return env_world_size() > 1


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if is_initialized() else env_world_size()


def rank() -> int:
    if is_initialized():
        return torch.distributed.get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """Rank 0 (or a plain single process): the one that writes files and logs."""
    return rank() == 0


def active() -> bool:
    """Whether pre-training should run distributed (several ranks launched or initialised)."""
    return world_size() > 1


@dataclass
class Context:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str
    owns_group: bool  # we initialised the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_process_group(device: str = "auto", timeout_s: float | None = None) -> Context:
    """Join (or create from the torchrun variables) the default process group.

    CUDA (``device`` "cuda", or "auto" with a GPU): NCCL, this rank on ``cuda:LOCAL_RANK``.
    Otherwise gloo on the CPU (Apple MPS is not supported by either backend here).
    """
    from ..base.device import resolve_device
    dev = resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise BTUnetError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) "
                              "on this node: start at most one process per GPU")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        if dev.type == "mps":
            raise BTUnetError("distributed pre-training runs on CUDA or the CPU, not Apple MPS; "
                              "use --device cpu")
        dev, backend = torch.device("cpu"), "gloo"
    owns = False
    if not is_initialized():
        timeout = timeout_s if timeout_s is not None else float(
            os.environ.get("BTUNET_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if v not in os.environ]
        if missing:
            raise BTUnetError(f"distributed run without {', '.join(missing)}: launch with torchrun "
                              "(or set them as torchrun does)")
        torch.distributed.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=timeout),
            device_id=dev if backend == "nccl" else None)
        owns = True
    else:
        backend = torch.distributed.get_backend()
    return Context(torch.distributed.get_rank(), local_rank, torch.distributed.get_world_size(),
                   dev, backend, owns)


def shutdown(ctx: Context) -> None:
    if ctx.owns_group and is_initialized():
        torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------- collectives with gradients

class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient is summed over ranks as well.

    With every rank computing the same (global) loss from the summed tensors, this makes each
    rank's gradient ``WORLD_SIZE`` times its share of the global loss's gradient, which DDP's
    gradient averaging then turns into exactly the single-process gradient.
    """

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over all ranks; the identity without a (multi-rank) process group."""
    if not is_initialized() or torch.distributed.get_world_size() == 1:
        return tensor
    return _AllReduceSum.apply(tensor)


# --------------------------------------------------------------------------- batch norm over ranks

class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover the batch of every rank (CPU and GPU).

    ``torch.nn.SyncBatchNorm`` only runs on GPUs; this one uses two all-reduces per call and
    keeps the parameter and buffer names of ``BatchNorm1d/2d``, so checkpoints stay the same.
    Without a process group (or in eval mode) it is an ordinary batch norm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's _BatchNorm signature
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's _BatchNorm signature
        if not (self.training and is_initialized() and torch.distributed.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        x = input.to(torch.promote_types(input.dtype, torch.float32))
        count = x.new_tensor([x.numel() / x.shape[1]])
        summed = all_reduce_sum(torch.cat([x.sum(dims), count]))
        n = summed[-1]
        shape = [1, -1] + [1] * (input.dim() - 2)
        mean = summed[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce_sum(centred.pow(2).sum(dims)) / n
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                            else self.momentum)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        return out.to(input.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in ``module`` by a :class:`GlobalBatchNorm` (same weights)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new.to(next(iter(module.state_dict().values())).device)
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child))
    return module


def synchronise_batchnorm(encoder: nn.Module, projector: nn.Module, device: torch.device,
                          mode: str = "auto") -> tuple[nn.Module, nn.Module]:
    """Projector: always global statistics. Encoder: SyncBatchNorm on CUDA (``auto``/``all``),
    :class:`GlobalBatchNorm` on CPU only with ``all`` (its BN sees N x H x W pixels per rank)."""
    if mode not in SYNC_MODES:
        raise BTUnetError(f"unknown batch-norm sync mode {mode!r}; choose one of: {', '.join(SYNC_MODES)}")
    projector = convert_batchnorm(projector)
    if mode == "all" or (mode == "auto" and device.type == "cuda"):
        encoder = (nn.SyncBatchNorm.convert_sync_batchnorm(encoder) if device.type == "cuda"
                   else convert_batchnorm(encoder))
    return encoder, projector


# --------------------------------------------------------------------------- data shards

def local_batch_size(batch_size: int, world: int, r: int) -> int:
    """This rank's share of the global batch (the first ``batch_size % world`` ranks get one more)."""
    return batch_size // world + (1 if r < batch_size % world else 0)


def _expand(images) -> list:
    from ..io.imageio import list_images
    if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "compute"):
        images = [images]
    items: list = []
    for item in images:
        items += list_images([item]) if isinstance(item, (str, os.PathLike)) else [item]
    return items


def load_shard(images, channels: int, min_size: int, ctx: Context, axes: str | None = None
               ) -> tuple[list[np.ndarray], int, list[str]]:
    """This rank's planes, the number of planes over all ranks and every rank's file names.

    Files (and arrays) are dealt out round-robin; with fewer of them than ranks every rank reads
    them all and takes every ``world``-th plane (all planes when there are fewer than ranks).
    """
    from ..pipeline.data import image_planes, load_sources
    items = _expand(images)
    if not items:
        raise BTUnetError("no images given")
    by_file = len(items) >= ctx.world_size
    mine = items[ctx.rank::ctx.world_size] if by_file else items
    problem = None
    try:
        sources = load_sources(mine)
    except BTUnetError as exc:  # report it on every rank, below, instead of crashing this one
        sources, problem = [], str(exc)
    planes = [p.pixels for name, arr in sources
              for p in image_planes(name, arr, channels, min_size=min_size, axes=axes)]
    if not by_file and len(planes) >= ctx.world_size:
        planes = planes[ctx.rank::ctx.world_size]
    counts = torch.tensor([len(planes), 1 if problem else 0], dtype=torch.long, device=ctx.device)
    torch.distributed.all_reduce(counts)
    gathered: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(gathered, (ctx.rank, [n for n, _ in sources] if by_file or ctx.rank == 0
                                                   else [], problem))
    if int(counts[1]):
        bad = [f"rank {r}: {p}" for r, _, p in gathered if p]
        raise BTUnetError("some ranks have no readable images (" + "; ".join(bad) + ")")
    names: list[str] = []
    lists = {r: n for r, n, _ in gathered}
    for i in range(max(len(v) for v in lists.values())):  # undo the round-robin deal
        names += [lists[r][i] for r in sorted(lists) if i < len(lists[r])]
    return planes, int(counts[0]), names


def stop_requested(should_stop, ctx: Context) -> bool:
    """A stop on any rank stops every rank after the same step."""
    flag = torch.tensor([1.0 if should_stop is not None and should_stop() else 0.0], device=ctx.device)
    torch.distributed.all_reduce(flag)
    return bool(flag.item() > 0)


# --------------------------------------------------------------------------- failures

def describe_failure(exc: BaseException) -> str:
    """One line saying why this rank stopped (its own error, or waiting on another rank)."""
    text = str(exc).lower()
    collective = isinstance(exc, getattr(torch.distributed, "DistError", ())) or "gloo" in text \
        or "nccl" in text or "pair closure" in text
    if collective and ("timeout" in text or "timed out" in text):
        return ("timed out waiting for another rank (it hangs or died); BTUNET_DIST_TIMEOUT_S "
                f"(now {os.environ.get('BTUNET_DIST_TIMEOUT_S', DEFAULT_TIMEOUT_S)} s) sets the limit")
    if collective:
        return "lost contact with another rank (it failed or was stopped: see its message)"
    return f"{type(exc).__name__}: {exc}"


__all__ = ["Context", "GlobalBatchNorm", "active", "all_reduce_sum", "convert_batchnorm",
           "describe_failure", "init_process_group", "is_main_process", "launched", "load_shard",
           "local_batch_size", "rank", "shutdown", "stop_requested", "synchronise_batchnorm",
           "world_size"]
