"""Axes strings: what each axis of an image is, checked, rearranged, read from files, and used by
prediction, training and the command line."""
import numpy as np
import pytest
import tifffile
import torch

from btunet import BTUnetError, FinetuneConfig, create_model, finetune, predict
from btunet.cli.commands import main
from btunet.core.checkpoint import save_model
from btunet.io.axes import (
    AxesView,
    channel_axes,
    check_axes,
    default_axes,
    file_axes,
    from_engine,
    output_axes,
    resolve_axes,
    tifffile_axes,
    to_engine,
    z_axis_of,
)
from btunet.io.imageio import read_lazy


@pytest.mark.parametrize("axes, shape, words", [
    ("TZYX", (60, 256, 256), ["name 4 axes", "has 3", "(60, 256, 256)", "T, Z, C, Y, X"]),
    ("TQYX", (2, 3, 8, 8), ["'Q'", "T, Z, C, Y, X", "(2, 3, 8, 8)"]),
    ("ZZYX", (2, 3, 8, 8), ["'Z' twice"]),
    ("ZXY", (2, 8, 8), ["Y then X"]),
    ("YXZ", (8, 8, 2), ["Y then X"]),
    ("", (8, 8), ["letters"]),
])
def test_bad_axes_are_one_line_errors(axes, shape, words):
    with pytest.raises(BTUnetError) as info:
        check_axes(axes, shape)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_axes_are_upper_cased_and_c_may_sit_anywhere():
    assert check_axes("tzyx", (2, 3, 8, 8)) == "TZYX"
    for axes in ("CYX", "YXC", "ZCYX", "CZYX", "TZCYX", "YCX"):
        assert check_axes(axes, (3,) * len(axes)) == axes


def test_default_axes_repeat_the_old_rule():
    assert default_axes((64, 64)) == "YX"
    assert default_axes((60, 256, 256)) == "ZYX"
    assert default_axes((2, 3, 64, 64)) == "TZYX"
    assert default_axes((64, 64, 3)) == "YXC"
    assert default_axes((5, 64, 64, 4)) == "ZYXC"
    assert default_axes((3, 4, 64, 64)) == "TZYX"      # a leading 3 is planes unless named C
    assert default_axes((2, 2, 2, 64, 64)) is None     # more plane axes than T and Z


def test_z_axis_among_the_plane_axes():
    assert z_axis_of("TZYX") == 1
    assert z_axis_of("ZTYX") == 0
    assert z_axis_of("ZCYX") == 0
    assert z_axis_of("TCYX") is None
    assert z_axis_of("YX") is None
    assert z_axis_of(None) is None


def test_channel_axis_shorthand():
    assert channel_axes((3, 64, 64), 0) == "CYX"
    assert channel_axes((64, 64, 3), -1) == "YXC"
    assert channel_axes((5, 3, 64, 64), 1) == "ZCYX"
    assert channel_axes((2, 5, 3, 64, 64), 2) == "TZCYX"
    with pytest.raises(BTUnetError, match="from -3 to 2"):
        channel_axes((3, 64, 64), 3)
    with pytest.raises(BTUnetError, match="not both"):
        resolve_axes((3, 64, 64), "CYX", 0)


@pytest.mark.parametrize("axes", ["ZCYX", "CZYX", "TZCYX", "YXC", "CYX", "ZTYX", "TZYXC", "YCX"])
def test_rearrangement_round_trip(axes):
    rng = np.random.default_rng(0)
    shape = tuple(int(n) for n in rng.integers(2, 6, len(axes)))
    shape = tuple(3 if c == "C" else n for c, n in zip(axes, shape, strict=True))
    array = rng.random(shape)
    engine = to_engine(array, axes)
    assert np.shares_memory(engine, array)  # a view, never a copy
    planes = [c for c in axes if c in "TZ"]
    assert engine.shape == tuple(shape[axes.index(c)] for c in planes + ["Y", "X"] + (["C"] if "C" in axes else []))
    assert np.array_equal(from_engine(np.asarray(engine), axes), array)
    # an output (no C) comes back in the input's order without C, unchanged
    labels = np.asarray(engine[..., 0] if "C" in axes else engine)
    assert labels.shape == tuple(s for c, s in zip(axes, shape, strict=True) if c != "C")
    assert np.array_equal(from_engine(labels, axes), labels)
    assert output_axes(axes) == axes.replace("C", "")


def test_a_lazy_source_is_wrapped_and_read_plane_by_plane(tmp_path):
    data = np.random.default_rng(1).random((2, 3, 16, 20)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    stack = read_lazy(tmp_path / "s.tif")
    try:
        view = to_engine(stack, "ZCYX")
        assert isinstance(view, AxesView) and view.shape == (2, 16, 20, 3)
        assert np.array_equal(view[1], np.moveaxis(data[1], 0, -1))
        assert np.array_equal(np.asarray(view), np.moveaxis(data, 1, -1))
    finally:
        stack.close()


def test_channel_counts_the_models_cannot_take_are_refused():
    with pytest.raises(BTUnetError, match="models take 1 or 3 input channels") as info:
        to_engine(np.zeros((2, 32, 32)), "CYX")
    assert "(shape (2, 32, 32))" in str(info.value)
    with pytest.raises(BTUnetError, match="models take 1 or 3"):
        to_engine(np.zeros((5, 32, 32)), "CYX")
    assert to_engine(np.zeros((2, 32, 32)), "CYX", model_channels=2).shape == (32, 32, 2)


def test_axes_from_tiff_metadata(tmp_path):
    data = np.zeros((2, 3, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "shaped.tif", data, metadata={"axes": "TZYX"}, photometric="minisblack")
    tifffile.imwrite(tmp_path / "stack.ome.tif", data, metadata={"axes": "TZYX"})
    tifffile.imwrite(tmp_path / "hyper.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "plain.tif", data, photometric="minisblack")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((16, 16, 3), np.uint8), metadata={"axes": "YXS"})
    assert file_axes(tmp_path / "shaped.tif") == "TZYX"
    assert file_axes(tmp_path / "stack.ome.tif") == "TZYX"
    assert file_axes(tmp_path / "hyper.tif") == "ZCYX"
    assert file_axes(tmp_path / "plain.tif") is None  # no metadata: the default rule applies
    assert file_axes(tmp_path / "rgb.tif") == "YXC"   # samples are channels
    assert file_axes(tmp_path / "missing.tif") is None
    assert tifffile_axes("QYX", (5, 16, 16)) == "ZYX"
    assert tifffile_axes("IQYX", (2, 5, 16, 16)) == "ZTYX"
    assert tifffile_axes("RYX", (5, 16, 16)) is None  # a letter we do not read: no guess


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return {c: create_model("unet", in_channels=c, base_filters=8).eval() for c in (1, 3)}


def test_channel_axis_becomes_model_channels(tiny_models):
    """Two planes of three channels give two label planes, not six: C is the colour axis."""
    image = np.random.default_rng(2).random((3, 2, 32, 48)).astype(np.float32)  # C, Z, Y, X
    result = predict(tiny_models[3], image, axes="CZYX", device="cpu")
    assert result.labels.shape == (2, 32, 48)
    moved = predict(tiny_models[3], np.moveaxis(image, 0, -1), axes="ZYXC", device="cpu")
    np.testing.assert_allclose(result.probabilities, moved.probabilities, atol=1e-6)
    # without axes the same array would be 3 x 2 planes of gray
    assert predict(tiny_models[1], image, device="cpu").labels.shape == (3, 2, 32, 48)


def test_a_cyx_image_gives_one_label_image(tiny_models):
    image = np.random.default_rng(3).random((3, 2, 40, 40)).astype(np.float32)  # 2 planes x 3 channels
    for model in tiny_models.values():
        labels = predict(model, image[:, 0], axes="CYX", device="cpu").labels
        assert labels.shape == (40, 40)
    stack = predict(tiny_models[3], np.moveaxis(image, 0, 1), axes="ZCYX", device="cpu")
    assert stack.labels.shape == (2, 40, 40)


def test_outputs_keep_the_input_order(tiny_models):
    image = np.random.default_rng(4).random((2, 3, 32, 32)).astype(np.float32)  # Z, T
    zt = predict(tiny_models[1], image, axes="ZTYX", device="cpu").probabilities
    tz = predict(tiny_models[1], image, axes="TZYX", device="cpu").probabilities
    assert zt.shape == tz.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(zt, tz, atol=1e-6)  # planes are planes, whatever their name


def test_finetune_takes_a_channel_axis(small_sample):
    image = tifffile.imread(sorted((small_sample / "images").iterdir())[0])
    mask = tifffile.imread(sorted((small_sample / "masks").iterdir())[0])
    colour = np.stack([image] * 3)  # C, Y, X
    cfg = FinetuneConfig(mask_mode="dense", epochs=1, steps_per_epoch=2, batch_size=2, patch_size=64,
                         device="cpu", axes="CYX")
    model = finetune([colour], [mask], cfg)
    assert model.in_channels == 3
    assert predict(model, colour, axes="CYX", device="cpu").labels.shape == mask.shape
    with pytest.raises(BTUnetError, match="does not match"):
        finetune([np.stack([image] * 3, -1)], [mask[:64]], FinetuneConfig(**{**cfg.__dict__, "axes": "YXC"}))
    with pytest.raises(BTUnetError, match="'Q'"):
        FinetuneConfig(axes="QYX")


# --------------------------------------------------------------------------- command line

@pytest.fixture(scope="module")
def model_file(tmp_path_factory, tiny_models):
    path = tmp_path_factory.mktemp("axes_model") / "model.safetensors"
    save_model(tiny_models[1], path)
    return path


@pytest.mark.parametrize("extra, words", [
    (["--axes", "TZYX", "--channel-axis", "0"], "not allowed with argument"),
    (["--axes", "TQYX"], "'Q'"),
    (["--axes", "ZYX"], "name 3 axes but the image has 4"),
    (["--channel-axis", "5"], "from -4 to 3"),
    (["--channel-axis", "1"], "models take 1 or 3"),
])
def test_cli_axes_errors_exit_2_before_any_work(model_file, tmp_path, capsys, extra, words):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((2, 2, 32, 32), np.uint16))
    out = tmp_path / "out"
    assert main(["predict", str(model_file), str(tmp_path / "stack.tif"), "--out", str(out),
                 "--device", "cpu"] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not out.exists()


def test_cli_axes_errors_on_training_commands(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 32, 32), np.uint16))
    assert main(["pretrain", str(tmp_path), "--out", str(tmp_path / "e.safetensors"), "--axes", "TZYX"]) == 2
    assert "name 4 axes but the image has 3" in capsys.readouterr().err
    assert main(["finetune", "--images", str(tmp_path), "--masks", str(tmp_path), "--out",
                 str(tmp_path / "m.safetensors"), "--axes", "ZYX", "--channel-axis", "0"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "e.safetensors").exists() and not (tmp_path / "m.safetensors").exists()


def test_cli_predict_with_axes(model_file, tmp_path, tiny_models):
    data = np.random.default_rng(5).random((2, 3, 32, 40)).astype(np.float32)  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    out = tmp_path / "out"
    assert main(["predict", str(model_file), str(tmp_path / "stack.tif"), "--out", str(out),
                 "--device", "cpu", "--probabilities", "--axes", "ZCYX"]) == 0
    labels = tifffile.imread(out / "stack.tif")
    assert labels.shape == (2, 32, 40)  # two planes: C went into the model
    expected = predict(tiny_models[1], data, axes="ZCYX", device="cpu").probabilities
    np.testing.assert_allclose(tifffile.imread(out / "stack_prob.tif"), expected, atol=1e-5)
    assert main(["predict", str(model_file), str(tmp_path / "stack.tif"), "--out", str(tmp_path / "out2"),
                 "--device", "cpu", "--channel-axis", "1"]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "out2" / "stack.tif"), labels)


def test_cli_predict_reads_the_files_own_axes(model_file, tmp_path):
    data = np.random.default_rng(6).random((2, 3, 32, 32)).astype(np.float32)
    tifffile.imwrite(tmp_path / "hyper.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    assert main(["predict", str(model_file), str(tmp_path / "hyper.tif"), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    assert tifffile.imread(tmp_path / "o" / "hyper.tif").shape == (2, 32, 32)


def test_cli_block_wise_prediction_with_axes(model_file, tmp_path, tiny_models):
    import zarr
    data = np.random.default_rng(7).random((2, 3, 32, 40)).astype(np.float32)  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")
    assert main(["predict", str(model_file), str(tmp_path / "s.tif"), "--out", str(tmp_path / "o"), "--zarr",
                 "--axes", "ZCYX", "--probabilities", "--device", "cpu"]) == 0
    assert zarr.open(str(tmp_path / "o" / "s.zarr"), mode="r").shape == (2, 32, 40)
    expected = predict(tiny_models[1], data, axes="ZCYX", device="cpu").probabilities
    np.testing.assert_allclose(zarr.open(str(tmp_path / "o" / "s_prob.zarr"), mode="r")[:], expected, atol=1e-5)


@pytest.mark.parametrize("multiscales", ["garbage", [5], [{"axes": 5}], [{"axes": ["y", "x"], "datasets": []}],
                                         [{"axes": ["y", "x"], "datasets": [{"path": 7}]}]])
def test_an_ome_zarr_with_unreadable_multiscales_is_predicted_as_a_plain_zarr(model_file, tmp_path, multiscales):
    import zarr
    group = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    group.create_array("0", shape=(32, 40), chunks=(32, 40), dtype="float32")[:] = \
        np.random.default_rng(8).random((32, 40)).astype(np.float32)
    group.attrs["multiscales"] = multiscales
    assert main(["predict", str(model_file), str(tmp_path / "in.zarr"), "--out", str(tmp_path / "o"),
                 "--zarr", "--device", "cpu"]) == 0
    assert zarr.open(str(tmp_path / "o" / "in.zarr"), mode="r").shape == (32, 40)


def test_an_ome_zarr_naming_a_missing_array_is_one_line(model_file, tmp_path, capsys):
    import zarr
    group = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    group.create_array("0", shape=(32, 40), chunks=(32, 40), dtype="float32")[:] = 1.0
    group.attrs["multiscales"] = [{"axes": ["y", "x"], "datasets": [{"path": "missing"}]}]
    assert main(["predict", str(model_file), str(tmp_path / "in.zarr"), "--out", str(tmp_path / "o"),
                 "--zarr", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "names the array 'missing', which is not there" in err and "Traceback" not in err
