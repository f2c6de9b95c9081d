"""One config object per job: the widgets, the CLI and the Python API all fill the same fields.

Each field declares its type, range and choices here, once (``settings_schema``): the configs
check them, and the command line and the widgets read them (``settings_schema.limits``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from ..base.device import DEVICES
from ..base.errors import BTUnetError
from ..base.settings_schema import List, Number, Whole, settings, whole_choice
from ..labels.annotations import MASK_MODES
from ..labels.heads import MAX_CLASSES, MAX_NAME
from ..labels.instances import SEPARATIONS
from ..models import SIZE_MULTIPLE
from ..models.registry import CHANNELS, MAX_BASE_FILTERS, check_model_settings
from ..models.runtime import RUNTIMES
from .metadata import DEFAULT_THRESHOLD, NORMALIZATION_METHODS

#: Patch sides a training run accepts: at least one 16-px pooling cell, at most what fits a batch.
MIN_PATCH, MAX_PATCH = 16, 2048
#: Tile side and overlap of prediction. A quarter of the overlap (64 px) is discarded at inner
#: tile edges, and the network's receptive field effects fade within ~100 px, so tiles agree with
#: whole-image prediction of a trained unet to < 1e-4 while costing < 1.8x for huge planes.
TILE, OVERLAP = 1024, 256
SPARSE_EPOCHS, DENSE_EPOCHS = 12, 60
TEACHER_FEATURES = ("filters", "encoder", "fine")
CONTINUE_LR_SCALE = 0.5  # a warm start needs smaller steps than a fresh model

# Settings several configs share, each with its range declared once.
Device = Literal[DEVICES]
Seed = Annotated[Whole, Field(ge=0, le=2**32 - 1)]
BaseFilters = Annotated[Whole, Field(ge=1, le=MAX_BASE_FILTERS)]
PatchSize = Annotated[Whole, Field(ge=MIN_PATCH, le=MAX_PATCH)]
LearningRate = Annotated[Number, Field(gt=0.0, le=1.0)]
AtLeast0 = Annotated[Number, Field(ge=0.0)]
AtLeast1 = Annotated[Whole, Field(ge=1)]
Fraction = Annotated[Number, Field(ge=0.0, le=1.0)]
#: probability above which a pixel is object; never 0 or 1 (everything or nothing would be object)
Threshold = Annotated[Number, Field(gt=0.0, lt=1.0)]


def _check_axes(axes) -> None:
    if axes is not None:
        from ..io.axes import check_letters
        check_letters(axes)


CLASS_NAMES = "a list of non-empty names, e.g. ['nuclei', 'ring']"  # what class_names must be


@settings
class PretrainConfig:
    """Barlow Twins pre-training of a variant's encoder on unlabelled images.

    Defaults follow BT-Unet (projector width, lambda, warm-up + cosine) but use AdamW instead of
    SGD: with the small batches that fit a CPU or a laptop GPU it converges in far fewer epochs.
    """
    model: str = "unet"
    channels: Annotated[whole_choice(*CHANNELS), Field(json_schema_extra={"words": "1 (grayscale) or 3 (RGB)"})] = 1
    base_filters: BaseFilters = 16
    epochs: AtLeast1 = 50
    batch_size: Annotated[Whole, Field(ge=2)] = 16  # Barlow Twins correlates the samples of a batch
    patch_size: PatchSize = 96
    samples_per_epoch: AtLeast1 = 256   # random patches drawn per epoch (at least one per plane)
    lr: LearningRate = 1e-3
    weight_decay: AtLeast0 = 1e-4
    warmup_fraction: Fraction = 0.1
    projector_dim: Annotated[Whole, Field(ge=1, le=16384)] = 256
    lambd: AtLeast0 = 5e-3
    view_intensity: Annotated[Number, Field(ge=0.0, le=2.0)] = 0.25  # strength of the views' gamma/contrast/
    #                                brightness differences (0: none); mild: an encoder blind to intensity
    #                                levels hurt cells3d
    view_blur: Annotated[Number, Field(ge=0.0, le=2.0)] = 1.0  # strength of the views' blur (largest sigma
    #                                1.5 px x this; 0: none)
    dense_weight: AtLeast0 = 0.0       # weight of the dense (pixel-level) Barlow Twins loss; 0: global loss only
    dense_level: Annotated[Whole, Field(ge=0, le=4)] = 2  # encoder level it reads: skips 0 (full res) .. 3,
    #                                4 the bottleneck
    dense_points: Annotated[Whole, Field(ge=1, le=32)] = 7  # K: K x K points per patch where both views are compared
    device: Device = "auto"
    fast: bool = True              # channels_last + bf16 autocast where bf16 is native (device.autocast)
    seed: Seed = 0
    axes: str | None = None     # what each image axis is (btunet.io.axes, e.g. "TZYX", "CYX"); None: guessed

    def _check_together(self) -> None:
        check_model_settings(self.model, base_filters=self.base_filters)
        _check_axes(self.axes)


@settings
class FinetuneConfig:
    """Supervised training of a full variant on painted (sparse) or drawn (dense) annotations.

    ``epochs`` may be 0: the model is built (with a pre-trained encoder, if given) but not trained.
    """
    model: str = "unet"
    mask_mode: Literal[MASK_MODES] = "sparse"
    base_filters: BaseFilters = 16
    epochs: Annotated[Whole | None, Field(ge=0)] = None  # None: 12 for sparse strokes (cosine schedule),
    #                                  60 for dense masks
    continue_epochs: AtLeast1 = 4    # length of a continuation (``continuation()``) after more painting
    steps_per_epoch: AtLeast1 = 25
    batch_size: AtLeast1 = 8
    patch_size: PatchSize = 128
    lr: LearningRate = 1e-3
    encoder_lr_scale: AtLeast0 = 3.0  # a pre-trained encoder's learning rate, relative to lr (0 = frozen); x3
    #                                  lets it unlearn invariances the task needs (docs/results_pretraining.md)
    encoder_refit_bn: bool = True    # a pre-trained encoder's BatchNorm statistics re-estimated on the images
    encoder_rescale: bool = False    # a pre-trained encoder's conv weights scaled back to a fresh init's norms
    encoder_warmup: AtLeast0 = 0.0   # epochs over which a pre-trained encoder's lr ramps up from 0
    annotated_fraction: Fraction = 0.9  # share of patches centred on an annotated pixel
    val_fraction: Annotated[Number, Field(ge=0.0, lt=1.0)] = 0.2  # share of annotated 64-px blocks held out
    #                                  for validation
    lr_patience: Annotated[Whole, Field(ge=0)] = 10  # epochs without improvement before lr x 0.1
    patience: AtLeast1 = 20          # epochs without improvement before stopping
    time_budget_s: Annotated[Number | None, Field(gt=0.0)] = None
    schedule: Literal["auto", "cosine", "plateau"] = "auto"  # "cosine" (decay to 0, keep the end), "plateau";
    #                                  auto: cosine for sparse
    pseudo_labels: Literal["forest", "none"] = "forest"  # sparse only: "forest" (pseudo-labels for unpainted
    #                                  pixels) or "none"
    pseudo_weight: AtLeast0 = 1.0    # loss weight of a pseudo-labelled pixel (a painted pixel has 1)
    pseudo_confidence: Annotated[Number, Field(gt=0.5, le=1.0)] = 0.6  # teacher probability needed for a
    #                                  pixel to get a pseudo-label
    pseudo_edge_weight: AtLeast0 = 10.0  # a fresh run's pseudo-labels weigh up to 1 + this more at the forest's
    #                                  edges, which no stroke marks (0: flat; benchmarks/interactive_notes.md)
    continue_teacher: Literal["both", "mean", "model", "forest"] = "both"  # pseudo-labels when continuing: mean
    #                                  of current model and new forest ("mean"), except near the model's edges
    #                                  once it was continued before
    correction_weight: Annotated[Number, Field(ge=1.0, le=100.0)] = 1.0  # loss weight of a painted pixel the
    #                                  model continued from gets wrong (a correction); other strokes weigh 1
    correction_radius: Annotated[Number | None, Field(ge=0.0)] = None  # px around a correction where the
    #                                  model's pseudo-labels are dropped; None: as deep as the model's mistake
    #                                  + 2, at most 12 (pseudo.py)
    teacher_features: Literal[TEACHER_FEATURES] = "filters"  # the forest's features: "filters" (multiscale
    #                                  filters), "encoder" (+ the maps of the encoder the run starts from,
    #                                  else the built-in one) or "fine" (+ the raw pixel and ilastik's
    #                                  finest scales, sigma 0.3 and 0.7)
    weight_average: Annotated[Number, Field(ge=0.0, le=0.999)] = 0.0  # decay of an exponential moving average
    #                                  of the weights, which previews and the result use (0: the last weights;
    #                                  weight_average.py); 0.999 already averages ~1000 steps
    augment: bool = True             # flips and 90-degree rotations (+ blur/noise below)
    blur_noise: bool = True          # mild Gaussian blur and noise
    intensity_augment: Fraction = 0.0  # gamma/contrast/brightness jitter strength (0 = off)
    normalization: Literal[NORMALIZATION_METHODS] = "percentile"  # intensities -> [0, 1]: "percentile" (1st-
    #                                  99.8th of each image or stack) or "background" (its background peak to
    #                                  0, 99.8th to 1: the fraction of the field objects cover does not move
    #                                  it); saved with the model, and a continuation keeps the model's own
    device: Device = "auto"
    fast: bool = True
    seed: Seed = 0
    threshold: Threshold = DEFAULT_THRESHOLD  # probability above which a pixel is object; saved with the model
    tune_threshold: bool = True      # dense masks: a threshold with clearly better Dice on the held-out
    #                                  validation pixels replaces ``threshold`` (thresholds.py)
    n_classes: Annotated[Whole | None, Field(ge=1, le=MAX_CLASSES)] = None  # K object classes; None: from the
    #                                  labels (max label - 1 sparse, max id classes)
    class_names: Annotated[List | None, Field(json_schema_extra={"words": CLASS_NAMES})] = None  # names of
    #                                  classes 1..K (stored with the model)
    instances: Literal["auto", "boundary", "none"] = "none"  # "boundary": learn object borders; "auto": when
    #                                  dense masks hold instance ids or background strokes lie between two
    #                                  objects (opt-in: it costs up to 0.01 pixel Dice on some sets; with
    #                                  instance masks the model then picks borders or distance watershed,
    #                                  separation.py)
    axes: str | None = None       # what each image axis is (btunet.io.axes, e.g. "TZYX", "CYX"); masks have
    #                                  the same axes without C. None: a trailing 3/4 is colour, the rest planes

    def _check_together(self) -> None:
        check_model_settings(self.model, base_filters=self.base_filters)
        _check_axes(self.axes)
        if self.class_names is not None:
            _check_class_names(self.class_names, self.n_classes)

    def total_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return SPARSE_EPOCHS if self.mask_mode == "sparse" else DENSE_EPOCHS

    def uses_cosine(self) -> bool:
        return self.schedule == "cosine" or (self.schedule == "auto" and self.mask_mode == "sparse")

    def continuation(self) -> FinetuneConfig:
        """The short run that continues a trained model after the user painted more."""
        return dataclasses.replace(self, epochs=self.continue_epochs, schedule="cosine", lr=self.lr * CONTINUE_LR_SCALE)


def _check_class_names(names: list, n_classes: int | None) -> None:
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise BTUnetError(f"class_names must be {CLASS_NAMES}")
    if any(len(n) > MAX_NAME for n in names):
        raise BTUnetError(f"class_names may hold names of up to {MAX_NAME} characters (a model stores them)")
    twice = sorted({n.strip() for n in names if [m.strip() for m in names].count(n.strip()) > 1})
    if twice:
        raise BTUnetError(f"class_names must differ: {', '.join(map(repr, twice))} is given twice")
    if n_classes is not None and len(names) != n_classes:
        raise BTUnetError(f"{len(names)} class names were given for n_classes={n_classes}")


@settings
class PredictConfig:
    """How ``predict`` turns a model's output into labels; the same knobs in the API, CLI and widget."""
    threshold: Threshold | None = None  # probability above which a pixel is object; None: the model's own
    instances: bool = False            # label separate objects instead of 0/1
    instances_3d: bool | None = None  # instances: one id per object through the Z planes of a stack
    #                                      (None: when the stack has a Z axis; False: per plane)
    z_axis: Annotated[Whole | None, Field(ge=0)] = None  # which plane axis (counted before Y, X) is Z; None:
    #                                    the only one of a (Z, Y, X) stack (a time axis is never linked)
    z_spacing: Annotated[Number, Field(gt=0.0)] = 1.0  # Z step / pixel width, so 3-D seeds are round in space
    split_touching: bool = True        # instances: split touching objects by a distance watershed
    min_distance: AtLeast1 = 5         # instances: least distance (px) between two objects' centres
    separate_by: Literal[SEPARATIONS] | None = None  # instances: "boundary" (a model's learnt borders) or
    #                                    "distance" (watershed of the mask's distance transform); None: the model's
    min_size: Annotated[Whole | None, Field(ge=0)] = None  # instances: drop objects below this many px (voxels
    #                                    in 3-D); None: the model's own (from its training objects), 0: keep all
    probabilities: bool = True         # also return the object probability
    class_probabilities: bool = False  # a class model: also return each class's probability
    uncertainty: bool = False          # also return the uncertainty map (four test-time flips, 4x time)
    tta: bool = False                  # average the outputs of four flips of each plane (4x time)
    tile: Annotated[Whole, Field(ge=SIZE_MULTIPLE)] = TILE  # tile side (multiple of 16); larger planes are
    #                                    tiled and blended
    overlap: Annotated[Whole, Field(ge=0)] = OVERLAP  # overlap of neighbouring tiles (multiple of 16, below tile)
    tile_batch: AtLeast1 = 4           # tiles per network call
    device: Device = "auto"
    fast: bool = True                  # channels_last + bf16 where native (the eager path)
    runtime: Literal[RUNTIMES] = "auto"  # "onnx": ONNX Runtime on the CPU (runtime.py); "eager": PyTorch;
    #                                    auto: ONNX Runtime for large CPU jobs or an already exported network

    def _check_together(self) -> None:
        if self.tile % SIZE_MULTIPLE or self.overlap % SIZE_MULTIPLE or self.overlap >= self.tile:
            raise BTUnetError(f"tile ({self.tile}) and overlap ({self.overlap}) must be multiples of "
                              f"{SIZE_MULTIPLE}, with overlap below tile")

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
