"""The fused CPU runtime (ONNX Runtime) against the eager network, its fallback and its cache."""
import sys
import warnings

import numpy as np
import pytest
import torch

from btunet import BTUnetError, PredictConfig, create_model, predict
from btunet.labels.heads import default_classes
from btunet.models import runtime
from btunet.models.runtime import FusedModel, fused_model, fused_tile, weights_key
from btunet.pipeline.planes import as_model, predict_logits
from tests.btunet.nets import with_batchnorm_statistics

CPU = torch.device("cpu")


def model(name: str = "unet", seed: int = 0, out_channels: int = 1):
    """A small random variant with non-trivial BatchNorm statistics (so folding them matters)."""
    torch.manual_seed(seed)
    return with_batchnorm_statistics(create_model(name, in_channels=1, base_filters=4, out_channels=out_channels))


def image(h: int = 90, w: int = 130, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    blobs = np.sin(yy / 7.0) * np.cos(xx / 9.0)
    return (1000 + 400 * blobs + 50 * rng.standard_normal((h, w))).astype(np.uint16)


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("BTUNET_CACHE_DIR", str(tmp_path))
    runtime.clear_sessions()
    runtime._WARNED.clear()
    yield
    runtime.clear_sessions()


@pytest.mark.parametrize("name", ["unet", "attention_unet", "inception_unet", "rca_iunet"])
def test_every_variant_runs_fused_like_eager(name):
    net = as_model(model(name), CPU)
    fused = fused_model(net, "onnx")
    assert isinstance(fused, FusedModel) and fused.config == net.config
    pixels = np.random.default_rng(0).random((1, 80, 112), dtype=np.float32)
    eager = predict_logits(net, pixels, fast=False)
    got = predict_logits(fused, pixels, fast=False)
    assert got.shape == eager.shape == (80, 112)
    assert np.abs(got - eager).max() < 1e-3 * (1 + np.abs(eager).max())


def test_predict_fused_equals_eager_fp32_tiled_and_whole():
    net, img = model(), image(150, 200)
    eager = predict(net, img, device="cpu", runtime="eager", fast=False, tile=64, overlap=32, tile_batch=1)
    fused = predict(net, img, device="cpu", runtime="onnx", tile=64, overlap=32, tile_batch=1)
    assert np.abs(fused.probabilities - eager.probabilities).max() < 1e-5  # the same tiles
    assert np.array_equal(fused.labels, eager.labels)
    larger = predict(net, img, device="cpu", runtime="onnx", tile=64, overlap=32, tile_batch=4)
    assert np.abs(larger.probabilities - eager.probabilities).max() < 1e-3  # 128-px tiles
    whole = predict(net, img, device="cpu", runtime="onnx")  # one tile
    assert np.abs(whole.probabilities - predict(net, img, device="cpu", runtime="eager",
                                                fast=False).probabilities).max() < 1e-5


def test_a_class_model_keeps_every_channel():
    net = model(out_channels=3)
    net.metadata = {"classes": [c.as_dict() for c in default_classes(2)]}
    eager = predict(net, image(), device="cpu", runtime="eager", fast=False, class_probabilities=True)
    fused = predict(net, image(), device="cpu", runtime="onnx", class_probabilities=True)
    assert fused.class_probabilities.shape == eager.class_probabilities.shape
    assert np.abs(fused.class_probabilities - eager.class_probabilities).max() < 1e-5


def test_without_onnxruntime_it_warns_once_and_predicts_eager(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    net, img = model(seed=3), image()
    with pytest.warns(RuntimeWarning, match="onnxruntime is not installed"):
        first = predict(net, img, device="cpu", runtime="onnx", fast=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second job does not warn again
        second = predict(net, img, device="cpu", runtime="onnx", fast=False)
    eager = predict(net, img, device="cpu", runtime="eager", fast=False)
    assert np.array_equal(first.probabilities, eager.probabilities)
    assert np.array_equal(second.probabilities, eager.probabilities)


def test_a_failing_export_warns_and_predicts_eager(monkeypatch):
    def broken(net, path):
        raise RuntimeError("unsupported operator")
    monkeypatch.setattr(runtime, "export_logits", broken)
    net = as_model(model(seed=4), CPU)
    with pytest.warns(RuntimeWarning, match="could not be exported.*unsupported operator"):
        assert fused_model(net, "onnx") is net


def test_the_cache_is_keyed_on_the_weights(tmp_path):
    net, img = model(seed=5), image()
    first = predict(net, img, device="cpu", runtime="onnx")
    with torch.no_grad():
        net.head[0].bias.add_(0.7) if isinstance(net.head, torch.nn.Sequential) else \
            next(net.head.parameters()).add_(0.7)
    changed = predict(net, img, device="cpu", runtime="onnx")
    eager = predict(net, img, device="cpu", runtime="eager", fast=False)
    assert np.abs(changed.probabilities - eager.probabilities).max() < 1e-5  # not the stale session
    assert np.abs(changed.probabilities - first.probabilities).max() > 1e-2
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2


def test_weights_key_follows_every_weight_and_buffer():
    a, b = as_model(model(seed=6), CPU), as_model(model(seed=6), CPU)
    assert weights_key(a) == weights_key(b)
    with torch.no_grad():
        list(b.parameters())[-1].view(-1)[0] += 1e-6
    assert weights_key(a) != weights_key(b)


def test_a_damaged_cache_file_is_exported_again(tmp_path):
    net = as_model(model(seed=7), CPU)
    path = tmp_path / "onnx" / f"{weights_key(net)}.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx file")
    fused = fused_model(net, "onnx")
    assert isinstance(fused, FusedModel) and path.stat().st_size > 1000
    pixels = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    assert np.abs(predict_logits(fused, pixels, fast=False) - predict_logits(net, pixels, fast=False)).max() < 1e-4


def test_auto_exports_only_for_large_jobs_or_an_exported_network(tmp_path):
    net = as_model(model(seed=8), CPU)
    assert fused_model(net, "auto", pixels=100_000) is net  # small, nothing cached: eager
    assert not (tmp_path / "onnx").exists()
    assert isinstance(fused_model(net, "auto", pixels=runtime.FUSED_MIN_PIXELS), FusedModel)
    runtime.clear_sessions()  # a new process: the file on disk is used for any size
    assert isinstance(fused_model(net, "auto", pixels=100), FusedModel)
    assert fused_model(net, "eager", pixels=10**9) is net


def test_fused_tiles_hold_the_pixels_of_one_eager_call():
    assert fused_tile(1024, 4) == 2048
    assert fused_tile(512, 1) == 512
    assert fused_tile(1024, 2) == 1440
    assert fused_tile(None, 4) is None


def test_an_unknown_runtime_is_refused():
    with pytest.raises(BTUnetError, match="runtime"):
        PredictConfig(runtime="tensorrt")
