"""ONNX for the spectral pooling of Inception U-Net and RCA-IUNet.

The TorchScript-based ONNX exporter has no translation for ``torch.fft``, and the dynamo
exporter fixes every image size in these models. So in the export copy each spectral module is
replaced by an autograd Function that runs the original code in PyTorch and, in the ONNX graph,
is written as matrix products with DFT matrices built from the input's shape, so the file accepts
any size. Both spectral operations are linear and separable along H and W. ONNX's own ``DFT``
operator computes the same, but ONNX Runtime ran it 10-50x slower than these products.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import SpectralLowPass2d, SpectralPool2d

OPSET = 17
FLOAT = 1  # ONNX TensorProto.FLOAT


def _const(g, value, dtype=torch.int64):
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


def _size(g, x, axis: int):
    """The length of ``axis`` as an int64 scalar."""
    return g.op("Gather", g.op("Shape", x), _const(g, axis), axis_i=0)


def _range(g, n):
    return g.op("Range", _const(g, 0), n, _const(g, 1))


def _phase(g, rows, cols, n):
    """2 pi ((rows x cols) mod n) / n as a float matrix; the integer ``mod`` keeps it exact."""
    product = g.op("Mul", g.op("Unsqueeze", rows, _const(g, [1])), g.op("Unsqueeze", cols, _const(g, [0])))
    turns = g.op("Cast", g.op("Mod", product, n, fmod_i=0), to_i=FLOAT)
    return g.op("Mul", turns, g.op("Div", _const(g, 2 * math.pi, torch.float32), g.op("Cast", n, to_i=FLOAT)))


def _low_pass_matrix(g, n, cutoff: float):
    """The real symmetric (n, n) matrix of ``SpectralLowPass2d`` along one axis:
    (C^T diag(m) C + S^T diag(m) S) / n with C, S the DFT's cosines and sines."""
    k = _range(g, n)
    distance = g.op("Min", k, g.op("Sub", n, k))  # |fftfreq(n)| * n
    freq = g.op("Mul", g.op("Cast", distance, to_i=FLOAT), g.op("Reciprocal", g.op("Cast", n, to_i=FLOAT)))
    keep = g.op("Cast", g.op("Less", freq, _const(g, cutoff, torch.float32)), to_i=FLOAT)
    keep = g.op("Div", g.op("Unsqueeze", keep, _const(g, [1])), g.op("Cast", n, to_i=FLOAT))
    phase = _phase(g, k, k, n)
    cos, sin = g.op("Cos", phase), g.op("Sin", phase)
    return g.op("Add", g.op("MatMul", g.op("Transpose", g.op("Mul", cos, keep), perm_i=[1, 0]), cos),
                g.op("MatMul", g.op("Transpose", g.op("Mul", sin, keep), perm_i=[1, 0]), sin))


def _pool_matrix(g, n, factor: int):
    """(real, imaginary) (keep, n) parts of ``SpectralPool2d`` along one axis: the forward DFT
    scaled by 1/n, the ``keep`` lowest frequencies, the unscaled inverse DFT of size ``keep``."""
    keep = g.op("Max", g.op("Div", n, _const(g, factor)), _const(g, 1))
    t = _range(g, keep)
    positive = g.op("Sub", keep, g.op("Div", keep, _const(g, 2)))  # frequencies 0..positive-1, then negative
    freq = g.op("Where", g.op("Less", t, positive), t, g.op("Sub", t, keep))
    forward = _phase(g, freq, _range(g, n), n)  # (keep, n)
    scale = g.op("Reciprocal", g.op("Cast", n, to_i=FLOAT))
    fr, fi = g.op("Mul", g.op("Cos", forward), scale), g.op("Neg", g.op("Mul", g.op("Sin", forward), scale))
    inverse = _phase(g, t, freq, keep)  # (keep, keep)
    gr, gi = g.op("Cos", inverse), g.op("Sin", inverse)
    real = g.op("Sub", g.op("MatMul", gr, fr), g.op("MatMul", gi, fi))
    imag = g.op("Add", g.op("MatMul", gr, fi), g.op("MatMul", gi, fr))
    return real, imag


def _t(g, x):
    return g.op("Transpose", x, perm_i=[1, 0])


class _SpectralPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: int) -> torch.Tensor:
        return SpectralPool2d(factor)(x)

    @staticmethod
    def symbolic(g, x, factor: int):
        # Re(A_h X A_w^T) = Ar_h X Ar_w^T - Ai_h X Ai_w^T
        hr, hi = _pool_matrix(g, _size(g, x, 2), factor)
        wr, wi = _pool_matrix(g, _size(g, x, 3), factor)
        return g.op("Sub", g.op("MatMul", g.op("MatMul", hr, x), _t(g, wr)),
                    g.op("MatMul", g.op("MatMul", hi, x), _t(g, wi)))


class _SpectralLowPass(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cutoff: float) -> torch.Tensor:
        return SpectralLowPass2d(cutoff)(x)

    @staticmethod
    def symbolic(g, x, cutoff: float):
        # the mask is separable and symmetric, so the filter is L_h X L_w with real symmetric L
        along_h = g.op("MatMul", _low_pass_matrix(g, _size(g, x, 2), cutoff), x)
        return g.op("MatMul", along_h, _low_pass_matrix(g, _size(g, x, 3), cutoff))


class _OnnxSpectralPool(nn.Module):
    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SpectralPool.apply(x, self.factor)


class _OnnxSpectralLowPass(nn.Module):
    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = cutoff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SpectralLowPass.apply(x, self.cutoff)


def onnx_ready(net: nn.Module) -> nn.Module:
    """Swap every spectral module of ``net`` (in place) for its ONNX-exportable twin."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SpectralPool2d):
                setattr(parent, name, _OnnxSpectralPool(child.factor))
            elif isinstance(child, SpectralLowPass2d):
                setattr(parent, name, _OnnxSpectralLowPass(child.cutoff))
    return net


def has_spectral(net: nn.Module) -> bool:
    """Whether ``net`` pools spectrally (its receptive field is then the whole image)."""
    return any(isinstance(m, (SpectralPool2d, SpectralLowPass2d)) for m in net.modules())
