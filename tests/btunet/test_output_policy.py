"""One output policy for every command that writes: an output that is an input, lies inside an
input folder or (replaced as a whole) holds an input is refused, with or without --overwrite:
exit status 2, one line on stderr, every input byte for byte unchanged and nothing new written.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from btunet import BTUnetError, save_model
from btunet.cli.outputs import check_not_input
from btunet.models import create_model

from .test_hostile_cli import FAST_PRETRAIN, FAST_TRAIN, assert_error, digest, run


@pytest.fixture
def data(tmp_path) -> Path:
    """p/img and p/mask with two image/mask pairs, and a model beside them."""
    root = tmp_path / "p"
    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        tifffile.imwrite(root / "img" / f"{name}.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
        mask = np.zeros((64, 64), np.uint8)
        mask[10:30, 10:30] = 1
        tifffile.imwrite(root / "mask" / f"{name}.tif", mask)
    net = create_model("unet", base_filters=4).eval()
    save_model(net, root / "model.safetensors")
    return root


def refused(capsys, data: Path, *args, words: tuple[str, ...] = ()) -> None:
    """The command fails with one line naming ``words``; no file under ``data`` changed or appeared."""
    before = digest(data)
    status, _, err = run(capsys, *args)
    assert_error(status, err, *words)
    assert digest(data) == before


def finetune(data: Path, *extra) -> list:
    return ["finetune", "--images", data / "img", "--masks", data / "mask", *FAST_TRAIN, *extra]


@pytest.mark.parametrize("target", ["img/a.tif", "mask/b.tif", "img/model.safetensors", "img/sub/m.safetensors"])
def test_finetune_never_writes_into_an_input_folder(data, capsys, target):
    refused(capsys, data, *finetune(data, "--out", data / target, "--overwrite"),
            words=(str(data / target), "inside the input folder", "even with --overwrite"))
    assert not (data / "img" / "sub").exists()


@pytest.mark.parametrize("target", ["img/b.tif", "img/notes.safetensors"])
def test_pretrain_never_writes_into_an_input_folder(data, capsys, target):
    refused(capsys, data, "pretrain", data / "img", *FAST_PRETRAIN, "--out", data / target, "--overwrite",
            words=("inside the input folder",))


def test_an_input_file_given_by_name_is_never_the_output(data, capsys):
    image = data / "img" / "a.tif"
    refused(capsys, data, "pretrain", image, *FAST_PRETRAIN, "--out", image, "--overwrite",
            words=("is also an input", "is the image itself"))
    refused(capsys, data, "finetune", "--images", image, "--masks", data / "mask" / "a.tif", *FAST_TRAIN,
            "--out", data / "mask" / "a.tif", "--overwrite", words=("is the mask itself",))


def test_a_link_to_an_input_is_an_input(data, tmp_path, capsys):
    link = tmp_path / "link.tif"
    link.symlink_to(data / "img" / "a.tif")
    refused(capsys, data, *finetune(data, "--out", link, "--overwrite"), words=("inside the input folder",))
    assert link.is_symlink()


def test_the_models_a_command_reads_are_never_its_output(data, capsys):
    model = data / "model.safetensors"
    refused(capsys, data, *finetune(data, "--init", model, "--out", model, "--overwrite"),
            words=("is the --init model itself",))
    refused(capsys, data, "export", model, "--out", model, "--format", "onnx", "--overwrite",
            words=("is the model itself",))


def test_export_never_replaces_a_folder_that_holds_its_model(data, capsys):
    """A bioimage.io folder package replaces its folder whole: one holding the model is refused."""
    folder = data / "package"
    folder.mkdir()
    model = folder / "btunet_model.safetensors"
    model.write_bytes((data / "model.safetensors").read_bytes())
    (folder / "rdf.yaml").write_text("type: model\n")
    refused(capsys, data, "export", model, "--out", folder, "--overwrite", words=("holds the model",))
    refused(capsys, data, "export", folder, "--out", folder / "inner.zip", "--overwrite",
            words=("inside the input folder",))


def test_predict_never_writes_into_an_input_or_a_package_folder(data, capsys):
    folder = data / "package"
    folder.mkdir()
    (folder / "btunet_model.safetensors").write_bytes((data / "model.safetensors").read_bytes())
    (folder / "rdf.yaml").write_text("type: model\n")
    refused(capsys, data, "predict", data / "model.safetensors", data / "img", "--out", data / "img" / "pred",
            "--overwrite", "--device", "cpu", words=("inside the input folder",))
    refused(capsys, data, "predict", folder, data / "img", "--out", folder / "pred", "--overwrite",
            "--device", "cpu", words=("inside the input folder", str(folder)))


def test_predict_never_writes_into_a_zarr_input(data, capsys):
    import zarr
    store = data / "stack.zarr"
    zarr.create_array(store=str(store), shape=(32, 32), dtype=np.uint8, chunks=(32, 32))[:] = 7
    refused(capsys, data, "predict", data / "model.safetensors", store, "--out", store, "--overwrite",
            "--device", "cpu", words=("is the input itself",))


def test_a_zarr_output_that_would_hold_an_input_is_refused(data, capsys):
    """A zarr output is replaced whole with --overwrite: an input inside it would go with it."""
    inner = data / "out" / "a.zarr" / "a.tif"
    inner.parent.mkdir(parents=True)
    inner.write_bytes((data / "img" / "a.tif").read_bytes())
    refused(capsys, data, "predict", data / "model.safetensors", inner, "--out", data / "out", "--zarr",
            "--overwrite", "--device", "cpu", words=("would replace the input", str(inner)))


def test_outputs_beside_the_inputs_are_fine(data, tmp_path):
    """The policy refuses inputs, not neighbours: a model file beside an image folder, a file export
    into a folder that holds the model, and predictions in a folder next to the images."""
    check_not_input(data / "model2.safetensors", [("the image", data / "img"), ("the mask", data / "mask")])
    check_not_input(data, [("the model", data / "model.safetensors")], replaced_whole=False)
    check_not_input(data / "pred", [("the input", data / "img")], replaced_whole=False)
    with pytest.raises(BTUnetError, match="holds the model"):
        check_not_input(data, [("the model", data / "model.safetensors")])


def test_the_command_line_process_refuses_and_leaves_the_image(data):
    """A real `btunet finetune` process, --out an image it trains on, with --overwrite."""
    target = data / "img" / "a.tif"
    before = digest(data)
    result = subprocess.run([sys.executable, "-m", "btunet", *map(str, finetune(data, "--out", target, "--overwrite"))],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "inside the input folder" in result.stderr
    assert digest(data) == before and tifffile.imread(target).shape == (64, 64)


def test_masks_that_are_the_images_themselves_are_refused_before_training(capsys, data):
    out = data.parent / "m.safetensors"
    before = digest(data)
    status, _, err = run(capsys, "finetune", "--images", data / "img", "--masks", data / "img", "--out", out,
                         *FAST_TRAIN)
    assert_error(status, err, "the masks given are the images themselves", "a.tif")
    assert not out.exists() and digest(data) == before


@pytest.mark.parametrize(("names", "words"), [("a,a", "'a' is given twice"), ("nuclei, nuclei", "given twice"),
                                               ("x" * 5000, "up to 100 characters")])
def test_class_names_that_cannot_be_stored_are_refused_before_training(capsys, data, names, words):
    out = data.parent / "m.safetensors"
    status, _, err = run(capsys, "finetune", "--images", data / "img", "--masks", data / "mask", "--out", out,
                         "--class-names", names, *FAST_TRAIN)
    assert_error(status, err, words)
    assert not out.exists()
