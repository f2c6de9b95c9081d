"""The exported network itself: TorchScript and ONNX files, and how far its tiles must overlap.

Every format holds the same network: BatchNorm folded into the convolutions (as prediction uses
it), fp32, eval mode, with the sigmoid inside, so it outputs the object probability. H and W of
its input must be multiples of 16 (the variants down-sample four times); nothing is padded
inside, so the consumer pads or tiles. ``tiling`` measures how far tiles must overlap.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..base.atomic import atomic_path
from ..base.errors import BTUnetError
from ..labels.heads import HeadSpec, head_of
from ..models import SIZE_MULTIPLE, SegmentationModel, create_model
from ..models.fuse import fuse_batchnorm
from ..models.onnx_spectral import OPSET, has_spectral, onnx_ready

FORMATS = ("bioimageio", "onnx", "torchscript")
INSTALL = "pip install 'napari-btunet[export]'"
#: Python packages each format needs beyond torch (the ``export`` extra).
NEEDS = {"bioimageio": ("bioimageio.spec", "onnx"), "onnx": ("onnx",), "torchscript": ()}
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT, OUTPUT = "raw", "probability"
DEFAULT_LICENSE = "CC-BY-4.0"


def require(fmt: str) -> None:
    """Raise a BTUnetError naming what to install when ``fmt`` lacks a package."""
    missing = []
    for name in NEEDS[fmt]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise BTUnetError(f"exporting to {fmt} needs {' and '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed; install with: {INSTALL}")


class ProbabilityNet(nn.Module):
    """The exported network: probabilities (N, K, H, W) for (N, C, H, W) input, H and W
    multiples of 16, one channel per output channel of the model (``heads``): the object
    probability (sigmoid); for a class model background, class 1 .. class K (softmax over them);
    then the boundary probability (sigmoid) when the model has one. Unlike
    ``SegmentationModel.forward`` it does not pad: tracing the data-dependent padding would fix
    the image size."""

    def __init__(self, model: SegmentationModel, head: HeadSpec | None = None):
        super().__init__()
        self.encoder, self.decoder, self.head = model.encoder, model.decoder, model.head
        head = head or head_of(model)
        self.softmax_channels = head.class_channels if head.n_classes > 1 else 0  # background + classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, bottleneck = self.encoder(x)
        logits = self.head(self.decoder(skips, bottleneck))
        k = self.softmax_channels
        if k == 0:
            return torch.sigmoid(logits)
        return torch.cat([torch.softmax(logits[:, :k], dim=1), torch.sigmoid(logits[:, k:])], dim=1)


def inference_network(model: SegmentationModel) -> ProbabilityNet:
    """A BatchNorm-folded fp32 CPU copy wrapped as ``ProbabilityNet`` (``model`` is untouched)."""
    return ProbabilityNet(fuse_batchnorm(model).float().cpu(), head_of(model)).eval()


# ----------------------------------------------------------------------------- receptive field

@dataclass(frozen=True)
class Tiling:
    """How the exported network may be tiled.

    ``step``: input H and W must be multiples of it. ``radius``: input pixels on each side that
    can change an output pixel (measured, for the convolutional part). ``halo``: ``radius``
    rounded up to ``step``, so tiles that overlap by ``halo`` and start on multiples of ``step``
    give exactly the whole-image output. ``global_field``: spectral pooling (Inception U-Net,
    RCA-IUNet) lets every output pixel see the whole input, so tiles only approximate it.
    """
    step: int
    radius: int
    halo: int
    global_field: bool

    @property
    def min_size(self) -> int:
        """The smallest tile: one step of output plus the halo on both sides."""
        return 2 * self.halo + self.step


def tiling(model: SegmentationModel) -> Tiling:
    radius = receptive_radius(model.name)
    halo = math.ceil(radius / SIZE_MULTIPLE) * SIZE_MULTIPLE
    return Tiling(SIZE_MULTIPLE, radius, halo, has_spectral(model))


@functools.cache
def receptive_radius(name: str) -> int:
    """Receptive-field radius (pixels) of variant ``name``, from the support of an input gradient.

    A narrow float64 copy with ReLUs removed and max pools turned into average pools is linear,
    so the gradient of a 16 x 16 output block is non-zero exactly where the input can matter.
    Spectral pooling is global; it is measured as the 2 x 2 average pool / identity it replaces
    in resolution, which gives the reach of the convolutions alone.
    """
    size = 256
    while size <= 4096:
        radius = _support_radius(name, size)
        if radius is not None:
            return radius
        size *= 2
    raise RuntimeError(f"the receptive field of {name} exceeds 2000 pixels")


def _support_radius(name: str, size: int) -> int | None:
    from ..models.blocks import SpectralLowPass2d, SpectralPool2d
    net = create_model(name, in_channels=1, base_filters=2).double().eval()
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (nn.ReLU, SpectralLowPass2d)):
                setattr(parent, child_name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
            elif isinstance(child, SpectralPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.factor))
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, size, size, dtype=torch.float64, generator=generator, requires_grad=True)
    c, n = size // 2, SIZE_MULTIPLE
    net(x)[0, 0, c:c + n, c:c + n].sum().backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    if min(rows.min(), cols.min()) == 0 or max(rows.max(), cols.max()) == size - 1:
        return None  # the support reaches the border: measure on a larger input
    return int(max(c - rows.min(), rows.max() - (c + n - 1), c - cols.min(), cols.max() - (c + n - 1)))


# ----------------------------------------------------------------------------- writers

@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Tracing warns about deprecation and about Python ints taken from sizes (checked below)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _check_same(reference: nn.Module, exported, channels: int, what: str) -> None:
    """Run both at a size other than the traced one; a size baked into the trace shows here."""
    x = torch.rand(2, channels, 96, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x).numpy()
    got = exported(x)
    if got.shape != expected.shape or abs(got - expected).max() > 1e-4:
        raise RuntimeError(f"the {what} export does not reproduce the model at another image size")


def write_torchscript(model: SegmentationModel, path: str | os.PathLike) -> Path:
    """Trace the probability network into a TorchScript file (atomic)."""
    net = inference_network(model)
    example = torch.rand(1, model.in_channels, 64, 64, generator=torch.Generator().manual_seed(0))
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(net, example, check_trace=False)
    _check_same(net, lambda x: traced(x).detach().numpy(), model.in_channels, "TorchScript")
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return Path(path)


def write_onnx(model: SegmentationModel, path: str | os.PathLike) -> Path:
    """Export the probability network to ONNX (opset 17) with dynamic batch, H and W (atomic)."""
    require("onnx")
    import onnx
    net = inference_network(model)
    example = torch.rand(1, model.in_channels, 64, 64, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "y", 3: "x"}
    with atomic_path(path) as tmp:
        with _quiet():
            torch.onnx.export(onnx_ready(copy.deepcopy(net)), (example,), str(tmp), dynamo=False,
                              opset_version=OPSET, input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: axes, OUTPUT: axes})
        onnx.checker.check_model(str(tmp))
        try:
            import onnxruntime
        except ImportError:  # the file is valid ONNX; its outputs are checked where ONNX Runtime is
            pass
        else:
            session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            _check_same(net, lambda x: session.run(None, {INPUT: x.numpy()})[0], model.in_channels, "ONNX")
    return Path(path)
