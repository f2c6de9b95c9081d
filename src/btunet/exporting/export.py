"""Models that leave napari: TorchScript, ONNX and bioimage.io packages (``btunet export``).

Every format holds the same network (``network_export``): BatchNorm folded, fp32, the sigmoid
inside. ``export`` checks the output and picks the writer; ``add_export_command`` is the CLI.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from ..base.errors import BTUnetError
from ..core.checkpoint import model_metadata
from ..core.model_check import check_model
from ..io.package_reader import is_package
from ..labels.heads import head_of
from ..models import SegmentationModel
from .bioimageio_package import load_package, write_package
from .network_export import (
    DEFAULT_LICENSE,
    FORMATS,
    INSTALL,
    SUFFIX,
    ProbabilityNet,
    Tiling,
    inference_network,
    receptive_radius,
    require,
    tiling,
    write_onnx,
    write_torchscript,
)

# ----------------------------------------------------------------------------- export

def export(model_or_path: SegmentationModel | str | os.PathLike, out: str | os.PathLike,
           format: str = "bioimageio", *, overwrite: bool = False,  # noqa: A002 - public keyword
           authors: Sequence[str] | None = None,
           license: str = DEFAULT_LICENSE) -> Path:  # noqa: A002 - public keyword (--license)
    """Write a fine-tuned model as a bioimage.io package, an ONNX file or a TorchScript file.

    ``out``: for ``bioimageio`` a ``.zip`` file or a folder; for the others a file (or an
    existing folder, which gets ``<variant>.onnx`` / ``<variant>.pt``). An existing output is
    refused unless ``overwrite``. ``authors`` and ``license`` (an SPDX id) go into the package.
    Returns the path written.
    """
    if format not in FORMATS:
        raise BTUnetError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    require(format)
    if format == "bioimageio":
        check_license(license)
    if isinstance(check_model(model_or_path, "model_or_path"), (str, os.PathLike)):
        from ..core.checkpoint import load_model
        source = Path(model_or_path)
        model = load_model(source)
    else:
        source, model = None, model_or_path
    target = Path(out)
    if format != "bioimageio" and target.is_dir():
        target = target / f"{model.name}{SUFFIX[format]}"
    if source is not None and target.resolve() == source.resolve():
        raise BTUnetError(f"--out {out} is the model itself; write the export to another path")
    occupied = target.exists() and not (target.is_dir() and not any(target.iterdir()))
    # never replace a folder of other files, even with --overwrite
    if format == "bioimageio" and occupied and target.is_dir() and not is_package(target):
        raise BTUnetError(f"--out {out} is a folder of other files; give a new folder or a .zip file")
    if occupied and not overwrite:
        raise BTUnetError(f"{target} already exists; use --overwrite or another --out")
    if format == "bioimageio":
        check_one_channel(model)
    if format == "bioimageio" and model_metadata(model).normalization.method != "percentile":
        raise BTUnetError("this model normalises images by their background peak, which a bioimage.io "
                          "package's pre-processing (percentiles) cannot express; export it as onnx or "
                          "torchscript (the network alone), or fine-tune with normalization 'percentile'")
    if format == "torchscript":
        return write_torchscript(model, target)
    if format == "onnx":
        return write_onnx(model, target)
    return write_package(model, target, authors=list(authors or []), license=license)


def check_license(license_id) -> str:
    """``license_id`` if bioimage.io takes it as an SPDX licence identifier (checked before any
    work: a wrong one would fail the package's validation only after the weights are written)."""
    from bioimageio.spec.model.v0_5 import DeprecatedLicenseId, LicenseId
    for kind in (LicenseId, DeprecatedLicenseId):
        try:
            kind(license_id)
            return license_id
        except ValueError:  # pydantic's ValidationError: not in the SPDX list
            continue
    raise BTUnetError(f"license {license_id!r} is not an SPDX licence identifier (https://spdx.org/licenses/), "
                      f"which a bioimage.io package needs; for example {DEFAULT_LICENSE}, CC0-1.0, MIT or BSD-3-Clause")


def check_one_channel(model: SegmentationModel) -> None:
    """Refuse a model with classes or a boundary channel for a bioimage.io package, whose
    description, test tensors and documentation hold one object-probability channel."""
    head = head_of(model)
    if head.channels == 1:
        return
    classes = [c["name"] for c in (getattr(model, "metadata", None) or {}).get("classes") or []]
    names = (["background", *classes] if head.n_classes > 1 else ["object"]) + (["boundary"] if head.boundary else [])
    raise BTUnetError(f"a bioimage.io package from btunet holds one output channel (object probability); this "
                      f"model has {head.channels} ({', '.join(names)}); export it as onnx or torchscript, whose "
                      "output has one probability channel each")


# ----------------------------------------------------------------------------- command line

def add_export_command(subparsers) -> argparse.ArgumentParser:
    """The ``btunet export`` sub-command."""
    x = subparsers.add_parser(
        "export", help="write a model as a bioimage.io package, ONNX or TorchScript",
        description="Export a fine-tuned model for use outside btunet: a bioimage.io package (deepImageJ, "
                    "ilastik, bioimageio.core; btunet reads it back), an ONNX file or a TorchScript file. "
                    f"Needs the export extra: {INSTALL}")
    x.add_argument("model", metavar="MODEL", help="model checkpoint from `btunet finetune`")
    x.add_argument("--out", required=True, metavar="DIR_OR_ZIP",
                   help="bioimageio: a .zip file or a folder; onnx/torchscript: a file (or a folder for "
                        "<variant>.onnx / <variant>.pt)")
    x.add_argument("--format", choices=FORMATS, default="bioimageio", help="default bioimageio")
    x.add_argument("--author", action="append", metavar="NAME",
                   help="who trained the model, for the package (repeat for several)")
    x.add_argument("--license", default=DEFAULT_LICENSE,
                   help=f"SPDX licence of the exported weights (default {DEFAULT_LICENSE})")
    x.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return x


def cmd_export(a) -> None:
    path = export(a.model, a.out, a.format, overwrite=a.overwrite, authors=a.author, license=a.license)
    print(f"wrote {a.format} export of {a.model} to {path}")


__all__ = ["FORMATS", "ProbabilityNet", "Tiling", "export", "inference_network", "load_package",
           "receptive_radius", "tiling", "write_onnx", "write_torchscript"]
