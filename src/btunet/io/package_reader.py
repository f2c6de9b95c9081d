"""Recognise a bioimage.io package from ``btunet export`` and find the btunet checkpoint in it.

Needs nothing beyond the standard library, so ``checkpoint.load_model`` can open packages. A
zip package's checkpoint is read into memory, never unpacked to disk: nothing is left behind
on any failure, and a hostile zip cannot fill the temporary folder. Its declared size and its
compression ratio are checked before a byte is unpacked, and the read itself is bounded.
"""
from __future__ import annotations

import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import CheckpointError

CHECKPOINT = "btunet_model.safetensors"
YAML_NAMES = ("bioimageio.yaml", "rdf.yaml")
#: The largest checkpoint a package may hold. The widest model btunet builds (inception_unet,
#: RGB, 16 classes, base_filters 128) is 946 MiB of float32 weights, and a checkpoint header may
#: add 16 MiB; a member declaring more is not a btunet checkpoint.
MAX_CHECKPOINT_BYTES = 2**30
#: Trained float weights barely compress (exported checkpoints pack 1.1 to 2.6 to 1); a member
#: that unpacks to over 100 times its packed size is mostly one repeated byte, a zip bomb.
MAX_RATIO = 100
#: Members up to this size skip the ratio check: a tiny model's JSON header alone packs well,
#: and unpacking a few MiB into memory is harmless.
RATIO_FREE_BYTES = 16 * 2**20
_ENCRYPTED = 0x1  # general purpose flag bit 0 of a zip entry
#: What zipfile raises for a damaged or crafted zip: its directory, a member's data or checksum.
_DAMAGED = (zipfile.BadZipFile, zlib.error, struct.error, EOFError, NotImplementedError, RuntimeError,
            ValueError)


@dataclass(frozen=True)
class Attached:
    """A checkpoint read from inside a zip package: its bytes, and the name messages give it."""
    name: str
    data: bytes


def is_package(path: str | os.PathLike) -> bool:
    """A bioimage.io package: a .zip file, a folder with a bioimage.io yaml, or that yaml."""
    p = Path(path)
    if p.is_dir():
        return any((p / name).is_file() for name in YAML_NAMES) or any(p.glob("*.bioimageio.yaml"))
    return p.suffix.lower() == ".zip" or p.name.endswith(YAML_NAMES)


def attached_checkpoint(path: str | os.PathLike) -> Path | Attached:
    """The btunet checkpoint of a package: a file in a folder package, the bytes of a zip's member."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"model not found: {p}")
    root = p.parent if p.is_file() and p.name.endswith(YAML_NAMES) else p
    if root.is_dir():
        if not any((root / n).is_file() for n in YAML_NAMES) and not any(root.glob("*.bioimageio.yaml")):
            raise CheckpointError(f"{p} is a folder but not a bioimage.io package (no bioimage.io yaml in it)")
        if not (root / CHECKPOINT).is_file():
            raise foreign(p)
        return root / CHECKPOINT
    return Attached(f"{CHECKPOINT} in {p.name}", _read_member(p))


def _read_member(p: Path) -> bytes:
    """The checkpoint member's bytes, once its size, ratio and flags are checked."""
    member = f"{CHECKPOINT} in {p.name}"
    try:
        archive = zipfile.ZipFile(p)
    except _DAMAGED as exc:
        raise CheckpointError(f"{p.name} is not a readable zip file ({_first_line(exc)})") from None
    with archive:
        names = set(archive.namelist())
        if not names & set(YAML_NAMES) and not any(n.endswith(".bioimageio.yaml") for n in names):
            raise CheckpointError(f"{p.name} is a zip file but not a bioimage.io package "
                                  "(no bioimageio.yaml inside)")
        if CHECKPOINT not in names:
            raise foreign(p)
        info = archive.getinfo(CHECKPOINT)
        if info.flag_bits & _ENCRYPTED:
            raise CheckpointError(f"{member} is encrypted; btunet reads only the unencrypted packages "
                                  "`btunet export` writes")
        limit = _limit(info)
        if info.file_size > limit:
            raise CheckpointError(f"{member} declares {info.file_size} bytes ({info.compress_size} packed), "
                                  f"over the {limit}-byte limit for a btunet checkpoint (damaged or "
                                  "not a btunet package)")
        try:
            with archive.open(info) as src:
                data = src.read(limit + 1)  # zipfile stops at the declared size; the bound guards that
        except _DAMAGED as exc:
            raise CheckpointError(f"{member} cannot be unpacked ({_first_line(exc)}): the zip is "
                                  "damaged") from None
    if len(data) != info.file_size:
        raise CheckpointError(f"{member} unpacks to {len(data)} bytes, not the {info.file_size} its "
                              "zip directory declares: the zip is damaged")
    return data


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _limit(info: zipfile.ZipInfo) -> int:
    """How many bytes this member may unpack to: the checkpoint bound, and the ratio bound for
    members beyond :data:`RATIO_FREE_BYTES`."""
    return min(MAX_CHECKPOINT_BYTES, max(RATIO_FREE_BYTES, MAX_RATIO * info.compress_size))


def foreign(path: Path) -> CheckpointError:
    return CheckpointError(f"{path.name} is a bioimage.io package but not one exported by btunet (it holds no "
                       f"{CHECKPOINT}); run it with bioimageio.core (`bioimageio predict`), deepImageJ or "
                       "ilastik instead")
