"""The object threshold, chosen on the held-out validation pixels of dense masks (as StarDist tunes
its thresholds on validation images) and saved with the model.

Two seeds of the same fine-tune can come out with objects a pixel fatter or thinner than the
masks; a fixed 0.5 then costs up to 0.01 Dice (benchmarks/objects_notes.md). Sparse strokes are
not used: their held-out pixels lie inside objects and background, far from the edges a threshold
moves, so every threshold would look alike there.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.metadata import check_threshold
from ..labels.heads import HeadSpec, split_logits
from ..labels.metrics import pixel_scores
from .data import AnnotatedPlane
from .planes import predict_logits

#: thresholds tried; the ends stay clear of 0 and 1, where a few pixels would decide
CANDIDATES = tuple(round(t, 2) for t in np.arange(0.2, 0.81, 0.05))
#: validation Dice a candidate must add over the configured threshold to replace it: a flat curve
#: keeps the configured one, and so does a small gain on validation blocks that differ from the
#: images predicted later (with 0.005, a CHO model moved to 0.8 for +0.006 on validation and lost
#: 0.020 on the test frames; benchmarks/objects_notes.md)
MIN_GAIN = 0.01


def validation_probabilities(model, planes: list[AnnotatedPlane], fast: bool,
                             head: HeadSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """(object probability, is object) of every held-out validation pixel, or None if there are none."""
    probs, truth = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for p in planes:
            keep = p.val_weight > 0
            if keep.any():
                logits = predict_logits(model, p.pixels, fast=fast, all_channels=True)
                probs.append(split_logits(logits, head)["object"][keep])
                truth.append(p.target[keep] > 0)
    model.train(was_training)
    return (np.concatenate(probs), np.concatenate(truth)) if probs else None


def dice_at(prob: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    return float(pixel_scores(prob > threshold, truth)["dice"])


def choose_threshold(prob: np.ndarray, truth: np.ndarray, configured: float) -> tuple[float, dict]:
    """(threshold, record) for validation pixels' object probabilities ``prob`` and truth: the
    candidate with the best Dice if it beats ``configured`` by ``MIN_GAIN``, else ``configured``
    (ties go to the candidate nearest it). The record keeps every candidate's Dice."""
    scores = {f"{t:.2f}": dice_at(prob, truth, t) for t in CANDIDATES}
    base = dice_at(prob, truth, configured)
    best = max(CANDIDATES, key=lambda t: (scores[f"{t:.2f}"], -abs(t - configured)))
    chosen = float(best) if scores[f"{best:.2f}"] >= base + MIN_GAIN else float(configured)
    return chosen, {"chosen": chosen, "configured": float(configured), "pixels": int(truth.size),
                    "validation_dice_configured": round(base, 4),
                    "validation_dice": round(dice_at(prob, truth, chosen), 4),
                    "candidates": {k: round(v, 4) for k, v in scores.items()}}


def tune_threshold(model, planes: list[AnnotatedPlane], fast: bool, head: HeadSpec,
                   configured: float) -> tuple[float, dict | None]:
    """``choose_threshold`` on ``model``'s held-out validation pixels; (``configured``, None) without any."""
    held_out = validation_probabilities(model, planes, fast, head)
    return (configured, None) if held_out is None else choose_threshold(*held_out, configured)


def threshold_of(model, planes: list[AnnotatedPlane], cfg, head: HeadSpec,
                 has_validation: bool) -> tuple[float, dict | None]:
    """The threshold a fine-tune saves (``cfg``: its ``FinetuneConfig``), and the tuning record if
    it was tuned: ``tune_threshold``'s for dense (or class) masks with validation pixels, else
    ``cfg.threshold`` (a continuation has no validation pixels and runs with the model's own)."""
    if cfg.tune_threshold and has_validation and cfg.mask_mode != "sparse":
        return tune_threshold(model, planes, cfg.fast, head, cfg.threshold)
    return cfg.threshold, None


def resolve_threshold(stored: float, given: float | None) -> float:
    """The threshold a prediction uses: ``given`` (checked: a number strictly between 0 and 1),
    else ``stored``, the model's own. Every way of predicting (in memory, block by block, the
    command line) asks here, so the same model and the same setting give the same labels."""
    return float(stored) if given is None else check_threshold("threshold", given)


def describe_threshold(metadata: dict) -> str | None:
    """One line on the threshold a fine-tune saved, when it tried the candidates."""
    info = metadata.get("threshold_tuning")
    if not info:
        return None
    if info["chosen"] != info["configured"]:
        return (f"threshold {info['chosen']:g}, chosen on {info['pixels']} validation pixels (Dice "
                f"{info['validation_dice']:.3f} there, {info['validation_dice_configured']:.3f} "
                f"at {info['configured']:g})")
    return f"threshold {info['configured']:g} kept: no other gained {MIN_GAIN:g} Dice on the validation pixels"


__all__ = ["CANDIDATES", "MIN_GAIN", "choose_threshold", "describe_threshold", "dice_at", "resolve_threshold",
           "threshold_of", "tune_threshold", "validation_probabilities"]
