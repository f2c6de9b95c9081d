"""One config object per job: the widgets, the CLI and the Python API all fill the same fields."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch


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
    device: str = "auto"
    fast: bool = True              # channels_last + bf16 autocast
    seed: int = 0


@dataclass
class FinetuneConfig:
    """Supervised training of a full variant on painted (sparse) or drawn (dense) annotations."""
    model: str = "unet"
    mask_mode: str = "sparse"
    base_filters: int = 16
    epochs: Optional[int] = None     # None: 12 for sparse strokes (cosine schedule), 60 for dense masks
    continue_epochs: int = 4         # length of a continuation (``continuation()``) after more painting
    steps_per_epoch: int = 25
    batch_size: int = 8
    patch_size: int = 128
    lr: float = 1e-3
    encoder_lr_scale: float = 1.0    # a pre-trained encoder's learning rate, relative to lr (0 = frozen)
    annotated_fraction: float = 0.9  # share of patches centred on an annotated pixel
    val_fraction: float = 0.2        # share of annotated 64-px blocks held out for validation
    lr_patience: int = 10            # epochs without improvement before lr x 0.1
    patience: int = 20               # epochs without improvement before stopping
    time_budget_s: Optional[float] = None
    schedule: str = "auto"           # "cosine" (decay to 0, keep the end), "plateau"; auto: cosine for sparse
    pseudo_labels: str = "forest"    # sparse only: "forest" (pseudo-labels for unpainted pixels) or "none"
    pseudo_weight: float = 1.0       # loss weight of a pseudo-labelled pixel (a painted pixel has 1)
    pseudo_confidence: float = 0.6   # teacher probability needed for a pixel to get a pseudo-label
    continue_teacher: str = "both"   # pseudo-labels when continuing: mean of current model and new forest
    augment: bool = True             # flips and 90-degree rotations (+ blur/noise below)
    blur_noise: bool = True          # mild Gaussian blur and noise
    intensity_augment: float = 0.0   # gamma/contrast/brightness jitter strength (0 = off)
    device: str = "auto"
    fast: bool = True
    seed: int = 0

    def total_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return SPARSE_EPOCHS if self.mask_mode == "sparse" else DENSE_EPOCHS

    def uses_cosine(self) -> bool:
        return self.schedule == "cosine" or (self.schedule == "auto" and self.mask_mode == "sparse")

    def continuation(self) -> "FinetuneConfig":
        """The short run that continues a trained model after the user painted more."""
        return dataclasses.replace(self, epochs=self.continue_epochs, schedule="cosine", lr=self.lr * CONTINUE_LR_SCALE)


SPARSE_EPOCHS, DENSE_EPOCHS = 12, 60
CONTINUE_LR_SCALE = 0.5  # a warm start needs smaller steps than a fresh model


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
    eta_s: float
    lr: float = 0.0
    val_loss: Optional[float] = None
    val_dice: Optional[float] = None
    epoch_end: bool = False
    history: dict[str, list] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)
    time_budget_s: Optional[float] = None  # set when the run is limited by time: then ``epochs``
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
