"""Fine-tuning a U-Net variant on the few pixels a user annotated."""
from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..base.device import autocast, describe_device, resolve_device
from ..core.checkpoint import load_model, model_metadata
from ..core.config import FinetuneConfig, ProgressCallback, StopCallback, config_dict, seed_everything
from ..core.metadata import DEFAULT_THRESHOLD, CheckpointMetadata, IntensityReference, ModelSpec, Normalization
from ..labels.annotations import CONVENTIONS
from ..labels.heads import HeadSpec, default_classes, parse_classes
from ..labels.instances import MIN_SIZE
from ..models import SegmentationModel
from ..pipeline.data import AnnotatedPlane, ImageSource, load_sources
from ..pipeline.planes import image_channels, predict_logits
from ..pipeline.reference import training_reference
from ..pipeline.separation import separation_of
from ..pipeline.thresholds import threshold_of
from .augment import finetune_augment
from .encoder_features import teacher_features
from .encoder_start import refit_batchnorm
from .losses import segmentation_loss
from .model_start import build_from_encoder
from .pretrain import PretrainedEncoder, as_encoder
from .pseudo import add_pseudo_labels, context_planes, focus_on_errors, model_probabilities
from .train_loop import EARLY_STOPPING, BestState, FinetuneSchedule, TrainLoop
from .training_set import PatchSampler, annotated_planes, head_for, hold_out_validation, min_size_of
from .weight_average import WeightAverage


@torch.no_grad()
def validate(model: SegmentationModel, planes: list[AnnotatedPlane], fast: bool,
             threshold: float = DEFAULT_THRESHOLD, head: HeadSpec | None = None
             ) -> tuple[float, float, list[float] | None]:
    """Loss, object Dice (at the model's ``threshold``) and, for a class model, the Dice of each
    class 1..K over the held-out pixels of whole planes."""
    head = head or HeadSpec()
    model.eval()
    logits, targets, weights = [], [], []
    for p in planes:
        if p.val_weight.any():
            lg = predict_logits(model, p.pixels, fast=fast, all_channels=True)
            keep = p.val_weight > 0
            logits.append(torch.from_numpy(lg[:, keep]))
            target = [p.target[keep]] + ([p.boundary[keep]] if head.boundary else [])
            targets.append(torch.from_numpy(np.stack(target)))
            weights.append(torch.from_numpy(p.val_weight[keep][None]))
    model.train()
    # (C, N) -> (1, C, N, 1): the loss's (batch, channel, H, W) layout
    lg, t, w = (torch.cat(a, dim=1)[None, :, :, None] for a in (logits, targets, weights))
    loss = segmentation_loss(lg, t, w, head.n_classes, head.boundary).item()
    index = t[0, 0, :, 0].long()
    if head.n_classes == 1:
        pred = (torch.sigmoid(lg[0, 0, :, 0]) > threshold).long()
    else:
        prob = torch.softmax(lg[0, :head.class_channels, :, 0], dim=0)
        pred = (torch.argmax(prob[1:], dim=0) + 1) * (1 - prob[0] > threshold)

    def dice_of(a, b) -> float:
        return float((2 * (a & b).sum() + 1) / (a.sum() + b.sum() + 1))
    obj = dice_of(pred > 0, index > 0)
    per_class = ([dice_of(pred == k, index == k) for k in range(1, head.n_classes + 1)]
                 if head.n_classes > 1 else None)
    return loss, obj, per_class


@dataclass
class Prepared:
    """What a fine-tune reads and decides before its first step; ``train``, ``select`` and
    ``describe`` work from it."""
    cfg: FinetuneConfig
    net: SegmentationModel
    head: HeadSpec
    planes: list[AnnotatedPlane]
    n_planes: int                      # painted planes; the rest of ``planes`` are context planes
    sources: list
    channels: int
    norm: Normalization
    previous: dict                     # the metadata of the model continued from ({} for a new one)
    before: CheckpointMetadata | None  # the same, typed and checked (None: a new model or none kept)
    continued: bool
    enc: PretrainedEncoder | None
    device: torch.device
    generator: torch.Generator
    sampler: PatchSampler
    has_val: bool
    n_pseudo: int
    n_wrong: int | None
    classes: list | None
    start: float                       # reading the data counts against a time budget too


@dataclass
class Trained:
    """How the steps went: the loss histories, the epoch whose weights were kept, why it ended."""
    history: dict[str, list]
    best_epoch: int
    stopped: str | None


@dataclass
class Selected:
    """What is chosen on the trained weights: threshold, size floor, how touching objects split."""
    threshold: float
    tuned: dict | None
    min_size: int
    separate_by: str | None
    separation: dict | None


def finetune(images: ImageSource | Sequence[ImageSource], annotations: ImageSource | Sequence[ImageSource],
             config: FinetuneConfig | None = None, encoder: PretrainedEncoder | str | os.PathLike | None = None,
             on_progress: ProgressCallback | None = None, should_stop: StopCallback | None = None,
             model: SegmentationModel | None = None) -> SegmentationModel:
    """Train ``config.model`` on annotated pixels only and return the best weights.

    ``annotations`` pair with ``images`` in order (same spatial shape); see ``annotations.py``
    for the sparse and dense conventions. ``encoder``: a pre-trained encoder (object or file)
    of the same variant and channel count. ``model``: continue from these weights instead
    (e.g. after painting more); it is trained in place and returned, so pass a copy to keep the
    original (a checkpoint path is loaded first). A stop request returns the best model so far.
    """
    run = prepare(images, annotations, config, encoder, model)
    trained = train(run, on_progress, should_stop)
    selected = select(run)
    run.net.metadata = describe(run, trained, selected).object_dict()
    return run.net


def prepare(images, annotations, config: FinetuneConfig | None, encoder, model: SegmentationModel | None
            ) -> Prepared:
    """Read and check the data, build (or take) the network, hold out validation pixels, add
    pseudo-labels: everything before the first step, in the order that fixes the random numbers."""
    if model is not None:  # a wrong type fails here, not deep in the training set-up
        from ..core.model_check import check_model
        if isinstance(check_model(model), (str, os.PathLike)):
            model = load_model(model)
    cfg = config or FinetuneConfig()
    cfg.check()  # settings may have been changed since the config was made
    start = time.perf_counter()  # reading the data and pseudo-labels count against a time budget too
    generator = seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    enc = as_encoder(encoder)
    sources, labels = load_sources(images), load_sources(annotations, masks=True)
    channels = (model.in_channels if model is not None else enc.channels if enc is not None
                else image_channels(sources[0][1], cfg.axes))
    head = head_for(labels, cfg, model)
    previous = dict(getattr(model, "metadata", None) or {})
    before = model_metadata(model) if previous else None  # read as prediction reads it
    if model is None:
        classes = [c.as_dict() for c in default_classes(head.n_classes, cfg.class_names)]
        if head.n_classes == 1 and not cfg.class_names:
            classes = None  # one unnamed class: today's object model
    else:
        classes = [c.as_dict() for c in before.classes] if before is not None and before.classes else None
    net = model if model is not None else build_from_encoder(cfg, enc, channels, head.channels)
    # a continuation keeps the model's own normalisation
    norm = before.normalization if before is not None else Normalization(method=cfg.normalization)
    if model is not None and cfg.tune_threshold:  # a continued model keeps its own threshold
        cfg = copy.copy(cfg)
        cfg.threshold = before.threshold if before is not None else cfg.threshold
    planes = annotated_planes(sources, labels, channels, cfg.mask_mode, cfg.patch_size, head, cfg.axes, norm)
    if model is None:  # what the channels mean and how images are normalised, for previews while training
        net.metadata = {"classes": classes, "instances": "boundary" if head.boundary else None,
                        "normalization": norm.as_dict()}
    # a continuation keeps every painted pixel for training (a held-out correction would never be
    # learnt) and ends at the end of its schedule
    has_val = hold_out_validation(planes, cfg.val_fraction, rng) if model is None else False
    n_planes = len(planes)
    use_pseudo = cfg.mask_mode == "sparse" and cfg.pseudo_labels == "forest"
    if use_pseudo:  # unpainted planes of the stacks, so the rest of a stack is not unknown land
        planes += context_planes(sources, labels, channels, cfg.patch_size, normalization=norm)
    for p in planes:
        p.painted = p.weight > 0
        if head.boundary and p.boundary is None:  # unpainted context planes: no border anywhere
            p.boundary = np.zeros_like(p.weight)
    net.to(device)
    probs = model_probabilities(net, planes, cfg.fast) if model is not None else None
    n_wrong = focus_on_errors(planes, probs, cfg.threshold) if model is not None else None
    extra = teacher_features(cfg.teacher_features, enc, channels) if use_pseudo else None
    # a model continued before has learnt the forest's edges; later forests only move them
    again = bool(previous.get("continued_from"))
    n_pseudo = add_pseudo_labels(planes, cfg, probs, extra, model_edges=again) if use_pseudo else 0
    fraction = min(cfg.annotated_fraction, 0.5) if use_pseudo else cfg.annotated_fraction
    sampler = PatchSampler(planes, cfg.patch_size, fraction, rng)
    if enc is not None:
        prepare_encoder_start(net, cfg, planes, device)
    net.train()
    if cfg.fast:
        net.to(memory_format=torch.channels_last)
    return Prepared(cfg, net, head, planes, n_planes, sources, channels, norm, previous, before, model is not None,
                    enc, device, generator, sampler, has_val, n_pseudo, n_wrong, classes, start)


def train(run: Prepared, on_progress: ProgressCallback | None = None,
          should_stop: StopCallback | None = None) -> Trained:
    """The steps (``train_loop.TrainLoop``), then the kept weights loaded: those of the best
    validation epoch, else the weight average once settled, else the last ones."""
    steps = Steps(run, on_progress, should_stop)
    steps.loop.run(steps.step, steps.after_step, steps.end_epoch)
    state = steps.best.state
    if state is None and steps.average is not None and steps.average.settled:
        state = steps.average.model.state_dict()
    if state is not None:
        run.net.load_state_dict(state)
    run.net.eval()
    return Trained(steps.history, steps.best.epoch, steps.loop.stopped)


class Steps:
    """A fine-tune's steps: the optimiser and its schedule, the weight average, validation at each
    epoch end, progress, and the rule that keeps the best weights or stops early."""

    def __init__(self, run: Prepared, on_progress: ProgressCallback | None, should_stop: StopCallback | None):
        cfg, net = run.cfg, run.net
        self.run, self.cfg, self.on_progress = run, cfg, on_progress
        encoder_params = list(net.encoder.parameters())
        encoder_ids = {id(p) for p in encoder_params}
        self.optimizer = torch.optim.Adam([  # the head's group last: progress reports its lr
            {"params": encoder_params, "lr": cfg.lr * (cfg.encoder_lr_scale if run.enc is not None else 1.0)},
            {"params": [p for p in net.parameters() if id(p) not in encoder_ids], "lr": cfg.lr}],
            foreach=True)  # a few multi-tensor ops, not ~10 per parameter: fewer thread barriers per step
        self.cosine = cfg.uses_cosine()
        warmup_steps = int(round(cfg.encoder_warmup * cfg.steps_per_epoch)) if run.enc is not None else 0
        self.schedule = FinetuneSchedule(self.optimizer, self.cosine, warmup_steps, cfg.lr_patience)
        self.history: dict[str, list] = {"loss": [], "val_loss": [], "val_dice": [], "val_class_dice": []}
        self.best = BestState()
        self.average = WeightAverage(net, cfg.weight_average) if cfg.weight_average > 0 else None
        # a cosine decay reaches 0 at the time budget: the model is final there
        self.loop = TrainLoop(cfg.total_epochs(), cfg.steps_per_epoch, schedule=self.schedule,
                              should_stop=should_stop, time_budget_s=cfg.time_budget_s,
                              final_at_budget=self.cosine, start=run.start)

    def shown(self) -> SegmentationModel:
        """What previews, validation and the result use: the settled weight average, else the net."""
        return self.average.model if self.average is not None and self.average.settled else self.run.net

    def step(self) -> torch.Tensor:
        cfg, run, head = self.cfg, self.run, self.run.head
        x, t, w = (torch.from_numpy(a).to(run.device) for a in run.sampler.batch(cfg.batch_size))
        if cfg.augment:
            x, t, w = finetune_augment(x, t, w, cfg.intensity_augment, cfg.blur_noise, generator=run.generator)
        if cfg.fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(run.device, cfg.fast):
            logits = run.net(x)
        loss = segmentation_loss(logits, t, w, head.n_classes, head.boundary)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.average is not None:
            self.average.update(run.net)
        return loss

    def after_step(self) -> None:
        """Validation and the loss histories at an epoch's end, then progress."""
        last, history = self.loop.epoch_end, self.history
        val_loss, val_dice, val_classes = (
            validate(self.shown(), self.run.planes, self.cfg.fast, self.cfg.threshold, self.run.head)
            if (last and self.run.has_val) else (None, None, None))
        if last:
            for key, value in zip(history, (float(np.mean(self.loop.losses)), val_loss, val_dice, val_classes),
                                  strict=True):
                history[key].append(value)
        if self.on_progress is not None:
            self.on_progress(self.loop.progress(
                "finetune", self.optimizer.param_groups[-1]["lr"], val_loss=val_loss, val_dice=val_dice,
                val_class_dice=val_classes, history=history, model=self.shown()))

    def end_epoch(self) -> str | None:
        """Keep the best weights; with the plateau schedule, cut the rate or stop early."""
        if not self.loop.epoch_end:
            return None
        epoch, has_val = self.loop.epoch + 1, self.run.has_val
        # held-out pixels decide which weights are kept; without them, the training loss (plateau)
        monitor = self.history["val_loss"][-1] if has_val else self.history["loss"][-1]
        improved = (has_val or not self.cosine) and self.best.offer(monitor, self.shown(), epoch)
        if self.cosine:
            if not has_val:  # cosine without held-out pixels: the end of the decay is the model
                self.best.epoch = epoch
            return None
        self.schedule.end_epoch(monitor)
        return EARLY_STOPPING if not improved and self.best.waited(epoch) >= self.cfg.patience else None


def select(run: Prepared) -> Selected:
    """The threshold, the object-size floor and the way touching objects split, chosen on the
    trained weights and the held-out pixels (``thresholds.py``, ``separation.py``)."""
    min_size = min_size_of(run.planes, run.before.min_size if run.before is not None else MIN_SIZE)
    threshold, tuned = threshold_of(run.net, run.planes, run.cfg, run.head, run.has_val)
    separate_by, separation = (separation_of(run.net, run.planes, threshold, min_size, run.previous, run.cfg.fast)
                               if run.head.boundary else (None, None))
    return Selected(threshold, tuned, min_size, separate_by, separation)


def describe(run: Prepared, trained: Trained, selected: Selected) -> CheckpointMetadata:
    """The model's metadata, typed and checked: what prediction needs, and how and on what it was trained."""
    cfg, planes, enc, previous = run.cfg, run.planes, run.enc, run.previous
    painted = [(p.painted | (p.val_weight > 0)) for p in planes]
    n_obj = int(sum((p.target[m] > 0.5).sum() for p, m in zip(planes, painted, strict=True)))
    n_all = int(sum(m.sum() for m in painted))
    history = trained.history
    reference = training_reference(run.sources, run.channels, cfg.axes, previous, run.norm)
    provenance = {
        **({"threshold_tuning": selected.tuned} if selected.tuned else {}),
        **({"separation": selected.separation} if selected.separation else {}),
        "trained_on": {"images": [name for name, _ in run.sources], "planes": run.n_planes,
                       "context_planes": len(planes) - run.n_planes,
                       "mask_mode": cfg.mask_mode, "convention": CONVENTIONS[cfg.mask_mode],
                       "annotated_pixels": {"object": n_obj, "background": n_all - n_obj},
                       "pseudo_labelled_pixels": run.n_pseudo, "painted_pixels_wrong_at_start": run.n_wrong,
                       "validation_pixels": int(sum(p.val_weight.sum() for p in planes))},
        "encoder": (previous.get("encoder") if run.continued else
                    None if enc is None else {k: enc.metadata.get(k)
                                              for k in ("trained_on", "epochs", "date", "provenance")
                                              if k != "provenance" or "provenance" in enc.metadata}),
        "continued_from": ({k: previous.get(k) for k in ("trained_on", "epochs", "seconds", "continued_from")}
                           if run.continued else None),
        "epochs": len(history["loss"]), "best_epoch": trained.best_epoch, "stopped": trained.stopped,
        "loss_history": history["loss"], "val_loss_history": history["val_loss"],
        "val_dice_history": history["val_dice"], "val_class_dice_history": history["val_class_dice"],
        "finetune_config": config_dict(cfg),
        "device": describe_device(run.device), "seconds": round(time.perf_counter() - run.start, 1),
    }
    return CheckpointMetadata(
        "model", ModelSpec.parse(run.net.config), run.norm, selected.threshold, cfg.mask_mode,
        classes=parse_classes(run.classes) if run.classes is not None else (),
        instances="boundary" if run.head.boundary else None, min_size=selected.min_size,
        separate_by=selected.separate_by or "distance",
        intensity_reference=IntensityReference.parse(reference) if reference is not None else None,
        provenance=provenance).checked()


def prepare_encoder_start(net: SegmentationModel, cfg: FinetuneConfig, planes: list[AnnotatedPlane],
                          device: torch.device, batches: int = 8) -> None:
    """A model built on a pre-trained encoder normalises with the BatchNorm statistics of these
    images, not of the pre-training ones (``encoder_start.py``), from its first preview on."""
    if cfg.encoder_refit_bn:
        sampler = PatchSampler(planes, cfg.patch_size, cfg.annotated_fraction, np.random.default_rng(cfg.seed + 1))
        refit_batchnorm(net, (torch.from_numpy(sampler.batch(cfg.batch_size)[0]).to(device)
                              for _ in range(batches)))
