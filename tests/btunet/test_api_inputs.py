"""The Python API refuses what it cannot use with a BTUnetError before any work, and accepts
the forms an array comes in (lists, paths)."""
import numpy as np
import pytest
import tifffile

import btunet
from btunet import BTUnetError


@pytest.fixture(scope="module")
def model():
    return btunet.create_model("unet", base_filters=4).eval()


@pytest.mark.parametrize("image, message", [
    (None, "no image given"), ({"a": 1}, "cannot use a dict"), (["a", "b"], "cannot use a list"),
    (np.zeros((0, 16)), "is empty"), (np.zeros(10), "Y and X"), ("missing.tif", "cannot read image"),
])
def test_predict_refuses_what_is_not_an_image(model, image, message):
    with pytest.raises(BTUnetError, match=message):
        btunet.predict(model, image, device="cpu")


def test_predict_takes_a_nested_list_and_a_path_like_the_array(model, tmp_path):
    image = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, image)
    from_array = btunet.predict(model, image, device="cpu", probabilities=True)
    from_list = btunet.predict(model, image.tolist(), device="cpu", probabilities=True)
    from_path = btunet.predict(model, str(path), device="cpu", probabilities=True)
    assert np.allclose(from_list.probabilities, from_array.probabilities, atol=1e-6)
    assert np.array_equal(from_path.labels, from_array.labels)


@pytest.mark.parametrize("call", [lambda: btunet.finetune(None, None), lambda: btunet.pretrain(None),
                                  lambda: btunet.pretrain(3.5)])
def test_training_refuses_no_images(call):
    with pytest.raises(BTUnetError, match="images"):
        call()


@pytest.mark.parametrize("wrong, message", [
    (None, "no model given"), (42, "not int"), ({"unet": 1}, "not dict"), (np.zeros(3), "not ndarray"),
])
def test_predict_names_a_model_argument_it_cannot_use(wrong, message):
    from btunet.infer.predict import iter_predict
    image = np.zeros((32, 32), np.float32)
    for call in (lambda: btunet.predict(wrong, image, device="cpu"),
                 lambda: list(iter_predict(wrong, image, device="cpu")),
                 lambda: btunet.preview(wrong, image)):
        with pytest.raises(BTUnetError, match=message):
            call()


def test_an_encoder_given_as_a_model_is_named(model, tmp_path):
    from btunet.infer.chunked import predict_chunked
    encoder = btunet.PretrainedEncoder(model.config, model.encoder.state_dict(), {}, {})
    image = np.zeros((32, 32), np.float32)
    with pytest.raises(BTUnetError, match="pre-trained encoder, not a segmentation model"):
        btunet.predict(encoder, image, device="cpu")
    with pytest.raises(BTUnetError, match="pre-trained encoder"):
        predict_chunked(encoder, image)
    with pytest.raises(BTUnetError, match="pre-trained encoder"):
        btunet.export(encoder, tmp_path / "m.onnx", "onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_names_a_missing_model(tmp_path):
    with pytest.raises(BTUnetError, match="no model_or_path given"):
        btunet.export(None, tmp_path / "m.pt", "torchscript")
    with pytest.raises(BTUnetError, match="model_or_path must be .* not int"):
        btunet.export(3, tmp_path / "m.pt", "torchscript")


@pytest.mark.parametrize("wrong, message", [
    (None, "needs a model object .* not None"), ("m.safetensors", "not a path"), (7, "model must be .* not int"),
])
def test_save_model_names_a_model_argument_it_cannot_save(wrong, message, model, tmp_path):
    with pytest.raises(BTUnetError, match=message):
        btunet.save_model(wrong, tmp_path / "out.safetensors")
    encoder = btunet.PretrainedEncoder(model.config, model.encoder.state_dict(), {}, {})
    with pytest.raises(BTUnetError, match="pre-trained encoder"):
        btunet.save_model(encoder, tmp_path / "out.safetensors")
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_finetune_continues_from_a_checkpoint_path_and_names_a_wrong_model(model, small_sample, tmp_path,
                                                                          fast_finetune_config):
    images, masks = str(small_sample / "images"), str(small_sample / "masks")
    with pytest.raises(BTUnetError, match="model must be .* not int"):
        btunet.finetune(images, masks, fast_finetune_config, model=7)
    with pytest.raises(BTUnetError, match="checkpoint not found"):
        btunet.finetune(images, masks, fast_finetune_config, model=tmp_path / "missing.safetensors")
    first = btunet.finetune(images, masks, fast_finetune_config)
    path = btunet.save_model(first, tmp_path / "first.safetensors")
    continued = btunet.finetune(images, masks, fast_finetune_config, model=str(path))
    assert continued.metadata["continued_from"]["trained_on"] == first.metadata["trained_on"]


@pytest.mark.parametrize("index, message", [
    ((5,), "outside the 2 planes"), (-3, "outside the 2 planes"), ((0, 0), "it has 1 plane axes"),
    (("a",), "must be whole numbers"), ((1.5,), "must be whole numbers"), (None, "must be whole numbers"),
])
def test_preview_names_a_bad_plane_index(model, index, message):
    stack = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    with pytest.raises(BTUnetError, match=message):
        btunet.preview(model, stack, index, device="cpu")
    with pytest.raises(BTUnetError, match="it has 0 plane axes"):
        btunet.preview(model, stack[0], (0,), device="cpu")
    assert np.array_equal(btunet.preview(model, stack, 1, device="cpu").probabilities,
                          btunet.preview(model, stack, (1,), device="cpu").probabilities)


def test_a_checkpoint_with_non_finite_weights_is_refused_on_load(model, tmp_path, capsys):
    import torch

    from btunet.cli.commands import main
    broken = btunet.create_model("unet", base_filters=4).eval()
    with torch.no_grad():
        next(broken.parameters())[0].fill_(float("nan"))
    path = btunet.save_model(broken, tmp_path / "nan.safetensors")
    with pytest.raises(btunet.CheckpointError, match="nan.safetensors: weight .* NaN or infinite"):
        btunet.load_model(path)
    with pytest.raises(BTUnetError, match="NaN or infinite"):
        btunet.predict(path, np.zeros((32, 32), np.float32), device="cpu")
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((32, 32), np.uint8))
    assert main(["predict", str(path), str(tmp_path / "x.tif"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "NaN or infinite" in err
    fine = btunet.save_model(model, tmp_path / "fine.safetensors")
    assert btunet.load_model(fine) is not None
