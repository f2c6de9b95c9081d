"""Barlow Twins pre-training of a U-Net encoder on unlabelled images, in one process or over
``torchrun`` ranks (:func:`pretrain_ddp`; the ``torch.distributed`` pieces are in
:mod:`btunet.train.distributed`). Both paths share the projector, the embedding and the training loop."""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..base.device import autocast, describe_device, resolve_device
from ..base.errors import BTUnetError
from ..core.checkpoint import load_checkpoint, save_checkpoint
from ..core.config import PretrainConfig, ProgressCallback, StopCallback, config_dict, seed_everything
from ..core.metadata import CheckpointMetadata, ModelSpec, Normalization
from ..models import SegmentationModel, create_model
from ..models.projector import Projector
from ..pipeline.data import ImageSource, image_planes, load_sources
from . import distributed
from .augment import two_views
from .builtin_encoder import builtin_path, is_builtin
from .dense_twins import DenseTwins, level_channels
from .losses import barlow_twins_loss, global_barlow_twins_loss
from .train_loop import CosineWarmup, TrainLoop


def embed(encoder: nn.Module, projector: nn.Module, x: torch.Tensor, level: int | None = None
          ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """encoder -> global average pool of the bottleneck -> projector.

    ``level``: also return that encoder level's feature map (skips 0..3, then the bottleneck).
    """
    skips, bottleneck = encoder(x)
    z = projector(bottleneck.float().mean(dim=(2, 3)))
    return z if level is None else (z, [*skips, bottleneck][level])


class TwinEmbedder(nn.Module):
    """Encoder + projector with both views in one forward (DDP wants one forward per backward).

    With ``dense`` (:class:`DenseTwins`) and the views' crop affines, it also returns the dense
    embeddings of the points both views share: ``(z_a, z_b, d_a, d_b)``.
    """

    def __init__(self, encoder: nn.Module, projector: nn.Module, dense: DenseTwins | None = None):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.dense = dense

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor, theta_a: torch.Tensor | None = None,
                theta_b: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if self.dense is None:
            return embed(self.encoder, self.projector, view_a), embed(self.encoder, self.projector, view_b)
        z_a, f_a = embed(self.encoder, self.projector, view_a, self.dense.level)
        z_b, f_b = embed(self.encoder, self.projector, view_b, self.dense.level)
        return (z_a, z_b, *self.dense(f_a, f_b, theta_a, theta_b))


def pair_loss(embeddings: Sequence[torch.Tensor], lambd: float, dense_weight: float = 0.0,
              loss: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = barlow_twins_loss
              ) -> torch.Tensor:
    """Barlow Twins loss of ``(z_a, z_b)``, plus ``dense_weight`` x that of ``(d_a, d_b)`` if given
    (every matched point is one sample of the dense loss)."""
    total = loss(embeddings[0], embeddings[1], lambd)
    if len(embeddings) == 4:
        total = total + dense_weight * loss(embeddings[2], embeddings[3], lambd)
    return total


def twin_loss(twin: nn.Module, view_a: torch.Tensor, view_b: torch.Tensor, lambd: float) -> torch.Tensor:
    """Global Barlow Twins loss of one step (the same value on every rank)."""
    z_a, z_b = twin(view_a, view_b)
    return global_barlow_twins_loss(z_a, z_b, lambd)


@dataclass
class PretrainedEncoder:
    """Encoder (and projector) weights with the metadata needed to fine-tune from them."""
    model_config: dict[str, Any]
    encoder_state: dict[str, torch.Tensor]
    projector_state: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        return self.model_config["name"]

    @property
    def channels(self) -> int:
        return int(self.model_config["in_channels"])

    def save(self, path: str | os.PathLike) -> Path:
        tensors = {**{f"encoder.{k}": v for k, v in self.encoder_state.items()},
                   **{f"projector.{k}": v for k, v in self.projector_state.items()}}
        meta = {**self.metadata, "kind": "encoder", "model": self.model_config,
                "channels": self.channels}
        return save_checkpoint(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PretrainedEncoder:
        tensors, meta = load_checkpoint(path, kind="encoder")
        # float16 storage (the built-in encoder) trains and is saved again in float32
        tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}

        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        return cls(meta.model.as_dict(), part("encoder."), part("projector."), meta.to_dict())


def as_encoder(encoder: PretrainedEncoder | str | os.PathLike | None) -> PretrainedEncoder | None:
    """An encoder object, file, or ``"builtin"`` (the one shipped with btunet) as an object."""
    if encoder is None or isinstance(encoder, PretrainedEncoder):
        return encoder
    if is_builtin(encoder):
        return PretrainedEncoder.load(builtin_path())
    return PretrainedEncoder.load(encoder)


def pretrain(images: ImageSource | Sequence[ImageSource], config: PretrainConfig | None = None,
             on_progress: ProgressCallback | None = None, should_stop: StopCallback | None = None,
             resume: PretrainedEncoder | str | os.PathLike | None = None) -> PretrainedEncoder:
    """Pre-train ``config.model``'s encoder with Barlow Twins on unlabelled images.

    ``images``: files, folders or arrays (2-D or stacks; every plane is a sample). A stop
    request (``should_stop()`` returning True) ends training after the current step and returns
    the encoder as it is. ``resume`` continues from an encoder checkpoint of the same variant.
    """
    cfg = config or PretrainConfig()
    cfg.check()  # settings may have been changed since the config was made
    if distributed.active():  # launched by torchrun with several processes: DDP over the ranks
        return pretrain_ddp(images, cfg, on_progress, should_stop, resume)
    check_memory(images, cfg.channels, cfg.axes)  # before anything is read: no block-wise pre-training
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    sources = load_sources(images)
    planes = [p.pixels for name, arr in sources
              for p in image_planes(name, arr, cfg.channels, min_size=cfg.patch_size, axes=cfg.axes)]
    model, projector, history = build_encoder(cfg, resume, device)
    encoder = model.encoder
    dense = build_dense(cfg, encoder, device)
    run = EncoderRun(
        planes=planes, total_planes=len(planes), files=[name for name, _ in sources], device=device,
        batch_size=cfg.batch_size, rng=np.random.default_rng(cfg.seed),
        embed_pair=TwinEmbedder(encoder, projector, dense),
        loss=barlow_twins_loss, stop=lambda: should_stop is not None and should_stop(),
        report=on_progress)
    return train_encoder(cfg, run, model.config, encoder, projector, history, dense)


def available_memory() -> int | None:
    """Bytes of memory the system can give now, or None where that cannot be told."""
    try:  # Linux: what the kernel can give without swapping, page cache included
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(images, channels: int, axes: str | None = None) -> None:
    """Refuse, from the files' headers and the arrays' shapes alone, images that pre-training cannot
    hold: it keeps every plane in memory as float32 (there is no block-wise pre-training), beside
    the images as read. Planes above the in-memory budget are refused with advice that fits here."""
    from ..io.imageio import UnreadableImage, inspect_image, list_images, max_plane_pixels
    items = images if isinstance(images, (list, tuple)) else [images]
    paths = list_images([i for i in items if isinstance(i, (str, os.PathLike))])
    shapes = [(tuple(a.shape), 0) for a in items if hasattr(a, "shape")]  # arrays are already held
    for path in paths:
        try:
            shape = inspect_image(path, budget=False)
        except UnreadableImage:
            continue  # skipped with a warning when the images are read
        shapes.append((shape, math.prod(shape) * _itemsize(path)))
    need = 0
    for shape, raw in shapes:
        (y, x), pixels = _plane_and_pixels(shape, axes)
        if y * x > max_plane_pixels():
            raise BTUnetError(f"an image has planes of {y} x {x} pixels, more than the {max_plane_pixels():,} "
                              "pre-training reads into memory at once; cut it into smaller images or raise "
                              "BTUNET_MAX_PLANE_PIXELS")
        need += raw + pixels * channels * 4
    free = available_memory()
    if free is not None and need > free:
        raise BTUnetError(f"pre-training keeps every plane in memory: these images need about {_size(need)}, "
                          f"more than the {_size(free)} free; pre-train on fewer images or planes (a part "
                          "of the stack) or on crops")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _plane_and_pixels(shape: tuple, axes: str | None) -> tuple[tuple[int, int], int]:
    """((Y, X) of one plane, pixels of all planes) of a declared shape: named ``axes`` when they fit
    it, else the engine's rule (last two axes spatial, a trailing 3 or 4 colour)."""
    shape = tuple(int(s) for s in shape)
    letters = (axes or "").upper()
    if len(letters) == len(shape) and "Y" in letters and "X" in letters:  # other axes are refused later
        colour = shape[letters.index("C")] if "C" in letters else 1
        return (shape[letters.index("Y")], shape[letters.index("X")]), math.prod(shape) // colour
    colour = len(shape) >= 3 and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4
    spatial = shape[:-1] if colour else shape
    if len(spatial) < 2:
        return (1, spatial[0] if spatial else 1), math.prod(spatial)
    return (spatial[-2], spatial[-1]), math.prod(spatial)


def _itemsize(path) -> int:
    """Bytes per value of an image file, from its header (8-bit for PNG/JPEG)."""
    if str(path).lower().endswith((".tif", ".tiff")):
        import tifffile
        with tifffile.TiffFile(path) as tif:
            return int(tif.series[0].dtype.itemsize)
    return 1


def pretrain_ddp(images, config=None, on_progress=None, should_stop=None, resume=None,
                 sync_batchnorm: str | None = None) -> PretrainedEncoder:
    """Distributed version of :func:`pretrain` (same arguments and result).

    Every rank returns the same :class:`PretrainedEncoder`; ``on_progress`` is only called on
    rank 0. ``sync_batchnorm``: "auto" (default, or ``BTUNET_SYNC_BN``), "all", "projector".
    """
    cfg = config or PretrainConfig()
    if cfg.dense_weight > 0:
        raise BTUnetError("dense_weight (the dense Barlow Twins loss) works in one process only: "
                          "set it to 0 under torchrun, or pre-train without torchrun")
    ctx = distributed.init_process_group(cfg.device)
    try:
        return _pretrain_rank(images, cfg, ctx, on_progress, should_stop, resume,
                              sync_batchnorm or os.environ.get("BTUNET_SYNC_BN", "auto"))
    except BaseException as exc:
        why = distributed.describe_failure(exc)
        print(f"btunet: pretrain rank {ctx.rank} of {ctx.world_size} stopped: {why}", file=sys.stderr, flush=True)
        raise
    finally:
        distributed.shutdown(ctx)


def _pretrain_rank(images, cfg: PretrainConfig, ctx: distributed.Context, on_progress, should_stop,
                   resume, sync_mode: str) -> PretrainedEncoder:
    if cfg.batch_size < 2:
        raise BTUnetError("Barlow Twins needs a batch size of at least 2 (it correlates samples)")
    if cfg.batch_size < ctx.world_size:
        raise BTUnetError(f"--batch-size {cfg.batch_size} is the global batch: it must be at least "
                          f"the number of processes ({ctx.world_size})")
    seed_everything(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts them)
    planes, total_planes, files = distributed.load_shard(images, cfg.channels, cfg.patch_size, ctx, axes=cfg.axes)
    model, projector, history = build_encoder(cfg, resume, ctx.device)
    encoder, projector = distributed.synchronise_batchnorm(model.encoder, projector, ctx.device, sync_mode)
    ddp = nn.parallel.DistributedDataParallel(
        TwinEmbedder(encoder, projector), device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    # different patches, augmentations and dropout on every rank
    torch.manual_seed(cfg.seed + 1 + 7919 * ctx.rank)
    batch = distributed.local_batch_size(cfg.batch_size, ctx.world_size, ctx.rank)
    run = EncoderRun(
        planes=planes, total_planes=total_planes, files=files, device=ctx.device, batch_size=batch,
        rng=np.random.default_rng([cfg.seed, ctx.rank]), embed_pair=ddp, loss=global_barlow_twins_loss,
        stop=lambda: distributed.stop_requested(should_stop, ctx), report=on_progress if ctx.is_main else None,
        metadata={"distributed": {"world_size": ctx.world_size, "backend": ctx.backend,
                                  "sync_batchnorm": sync_mode, "local_batch_size": batch}})
    return train_encoder(cfg, run, model.config, encoder, projector, history)


def build_encoder(cfg: PretrainConfig, resume, device: torch.device
                  ) -> tuple[SegmentationModel, Projector, dict[str, list]]:
    """The variant (whose encoder is trained), its projector and the loss history so far."""
    model = create_model(cfg.model, in_channels=cfg.channels, base_filters=cfg.base_filters)
    projector = Projector(model.encoder.out_channels, cfg.projector_dim)
    history: dict[str, list] = {"loss": []}
    previous = as_encoder(resume)
    if previous is not None:
        if previous.model_config != model.config or previous.projector_state.keys() != projector.state_dict().keys():
            raise BTUnetError(f"cannot resume: the checkpoint is a {previous.variant} encoder with "
                              f"{previous.channels} channel(s) (and its own projector); use the same settings")
        model.encoder.load_state_dict(previous.encoder_state)
        projector.load_state_dict(previous.projector_state)
        history["loss"] = list(previous.metadata.get("loss_history", []))
    model.encoder.to(device)
    projector.to(device)
    if cfg.fast:
        model.encoder.to(memory_format=torch.channels_last)
    return model, projector, history


def build_dense(cfg: PretrainConfig, encoder: nn.Module, device: torch.device) -> DenseTwins | None:
    """The dense objective's sampler and projector, or None with ``dense_weight`` 0 (no random
    numbers drawn then, so the global-only run is unchanged). Its projector is not saved: a
    resumed run starts it afresh."""
    if cfg.dense_weight <= 0:
        return None
    width = level_channels(encoder, cfg.channels, cfg.dense_level)
    return DenseTwins(width, cfg.projector_dim, cfg.dense_level, cfg.dense_points).to(device)


@dataclass
class EncoderRun:
    """What differs between one process and a torchrun rank: data, embedding, loss, stop, report."""
    planes: list[np.ndarray]
    total_planes: int
    files: list[str]
    device: torch.device
    batch_size: int                      # patches drawn by this process per step
    rng: np.random.Generator
    embed_pair: Callable[..., tuple[torch.Tensor, ...]]  # (view_a, view_b[, theta_a, theta_b]) -> embeddings
    loss: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    stop: Callable[[], bool]
    report: ProgressCallback | None
    metadata: dict[str, Any] = field(default_factory=dict)


def train_encoder(cfg: PretrainConfig, run: EncoderRun, model_config: dict[str, Any], encoder: nn.Module,
                  projector: nn.Module, history: dict[str, list],
                  dense: DenseTwins | None = None) -> PretrainedEncoder:
    """The Barlow Twins steps (``train_loop.TrainLoop``): AdamW, linear warm-up then cosine decay,
    views made on the device.

    With ``dense``, ``run.embed_pair`` also gets the views' crop affines and returns the dense
    embeddings, whose loss is added with weight ``cfg.dense_weight``.
    """
    trained = [encoder, projector] + ([dense] if dense is not None else [])
    optimizer = torch.optim.AdamW([p for m in trained for p in m.parameters()],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    steps_per_epoch = max(1, math.ceil(max(cfg.samples_per_epoch, run.total_planes) / cfg.batch_size))
    total = steps_per_epoch * cfg.epochs
    schedule = CosineWarmup(optimizer, total, max(1, int(cfg.warmup_fraction * total)))
    loop = TrainLoop(cfg.epochs, steps_per_epoch, schedule=schedule, should_stop=run.stop)
    for m in trained:
        m.train()

    def step() -> torch.Tensor:
        batch = torch.from_numpy(random_patches(run.planes, run.batch_size, cfg.patch_size, run.rng))
        with torch.no_grad():
            view_a, view_b, *geometry = two_views(batch.to(run.device), return_geometry=dense is not None,
                                                    intensity=cfg.view_intensity, blur=cfg.view_blur)
        if cfg.fast:
            view_a = view_a.contiguous(memory_format=torch.channels_last)
            view_b = view_b.contiguous(memory_format=torch.channels_last)
        with autocast(run.device, cfg.fast):
            embeddings = run.embed_pair(view_a, view_b, *geometry)
        loss = pair_loss(embeddings, cfg.lambd, cfg.dense_weight, run.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def after_step() -> None:
        if run.report is not None:
            run.report(loop.progress("pretrain", optimizer.param_groups[0]["lr"], history=history, model=encoder))

    def end_epoch() -> None:  # a stopped epoch's steps count too
        history["loss"].append(float(np.mean(loop.losses)))

    stopped = loop.run(step, after_step, end_epoch) is not None
    for m in trained:
        m.eval()
    provenance = {
        "trained_on": {"files": run.files, "planes": run.total_planes},
        "epochs": len(history["loss"]), "loss_history": history["loss"],
        "stopped_early": stopped, "device": describe_device(run.device), **run.metadata,
        "pretrain_config": config_dict(cfg), "seconds": round(loop.elapsed(), 1),
    }
    metadata = CheckpointMetadata("encoder", ModelSpec.parse(model_config), Normalization(),
                                  provenance=provenance).checked()

    def to_cpu(m) -> dict:
        return {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}

    return PretrainedEncoder(model_config, to_cpu(encoder), to_cpu(projector), metadata.object_dict())


def random_patches(planes: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n random size x size crops, each from a random plane (planes are at least size x size)."""
    out = np.empty((n, planes[0].shape[0], size, size), np.float32)
    for i, k in enumerate(rng.integers(0, len(planes), n)):
        plane = planes[k]
        y = rng.integers(0, plane.shape[1] - size + 1)
        x = rng.integers(0, plane.shape[2] - size + 1)
        out[i] = plane[:, y:y + size, x:x + size]
    return out
