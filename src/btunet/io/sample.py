"""The BBBC007 sample shipped inside the package (demo, tests, export test tensors)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SAMPLE = files("btunet") / "data" / "bbbc007"


def sample_paths() -> tuple[list[Path], list[Path]]:
    """The shipped BBBC007 images and masks, sorted by name."""
    images = sorted(Path(str(SAMPLE / "images")).glob("*.tif"))
    return images, [Path(str(SAMPLE / "masks")) / p.name for p in images]
