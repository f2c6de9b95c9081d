"""Every setting of every config is checked where the config is defined, with the setting named;
the prediction threshold is saved with a model and used by predict unless overridden."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tifffile

import btunet
from btunet import (
    BTUnetError,
    FinetuneConfig,
    PredictConfig,
    PretrainConfig,
    create_model,
    finetune,
    load_model,
    predict,
    pretrain,
    read_metadata,
    save_model,
)
from btunet.cli.commands import main

NAN, INF = math.nan, math.inf
MODEL = ["vgg", "", 3, None]
BASE_FILTERS = [0, -1, 4000, 1.5, True, None, "16"]
PATCH = [0, 8, 100_000, 64.0, True, None]
LR = [0, -1e-3, NAN, INF, 2.0, "0.001", True, None]
DEVICE = ["gpu", "", None, 0]
FLAG = ["yes", 1, 0, None]
SEED = [-1, 2**40, 1.5, True, None]

AXES = ["", "QYX", "ZZYX", "XY", 3]
BAD = {
    PretrainConfig: {
        "model": MODEL, "channels": [0, 2, 4, -1, True, 1.0, "1", None], "base_filters": BASE_FILTERS,
        "epochs": [0, -1, 1.5, True, NAN, None], "batch_size": [1, 0, -8, 2.0, True, None],
        "patch_size": PATCH, "samples_per_epoch": [0, -5, 1.5, True, None], "lr": LR,
        "weight_decay": [-1, NAN, INF, True, None], "warmup_fraction": [-0.1, 1.5, NAN, True, None],
        "projector_dim": [0, -1, 10**6, 2.5, True, None], "lambd": [-1, NAN, INF, True, None],
        "view_intensity": [-0.1, 2.5, NAN, True, None], "view_blur": [-0.1, 2.5, NAN, True, None],
        "dense_weight": [-1, NAN, INF, True, None, "1"], "dense_level": [-1, 5, 1.5, True, None],
        "dense_points": [0, 33, 2.5, True, None],
        "device": DEVICE, "fast": FLAG, "seed": SEED, "axes": AXES,
    },
    FinetuneConfig: {
        "model": MODEL, "mask_mode": ["painted", "", None, 1], "base_filters": BASE_FILTERS,
        "epochs": [-1, 1.5, True, NAN, "12"], "continue_epochs": [0, -1, 2.5, True, None],
        "steps_per_epoch": [0, -1, 2.5, True, None], "batch_size": [0, -1, 1.5, True, None],
        "patch_size": PATCH, "lr": LR, "encoder_lr_scale": [-1, NAN, INF, True, None],
        "encoder_refit_bn": FLAG, "encoder_rescale": FLAG, "encoder_warmup": [-1, NAN, INF, True, None],
        "annotated_fraction": [-0.1, 1.1, NAN, True, None], "val_fraction": [-0.1, 1.0, NAN, True, None],
        "lr_patience": [-1, 1.5, True, None], "patience": [0, -1, 1.5, True, None],
        "time_budget_s": [0, -5, NAN, INF, True, "60"], "schedule": ["linear", "", None],
        "pseudo_labels": ["yes", None], "pseudo_weight": [-1, NAN, INF, True, None],
        "pseudo_edge_weight": [-1, NAN, INF, True, None], "correction_radius": [-1, NAN, INF, True, "3"],
        "correction_weight": [0.5, 0, 101, NAN, INF, True, None, "3"],
        "pseudo_confidence": [0.5, 0.4, 1.1, NAN, True, None], "continue_teacher": ["teacher", None],
        "teacher_features": ["vgg", "", None, 1],
        "normalization": ["zscore", "", None, 1],
        "augment": FLAG, "blur_noise": FLAG, "tune_threshold": FLAG, "intensity_augment": [-0.1, 1.5, NAN, True, None],
        "weight_average": [-0.1, 1.0, NAN, True, None, "0.9"],
        "device": DEVICE, "fast": FLAG, "seed": SEED, "axes": AXES,
        "threshold": [0, 1, 1.5, -0.1, NAN, INF, "0.5", True, None],
        "n_classes": [0, -1, 1.5, True, 99], "class_names": [[], "nuclei", [""], [1, 2], ["a", "a"], ["x" * 101]],
        "instances": ["yes", "", None],
    },
    PredictConfig: {
        "threshold": [0, 1, 1.5, -0.5, NAN, INF, "0.5", True], "instances": FLAG, "split_touching": FLAG,
        "min_distance": [0, -1, 1.5, True, None], "probabilities": FLAG, "uncertainty": FLAG, "tta": FLAG,
        "tile": [0, 8, 100, 1024.0, True, None], "overlap": [-16, 8, 1024, 2048, 1.5, True, None],
        "tile_batch": [0, -1, 1.5, True, None], "device": DEVICE, "fast": FLAG,
        "class_probabilities": FLAG, "runtime": ["tensorrt", "", None, 1, "ONNX"],
        "instances_3d": [1, 0, "3d", "yes"],
        "z_axis": [-1, 1.5, True, "0"], "z_spacing": [0, -1.0, NAN, INF, True, None, "2"],
        "min_size": [-1, 1.5, True, "15", NAN],
        "separate_by": ["edges", "", 1, True],
    },
}
CASES = [(cls, name, value) for cls, table in BAD.items() for name, values in table.items() for value in values]


@pytest.mark.parametrize("cls", list(BAD))
def test_every_field_has_refused_values_and_the_defaults_pass(cls):
    assert set(BAD[cls]) == {f.name for f in dataclasses.fields(cls)}
    cls().check()


@pytest.mark.parametrize("cls,name,value", CASES,
                         ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in CASES])
def test_bad_value_is_refused_naming_the_field(cls, name, value):
    with pytest.raises(BTUnetError, match=rf"\b{name}\b"):
        cls(**{name: value})
    cfg = cls()  # a value set after construction is refused by check(), which every job calls first
    setattr(cfg, name, value)
    with pytest.raises(BTUnetError, match=rf"\b{name}\b"):
        cfg.check()


def test_good_values_pass():
    PretrainConfig(model="rca_iunet", channels=3, base_filters=8, epochs=1, batch_size=2, patch_size=16,
                   lr=1, warmup_fraction=0, lambd=0, device="cpu", seed=2**32 - 1)
    FinetuneConfig(epochs=0, time_budget_s=0.5, encoder_lr_scale=0, pseudo_confidence=1, val_fraction=0,
                   threshold=0.99, batch_size=np.int64(2), lr=np.float32(1e-3))
    PredictConfig(threshold=0.01, tile=16, overlap=0, min_distance=1)
    assert dataclasses.replace(FinetuneConfig(), threshold=0.7).continuation().threshold == 0.7


def test_jobs_check_their_config_before_reading_anything(tmp_path):
    missing = tmp_path / "no such folder"
    cfg = PretrainConfig(device="cpu")
    cfg.batch_size = 1
    with pytest.raises(BTUnetError, match="batch_size"):
        pretrain(missing, cfg)
    cfg = FinetuneConfig(device="cpu")
    cfg.pseudo_confidence = 0.2
    with pytest.raises(BTUnetError, match="pseudo_confidence"):
        finetune(missing, missing, cfg)
    with pytest.raises(BTUnetError, match="min_distance"):
        predict(create_model("unet", base_filters=4), np.zeros((32, 32), np.float32), min_distance=0)
    with pytest.raises(TypeError, match="treshold"):
        predict(create_model("unet", base_filters=4), np.zeros((32, 32), np.float32), treshold=0.5)


def test_cli_names_the_bad_setting_in_one_line(tmp_path, capsys):
    assert main(["pretrain", str(tmp_path), "--out", str(tmp_path / "e.safetensors"), "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "epochs" in err and "\n" not in err
    assert main(["finetune", "--images", str(tmp_path), "--masks", str(tmp_path), "--out",
                 str(tmp_path / "m.safetensors"), "--patch-size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "patch-size" in err and "\n" not in err


# --------------------------------------------------------------------------- the threshold

@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.random((64, 64)).astype(np.float32)


def test_saved_threshold_is_used_by_predict(tmp_path, image):
    model = create_model("unet", base_filters=4).eval()
    high = save_model(model, tmp_path / "high.safetensors", threshold=0.9)
    low = save_model(model, tmp_path / "low.safetensors", threshold=0.1)
    assert read_metadata(high)["threshold"] == 0.9 and load_model(low).metadata["threshold"] == 0.1
    strict, lenient = predict(high, image, device="cpu"), predict(low, image, device="cpu")
    assert np.allclose(strict.probabilities, lenient.probabilities)  # the same network
    assert strict.labels.sum() < lenient.labels.sum()
    assert np.array_equal(strict.labels, strict.probabilities > 0.9)
    assert np.array_equal(lenient.labels, lenient.probabilities > 0.1)
    # an explicit threshold wins, by keyword or by config
    assert np.array_equal(predict(high, image, device="cpu", threshold=0.1).labels, lenient.labels)
    cfg = PredictConfig(threshold=0.1, device="cpu")
    assert np.array_equal(predict(high, image, cfg).labels, lenient.labels)
    # a model object uses the threshold in its metadata (0.5 when none was stored)
    model.metadata = {"threshold": 0.9}
    assert np.array_equal(predict(model, image, device="cpu").labels, strict.labels)
    model.metadata = {}
    assert np.array_equal(predict(model, image, device="cpu").labels, strict.probabilities > 0.5)


def test_a_threshold_out_of_range_is_not_saved(tmp_path):
    with pytest.raises(BTUnetError, match="threshold"):
        save_model(create_model("unet", base_filters=4), tmp_path / "m.safetensors", threshold=1.5)
    assert not (tmp_path / "m.safetensors").exists()


def test_finetune_threshold_is_saved_and_predicts(tmp_path, small_sample, fast_finetune_config):
    cfg = dataclasses.replace(fast_finetune_config, epochs=1, steps_per_epoch=2, threshold=0.8, tune_threshold=False)
    images = sorted((small_sample / "images").iterdir())[:1]
    masks = sorted((small_sample / "masks").iterdir())[:1]
    net = finetune(images, masks, cfg)
    assert net.metadata["threshold"] == 0.8
    path = save_model(net, tmp_path / "m.safetensors")
    assert btunet.inspect_checkpoint(path).threshold == 0.8
    image = tifffile.imread(images[0])
    result = predict(path, image, device="cpu")
    assert np.array_equal(result.labels, result.probabilities > 0.8)


def test_cli_predict_uses_the_saved_threshold_unless_given(tmp_path, image):
    model = create_model("unet", base_filters=4).eval()
    path = save_model(model, tmp_path / "m.safetensors", threshold=0.9)
    tifffile.imwrite(tmp_path / "in.tif", image)
    counts = {}
    for name, extra in (("saved", []), ("given", ["--threshold", "0.1"])):
        assert main(["predict", str(path), str(tmp_path / "in.tif"), "--out", str(tmp_path / name),
                     "--device", "cpu", *extra]) == 0
        counts[name] = int(tifffile.imread(tmp_path / name / "in.tif").astype(bool).sum())
    expected = predict(path, image, device="cpu").labels.sum()
    assert counts["saved"] == expected < counts["given"]
