"""The U-Net variants: shapes, gradients, encoder contract, spectral pooling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from btunet.models import MODELS, SIZE_MULTIPLE, create_model
from btunet.models.blocks import (
    AttentionGate,
    CrossSpatialAttention,
    HybridPool2d,
    SpectralLowPass2d,
    SpectralPool2d,
)

NAMES = ["unet", "attention_unet", "inception_unet", "rca_iunet"]
SIZES = [(37, 50), (64, 64), (17, 100)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These inputs are tiny: intra-op threads only add synchronisation overhead, which
    becomes seconds per forward pass when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _build(name: str, in_channels: int = 1, **kwargs):
    return create_model(name, in_channels=in_channels, **kwargs)


# --------------------------------------------------------------------------- registry

def test_all_variants_registered():
    assert sorted(MODELS) == sorted(NAMES)


def test_unknown_name_lists_every_variant():
    with pytest.raises(ValueError) as info:
        create_model("nope")
    message = str(info.value)
    assert "nope" in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize("name", NAMES)
def test_config_rebuilds_the_same_architecture(name):
    model = _build(name, 3, base_filters=8, dropout=0.2)
    assert model.config == {"name": name, "in_channels": 3, "out_channels": 1, "base_filters": 8,
                                "dropout": 0.2}
    rebuilt = create_model(**model.config)
    rebuilt.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    assert type(rebuilt.decoder) is type(model.decoder)


# --------------------------------------------------------------------------- forward

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_finite(name, in_channels, size):
    model = _build(name, in_channels).eval()
    x = torch.randn(2, in_channels, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_out_channels(name):
    model = _build(name, 1, out_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 48)).shape == (1, 3, 32, 48)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model = _build(name, 3).train()
    x = torch.randn(2, 3, 37, 50)
    target = (torch.rand(2, 1, 37, 50) > 0.5).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    zero = [n for n, p in model.named_parameters()
            if p.grad is not None and not bool((p.grad != 0).any())]
    assert not missing, f"no gradient: {missing}"
    assert not zero, f"all-zero gradient: {zero}"
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- encoder contract

@pytest.mark.parametrize("base_filters", [16, 8])
@pytest.mark.parametrize("name", NAMES)
def test_encoder_returns_skips_and_bottleneck(name, base_filters):
    model = _build(name, 3, base_filters=base_filters).eval()
    h, w = 64, 96
    with torch.no_grad():
        skips, bottleneck = model.encoder(torch.randn(2, 3, h, w))
    assert len(skips) == 4
    for level, skip in enumerate(skips):
        assert skip.shape == (2, base_filters * 2**level, h >> level, w >> level)
    assert model.encoder.out_channels == 16 * base_filters
    assert model.bottleneck_channels == 16 * base_filters
    assert bottleneck.shape == (2, model.encoder.out_channels, h // SIZE_MULTIPLE,
                                w // SIZE_MULTIPLE)
    assert model.decoder(skips, bottleneck).shape == (2, base_filters, h, w)


@pytest.mark.parametrize("name", NAMES)
def test_encoder_is_self_contained(name):
    """Pre-training trains ``model.encoder`` alone; fine-tuning loads it into a fresh model."""
    model = _build(name, 1)
    enc = {id(p) for p in model.encoder.parameters()}
    rest = {id(p) for p in model.decoder.parameters()} | {id(p) for p in model.head.parameters()}
    assert enc and not enc & rest

    fresh = _build(name, 1)
    fresh.encoder.load_state_dict(model.encoder.state_dict())
    x = torch.randn(2, 1, 32, 32)
    model.eval(), fresh.eval()
    with torch.no_grad():
        (s1, b1), (s2, b2) = model.encoder(x), fresh.encoder(x)
    torch.testing.assert_close(b1, b2)
    for a, b in zip(s1, s2, strict=True):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- mixed precision

@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_channels_last(name):
    model = _build(name, 3).to(memory_format=torch.channels_last).train()
    x = torch.randn(2, 3, 48, 40).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == (2, 1, 48, 40)
    assert torch.isfinite(y.float()).all()
    y.float().square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_spectral_pool_under_autocast_matches_float32():
    x = torch.randn(2, 4, 16, 12)
    expected = SpectralPool2d(2)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = SpectralPool2d(2)(x.bfloat16().to(memory_format=torch.channels_last))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, atol=0.05, rtol=0.05)


# --------------------------------------------------------------------------- spectral pooling

def _numpy_spectral_pool(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """FFT over the spatial axes, centred crop of the low frequencies, inverse FFT."""
    h, w = x.shape[-2:]
    spectrum = np.fft.fftshift(np.fft.fft2(x, axes=(-2, -1)), axes=(-2, -1))
    top, left = h // 2 - out_h // 2, w // 2 - out_w // 2
    spectrum = spectrum[..., top:top + out_h, left:left + out_w]
    y = np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1)), axes=(-2, -1)).real
    return y * (out_h * out_w) / (h * w)  # keep amplitudes (numpy's ifft divides by the new size)


@pytest.mark.parametrize("size", [(8, 8), (10, 14), (9, 12), (7, 5), (32, 6), (2, 2)])
def test_spectral_pool_matches_numpy_reference(size):
    x = np.random.default_rng(1).normal(size=(2, 3, *size))
    y = SpectralPool2d(2)(torch.from_numpy(x)).numpy()
    assert y.shape == (2, 3, size[0] // 2, size[1] // 2)
    np.testing.assert_allclose(y, _numpy_spectral_pool(x, size[0] // 2, size[1] // 2),
                               atol=1e-6, rtol=1e-6)


def test_spectral_pool_float64_and_channels_last():
    x = torch.randn(2, 5, 12, 20, dtype=torch.float64)
    y = SpectralPool2d(2)(x)
    assert y.dtype == torch.float64
    np.testing.assert_allclose(y.numpy(), _numpy_spectral_pool(x.numpy(), 6, 10), atol=1e-12)
    torch.testing.assert_close(SpectralPool2d(2)(x.to(memory_format=torch.channels_last)), y)


def _cosine(h: int, w: int, ky: int, kx: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.cos(2 * torch.pi * (ky * yy / h + kx * xx / w) + 0.3)[None, None]


def test_spectral_pool_preserves_constant_and_low_frequencies():
    const = torch.full((1, 2, 16, 24), 3.5, dtype=torch.float64)
    torch.testing.assert_close(SpectralPool2d(2)(const), torch.full((1, 2, 8, 12), 3.5,
                                                                    dtype=torch.float64))
    low = _cosine(32, 24, 3, 2)  # below the new Nyquist: resampled exactly
    torch.testing.assert_close(SpectralPool2d(2)(low), low[..., ::2, ::2])


def test_spectral_pool_removes_high_frequencies():
    high = _cosine(32, 32, 12, 0)  # above the new Nyquist (8): subsampling would alias it
    assert high[..., ::2, ::2].abs().max() > 0.5
    assert SpectralPool2d(2)(high).abs().max() < 1e-10


def test_spectral_low_pass_keeps_size_and_low_band():
    const = torch.full((1, 1, 20, 18), -2.0, dtype=torch.float64)
    torch.testing.assert_close(SpectralLowPass2d()(const), const)
    low, high = _cosine(32, 24, 3, 2), _cosine(32, 24, 0, 9)
    out = SpectralLowPass2d()(low + high)
    assert out.shape == low.shape
    torch.testing.assert_close(out, low)


@pytest.mark.parametrize("module", [SpectralPool2d(2), SpectralLowPass2d()], ids=repr)
def test_spectral_gradients_match_finite_differences(module):
    x = torch.randn(1, 2, 10, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))


# --------------------------------------------------------------------------- pooling / attention

@pytest.mark.parametrize("stride, expected", [(2, (5, 7)), (1, (10, 14))])
def test_hybrid_pool_shapes_and_trainable_mix(stride, expected):
    pool = HybridPool2d(4, 6, stride=stride)
    x = torch.randn(2, 4, 10, 14)
    y = pool(x)
    assert y.shape == (2, 6, *expected)
    max_pool = torch.nn.MaxPool2d(2) if stride == 2 else torch.nn.MaxPool2d(3, 1, 1)
    spectral = SpectralPool2d(2) if stride == 2 else SpectralLowPass2d(0.25)
    torch.testing.assert_close(y, pool.mix(torch.cat([max_pool(x), spectral(x)], dim=1)))
    y.square().mean().backward()
    assert pool.mix.weight.grad is not None and (pool.mix.weight.grad != 0).any()


def test_hybrid_pool_rejects_other_strides():
    with pytest.raises(ValueError):
        HybridPool2d(4, stride=3)


def test_attention_gate_coefficients():
    gate = AttentionGate(8, 16)
    skip, g = torch.randn(2, 8, 12, 10), torch.randn(2, 16, 6, 5)
    alpha = gate.coefficients(skip, g)
    assert alpha.shape == (2, 1, 12, 10)
    assert (alpha > 0).all() and (alpha < 1).all()
    assert gate(skip, g).shape == skip.shape


def test_cross_spatial_attention_uses_all_three_inputs():
    csa = CrossSpatialAttention(4, 8, 16).eval()
    finer, skip, coarser = torch.randn(2, 4, 24, 20), torch.randn(2, 8, 12, 10), torch.randn(
        2, 16, 6, 5)
    with torch.no_grad():
        alpha = csa.coefficients(finer, skip, coarser)
        assert alpha.shape == (2, 1, 12, 10)
        assert (alpha > 0).all() and (alpha < 1).all()
        assert csa(finer, skip, coarser).shape == skip.shape
        for changed in (csa.coefficients(finer + torch.randn_like(finer), skip, coarser),
                        csa.coefficients(finer, skip, coarser + torch.randn_like(coarser))):
            assert not torch.allclose(changed, alpha)
    with pytest.raises(ValueError):
        csa(None, skip, coarser)
