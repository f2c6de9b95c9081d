"""bioimage.io model packages (model spec 0.5) from ``btunet export``, and reading them back.

A package holds the probability network as TorchScript and ONNX weights, test tensors from the
bundled BBBC007 sample, a cover, generated documentation and, as an attachment, the btunet
checkpoint itself. btunet restores a model from that attachment, so the model it predicts with
is exactly the one exported; packages from other tools lack it and are refused with a pointer to
bioimageio.core. Reading needs none of the optional packages; writing needs bioimageio.spec.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..core.checkpoint import model_metadata
from ..io.package_reader import CHECKPOINT, attached_checkpoint
from ..models import SegmentationModel
from .package_docs import BT_UNET, VARIANTS, documentation

#: ``scale_range`` divides by (upper - lower + eps); this eps vanishes next to any real range in
#: float32, so the package's pre-processing is btunet's (x - lower) / (upper - lower).
EPS = 1e-10
TEST_SIZE = 256
BBBC = (("Ljosa, Sokolnicki & Carpenter (2012): Annotated high-throughput microscopy image sets for "
         "validation (BBBC007v1: Jones et al., ICCV Workshop CVBIA 2005). Nature Methods 9, 637"),
        "10.1038/nmeth.2083")


# ----------------------------------------------------------------------------- reading

def load_package(path: str | os.PathLike, device: str = "cpu") -> SegmentationModel:
    """The btunet model a package from ``btunet export`` carries (eval mode, metadata attached)."""
    from ..core.checkpoint import load_model
    return load_model(attached_checkpoint(path), device)


def package_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The btunet metadata of the checkpoint inside a package."""
    from ..core.checkpoint import read_metadata
    return read_metadata(attached_checkpoint(path))



# ----------------------------------------------------------------------------- writing

def write_package(model: SegmentationModel, target: Path, *, authors: list[str],
                  license: str) -> Path:  # noqa: A002 - the bioimage.io field's name, passed by keyword
    """Write and validate a package: ``target`` ending in .zip is a zip file, otherwise a folder.

    Files are staged in a temporary folder beside ``target`` and moved into place only after
    bioimage.io validation passed, so a failure leaves any earlier output untouched.
    """
    from .network_export import tiling
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as work:
        work = Path(work)
        staged = _stage(model, work / "files", tiling(model))
        descr = _describe(model, staged, tiling(model), authors, license)
        built = work / ("package.zip" if target.suffix.lower() == ".zip" else "package")
        _save(descr, built)
        _validate(built)
        _replace(built, target)
    return target


def _stage(model: SegmentationModel, folder: Path, tile) -> dict[str, Path]:
    from skimage.io import imsave

    from ..core.checkpoint import save_model
    from .network_export import inference_network, write_onnx, write_torchscript
    folder.mkdir(parents=True)
    files = {"checkpoint": save_model(model, folder / CHECKPOINT),
             "torchscript": write_torchscript(model, folder / "weights_torchscript.pt"),
             "onnx": write_onnx(model, folder / "weights.onnx")}
    raw = sample_tensor(model.in_channels, max(TEST_SIZE, tile.min_size))
    import torch
    with torch.no_grad():
        prob = inference_network(model)(torch.from_numpy(scale_range(raw))).numpy()
    for name, array in (("test_input", raw), ("test_output", prob)):
        files[name] = folder / f"{name}.npy"
        np.save(files[name], array)
    files["cover"] = folder / "cover.png"
    imsave(files["cover"], _cover(scale_range(raw)[0], prob[0, 0]), check_contrast=False)
    files["documentation"] = folder / "README.md"
    threshold = model_metadata(model).threshold  # the model's own, as prediction reads it
    files["documentation"].write_text(documentation(model, tile, threshold, EPS, CHECKPOINT), encoding="utf-8")
    return files


def sample_tensor(channels: int, size: int) -> np.ndarray:
    """(1, C, size, size) float32 raw intensities: the centre of the first BBBC007 sample image;
    3 channels are an RGB rendering of it (different gains per channel)."""
    from ..io.imageio import read_image
    from ..io.sample import sample_paths
    image = read_image(sample_paths()[0][0]).astype(np.float32)
    h, w = image.shape
    if min(h, w) < size:
        image = np.pad(image, ((0, max(0, size - h)), (0, max(0, size - w))), mode="reflect")
        h, w = image.shape
    y, x = (h - size) // 2, (w - size) // 2
    crop = image[y:y + size, x:x + size]
    planes = [crop] if channels == 1 else [crop * 0.3, crop * 0.7, crop]
    return np.stack(planes)[None].astype(np.float32)


def scale_range(raw: np.ndarray) -> np.ndarray:
    """The package's pre-processing: btunet's percentile normalisation per sample, jointly over
    channels, y and x (``scale_range`` with percentiles 1 and 99.8)."""
    from ..pipeline.normalize import DEFAULT_NORMALIZATION as norm
    out = np.empty_like(raw, dtype=np.float32)
    for i, sample in enumerate(raw):
        lo, hi = np.percentile(sample, [norm["low"], norm["high"]])
        out[i] = (sample - np.float32(lo)) / np.float32(hi - lo + EPS)
    return out


def _cover(pixels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """uint8 RGB: the normalised input | the probability, side by side (2:1)."""
    image = np.clip(pixels, 0, 1)
    image = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    left = np.moveaxis(image, 0, -1)
    right = np.stack([prob, prob, prob], axis=-1)
    return (np.concatenate([left, right], axis=1) * 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------- description

def _describe(model: SegmentationModel, files: dict[str, Path], tile, authors: list[str], license_id: str):
    import torch
    from bioimageio.spec.model import v0_5 as spec

    from .. import __version__
    meta = getattr(model, "metadata", {}) or {}
    threshold = model_metadata(model).threshold  # the model's own, as prediction reads it
    channels = ["gray"] if model.in_channels == 1 else ["red", "green", "blue"]
    size = spec.ParameterizedSize(min=tile.min_size, step=tile.step)
    norm = meta.get("normalization") or {"low": 1.0, "high": 99.8}
    preprocessing = [spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
        axes=[spec.AxisId("channel"), spec.AxisId("y"), spec.AxisId("x")],
        min_percentile=norm["low"], max_percentile=norm["high"], eps=EPS))]
    image = spec.InputTensorDescr(
        id=spec.TensorId("raw"), description="image (raw intensities; percentile-normalised by the package)",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in channels]),
              spec.SpaceInputAxis(id=spec.AxisId("y"), size=size),
              spec.SpaceInputAxis(id=spec.AxisId("x"), size=size)],
        test_tensor=spec.FileDescr(source=files["test_input"]),
        data=spec.IntervalOrRatioDataDescr(type="float32"), preprocessing=preprocessing)
    ref = {axis: spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId(axis)) for axis in "yx"}
    output = spec.OutputTensorDescr(
        id=spec.TensorId("probability"),
        description=f"object probability; threshold at {threshold} for the mask",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("object")]),
              spec.SpaceOutputAxisWithHalo(id=spec.AxisId("y"), size=ref["y"], halo=tile.halo),
              spec.SpaceOutputAxisWithHalo(id=spec.AxisId("x"), size=ref["x"], halo=tile.halo)],
        test_tensor=spec.FileDescr(source=files["test_output"]),
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))
    version = spec.Version(torch.__version__.split("+")[0])
    weights = spec.WeightsDescr(
        torchscript=spec.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=version,
            comment=f"traced from {CHECKPOINT} (attached) with BatchNorm folded and the sigmoid inside"),
        onnx=spec.OnnxWeightsDescr(source=files["onnx"], opset_version=17, parent="torchscript",
                                   comment="exported from the same network; spectral pooling as DFT-matrix products"))
    cite = [spec.CiteEntry(text=BT_UNET[0], doi=spec.Doi(BT_UNET[1]))]
    if _trained_on_bbbc007(meta):
        cite.append(spec.CiteEntry(text=BBBC[0], doi=spec.Doi(BBBC[1])))
    name = f"BT-Unet {model.name} {len(channels)}-channel"
    return spec.ModelDescr(
        name=name,
        description=(f"{model.name} ({VARIANTS.get(model.name, model.name)}) for binary segmentation of 2-D "
                     f"{'grayscale' if len(channels) == 1 else 'RGB'} images, fine-tuned with napari-btunet "
                     "(Barlow Twins pre-training, few-label fine-tuning)"),
        authors=[spec.Author(name=a) for a in (authors or ["unknown (exported with napari-btunet)"])],
        cite=cite, license=license_id, documentation=spec.FileDescr(source=files["documentation"]),
        covers=[spec.FileDescr(source=files["cover"])], attachments=[spec.FileDescr(source=files["checkpoint"])],
        tags=["segmentation", "2d", "unet", "barlow-twins", "self-supervised", "napari-btunet", model.name],
        inputs=[image], outputs=[output], weights=weights,
        **({"timestamp": meta["date"]} if meta.get("date") else {}),
        config={"btunet": {"version": __version__, "checkpoint": CHECKPOINT, "model": model.config,
                           "normalization": norm, "threshold": threshold,
                           "receptive_field": {"radius": tile.radius, "halo": tile.halo, "step": tile.step,
                                               "global": tile.global_field}}})


def _trained_on_bbbc007(meta: dict) -> bool:
    from ..io.sample import sample_paths
    names = {p.name for p in sample_paths()[0]}
    trained, seen = meta.get("trained_on") or {}, meta
    images = set(trained.get("images", []))
    while (seen := seen.get("continued_from") or {}):
        images |= set((seen.get("trained_on") or {}).get("images", []))
    return bool(images & names)


def _save(descr, path: Path) -> None:
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder
    if path.suffix == ".zip":
        save_bioimageio_package(descr, output_path=path)
    else:
        save_bioimageio_package_as_folder(descr, output_path=path)


def _validate(path: Path) -> None:
    """Validate the written package with bioimageio.spec (local files only, no network)."""
    from bioimageio.spec import InvalidDescr, load_model_description
    try:
        descr = load_model_description(path, perform_io_checks=True)
    except ValueError as exc:
        raise RuntimeError(f"the bioimage.io package does not validate: {exc}") from exc
    if isinstance(descr, InvalidDescr):
        raise RuntimeError(f"the bioimage.io package does not validate: {descr.validation_summary}")


def _replace(built: Path, target: Path) -> None:
    """Move ``built`` to ``target``, replacing a file or folder there (checked by the caller)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        os.replace(target, old)
    os.replace(built, target)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
