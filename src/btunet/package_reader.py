"""Recognise a bioimage.io package from ``btunet export`` and find the btunet checkpoint in it.

Needs nothing beyond the standard library, so ``checkpoint.load_model`` can open packages.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .errors import CheckpointError

CHECKPOINT = "btunet_model.safetensors"
YAML_NAMES = ("bioimageio.yaml", "rdf.yaml")


def is_package(path: str | os.PathLike) -> bool:
    """A bioimage.io package: a .zip file, a folder with a bioimage.io yaml, or that yaml."""
    p = Path(path)
    if p.is_dir():
        return any((p / name).is_file() for name in YAML_NAMES) or any(p.glob("*.bioimageio.yaml"))
    return p.suffix.lower() == ".zip" or p.name.endswith(YAML_NAMES)


class checkpoint_file:
    """Context manager: a path to the package's btunet checkpoint (extracted from a zip)."""

    def __init__(self, path: str | os.PathLike):
        self.path, self.tmp = Path(path), None

    def __enter__(self) -> Path:
        p = self.path
        if not p.exists():
            raise CheckpointError(f"model not found: {p}")
        root = p.parent if p.is_file() and p.name.endswith(YAML_NAMES) else p
        if root.is_dir():
            if not any((root / n).is_file() for n in YAML_NAMES) and not any(root.glob("*.bioimageio.yaml")):
                raise CheckpointError(f"{p} is a folder but not a bioimage.io package (no bioimage.io yaml in it)")
            if not (root / CHECKPOINT).is_file():
                raise foreign(p)
            return root / CHECKPOINT
        try:
            with zipfile.ZipFile(p) as archive:
                names = set(archive.namelist())
                if not names & set(YAML_NAMES) and not any(n.endswith(".bioimageio.yaml") for n in names):
                    raise CheckpointError(f"{p.name} is a zip file but not a bioimage.io package "
                                      "(no bioimageio.yaml inside)")
                if CHECKPOINT not in names:
                    raise foreign(p)
                fd, tmp = tempfile.mkstemp(suffix=".safetensors", prefix=".btunet-package-")
                self.tmp = Path(tmp)
                with os.fdopen(fd, "wb") as out, archive.open(CHECKPOINT) as src:
                    shutil.copyfileobj(src, out)
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{p.name} is not a readable zip file ({exc})") from exc
        return self.tmp

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


def foreign(path: Path) -> CheckpointError:
    return CheckpointError(f"{path.name} is a bioimage.io package but not one exported by btunet (it holds no "
                       f"{CHECKPOINT}); run it with bioimageio.core (`bioimageio predict`), deepImageJ or "
                       "ilastik instead")
