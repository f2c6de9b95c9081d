"""The training set of a fine-tune: annotated planes paired with their images, validation pixels
held out in whole blocks, and random patches drawn around the painted pixels."""
from __future__ import annotations

import numpy as np

from ..base.errors import BTUnetError
from ..core.config import FinetuneConfig
from ..core.metadata import Normalization
from ..io.imageio import spatial_shape
from ..labels.annotations import (
    boundary_target,
    check_annotation_counts,
    has_instances,
    has_stroke_boundary,
    infer_classes,
    stroke_boundary,
    targets_and_weights,
)
from ..labels.heads import MAX_CLASSES, HeadSpec, head_of
from ..labels.instances import MIN_SIZE, object_sizes, size_floor
from ..models import SegmentationModel
from ..pipeline.data import AnnotatedPlane, pad_to_min_size
from ..pipeline.planes import check_budget, engine_image, plane_layout

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

    ``axes``: what each image axis is (``btunet.io.axes``); annotations have the same axes without C.
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


def min_size_of(planes: list[AnnotatedPlane], kept: int = MIN_SIZE) -> int:
    """The model's object-size floor: from the training instances of dense masks, else ``kept``,
    the one of the model continued from (default: the engine's)."""
    sizes = [p.object_sizes for p in planes if p.object_sizes is not None]
    if sizes:
        return size_floor(np.concatenate(sizes))
    return int(kept)


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
