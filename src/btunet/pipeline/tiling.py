"""Tiled prediction of one plane: tiles on the models' pooling grid, blended by raised-cosine ramps.

A plane larger than a tile is cut into overlapping tiles whose outer margins (where each tile's
own zero padding distorts features) get no weight, so tiled logits match whole-plane logits.
"""
from __future__ import annotations

import numpy as np
import torch

from ..base.device import autocast
from ..base.errors import BTUnetError
from ..core.config import OVERLAP, TILE
from ..models import SIZE_MULTIPLE, SegmentationModel
from ..models.base import pad_to_multiple


def _ramp_window(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weights: 0 on the outer quarter of the overlap, raised cosine, then 1.

    Image borders get no ramp, so every pixel keeps a positive total weight.
    """
    w = np.ones(length, np.float32)
    margin = overlap // 4
    ramp = np.sin(0.5 * np.pi * (np.arange(overlap - 2 * margin) + 0.5) / (overlap - 2 * margin)) ** 2
    edge = np.concatenate([np.zeros(margin), ramp]).astype(np.float32)
    if not at_start:
        w[:len(edge)] = edge
    if not at_end:
        w[length - len(edge):] = edge[::-1]
    return w


def _tile_length(size: int, tile: int, overlap: int) -> int:
    """The shortest tile length (a multiple of 16, at most ``tile``) that covers ``size`` with as
    few tiles as ``tile`` would need: a 1104-px axis gets two 688-px tiles, not two of 1024."""
    if size <= tile:
        return size
    n = -(-(size - overlap) // (tile - overlap))
    length = -(-(size + (n - 1) * overlap) // n)
    return min(tile, -(-length // SIZE_MULTIPLE) * SIZE_MULTIPLE)


def _origins(size: int, tile: int, stride: int) -> list[int]:
    last = size - tile
    if last <= 0:
        return [0]
    return sorted(set(list(range(0, last + 1, stride)) + [last]))


def tile_boxes(height: int, width: int, tile: int | None = TILE,
               overlap: int = OVERLAP) -> tuple[int, int, list[tuple[int, int]]]:
    """(tile height, tile width, top-left corners) that ``predict_logits`` uses on a padded plane.

    Public so that a benchmark can time the network on exactly the tiles a prediction runs.
    """
    th, tw = (height, width) if tile is None else (_tile_length(height, tile, overlap),
                                                   _tile_length(width, tile, overlap))
    rows, cols = _origins(height, th, th - overlap), _origins(width, tw, tw - overlap)
    return th, tw, [(y, x) for y in rows for x in cols]


@torch.no_grad()
def predict_logits(model: SegmentationModel, pixels: np.ndarray, tile: int | None = TILE,
                   overlap: int = OVERLAP, fast: bool = True, tile_batch: int = 4,
                   all_channels: bool = False) -> np.ndarray:
    """Logits (H, W) of the first output channel of one normalised (C, H, W) plane, or
    (channels, H, W) of every channel with ``all_channels``; ``tile=None``: the whole plane in one pass.

    Tiles start on multiples of 16 so pooling grids line up with whole-image prediction, and
    each tile's outer margin (where its own zero padding distorts features) gets no weight.
    """
    if tile is not None and (tile % SIZE_MULTIPLE or overlap % SIZE_MULTIPLE or overlap >= tile):
        raise BTUnetError(f"tile and overlap must be multiples of {SIZE_MULTIPLE}, overlap < tile")
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(pixels, np.float32))[None].to(device)
    x, h, w = pad_to_multiple(x)
    hp, wp = x.shape[-2:]
    th, tw, boxes = tile_boxes(hp, wp, tile, overlap)
    memory = torch.channels_last if fast else torch.contiguous_format
    pick = slice(None) if all_channels else 0
    if len(boxes) == 1:  # the whole plane is one tile: nothing to blend
        with autocast(device, fast):
            return model(x.contiguous(memory_format=memory))[0, pick, :h, :w].float().cpu().numpy()
    n_out = int(model.config.get("out_channels", 1)) if all_channels else 1
    out = torch.zeros(n_out, hp, wp, device=device)
    norm = torch.zeros(hp, wp, device=device)

    def ramp(n, size, start):
        return torch.from_numpy(_ramp_window(n, overlap, start == 0, start + n == size)).to(device)

    for i in range(0, len(boxes), tile_batch):
        chunk = boxes[i:i + tile_batch]
        batch = torch.cat([x[..., y:y + th, xx:xx + tw] for y, xx in chunk]).contiguous(memory_format=memory)
        with autocast(device, fast):
            logits = model(batch)[:, :n_out].float()
        for (y, xx), tile_logits in zip(chunk, logits, strict=True):
            weight = ramp(th, hp, y)[:, None] * ramp(tw, wp, xx)[None, :]
            out[:, y:y + th, xx:xx + tw] += weight * tile_logits
            norm[y:y + th, xx:xx + tw] += weight
    return (out / norm)[pick, :h, :w].cpu().numpy()
__all__ = ["predict_logits", "tile_boxes"]
