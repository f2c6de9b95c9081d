"""Test-time flips averaged (``PredictConfig.tta``): the mean itself, predict, and the command line."""
import numpy as np
import pytest
import tifffile
import torch

from btunet import create_model, predict, save_model
from btunet.cli.commands import main
from btunet.labels.heads import HeadSpec, default_classes
from btunet.pipeline.planes import flipped_outputs, mean_output


def test_flip_mean_averages_each_orientation_flipped_back():
    ramp = np.linspace(0, 1, 8, dtype=np.float32)[None, :] * np.ones((6, 1), np.float32)
    pixels = np.ones((1, 6, 8), np.float32)
    # a "model" that adds a left-to-right ramp whatever it sees: the mean over flips is symmetric
    out = mean_output(flipped_outputs(lambda p: p[0] + ramp, pixels))
    assert np.allclose(out, 1.5) and out.dtype == np.float32
    # an orientation-free model is unchanged, and dict outputs are averaged key by key
    image = np.random.default_rng(0).random((1, 6, 8), dtype=np.float32)
    both = mean_output(flipped_outputs(
        lambda p: {"object": p[0] * 2, "classes": np.stack([p[0], 1 - p[0]]), "boundary": None}, image))
    assert np.allclose(both["object"], image[0] * 2) and both["boundary"] is None
    assert both["classes"].shape == (2, 6, 8) and np.allclose(both["classes"][1], 1 - image[0])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("unet", base_filters=4).eval()


def test_predict_with_tta_is_the_mean_of_the_flipped_images(model):
    image = (np.random.default_rng(1).random((64, 80)) * 255).astype(np.uint8)
    got = predict(model, image, tta=True, device="cpu", fast=False)
    flips = [(), (1,), (0,), (0, 1)]
    probs = [np.flip(predict(model, np.ascontiguousarray(np.flip(image, f)) if f else image, device="cpu",
                             fast=False).probabilities, f) if f else
             predict(model, image, device="cpu", fast=False).probabilities for f in flips]
    expected = np.mean(probs, axis=0)
    assert np.abs(got.probabilities - expected).max() < 1e-5
    assert np.array_equal(got.labels, (got.probabilities > 0.5).astype(np.uint8))
    assert not np.allclose(got.probabilities, probs[0], atol=1e-4)  # the flips did change something


def test_tta_with_uncertainty_and_classes(model):
    torch.manual_seed(1)
    classes = create_model("unet", base_filters=4, out_channels=HeadSpec(n_classes=2).channels).eval()
    classes.metadata = {"classes": [c.as_dict() for c in default_classes(2)]}
    image = (np.random.default_rng(2).random((48, 48)) * 255).astype(np.uint8)
    r = predict(classes, image, tta=True, class_probabilities=True, device="cpu", fast=False)
    assert np.allclose(r.class_probabilities.sum(axis=0), 1, atol=1e-5)
    plain = predict(model, image, uncertainty=True, device="cpu", fast=False)
    flipped = predict(model, image, uncertainty=True, tta=True, device="cpu", fast=False)
    assert np.array_equal(plain.uncertainty, flipped.uncertainty)  # the same four flips either way
    assert np.abs(flipped.probabilities - predict(model, image, tta=True, device="cpu",
                                                  fast=False).probabilities).max() < 1e-5


def test_cli_tta(model, tmp_path, capsys):
    path = save_model(model, tmp_path / "m.safetensors")
    image = (np.random.default_rng(3).random((64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image)
    assert main(["predict", str(path), str(tmp_path / "in.tif"), "--out", str(tmp_path / "out"), "--tta",
                 "--probabilities", "--exact", "--device", "cpu", "--threads", "1"]) == 0
    written = tifffile.imread(tmp_path / "out" / "in_prob.tif")
    assert np.abs(written - predict(path, image, tta=True, device="cpu", fast=False).probabilities).max() < 1e-5
    assert main(["predict", str(path), str(tmp_path / "in.tif"), "--out", str(tmp_path / "z"), "--tta",
                 "--zarr", "--device", "cpu"]) == 2
    assert "--tta works on TIFF/PNG inputs" in capsys.readouterr().err


def test_one_set_of_flips_serves_tta_and_uncertainty(model, monkeypatch):
    import importlib
    predict_module = importlib.import_module("btunet.infer.predict")
    calls = []
    real = predict_module.plane_outputs
    monkeypatch.setattr(predict_module, "plane_outputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    image = (np.random.default_rng(4).random((48, 48)) * 255).astype(np.uint8)
    predict(model, image, tta=True, uncertainty=True, device="cpu", fast=False)
    assert len(calls) == 4  # the four flips, once
    calls.clear()
    predict(model, image, device="cpu", fast=False)
    assert len(calls) == 1
