"""Fused CPU inference for long jobs: the folded network, exported once to ONNX, run by ONNX Runtime.

Eager PyTorch runs every ReLU, residual add and skip concatenation of these narrow U-Nets as a
separate pass over memory; ONNX Runtime fuses them into the convolutions and runs fp32 about
twice as fast as the bf16 eager path (docs/results_speed.md). Export costs a few seconds, so
``auto`` uses it on the CPU for jobs of at least ``FUSED_MIN_PIXELS`` or when the network is
already exported; the live preview stays eager so its first call never waits for an export.

Sessions are cached in memory per weights (``weights_key``), and the ONNX file on disk under
``cache_dir()`` (protobuf, never unpickled; written atomically). Every session is checked
against the eager network on a small input before use, so a stale or damaged file is never
trusted. Without ``onnx``/``onnxruntime``, or if the export fails, prediction warns once and
runs eager.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..base.atomic import atomic_path
from ..base.errors import BTUnetError

RUNTIMES = ("auto", "onnx", "eager")
#: ``auto`` exports a not yet cached network only for jobs of at least this many pixels: an
#: export takes 1-8 s, the fused path saves about 0.2-0.4 s per megapixel.
FUSED_MIN_PIXELS = 4_000_000
#: Bumped when the exported graph changes, so cached files of older versions are not reused.
FORMAT = 1
INPUT, OUTPUT = "raw", "logits"
_LOCK = threading.Lock()
_SESSIONS: OrderedDict[tuple, object] = OrderedDict()
_WARNED: set[str] = set()


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise BTUnetError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    return runtime


def weights_key(net: nn.Module) -> str:
    """A hash of what the exported graph depends on: the config, every weight and buffer, the
    torch version and ``FORMAT``; a changed model never reuses another's session."""
    h = hashlib.sha256(json.dumps([FORMAT, torch.__version__, type(net).__name__,
                                   getattr(net, "config", None)], sort_keys=True, default=str).encode())
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def cache_dir() -> Path | None:
    """Where exported networks are kept: ``BTUNET_CACHE_DIR`` (empty: no disk cache), else the
    user cache folder (``%LOCALAPPDATA%``, ``~/Library/Caches``, ``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if "BTUNET_CACHE_DIR" in os.environ:
        value = os.environ["BTUNET_CACHE_DIR"]
        return Path(value) / "onnx" if value else None
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "btunet" / "onnx"


class LogitNet(nn.Module):
    """Logits (N, K, H, W) for (N, C, H, W) input with H and W multiples of 16 (no padding inside,
    which tracing would fix to one size)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.encoder, self.decoder, self.head = net.encoder, net.decoder, net.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, bottleneck = self.encoder(x)
        return self.head(self.decoder(skips, bottleneck))


def _eager_copy(net: nn.Module) -> LogitNet:
    return LogitNet(copy.deepcopy(net).float().cpu().to(memory_format=torch.contiguous_format)).eval()


def export_logits(net: nn.Module, path: str | os.PathLike) -> Path:
    """Write the (already BatchNorm-folded) ``net`` as ONNX with dynamic batch, H and W (atomic)."""
    from .onnx_spectral import OPSET, onnx_ready
    logit_net = onnx_ready(_eager_copy(net))
    example = torch.rand(1, int(net.in_channels), 64, 64, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "y", 3: "x"}
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracing warns about sizes taken as Python ints
        torch.onnx.export(logit_net, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT], dynamic_axes={INPUT: axes, OUTPUT: axes})
    return Path(path)


def session_options(threads: int, spinning: bool):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = max(1, threads), 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return options


def _agrees(session, net: nn.Module) -> bool:
    """The session reproduces the eager fp32 network on a small input of an untraced size."""
    x = torch.rand(2, int(net.in_channels), 96, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _eager_copy(net)(x).numpy()
    got = session.run(None, {INPUT: x.numpy()})[0]
    return got.shape == expected.shape and bool(np.abs(got - expected).max() <= 1e-3 * (1 + np.abs(expected).max()))


def _new_session(net: nn.Module, key: str, threads: int, spinning: bool):
    import onnx  # noqa: F401  (torch's exporter needs it; a missing one means eager)
    import onnxruntime
    options = session_options(threads, spinning)
    folder = cache_dir()
    cached = folder / f"{key}.onnx" if folder is not None else None
    if cached is not None and cached.is_file():
        try:
            session = onnxruntime.InferenceSession(str(cached), options, providers=["CPUExecutionProvider"])
            if _agrees(session, net):
                return session
        except Exception:  # noqa: BLE001 - a damaged file (any error): export again
            pass
    if cached is not None:
        try:
            export_logits(net, cached)
            path = cached
        except OSError:  # an unwritable cache folder: export into memory only
            path = None
    if cached is None or path is None:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = export_logits(net, Path(tmp) / "net.onnx")
            model_bytes = path.read_bytes()
        session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    else:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    if not _agrees(session, net):
        raise RuntimeError("the exported network does not reproduce the model")
    return session


class FusedModel(nn.Module):
    """The inference model with its forward run by ONNX Runtime (fp32); config, metadata and
    parameters are the eager network's, so it goes wherever ``planes.as_model`` returns go."""

    runtime = "onnx"

    def __init__(self, net: nn.Module, session):
        super().__init__()
        self.net = net
        self.session = session

    @property
    def config(self) -> dict:
        return self.net.config

    @property
    def in_channels(self) -> int:
        return int(self.net.in_channels)

    @property
    def name(self) -> str:
        return self.net.name

    @property
    def metadata(self):
        return getattr(self.net, "metadata", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for (N, C, H, W) input with H and W multiples of 16 (as ``predict_logits`` tiles)."""
        from .base import pad_to_multiple
        x, h, w = pad_to_multiple(x.detach().to("cpu", torch.float32))
        out = self.session.run(None, {INPUT: np.ascontiguousarray(x.numpy())})[0]
        return torch.from_numpy(out)[..., :h, :w]


def _warn_once(reason: str) -> None:
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f"fused CPU inference is off ({reason}); predicting with PyTorch, which is slower",
                      RuntimeWarning, stacklevel=3)


def fused_model(net: nn.Module, runtime: str = "auto", pixels: int | None = None,
                threads: int | None = None) -> nn.Module:
    """``net`` (an inference model from ``planes.as_model``) as a ``FusedModel`` when ``runtime``
    asks for ONNX Runtime and it is usable, else ``net`` itself.

    ``auto``: on the CPU, for a job of ``pixels`` >= ``FUSED_MIN_PIXELS`` or a network already
    exported (in memory or on disk). ``onnx``: always on the CPU. A failure warns once (never an error).
    """
    check_runtime(runtime)
    if runtime == "eager" or isinstance(net, FusedModel) or next(net.parameters()).device.type != "cpu":
        return net
    from ..base.threads import spinning_allowed
    threads = threads or torch.get_num_threads()
    spinning = spinning_allowed()
    try:
        key = weights_key(net)
    except Exception as exc:  # noqa: BLE001 - an exotic model; eager always works
        _warn_once(f"the weights could not be hashed: {exc}")
        return net
    with _LOCK:
        session = _SESSIONS.get((key, threads, spinning))
        if session is not None:
            _SESSIONS.move_to_end((key, threads, spinning))
            return FusedModel(net, session)
        if runtime == "auto":
            folder = cache_dir()
            on_disk = folder is not None and (folder / f"{key}.onnx").is_file()
            if not on_disk and (pixels is None or pixels < FUSED_MIN_PIXELS):
                return net
        try:
            session = _new_session(net, key, threads, spinning)
        except ImportError as exc:
            _warn_once(f"{exc.name or 'onnxruntime'} is not installed; pip install onnx onnxruntime")
            return net
        except Exception as exc:  # noqa: BLE001 - any failure means: warn once and run eager
            _warn_once(f"the network could not be exported: {type(exc).__name__}: {str(exc)[:200]}")
            return net
        _SESSIONS[(key, threads, spinning)] = session
        while len(_SESSIONS) > 4:  # a few models per process at most
            _SESSIONS.popitem(last=False)
    return FusedModel(net, session)


def fused_tile(tile: int | None, tile_batch: int) -> int | None:
    """The fused path's tile side: one tile holding the pixels of the ``tile_batch`` tiles an eager
    call holds (same memory per call, less overlap to compute: 2048 for 4 tiles of 1024)."""
    if tile is None:
        return None
    from . import SIZE_MULTIPLE
    return max(tile, int(tile * math.sqrt(tile_batch)) // SIZE_MULTIPLE * SIZE_MULTIPLE)


def fused_setup(net: nn.Module, cfg, pixels: int) -> tuple[nn.Module, object]:
    """(network, ``PredictConfig``) for a prediction job of ``pixels``: the fused network with its
    larger tiles (one per call, fp32) when ``cfg.runtime`` picks it, else both unchanged."""
    import dataclasses
    fused = fused_model(net, cfg.runtime, pixels)
    if fused is net:
        return net, cfg
    return fused, dataclasses.replace(cfg, tile=fused_tile(cfg.tile, cfg.tile_batch), tile_batch=1, fast=False)


def clear_sessions() -> None:
    """Forget every in-memory session (tests; a long-lived process that switches many models)."""
    with _LOCK:
        _SESSIONS.clear()


__all__ = ["FUSED_MIN_PIXELS", "FusedModel", "RUNTIMES", "cache_dir", "check_runtime", "clear_sessions",
           "export_logits", "fused_model", "fused_setup", "fused_tile", "weights_key"]
