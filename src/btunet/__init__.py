"""btunet: Barlow Twins self-supervised pre-training + U-Net segmentation from few annotations.

The engine of napari-btunet; it never imports Qt or napari.
"""
import sys as _sys
from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

try:  # the one version source is setup.cfg, read back from the installed distribution
    __version__ = _version("napari-btunet")
except _NotInstalled:  # run from a source tree that was never installed
    __version__ = "0+unknown"

if "torch" not in _sys.modules:  # OpenMP reads this once, when torch starts (see threads.py)
    from .base.threads import set_wait_policy as _set_wait_policy
    _set_wait_policy()

from .base.errors import BTUnetError, Cancelled, CheckpointError  # noqa: E402
from .core.checkpoint import inspect_checkpoint, load_model, model_metadata, read_metadata, save_model  # noqa: E402
from .core.config import FinetuneConfig, PredictConfig, PretrainConfig, Progress  # noqa: E402
from .core.metadata import CheckpointMetadata  # noqa: E402
from .exporting.export import export, load_package  # noqa: E402
from .infer.predict import Prediction, predict  # noqa: E402
from .infer.preview import Previewer, preview  # noqa: E402
from .infer.quick_preview import forest_preview  # noqa: E402
from .labels.metrics import evaluate  # noqa: E402
from .models import MODELS, create_model  # noqa: E402
from .pipeline.reference import OutsideReferenceWarning, outside_reference  # noqa: E402
from .train.finetune import finetune  # noqa: E402
from .train.pretrain import PretrainedEncoder, pretrain  # noqa: E402

__all__ = [
    "BTUnetError", "Cancelled", "CheckpointError", "CheckpointMetadata", "FinetuneConfig", "MODELS",
    "OutsideReferenceWarning", "PredictConfig", "Prediction", "PretrainConfig", "PretrainedEncoder", "Previewer",
    "Progress", "create_model", "evaluate", "export", "finetune", "forest_preview", "inspect_checkpoint",
    "load_model", "load_package", "model_metadata", "outside_reference", "predict", "pretrain", "preview",
    "read_metadata", "save_model",
]
