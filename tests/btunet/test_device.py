"""The fast numeric path: bf16 autocast only where the hardware multiplies bf16."""
from __future__ import annotations

import pytest
import torch

from btunet.base import device


@pytest.fixture
def bf16_flag(monkeypatch):
    """Set BTUNET_CPU_BF16 and forget the cached detection before and after."""
    def set_flag(value: str) -> None:
        monkeypatch.setenv("BTUNET_CPU_BF16", value)
        device.cpu_has_native_bf16.cache_clear()
    yield set_flag
    monkeypatch.delenv("BTUNET_CPU_BF16", raising=False)
    device.cpu_has_native_bf16.cache_clear()


def _conv_dtype() -> torch.dtype:
    conv = torch.nn.Conv2d(1, 2, 3)
    with device.autocast(torch.device("cpu")):
        return conv(torch.rand(1, 1, 8, 8)).dtype


def test_cpu_without_native_bf16_computes_in_fp32(bf16_flag):
    bf16_flag("0")
    assert not device.cpu_has_native_bf16()
    assert _conv_dtype() == torch.float32


def test_cpu_with_native_bf16_uses_bf16_autocast(bf16_flag):
    bf16_flag("1")
    assert device.cpu_has_native_bf16()
    assert _conv_dtype() == torch.bfloat16


def test_disabled_fast_path_is_fp32_everywhere(bf16_flag):
    bf16_flag("1")
    conv = torch.nn.Conv2d(1, 2, 3)
    with device.autocast(torch.device("cpu"), enabled=False):
        assert conv(torch.rand(1, 1, 8, 8)).dtype == torch.float32


def test_detection_reads_the_cpu_flags(bf16_flag, monkeypatch):
    monkeypatch.delenv("BTUNET_CPU_BF16", raising=False)
    device.cpu_has_native_bf16.cache_clear()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this system: detection answers False, tested above")
    expected = any(f in flags.split() for f in ("amx_bf16", "avx512_bf16"))
    assert device.cpu_has_native_bf16() is expected
