"""Fine-tuning a U-Net variant on the few pixels a user annotated."""
from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from .annotations import (
    CONVENTIONS,
    boundary_target,
    check_annotation_counts,
    has_instances,
    has_stroke_boundary,
    infer_classes,
    stroke_boundary,
    targets_and_weights,
)
from .augment import finetune_augment
from .config import FinetuneConfig, Progress, ProgressCallback, StopCallback, config_dict, seed_everything
from .data import AnnotatedPlane, ImageSource, load_sources, pad_to_min_size
from .device import autocast, describe_device, resolve_device
from .encoder_features import teacher_features
from .encoder_start import encoder_lr_factor, refit_batchnorm
from .errors import BTUnetError
from .eta import StepClock
from .heads import MAX_CLASSES, HeadSpec, default_classes, head_of
from .imageio import spatial_shape
from .instances import MIN_SIZE, object_sizes, size_floor
from .losses import segmentation_loss
from .metadata import DEFAULT_THRESHOLD, Normalization
from .model_start import build_from_encoder
from .models import SegmentationModel
from .planes import check_budget, engine_image, image_channels, plane_layout, predict_logits
from .pretrain import PretrainedEncoder, as_encoder
from .pseudo import add_pseudo_labels, context_planes, focus_on_errors, model_probabilities  # noqa: F401
from .reference import training_reference
from .separation import separation_of
from .thresholds import threshold_of
from .weight_average import WeightAverage

VAL_BLOCK = 64  # validation pixels are held out in whole blocks, so they are not neighbours of training pixels


def head_for(annotations, cfg: FinetuneConfig, model: SegmentationModel | None = None) -> HeadSpec:
    """The head the annotations ask for: K classes (given, the model's, or from the labels) and a
    boundary channel when dense masks hold instance ids (or ``cfg.instances == "boundary"``)."""
    for _, labels in annotations:  # before any label array is read whole
        check_budget(np.shape(labels), False)
    if model is not None:
        spec = head_of(model)
    else:
        k = cfg.n_classes or (len(cfg.class_names) if cfg.class_names else None)
        if k is None:
            k = max(infer_classes(np.asarray(labels), cfg.mask_mode) for _, labels in annotations)
        marks_borders = {"dense": has_instances, "sparse": has_stroke_boundary}.get(cfg.mask_mode)
        boundary = cfg.instances == "boundary" or (
            cfg.instances == "auto" and marks_borders is not None
            and any(marks_borders(np.asarray(labels)) for _, labels in annotations))
        spec = HeadSpec(int(k), bool(boundary))
    if spec.boundary and cfg.mask_mode == "classes":
        raise BTUnetError("object borders are learnt from instance masks (mask mode 'dense', one id per "
                          "object) or from background strokes between objects (mode 'sparse'), not from "
                          "class masks; use instances='none'")
    if spec.n_classes > MAX_CLASSES:
        raise BTUnetError(f"the labels ask for {spec.n_classes} classes, more than the {MAX_CLASSES} a model "
                          "can hold; use mask mode 'dense' for instance masks")
    return spec


def annotated_planes(images, annotations, channels: int, mode: str, patch_size: int,
                     head: HeadSpec | None = None, axes: str | None = None,
                     normalization: Normalization | None = None) -> list[AnnotatedPlane]:
    """Pair images with annotations, check shapes, keep only planes with annotated pixels.

    ``axes``: what each image axis is (``btunet.axes``); annotations have the same axes without C.
    ``normalization``: the rule the model stores (default: ``Normalization()``)."""
    head = head or HeadSpec()
    if len(images) != len(annotations):
        raise BTUnetError(f"got {len(images)} images but {len(annotations)} annotations")
    border_target = stroke_boundary if mode == "sparse" else boundary_target  # where objects meet

    def pad(a):
        return pad_to_min_size(a[None], patch_size, "constant")[0]
    planes = []
    for (name, raw), (_, labels) in zip(images, annotations, strict=True):
        image, rgb = engine_image(raw, axes, None, channels, what=f"image {name}")
        if tuple(labels.shape) != spatial_shape(image, rgb):
            raise BTUnetError(f"annotation shape {tuple(labels.shape)} does not match image {name} "
                              f"of shape {tuple(raw.shape)}"
                              + (f" (axes {axes})" if axes else " (RGB)" if rgb else ""))
        layout = plane_layout(image, channels, rgb=rgb, normalization=normalization)
        for index in layout.indices():
            plane_labels = np.asarray(labels[index])
            target, weight = targets_and_weights(plane_labels, mode, n_classes=head.n_classes)
            if not weight.any():
                continue
            pixels = layout.read(image, index)
            planes.append(AnnotatedPlane(pad_to_min_size(pixels, patch_size), pad(target), pad(weight),
                                         np.zeros_like(pad(weight)), name, size=target.shape,
                                         boundary=pad(border_target(plane_labels)) if head.boundary else None,
                                         object_sizes=object_sizes(plane_labels) if mode == "dense" else None,
                                         instances=(pad(plane_labels.astype(np.int32))
                                                    if mode == "dense" and head.boundary else None)))
    n_obj = int(sum(((p.target > 0) * p.weight).sum() for p in planes))
    n_all = int(sum(p.weight.sum() for p in planes))
    per_class = [int(sum(((p.target == k) * p.weight).sum() for p in planes))
                 for k in range(1, head.n_classes + 1)]
    check_annotation_counts(n_obj, n_all - n_obj, mode, per_class)
    return planes


def min_size_of(planes: list[AnnotatedPlane], previous: dict) -> int:
    """The model's object-size floor: from the training instances of dense masks, else the one of
    the model continued from, else the default."""
    sizes = [p.object_sizes for p in planes if p.object_sizes is not None]
    if sizes:
        return size_floor(np.concatenate(sizes))
    return int(previous.get("min_size", MIN_SIZE))


def hold_out_validation(planes: list[AnnotatedPlane], fraction: float, rng: np.random.Generator,
                        min_pixels: int = 4096, min_blocks: int = 5) -> bool:
    """Move a random share of annotated blocks to validation if enough is annotated for both."""
    blocks = []
    for k, p in enumerate(planes):
        h, w = p.weight.shape
        for y in range(0, h, VAL_BLOCK):
            for x in range(0, w, VAL_BLOCK):
                if p.weight[y:y + VAL_BLOCK, x:x + VAL_BLOCK].any():
                    blocks.append((k, y, x))
    total = sum(p.weight.sum() for p in planes)
    n_val = int(round(fraction * len(blocks)))
    if fraction <= 0 or total < min_pixels or len(blocks) < min_blocks or n_val == 0:
        return False
    for k, y, x in (blocks[i] for i in rng.choice(len(blocks), n_val, replace=False)):
        box = (slice(y, y + VAL_BLOCK), slice(x, x + VAL_BLOCK))
        planes[k].val_weight[box] = planes[k].weight[box]
        planes[k].weight[box] = 0
        if planes[k].val_region is None:
            planes[k].val_region = np.zeros(planes[k].weight.shape, bool)
        planes[k].val_region[box] = True

    def counts(attr: str) -> list[float]:
        return [sum(float(((p.target > 0) * getattr(p, attr)).sum()) for p in planes),
                sum(float(((p.target == 0) * getattr(p, attr)).sum()) for p in planes)]
    if min(counts("weight") + counts("val_weight")) > 0:
        return True
    for p in planes:  # one side lost a class: train on everything instead
        p.weight += p.val_weight
        p.val_weight[:] = 0
        p.val_region = None
    return False


class PatchSampler:
    """Random patches, most of them centred on an annotated pixel."""

    def __init__(self, planes: list[AnnotatedPlane], size: int, annotated_fraction: float,
                 rng: np.random.Generator):
        self.planes, self.size, self.fraction, self.rng = planes, size, annotated_fraction, rng
        self.coords = [np.flatnonzero(p.weight if p.focus is None else p.focus) for p in planes]
        # planes are drawn by how much they teach (painted + pseudo-labelled pixels); the focus
        # only says where in a plane patches are centred, so a plane without mistakes still trains
        counts = np.array([p.weight.sum() for p in planes], np.float64)
        self.plane_p = counts / counts.sum()

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.size
        c = self.planes[0].pixels.shape[0]
        nt = 1 + int(self.planes[0].boundary is not None)
        images, targets, weights = (np.empty((n, c, s, s), np.float32), np.empty((n, nt, s, s), np.float32),
                                    np.empty((n, 1, s, s), np.float32))
        for i in range(n):
            k = self.rng.choice(len(self.planes), p=self.plane_p)
            p = self.planes[k]
            h, w = p.weight.shape
            if self.rng.random() < self.fraction and len(self.coords[k]):
                cy, cx = divmod(int(self.rng.choice(self.coords[k])), w)
                y = int(np.clip(cy - s // 2 + self.rng.integers(-s // 4, s // 4 + 1), 0, h - s))
                x = int(np.clip(cx - s // 2 + self.rng.integers(-s // 4, s // 4 + 1), 0, w - s))
            else:
                y, x = int(self.rng.integers(0, h - s + 1)), int(self.rng.integers(0, w - s + 1))
            images[i] = p.pixels[:, y:y + s, x:x + s]
            targets[i, 0] = p.target[y:y + s, x:x + s]
            if nt == 2:
                targets[i, 1] = p.boundary[y:y + s, x:x + s]
            weights[i, 0] = p.weight[y:y + s, x:x + s]
        return images, targets, weights


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
    if model is not None:  # a wrong type fails here, not deep in the training set-up
        from .model_check import check_model
        if isinstance(check_model(model), (str, os.PathLike)):
            from .checkpoint import load_model
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
    classes = ([c.as_dict() for c in default_classes(head.n_classes, cfg.class_names)]
               if model is None else (model.metadata or {}).get("classes"))
    if classes is not None and head.n_classes == 1 and not cfg.class_names and model is None:
        classes = None  # one unnamed class: today's object model
    net = model if model is not None else build_from_encoder(cfg, enc, channels, head.channels)
    previous = dict(getattr(model, "metadata", None) or {})
    norm = (Normalization.parse(previous["normalization"]) if previous.get("normalization")
            else Normalization(method=cfg.normalization))  # a continuation keeps the model's own
    if model is not None and cfg.tune_threshold:  # a continued model keeps its own threshold
        cfg = copy.copy(cfg)
        cfg.threshold = float(previous.get("threshold", cfg.threshold))
    planes = annotated_planes(sources, labels, channels, cfg.mask_mode, cfg.patch_size, head, cfg.axes, norm)
    head_meta = {"classes": classes, "instances": "boundary" if head.boundary else None}
    if model is None:  # what the channels mean and how images are normalised, for previews while training
        net.metadata = {**head_meta, "normalization": norm.as_dict()}
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
    encoder_params = list(net.encoder.parameters())
    encoder_ids = {id(p) for p in encoder_params}
    encoder_lr = cfg.lr * (cfg.encoder_lr_scale if enc is not None else 1.0)
    optimizer = torch.optim.Adam([  # the head's group last: progress reports its lr
        {"params": encoder_params, "lr": encoder_lr},
        {"params": [p for p in net.parameters() if id(p) not in encoder_ids], "lr": cfg.lr}],
        foreach=True)  # a few multi-tensor ops, not ~10 per parameter: fewer thread barriers per step
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    warmup_steps = int(round(cfg.encoder_warmup * cfg.steps_per_epoch)) if enc is not None else 0
    cosine = cfg.uses_cosine()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=cfg.lr_patience)
    history: dict[str, list] = {"loss": [], "val_loss": [], "val_dice": [], "val_class_dice": []}
    best, best_state, best_epoch, stop_reason = float("inf"), None, 0, None
    average = WeightAverage(net, cfg.weight_average) if cfg.weight_average > 0 else None

    def shown() -> SegmentationModel:  # what previews, validation and the result use
        return average.model if average is not None and average.settled else net
    epochs = cfg.total_epochs()
    total = epochs * cfg.steps_per_epoch
    step, step_began = 0, time.perf_counter()
    clock = StepClock(total)  # the pace of the steps, without the set-up above
    for epoch in range(epochs):
        losses = []
        for _ in range(cfg.steps_per_epoch):
            if should_stop is not None and should_stop():
                stop_reason = "cancelled"
                break
            now = time.perf_counter()
            # end within the budget: no step that would overrun it
            if step and cfg.time_budget_s is not None and now - start + (now - step_began) > cfg.time_budget_s:
                stop_reason = "time_budget"
                break
            step_began = now  # a step's time includes its progress callback (e.g. a preview)
            if cosine:  # decays to 0 at the end of the run (by steps or by the time budget)
                done = step / total
                if cfg.time_budget_s:
                    done = max(done, (time.perf_counter() - start) / cfg.time_budget_s)
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * 0.5 * (1 + np.cos(np.pi * min(1.0, done)))
            if step <= warmup_steps:  # the pre-trained encoder joins in gradually (encoder_start.py)
                full = optimizer.param_groups[0]["lr"] if cosine else encoder_lr
                optimizer.param_groups[0]["lr"] = full * encoder_lr_factor(step, warmup_steps)
            x, t, w = (torch.from_numpy(a).to(device) for a in sampler.batch(cfg.batch_size))
            if cfg.augment:
                x, t, w = finetune_augment(x, t, w, cfg.intensity_augment, cfg.blur_noise, generator=generator)
            if cfg.fast:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, cfg.fast):
                logits = net(x)
            loss = segmentation_loss(logits, t, w, head.n_classes, head.boundary)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update(net)
            step += 1
            clock.step_done()
            losses.append(loss.item())
            last = len(losses) == cfg.steps_per_epoch
            val_loss, val_dice, val_classes = (validate(shown(), planes, cfg.fast, cfg.threshold, head)
                                               if (last and has_val) else (None, None, None))
            if last:
                history["loss"].append(float(np.mean(losses)))
                history["val_loss"].append(val_loss)
                history["val_dice"].append(val_dice)
                history["val_class_dice"].append(val_classes)
            if on_progress is not None:
                elapsed = time.perf_counter() - start
                eta = clock.eta()
                if cfg.time_budget_s:  # what is left of the budget, or less
                    eta = max(0.0, min(cfg.time_budget_s - elapsed, eta if eta is not None else float("inf")))
                on_progress(Progress(
                    stage="finetune", epoch=epoch + 1, epochs=epochs, step=step, total_steps=total,
                    loss=float(np.mean(losses[-10:])), elapsed_s=elapsed,
                    eta_s=eta, lr=optimizer.param_groups[-1]["lr"],
                    val_loss=val_loss, val_dice=val_dice, val_class_dice=val_classes, epoch_end=last,
                    history=history, model=shown(), time_budget_s=cfg.time_budget_s))
            if cosine and cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
                stop_reason = "time_budget"  # the decay has reached 0: the model is final
                break
        if stop_reason in (None, "time_budget") and losses and len(losses) == cfg.steps_per_epoch:
            if has_val:  # held-out pixels decide which weights are kept
                monitor = history["val_loss"][-1]
                if monitor < best:
                    best, best_state, best_epoch = monitor, copy.deepcopy(shown().state_dict()), epoch + 1
            if not cosine:
                monitor = history["val_loss"][-1] if has_val else history["loss"][-1]
                plateau.step(monitor)
                if not has_val and monitor < best:
                    best, best_state, best_epoch = monitor, copy.deepcopy(shown().state_dict()), epoch + 1
                elif epoch + 1 - best_epoch >= cfg.patience:
                    stop_reason = "early_stopping"
            elif not has_val:  # cosine without held-out pixels: the end of the decay is the model
                best_epoch = epoch + 1
            if not cosine and cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
                stop_reason = stop_reason or "time_budget"
        if stop_reason is not None:
            break
    if best_state is None and average is not None and average.settled:
        best_state = average.model.state_dict()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    min_size = min_size_of(planes, previous)
    threshold, tuned = threshold_of(net, planes, cfg, head, has_val)
    separate_by, separation = (separation_of(net, planes, threshold, min_size, previous, cfg.fast)
                               if head.boundary else (None, None))
    painted = [(p.painted | (p.val_weight > 0)) for p in planes]
    n_obj = int(sum((p.target[m] > 0.5).sum() for p, m in zip(planes, painted, strict=True)))
    n_all = int(sum(m.sum() for m in painted))
    net.metadata = {
        **{k: v for k, v in head_meta.items() if v is not None},
        "normalization": norm.as_dict(), "threshold": threshold,
        "intensity_reference": training_reference(sources, channels, cfg.axes, previous, norm),
        **({"threshold_tuning": tuned} if tuned else {}), "min_size": min_size,
        **({"separate_by": separate_by} if separate_by else {}),
        **({"separation": separation} if separation else {}),
        "trained_on": {"images": [name for name, _ in sources], "planes": n_planes,
                       "context_planes": len(planes) - n_planes,
                       "mask_mode": cfg.mask_mode, "convention": CONVENTIONS[cfg.mask_mode],
                       "annotated_pixels": {"object": n_obj, "background": n_all - n_obj},
                       "pseudo_labelled_pixels": n_pseudo, "painted_pixels_wrong_at_start": n_wrong,
                       "validation_pixels": int(sum(p.val_weight.sum() for p in planes))},
        "encoder": (previous.get("encoder") if model is not None else
                    None if enc is None else {k: enc.metadata.get(k)
                                              for k in ("trained_on", "epochs", "date", "provenance")
                                              if k != "provenance" or "provenance" in enc.metadata}),
        "continued_from": ({k: previous.get(k) for k in ("trained_on", "epochs", "seconds", "continued_from")}
                           if model is not None else None),
        "epochs": len(history["loss"]), "best_epoch": best_epoch, "stopped": stop_reason,
        "loss_history": history["loss"], "val_loss_history": history["val_loss"],
        "val_dice_history": history["val_dice"], "val_class_dice_history": history["val_class_dice"],
        "finetune_config": config_dict(cfg),
        "device": describe_device(device), "seconds": round(time.perf_counter() - start, 1),
    }
    return net


def prepare_encoder_start(net: SegmentationModel, cfg: FinetuneConfig, planes: list[AnnotatedPlane],
                          device: torch.device, batches: int = 8) -> None:
    """A model built on a pre-trained encoder normalises with the BatchNorm statistics of these
    images, not of the pre-training ones (``encoder_start.py``), from its first preview on."""
    if cfg.encoder_refit_bn:
        sampler = PatchSampler(planes, cfg.patch_size, cfg.annotated_fraction, np.random.default_rng(cfg.seed + 1))
        refit_batchnorm(net, (torch.from_numpy(sampler.batch(cfg.batch_size)[0]).to(device)
                              for _ in range(batches)))
