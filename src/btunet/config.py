"""One config object per job: the widgets, the CLI and the Python API all fill the same fields."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from . import fields
from .annotations import MASK_MODES
from .device import DEVICES
from .errors import BTUnetError
from .instances import SEPARATIONS
from .metadata import DEFAULT_THRESHOLD, NORMALIZATION_METHODS, check_threshold
from .models import SIZE_MULTIPLE
from .models.registry import CHANNELS, check_model_settings

#: Patch sides a training run accepts: at least one 16-px pooling cell, at most what fits a batch.
MIN_PATCH, MAX_PATCH = 16, 2048
#: Tile side and overlap of prediction. A quarter of the overlap (64 px) is discarded at inner
#: tile edges, and the network's receptive field effects fade within ~100 px, so tiles agree with
#: whole-image prediction of a trained unet to < 1e-4 while costing < 1.8x for huge planes.
TILE, OVERLAP = 1024, 256


def _check_axes(axes) -> None:
    if axes is not None:
        from .axes import check_letters
        check_letters(axes)


def _common(cfg) -> None:
    """Settings every training config has: model, size, device, speed path, seed, axes."""
    _check_axes(getattr(cfg, "axes", None))
    check_model_settings(cfg.model, base_filters=cfg.base_filters)
    fields.choice("device", cfg.device, DEVICES)
    fields.flag("fast", cfg.fast)
    fields.whole("seed", cfg.seed, 0, 2**32 - 1)
    fields.whole("batch_size", cfg.batch_size, 1)
    fields.whole("patch_size", cfg.patch_size, MIN_PATCH, MAX_PATCH)
    fields.number("lr", cfg.lr, 0.0, 1.0, lo_open=True)


@dataclass
class PretrainConfig:
    """Barlow Twins pre-training of a variant's encoder on unlabelled images.

    Defaults follow BT-Unet (projector width, lambda, warm-up + cosine) but use AdamW instead of
    SGD: with the small batches that fit a CPU or a laptop GPU it converges in far fewer epochs.
    """
    model: str = "unet"
    channels: int = 1
    base_filters: int = 16
    epochs: int = 50
    batch_size: int = 16
    patch_size: int = 96
    samples_per_epoch: int = 256   # random patches drawn per epoch (at least one per plane)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1
    projector_dim: int = 256
    lambd: float = 5e-3
    view_intensity: float = 0.25   # strength of the views' gamma/contrast/brightness differences (0: none);
    #                                mild: an encoder blind to intensity levels hurt cells3d
    view_blur: float = 1.0         # strength of the views' blur (largest sigma 1.5 px x this; 0: none)
    dense_weight: float = 0.0      # weight of the dense (pixel-level) Barlow Twins loss; 0: global loss only
    dense_level: int = 2           # encoder level it reads: skips 0 (full res) .. 3, 4 the bottleneck
    dense_points: int = 7          # K: K x K points per patch where both views are compared
    device: str = "auto"
    fast: bool = True              # channels_last + bf16 autocast where bf16 is native (device.autocast)
    seed: int = 0
    axes: str | None = None     # what each image axis is (btunet.axes, e.g. "TZYX", "CYX"); None: guessed

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse any setting that is out of range or of the wrong type (BTUnetError naming it)."""
        fields.whole_in("channels", self.channels, CHANNELS, "1 (grayscale) or 3 (RGB)")
        _common(self)
        fields.whole("epochs", self.epochs, 1)
        fields.whole("batch_size", self.batch_size, 2)  # Barlow Twins correlates samples of a batch
        fields.whole("samples_per_epoch", self.samples_per_epoch, 1)
        fields.number("weight_decay", self.weight_decay, 0.0)
        fields.number("warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        fields.whole("projector_dim", self.projector_dim, 1, 16384)
        fields.number("lambd", self.lambd, 0.0)
        fields.number("view_intensity", self.view_intensity, 0.0, 2.0)
        fields.number("view_blur", self.view_blur, 0.0, 2.0)
        fields.number("dense_weight", self.dense_weight, 0.0)
        fields.whole("dense_level", self.dense_level, 0, 4)
        fields.whole("dense_points", self.dense_points, 1, 32)


@dataclass
class FinetuneConfig:
    """Supervised training of a full variant on painted (sparse) or drawn (dense) annotations."""
    model: str = "unet"
    mask_mode: str = "sparse"
    base_filters: int = 16
    epochs: int | None = None     # None: 12 for sparse strokes (cosine schedule), 60 for dense masks
    continue_epochs: int = 4         # length of a continuation (``continuation()``) after more painting
    steps_per_epoch: int = 25
    batch_size: int = 8
    patch_size: int = 128
    lr: float = 1e-3
    encoder_lr_scale: float = 3.0    # a pre-trained encoder's learning rate, relative to lr (0 = frozen); x3 lets
    #                                  it unlearn invariances the task needs (docs/results_pretraining.md)
    encoder_refit_bn: bool = True    # a pre-trained encoder's BatchNorm statistics re-estimated on the images
    encoder_rescale: bool = False    # a pre-trained encoder's conv weights scaled back to a fresh init's norms
    encoder_warmup: float = 0.0      # epochs over which a pre-trained encoder's lr ramps up from 0
    annotated_fraction: float = 0.9  # share of patches centred on an annotated pixel
    val_fraction: float = 0.2        # share of annotated 64-px blocks held out for validation
    lr_patience: int = 10            # epochs without improvement before lr x 0.1
    patience: int = 20               # epochs without improvement before stopping
    time_budget_s: float | None = None
    schedule: str = "auto"           # "cosine" (decay to 0, keep the end), "plateau"; auto: cosine for sparse
    pseudo_labels: str = "forest"    # sparse only: "forest" (pseudo-labels for unpainted pixels) or "none"
    pseudo_weight: float = 1.0       # loss weight of a pseudo-labelled pixel (a painted pixel has 1)
    pseudo_confidence: float = 0.6   # teacher probability needed for a pixel to get a pseudo-label
    pseudo_edge_weight: float = 10.0  # a fresh run's pseudo-labels weigh up to 1 + this more at the forest's
    #                                  edges, which no stroke marks (0: flat; benchmarks/interactive_notes.md)
    continue_teacher: str = "both"   # pseudo-labels when continuing: mean of current model and new forest
    #                                  ("mean"), except near the model's edges once it was continued before
    correction_radius: float | None = None  # px around a correction where the model's pseudo-labels are
    #                                  dropped; None: as deep as the model's mistake + 2, at most 12 (pseudo.py)
    teacher_features: str = "filters"  # the forest's features: "filters" (multiscale filters) or "encoder"
    #                                    (+ the maps of the encoder the run starts from, else the built-in one)
    weight_average: float = 0.0      # decay of an exponential moving average of the weights, which previews
    #                                  and the result use (0: the last weights; weight_average.py)
    augment: bool = True             # flips and 90-degree rotations (+ blur/noise below)
    blur_noise: bool = True          # mild Gaussian blur and noise
    intensity_augment: float = 0.0   # gamma/contrast/brightness jitter strength (0 = off)
    normalization: str = "percentile"  # intensities -> [0, 1]: "percentile" (1st-99.8th of each image or
    #                                    stack) or "background" (its background peak to 0, 99.8th to 1: the
    #                                    fraction of the field objects cover does not move it); saved with
    #                                    the model, and a continuation keeps the model's own
    device: str = "auto"
    fast: bool = True
    seed: int = 0
    threshold: float = DEFAULT_THRESHOLD  # probability above which a pixel is object; saved with the model
    tune_threshold: bool = True      # dense masks: a threshold with clearly better Dice on the held-out
    #                                  validation pixels replaces ``threshold`` (thresholds.py)
    n_classes: int | None = None  # K object classes; None: from the labels (max label - 1 sparse, max id classes)
    class_names: list | None = None  # names of classes 1..K (stored with the model)
    instances: str = "none"          # "boundary": learn object borders; "auto": when dense masks hold
    #                                  instance ids or background strokes lie between two objects
    #                                  (opt-in: it costs up to 0.01 pixel Dice on some sets; with instance
    #                                  masks the model then picks borders or distance watershed, separation.py)
    axes: str | None = None       # what each image axis is (btunet.axes, e.g. "TZYX", "CYX"); masks have
    #                                  the same axes without C. None: a trailing 3/4 is colour, the rest planes

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse any setting that is out of range or of the wrong type (BTUnetError naming it).

        ``epochs`` may be 0: the model is built (with a pre-trained encoder, if given) but not trained.
        """
        _common(self)
        fields.choice("mask_mode", self.mask_mode, MASK_MODES)
        if self.epochs is not None:
            fields.whole("epochs", self.epochs, 0)
        for name in ("continue_epochs", "steps_per_epoch", "patience"):
            fields.whole(name, getattr(self, name), 1)
        fields.whole("lr_patience", self.lr_patience, 0)
        fields.number("encoder_lr_scale", self.encoder_lr_scale, 0.0)
        fields.flag("encoder_refit_bn", self.encoder_refit_bn)
        fields.flag("encoder_rescale", self.encoder_rescale)
        fields.number("encoder_warmup", self.encoder_warmup, 0.0)
        fields.number("annotated_fraction", self.annotated_fraction, 0.0, 1.0)
        fields.number("val_fraction", self.val_fraction, 0.0, 1.0, hi_open=True)
        if self.time_budget_s is not None:
            fields.number("time_budget_s", self.time_budget_s, 0.0, lo_open=True)
        fields.choice("schedule", self.schedule, ("auto", "cosine", "plateau"))
        fields.choice("pseudo_labels", self.pseudo_labels, ("forest", "none"))
        fields.number("pseudo_weight", self.pseudo_weight, 0.0)
        fields.number("pseudo_edge_weight", self.pseudo_edge_weight, 0.0)
        fields.number("pseudo_confidence", self.pseudo_confidence, 0.5, 1.0, lo_open=True)
        fields.choice("teacher_features", self.teacher_features, TEACHER_FEATURES)
        fields.choice("continue_teacher", self.continue_teacher, ("both", "mean", "model", "forest"))
        if self.correction_radius is not None:
            fields.number("correction_radius", self.correction_radius, 0.0)
        for name in ("augment", "blur_noise", "tune_threshold"):
            fields.flag(name, getattr(self, name))
        fields.number("weight_average", self.weight_average, 0.0, 1.0, hi_open=True)
        fields.number("intensity_augment", self.intensity_augment, 0.0, 1.0)
        fields.choice("normalization", self.normalization, NORMALIZATION_METHODS)
        check_threshold("threshold", self.threshold)
        from .heads import MAX_CLASSES, MAX_NAME
        if self.n_classes is not None:
            fields.whole("n_classes", self.n_classes, 1, MAX_CLASSES)
        if self.class_names is not None:
            names = self.class_names
            if (not isinstance(names, (list, tuple)) or not names
                    or not all(isinstance(n, str) and n.strip() for n in names)):
                raise BTUnetError("class_names must be a list of non-empty names, e.g. ['nuclei', 'ring']")
            if any(len(n) > MAX_NAME for n in names):
                raise BTUnetError(f"class_names may hold names of up to {MAX_NAME} characters (a model stores them)")
            twice = sorted({n.strip() for n in names if [m.strip() for m in names].count(n.strip()) > 1})
            if twice:
                raise BTUnetError(f"class_names must differ: {', '.join(map(repr, twice))} is given twice")
            if self.n_classes is not None and len(names) != self.n_classes:
                raise BTUnetError(f"{len(names)} class names were given for n_classes={self.n_classes}")
        fields.choice("instances", self.instances, ("auto", "boundary", "none"))

    def total_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return SPARSE_EPOCHS if self.mask_mode == "sparse" else DENSE_EPOCHS

    def uses_cosine(self) -> bool:
        return self.schedule == "cosine" or (self.schedule == "auto" and self.mask_mode == "sparse")

    def continuation(self) -> FinetuneConfig:
        """The short run that continues a trained model after the user painted more."""
        return dataclasses.replace(self, epochs=self.continue_epochs, schedule="cosine", lr=self.lr * CONTINUE_LR_SCALE)


SPARSE_EPOCHS, DENSE_EPOCHS = 12, 60
TEACHER_FEATURES = ("filters", "encoder")
CONTINUE_LR_SCALE = 0.5  # a warm start needs smaller steps than a fresh model


@dataclass
class PredictConfig:
    """How ``predict`` turns a model's output into labels; the same knobs in the API, CLI and widget."""
    threshold: float | None = None  # probability above which a pixel is object; None: the model's own
    instances: bool = False            # label separate objects instead of 0/1
    instances_3d: bool | None = None  # instances: one id per object through the Z planes of a stack
    #                                      (None: when the stack has a Z axis; False: per plane)
    z_axis: int | None = None       # which plane axis (counted before Y, X) is Z; None: the only
    #                                    one of a (Z, Y, X) stack (a time axis is never linked)
    z_spacing: float = 1.0             # Z step / pixel width, so 3-D seeds are round in space
    split_touching: bool = True        # instances: split touching objects by a distance watershed
    min_distance: int = 5              # instances: least distance (px) between two objects' centres
    separate_by: str | None = None  # instances: "boundary" (a model's learnt borders) or "distance"
    #                                    (watershed of the mask's distance transform); None: the model's
    min_size: int | None = None     # instances: drop objects below this many px (voxels in 3-D);
    #                                    None: the model's own (from its training objects), 0: keep all
    probabilities: bool = True         # also return the object probability
    class_probabilities: bool = False  # a class model: also return each class's probability
    uncertainty: bool = False          # also return the uncertainty map (four test-time flips, 4x time)
    tta: bool = False                  # average the outputs of four flips of each plane (4x time)
    tile: int = TILE                   # tile side (multiple of 16); larger planes are tiled and blended
    overlap: int = OVERLAP             # overlap of neighbouring tiles (multiple of 16, below tile)
    tile_batch: int = 4                # tiles per network call
    device: str = "auto"
    fast: bool = True                  # channels_last + bf16 where native (the eager path)
    runtime: str = "auto"              # "onnx": ONNX Runtime on the CPU (runtime.py); "eager": PyTorch;
    #                                    auto: ONNX Runtime for large CPU jobs or an already exported network

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse any setting that is out of range or of the wrong type (BTUnetError naming it)."""
        from .runtime import RUNTIMES
        fields.choice("runtime", self.runtime, RUNTIMES)
        if self.threshold is not None:
            check_threshold("threshold", self.threshold)
        for name in ("instances", "split_touching", "probabilities", "class_probabilities", "uncertainty", "tta",
                     "fast"):
            fields.flag(name, getattr(self, name))
        fields.whole("min_distance", self.min_distance, 1)
        if self.separate_by is not None:
            fields.choice("separate_by", self.separate_by, SEPARATIONS)
        if self.min_size is not None:
            fields.whole("min_size", self.min_size, 0)
        if self.instances_3d is not None:
            fields.flag("instances_3d", self.instances_3d)
        if self.z_axis is not None:
            fields.whole("z_axis", self.z_axis, 0)
        fields.number("z_spacing", self.z_spacing, 0.0, lo_open=True)
        fields.whole("tile", self.tile, SIZE_MULTIPLE)
        fields.whole("overlap", self.overlap, 0)
        fields.whole("tile_batch", self.tile_batch, 1)
        if self.tile % SIZE_MULTIPLE or self.overlap % SIZE_MULTIPLE or self.overlap >= self.tile:
            raise BTUnetError(f"tile ({self.tile}) and overlap ({self.overlap}) must be multiples of "
                              f"{SIZE_MULTIPLE}, with overlap below tile")
        fields.choice("device", self.device, DEVICES)

    @classmethod
    def of(cls, config: PredictConfig | None = None, **overrides: Any) -> PredictConfig:
        """``config`` (or the defaults) with keyword ``overrides``, checked; unknown names are a TypeError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unexpected prediction setting {unknown[0]!r}; "
                            f"settings: {', '.join(sorted(names))}")
        return dataclasses.replace(config or cls(), **overrides)


@dataclass
class Progress:
    """What long jobs report after every step (given to ``on_progress`` in the training thread).

    ``model`` is the live model: a callback may run a quick prediction with it (for a preview)
    because the callback runs between steps, never concurrently with training.
    """
    stage: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    elapsed_s: float
    eta_s: float | None  # None until the pace of the steps is known (``eta.StepClock``)
    lr: float = 0.0
    val_loss: float | None = None
    val_dice: float | None = None
    val_class_dice: list | None = None  # a class model: validation Dice of classes 1..K
    epoch_end: bool = False
    history: dict[str, list] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)
    time_budget_s: float | None = None  # set when the run is limited by time: then ``epochs``
    #                                        and ``total_steps`` are only upper bounds

    @property
    def fraction(self) -> float:
        """How far the run is: by steps, or by time spent of the time budget (if that is further)."""
        done = self.step / max(1, self.total_steps)
        if self.time_budget_s:
            done = max(done, self.elapsed_s / self.time_budget_s)
        return min(1.0, done)


ProgressCallback = Callable[[Progress], None]
StopCallback = Callable[[], bool]


def config_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def seed_everything(seed: int) -> torch.Generator:
    import numpy as np
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)
