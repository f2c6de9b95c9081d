"""Pixel features from a pre-trained encoder, beside the filters of the forest teacher.

The forest that gives pseudo-labels for unpainted pixels (``teacher.py``) sees each pixel through
multiscale filters. A Barlow Twins encoder has learnt which local patterns of microscopy images
differ; the maps of its first two levels, brought back to full resolution, add 48 features per
pixel (16 + 32 channels of ``unet``), as convpaint adds a CNN's maps to its forest. On some
images the forest then tells nuclei from haze better from the same strokes, on others worse, so
it is an option (``FinetuneConfig.teacher_features``), off by default; the measurements are in
docs/results_painting_builtin.md and benchmarks/pretraining_notes.md.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

#: encoder levels whose maps become features (0 = full resolution, 1 = half)
LEVELS = (0, 1)
#: planes are run in strips of this many rows (plus a margin), so memory stays bounded
STRIP = 512
#: rows of context above and below each strip: more than the receptive field of LEVELS
MARGIN = 32
#: the encoder's input sides must be multiples of this
MULTIPLE = 16

FeatureFn = Callable[[np.ndarray], np.ndarray]


def _maps(encoder: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """(H, W, F) upsampled maps of LEVELS for a normalised (C, H, W) block."""
    c, h, w = pixels.shape
    ph, pw = -h % MULTIPLE, -w % MULTIPLE
    mode = "reflect" if min(h, w) > max(ph, pw) else "edge"
    x = torch.from_numpy(np.pad(pixels, ((0, 0), (0, ph), (0, pw)), mode=mode).astype(np.float32))[None]
    skips, _ = encoder(x)
    maps = [F.interpolate(skips[k], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, :, :h, :w]
            for k in LEVELS]
    return np.moveaxis(torch.cat(maps).numpy(), 0, -1)


def encoder_features(encoder: torch.nn.Module) -> FeatureFn:
    """A function (C, H, W) normalised plane -> (H, W, F) float32 features from ``encoder``
    (a copy in eval mode on the CPU: the caller's module keeps training undisturbed)."""
    import copy
    frozen = copy.deepcopy(encoder).cpu().eval()

    @torch.no_grad()
    def features(pixels: np.ndarray) -> np.ndarray:
        h = pixels.shape[1]
        if h <= STRIP + 2 * MARGIN:
            return _maps(frozen, pixels)
        parts = []
        for top in range(0, h, STRIP):
            lo, hi = max(0, top - MARGIN), min(h, top + STRIP + MARGIN)
            block = _maps(frozen, pixels[:, lo:hi])
            parts.append(block[top - lo:top - lo + min(STRIP, h - top)])
        return np.concatenate(parts)

    return features


def teacher_features(setting: str, encoder, channels: int) -> FeatureFn | None:
    """The forest teacher's features beside its filters (``FinetuneConfig.teacher_features``):
    for "encoder", the maps of ``encoder`` (the pre-trained encoder the run starts from), else of
    the built-in encoder, on the mean of the channels when the image has more than it takes;
    for "fine", the raw pixel and ilastik's finest smoothing scales (``teacher.fine_features``)."""
    if setting == "fine":
        from .teacher import fine_features
        return fine_features
    if setting != "encoder":
        return None
    from ..models import create_model
    from .pretrain import as_encoder
    enc = encoder if encoder is not None else as_encoder("builtin")
    net = create_model(enc.variant, **{k: v for k, v in enc.model_config.items() if k != "name"})
    net.encoder.load_state_dict(enc.encoder_state)
    features = encoder_features(net.encoder)
    if channels == enc.channels:
        return features
    return lambda pixels: features(pixels.mean(axis=0, keepdims=True))


__all__ = ["LEVELS", "encoder_features", "teacher_features"]
