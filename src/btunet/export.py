"""Models that leave napari: TorchScript, ONNX and bioimage.io packages (``btunet export``).

Every format holds the same network (``network_export``): BatchNorm folded, fp32, the sigmoid
inside. ``export`` checks the output and picks the writer; ``add_export_command`` is the CLI.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from .bioimageio_package import load_package, write_package
from .checkpoint import model_metadata
from .errors import BTUnetError
from .models import SegmentationModel
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
from .package_reader import is_package

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
    if isinstance(model_or_path, (str, os.PathLike)):
        from .checkpoint import load_model
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
    if format == "bioimageio" and model_metadata(model).normalization.method != "percentile":
        raise BTUnetError("this model normalises images by their background peak, which a bioimage.io "
                          "package's pre-processing (percentiles) cannot express; export it as onnx or "
                          "torchscript (the network alone), or fine-tune with normalization 'percentile'")
    if format == "torchscript":
        return write_torchscript(model, target)
    if format == "onnx":
        return write_onnx(model, target)
    return write_package(model, target, authors=list(authors or []), license=license)


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
