"""The API's model arguments: a segmentation model object or its checkpoint path, nothing else."""
from __future__ import annotations

import os

import torch

from ..base.errors import BTUnetError


def check_model(model, what: str = "model"):
    """``model`` if it is a segmentation model object or a checkpoint path, else a BTUnetError
    naming the argument: the API's callers pass many things, and a raw AttributeError deep in
    the network code says nothing about which argument was wrong."""
    if isinstance(model, (str, os.PathLike)):
        return model
    if isinstance(model, torch.nn.Module) and isinstance(getattr(model, "config", None), dict) \
            and hasattr(model, "in_channels"):
        return model
    if type(model).__name__ == "PretrainedEncoder":
        raise BTUnetError(f"{what} is a pre-trained encoder, not a segmentation model; fine-tune it "
                          "first (btunet.finetune(..., encoder=...)) and pass the fine-tuned model")
    if model is None:
        raise BTUnetError(f"no {what} given (None); pass a fine-tuned model or its checkpoint path")
    raise BTUnetError(f"{what} must be a fine-tuned model (btunet.finetune, btunet.load_model) or its "
                      f"checkpoint path, not {type(model).__name__}")
