"""Every command end to end on real images, and the one-line errors (exit status 2)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from btunet.cli.commands import main


@pytest.fixture(scope="module")
def trained(small_sample, tmp_path_factory):
    """encoder + model made through the CLI itself, shared by the tests below."""
    out = tmp_path_factory.mktemp("cli")
    assert main(["pretrain", str(small_sample / "images"), "--out", str(out / "enc.safetensors"),
                 "--epochs", "1", "--batch-size", "4", "--patch-size", "64", "--device", "cpu"]) == 0
    assert main(["finetune", "--images", str(small_sample / "images"), "--masks", str(small_sample / "masks"),
                 "--encoder", str(out / "enc.safetensors"), "--out", str(out / "model.safetensors"),
                 "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4", "--patch-size", "64",
                 "--device", "cpu"]) == 0
    return out


def test_pretrain_finetune_predict_evaluate_info(trained, small_sample, capsys):
    pred = trained / "pred"
    assert main(["predict", str(trained / "model.safetensors"), str(small_sample / "images"),
                 "--out", str(pred), "--instances", "--probabilities", "--device", "cpu"]) == 0
    names = sorted(p.name for p in (small_sample / "images").iterdir())
    assert sorted(p.name for p in pred.glob("*.tif") if "_prob" not in p.name) == names
    labels = tifffile.imread(pred / names[0])
    assert labels.shape == (128, 128) and np.issubdtype(labels.dtype, np.integer)
    prob = tifffile.imread(pred / (names[0][:-4] + "_prob.tif"))
    assert prob.dtype == np.float32 and prob.min() >= 0 and prob.max() <= 1
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--truth", str(small_sample / "masks"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in report["images"]] == names
    assert set(report["mean"]) >= {"dice", "iou", "precision", "recall"}
    assert 0 < report["mean"]["dice"] <= 1
    assert main(["evaluate", "--pred", str(pred), "--truth", str(small_sample / "masks")]) == 0
    assert "mean" in capsys.readouterr().out
    assert main(["info", str(trained / "model.safetensors")]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["kind"] == "model" and meta["model"]["name"] == "unet"
    assert meta["encoder"]["trained_on"]["planes"] == 4
    assert meta["trained_on"]["images"] == names


def test_predict_refuses_to_overwrite(trained, small_sample, capsys, monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: threads.append(n))
    threads = []
    out = trained / "pred_once"
    args = ["predict", str(trained / "model.safetensors"), str(small_sample / "images"), "--out", str(out),
            "--device", "cpu", "--threads", "1"]
    assert main(args) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert main(args + ["--overwrite"]) == 0
    assert threads == [1, 1, 1]  # --threads reaches torch


def _run(args):
    return subprocess.run([sys.executable, "-m", "btunet", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args,message", [
    (["predict", "missing.safetensors", "x.tif", "--out", "o"], "checkpoint not found"),
    (["pretrain", "no_such_folder", "--out", "e.safetensors"], "no such file or folder"),
    (["pretrain", ".", "--out", "e.safetensors", "--model", "vgg"], "unknown model 'vgg'; choose one of: unet"),
    (["info", "garbage.safetensors"], "not a readable .safetensors"),
    (["predict", "garbage.safetensors", ".", "--out", "o", "--threads", "0"], "--threads must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.safetensors").write_bytes(b"hello, not a checkpoint")
    result = _run(args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_finetune_errors(trained, small_sample, tmp_path, capsys):
    empty = tmp_path / "empty_masks"
    empty.mkdir()
    image_names = [p.name for p in (small_sample / "images").iterdir()]
    for name in image_names:
        tifffile.imwrite(empty / name, np.zeros((128, 128), np.uint8))
    base = ["finetune", "--images", str(small_sample / "images"), "--out", str(tmp_path / "m.safetensors"),
            "--epochs", "1", "--device", "cpu"]
    assert main(base + ["--masks", str(empty)]) == 2
    assert "no object pixels" in capsys.readouterr().err
    assert main(base + ["--masks", str(tmp_path)]) == 2  # no masks with matching names
    assert "no mask with the same name" in capsys.readouterr().err
    assert main(base + ["--masks", str(small_sample / "masks"), "--encoder",
                        str(trained / "model.safetensors")]) == 2
    assert "not an encoder checkpoint" in capsys.readouterr().err
    assert main(base + ["--masks", str(small_sample / "masks"), "--encoder", str(trained / "enc.safetensors"),
                        "--model", "inception_unet"]) == 2
    assert "pre-trained for 'unet'" in capsys.readouterr().err
    assert main(base + ["--masks", str(small_sample / "masks"), "--encoder", str(trained / "enc.safetensors"),
                        "--encoder-lr-scale", "-0.5"]) == 2
    assert "--encoder-lr-scale must be a number >= 0" in capsys.readouterr().err
    assert main(base + ["--masks", str(small_sample / "masks"), "--edge-weight", "nan"]) == 2
    assert "--edge-weight must be a number >= 0" in capsys.readouterr().err
    assert main(base + ["--masks", str(small_sample / "masks"), "--weight-average", "1"]) == 2
    assert "--weight-average must be between 0 and 0.999, got 1.0" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_help_explains_every_command():
    result = _run(["--help"])
    assert result.returncode == 0
    for command in ("pretrain", "finetune", "predict", "evaluate", "info"):
        assert command in result.stdout
    sub = _run(["finetune", "--help"])
    assert "--mask-mode" in sub.stdout and "sparse" in sub.stdout


def test_default_tiling_of_a_trained_model_equals_whole_image(trained, sample):
    from btunet import load_model
    from btunet.infer.predict import OVERLAP, predict_logits
    from btunet.pipeline.normalize import normalize_plane, percentile_range
    model = load_model(trained / "model.safetensors")
    tiles = [tifffile.imread(p)[:300, :300] for p in sample[0][:4]]
    mosaic = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])[:560, :590]
    plane = normalize_plane(mosaic, *percentile_range(mosaic))[None]
    def sigmoid(a):
        return 1 / (1 + np.exp(-a))
    whole = sigmoid(predict_logits(model, plane, tile=1024, overlap=OVERLAP, fast=False))
    tiled = sigmoid(predict_logits(model, plane, tile=384, overlap=OVERLAP, fast=False))
    assert np.abs(whole - tiled).max() < 5e-4  # float32 rounding of convolutions over other extents


def test_init_continues_a_model_and_refuses_an_encoder(trained, small_sample, tmp_path, capsys):
    from btunet import read_metadata
    sparse = tmp_path / "strokes"
    sparse.mkdir()
    for p in (small_sample / "masks").iterdir():
        mask = tifffile.imread(p)
        ann = np.zeros(mask.shape, np.uint8)
        ann[::5, ::5] = np.where(mask[::5, ::5] > 0, 2, 1)
        tifffile.imwrite(sparse / p.name, ann)
    base = ["finetune", "--images", str(small_sample / "images"), "--masks", str(sparse), "--mask-mode", "sparse",
            "--steps-per-epoch", "2", "--batch-size", "4", "--patch-size", "64", "--device", "cpu"]
    model = trained / "model.safetensors"
    before = model.read_bytes()
    out = tmp_path / "continued.safetensors"
    assert main(base + ["--init", str(model), "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["model"]["name"] == "unet" and meta["epochs"] == 4  # the continuation schedule
    assert meta["trained_on"]["painted_pixels_wrong_at_start"] is not None
    assert meta["finetune_config"]["pseudo_edge_weight"] == 10.0  # the default
    assert meta["finetune_config"]["continue_teacher"] == "both"
    # a second continuation: the model alone teaches near its edges, unless the forest votes there too
    again = {teacher: tmp_path / f"again_{teacher}.safetensors" for teacher in ("both", "mean")}
    for teacher, path in again.items():
        assert main(base + ["--init", str(out), "--continue-teacher", teacher, "--out", str(path)]) == 0
        assert read_metadata(path)["finetune_config"]["continue_teacher"] == teacher
    from safetensors.numpy import load_file
    weights = {teacher: load_file(str(path)) for teacher, path in again.items()}
    assert weights["both"].keys() == weights["mean"].keys()
    assert any(not np.array_equal(weights["both"][k], weights["mean"][k]) for k in weights["both"])
    fresh = tmp_path / "flat.safetensors"
    assert main(base + ["--edge-weight", "0", "--epochs", "1", "--out", str(fresh)]) == 0
    assert read_metadata(fresh)["finetune_config"]["pseudo_edge_weight"] == 0.0
    averaged = tmp_path / "averaged.safetensors"
    assert main(base + ["--weight-average", "0.9", "--epochs", "1", "--out", str(averaged)]) == 0
    assert read_metadata(averaged)["finetune_config"]["weight_average"] == 0.9
    assert model.read_bytes() == before
    assert main(base + ["--init", str(trained / "enc.safetensors"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "--encoder instead of --init" in capsys.readouterr().err
    assert main(base + ["--init", str(model), "--out", str(model)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert main(base + ["--init", str(model), "--model", "rca_iunet", "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "holds a 'unet' model" in capsys.readouterr().err
    assert model.read_bytes() == before and not (tmp_path / "x.safetensors").exists()


def test_predict_writes_the_uncertainty_map(trained, small_sample, capsys):
    out = trained / "pred_uncertainty"
    args = ["predict", str(trained / "model.safetensors"), str(small_sample / "images"), "--out", str(out),
            "--uncertainty", "--device", "cpu"]
    assert main(args) == 0
    names = sorted(p.name for p in (small_sample / "images").iterdir())
    maps = sorted(out.glob("*_uncertainty.tif"))
    assert [m.name for m in maps] == [n[:-4] + "_uncertainty.tif" for n in names]
    u = tifffile.imread(maps[0])
    assert u.dtype == np.float32 and u.shape == (128, 128) and u.min() >= 0 and u.max() <= 1
    maps[0].unlink()
    (out / names[0]).unlink()
    tifffile.imwrite(maps[0], np.zeros((2, 2), np.float32))  # an earlier map is not replaced silently
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert tifffile.imread(maps[0]).shape == (2, 2)
