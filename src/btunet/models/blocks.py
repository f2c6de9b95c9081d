"""Small building blocks shared by the variants."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeparableConv2d(nn.Sequential):
    """Depthwise k x k convolution followed by a pointwise 1 x 1 (Keras ``SeparableConv2D``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2,
                      groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1),
        )


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3,
                 separable: bool = False) -> nn.Sequential:
    conv = (SeparableConv2d(in_channels, out_channels, kernel_size) if separable
            else nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2))
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def separable_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Depthwise k x k -> pointwise 1 x 1 -> BN -> ReLU, without the bias BN would cancel."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2,
                  groups=in_channels, bias=False),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def pointwise_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """1 x 1 convolution -> BN -> ReLU (no bias: BN has its own shift)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class _Float32Spectral(nn.Module):
    """Runs ``_spectral`` with autocast off and half-precision input promoted to float32 (FFTs
    have no bf16 kernels and lose too much precision in fp16), then casts back."""

    def _spectral(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exact = x.dtype in (torch.float32, torch.float64)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = self._spectral(x if exact else x.float())
        return y.to(x.dtype)


def _crop_axis(spectrum: torch.Tensor, dim: int, keep: int) -> torch.Tensor:
    """The ``keep`` lowest frequencies along ``dim`` of an unshifted FFT, in FFT order: the
    centred crop of ``fftshift`` (``keep // 2`` negative frequencies, the rest >= 0)."""
    n = spectrum.shape[dim]
    if keep == n:
        return spectrum
    pos, neg = keep - keep // 2, keep // 2
    parts = [spectrum.narrow(dim, 0, pos)]
    if neg:
        parts.append(spectrum.narrow(dim, n - neg, neg))
    return torch.cat(parts, dim=dim)


class SpectralPool2d(_Float32Spectral):
    """2-D spectral pooling (Rippel et al. 2015): FFT over H and W, keep the centred
    low-frequency block of the output size, inverse FFT at that size.

    The output is ``(H // factor, W // factor)``, the size ``nn.MaxPool2d(factor)`` gives, so
    the two can be combined. Amplitudes are preserved (``norm="forward"``): a constant image
    stays the same constant and a cosine below the new Nyquist frequency is resampled exactly.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = int(factor)

    def _spectral(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        oh, ow = max(h // self.factor, 1), max(w // self.factor, 1)
        spectrum = torch.fft.fft2(x, norm="forward")
        spectrum = _crop_axis(_crop_axis(spectrum, -2, oh), -1, ow)
        return torch.fft.ifft2(spectrum, s=(oh, ow), norm="forward").real

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class SpectralLowPass2d(_Float32Spectral):
    """Stride-1 ("same" size) spectral pooling: zero every frequency with ``|f| >= cutoff``
    cycles/pixel along H or W and transform back at the input size. The default cutoff 0.25
    keeps the band a 2x spectral pool keeps."""

    def __init__(self, cutoff: float = 0.25):
        super().__init__()
        if not 0.0 < cutoff <= 0.5:
            raise ValueError(f"cutoff must be in (0, 0.5], got {cutoff}")
        self.cutoff = float(cutoff)

    def _mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        fy = torch.fft.fftfreq(h, device=device).abs() < self.cutoff
        fx = torch.fft.rfftfreq(w, device=device).abs() < self.cutoff
        return (fy[:, None] & fx[None, :]).float()

    def _spectral(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spectrum = torch.fft.rfft2(x) * self._mask(h, w, x.device)
        return torch.fft.irfft2(spectrum, s=(h, w))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"


class HybridPool2d(nn.Module):
    """Max pooling and spectral pooling side by side, concatenated and mixed by a trainable
    1 x 1 convolution (``in_channels * 2 -> out_channels``).

    ``stride=2`` halves H and W (2 x 2 max pool || 2x spectral pool); ``stride=1`` keeps the
    size (3 x 3 "same" max pool || spectral low-pass). Leave ``bias`` off when a BatchNorm
    follows.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, stride: int = 2,
                 bias: bool = True):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if stride == 2:
            self.max_pool: nn.Module = nn.MaxPool2d(2)
            self.spectral_pool: nn.Module = SpectralPool2d(2)
        elif stride == 1:
            self.max_pool = nn.MaxPool2d(3, stride=1, padding=1)
            self.spectral_pool = SpectralLowPass2d(0.25)
        else:
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.mix = nn.Conv2d(2 * in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.cat([self.max_pool(x), self.spectral_pool(x)], dim=1))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Attention U-Net).

    ``theta`` (2 x 2, stride 2) brings the skip ``x`` to the resolution of the coarser gating
    signal ``g``, ``phi`` (1 x 1) projects ``g``; their sum -> ReLU -> ``psi`` (1 x 1) ->
    sigmoid gives one coefficient per pixel, resampled bilinearly to the skip's size. The
    gated skip goes through a 1 x 1 conv -> BN.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int | None = None):
        super().__init__()
        inter = inter_channels or max(skip_channels // 2, 1)
        self.theta = nn.Conv2d(skip_channels, inter, 2, stride=2, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter, 1)
        self.psi = nn.Conv2d(inter, 1, 1)
        self.out = nn.Sequential(nn.Conv2d(skip_channels, skip_channels, 1, bias=False),
                                 nn.BatchNorm2d(skip_channels))

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention map (N, 1, H, W) in (0, 1) at the skip's resolution."""
        theta = self.theta(x)
        phi = F.interpolate(self.phi(g), size=theta.shape[-2:], mode="bilinear",
                            align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta + phi)))
        return F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.out(x * self.coefficients(x, g))


class CrossSpatialAttention(nn.Module):
    """Cross-spatial attention of RCA-IUNet on one skip connection.

    Three inputs: the finer level's features max-pooled 2x to the skip's size (``None`` at full
    resolution), the skip, and the coarser level's features (half the skip's size). Each goes
    through a 1 x 1 conv -> BN -> ReLU gating signal; the first two are brought to the coarser
    grid by 2 x 2 stride-2 convs, the coarser one by a 3 x 3 conv. Their sum -> ReLU -> 1 x 1 ->
    sigmoid is resampled bilinearly to the skip's size and gates the skip, followed by
    1 x 1 conv -> BN -> ReLU.
    """

    def __init__(self, finer_channels: int | None, skip_channels: int, coarser_channels: int,
                 inter_channels: int | None = None):
        super().__init__()
        inter = inter_channels or skip_channels
        self.pool = nn.MaxPool2d(2)
        if finer_channels:
            self.gate_finer: nn.Module | None = pointwise_bn_relu(finer_channels, inter)
            self.theta_finer: nn.Module | None = nn.Conv2d(inter, inter, 2, stride=2, bias=False)
        else:
            self.gate_finer = self.theta_finer = None
        self.gate_skip = pointwise_bn_relu(skip_channels, inter)
        self.theta_skip = nn.Conv2d(inter, inter, 2, stride=2, bias=False)
        self.gate_coarser = pointwise_bn_relu(coarser_channels, inter)
        self.phi_coarser = nn.Conv2d(inter, inter, 3, padding=1)
        self.psi = nn.Conv2d(inter, 1, 1)
        self.out = pointwise_bn_relu(skip_channels, skip_channels)

    def coefficients(self, finer: torch.Tensor | None, skip: torch.Tensor,
                     coarser: torch.Tensor) -> torch.Tensor:
        """Attention map (N, 1, H, W) in (0, 1) at the skip's resolution."""
        s = self.theta_skip(self.gate_skip(skip))
        phi = self.phi_coarser(self.gate_coarser(coarser))
        if phi.shape[-2:] != s.shape[-2:]:
            phi = F.interpolate(phi, size=s.shape[-2:], mode="nearest")
        s = s + phi
        if self.gate_finer is not None:
            if finer is None:
                raise ValueError("this attention block expects the finer level's features")
            s = s + self.theta_finer(self.gate_finer(self.pool(finer)))
        alpha = torch.sigmoid(self.psi(F.relu(s)))
        return F.interpolate(alpha, size=skip.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, finer: torch.Tensor | None, skip: torch.Tensor,
                coarser: torch.Tensor) -> torch.Tensor:
        return self.out(skip * self.coefficients(finer, skip, coarser))
