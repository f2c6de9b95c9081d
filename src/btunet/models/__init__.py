"""U-Net variants picked by name: ``create_model("unet", in_channels=1)``."""
from . import attention_unet, inception_unet, rca_iunet, unet  # noqa: F401
from .base import SIZE_MULTIPLE, SegmentationModel
from .registry import MODELS, create_model, register

__all__ = ["MODELS", "SIZE_MULTIPLE", "SegmentationModel", "create_model", "register"]
