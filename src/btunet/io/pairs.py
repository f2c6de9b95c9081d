"""Image and mask files that belong together: paired by file name, kept only when both read."""
from __future__ import annotations

import warnings
from pathlib import Path

from ..base.errors import BTUnetError
from .imageio import UnreadableImage, read_image, read_mask


def pair_by_name(images: list[Path], masks: list[Path],
                 sides: tuple[str, str] = ("image", "mask")) -> list[tuple[Path, Path]]:
    """Match masks to images by file name (without extension); a name given twice is refused.
    ``sides`` names the two lists in messages (e.g. ground truth and prediction for ``evaluate``)."""
    for kind, paths in zip(sides, (images, masks), strict=True):
        seen: dict[str, Path] = {}
        for p in paths:
            if p.stem in seen:
                raise BTUnetError(f"two {kind}s are named {p.stem!r} ({seen[p.stem]} and {p}), so pairing by "
                                  "name is ambiguous; rename one or leave one out")
            seen[p.stem] = p
    by_stem = {m.stem: m for m in masks}
    missing = [i.name for i in images if i.stem not in by_stem]
    if missing:
        raise BTUnetError(f"no {sides[1]} with the same name for the {sides[0]}s: {', '.join(missing[:5])}"
                          + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return [(i, by_stem[i.stem]) for i in images]


def readable_pairs(pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """The (image, mask) pairs whose two files both read; a pair with an unreadable side is dropped
    whole, with a warning, so every image keeps the mask of its own name. A mask that reads but
    holds no labels (NaN, fractions) is refused (BTUnetError): it is the wrong file, not a damaged one."""
    kept = []
    for image, mask in pairs:
        try:
            read_image(image)
            read_mask(mask)
        except UnreadableImage as exc:
            warnings.warn(f"skipping the pair {image.stem}: {exc}", stacklevel=2)
            continue
        kept.append((image, mask))
    if not kept:
        raise BTUnetError("none of the image/mask pairs could be read")
    return kept
