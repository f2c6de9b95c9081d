"""What a file declares (its axes and Z spacing) is read by one rule, ``btunet.io.axes.declared``:
``btunet.predict(path)`` and ``btunet predict`` on the command line give the same labels, and
what a caller names always wins. The threshold is resolved alike by every way of predicting."""
import numpy as np
import pytest
import tifffile

import btunet
from btunet import FinetuneConfig, finetune, save_model
from btunet.cli.commands import main
from btunet.infer.chunked import predict_chunked
from btunet.infer.predict import iter_predict, predict_to_tiff
from btunet.io.axes import Declared, declared

STORED = 0.4  # the model's own threshold, away from the 0.5 default so that a mix-up shows


def blank(shape) -> np.ndarray:
    return np.zeros(shape, np.uint8)


# --------------------------------------------------------------------------- the rule itself

def test_an_imagej_zyx_stack_declares_its_spacing_and_the_usual_axes(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, blank((4, 16, 16)), imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": 1.0, "axes": "ZYX"})
    said = declared(path, (4, 16, 16))
    assert said.axes is None  # what the default rule reads anyway
    assert said.z_spacing == pytest.approx(5.0)


def test_axes_that_differ_from_the_default_are_declared(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", blank((3, 16, 16)), imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "c.tif", blank((2, 3, 16, 16)), imagej=True, metadata={"axes": "ZCYX"})
    assert declared(tmp_path / "t.tif", (3, 16, 16)) == Declared("TYX", None)
    assert declared(tmp_path / "c.tif", (2, 3, 16, 16)).axes == "ZCYX"
    assert declared(tmp_path / "c.tif", (6, 16, 16)).axes is None  # not the image as read


def test_a_c_axis_the_model_cannot_take_is_not_declared(tmp_path):
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, blank((5, 16, 16)), ome=True, metadata={"axes": "CYX"})
    assert declared(path, (5, 16, 16)).axes is None
    assert declared(path, (5, 16, 16), channels=5).axes == "CYX"


def test_files_that_say_nothing(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", blank((4, 16, 16)), photometric="minisblack")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    for name in ("plain.tif", "broken.tif", "missing.tif"):
        assert declared(tmp_path / name, (4, 16, 16)) == Declared(), name


# --------------------------------------------------------------------------- a trained model

@pytest.fixture(scope="module")
def model_path(sample, tmp_path_factory):
    """A small model fine-tuned for a few seconds on four real crops, saved with threshold 0.4."""
    images, masks = ([tifffile.imread(p)[100:228, 100:228] for p in paths[:4]] for paths in sample)
    cfg = FinetuneConfig(mask_mode="dense", epochs=4, steps_per_epoch=10, batch_size=4, patch_size=64,
                         device="cpu", threshold=STORED, tune_threshold=False)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = finetune(images, masks, cfg)
    assert btunet.model_metadata(net).threshold == STORED
    return save_model(net, tmp_path_factory.mktemp("declared") / "model.safetensors")


@pytest.fixture(scope="module")
def stack(sample):
    """Five overlapping real crops, shifted 3 px apart: nuclei that go on through Z."""
    image = tifffile.imread(sample[0][4])
    return np.stack([image[100 + 3 * k:196 + 3 * k, 100:196] for k in range(5)])


def cli_labels(model_path, image_path, out, *options) -> np.ndarray:
    assert main(["predict", str(model_path), str(image_path), "--out", str(out), "--device", "cpu",
                 *options]) == 0
    return tifffile.imread(out / image_path.name)


def test_the_api_given_a_path_reads_what_the_cli_reads(model_path, stack, tmp_path):
    path = tmp_path / "zyx.tif"  # Z steps five pixels wide
    tifffile.imwrite(path, stack, imagej=True, resolution=(5.0, 5.0), metadata={"spacing": 1.0, "axes": "ZYX"})
    from_path = btunet.predict(model_path, path, instances=True, device="cpu").labels
    from_cli = cli_labels(model_path, path, tmp_path / "cli", "--instances")
    np.testing.assert_array_equal(from_path, from_cli)
    spaced = btunet.predict(model_path, stack, instances=True, z_spacing=5.0, device="cpu").labels
    np.testing.assert_array_equal(from_path, spaced)
    cubic = btunet.predict(model_path, stack, instances=True, device="cpu").labels
    assert not np.array_equal(from_path, cubic)  # the spacing changed the objects: it was read
    # what the caller names wins over the file, in the API as on the command line
    given = btunet.predict(model_path, path, instances=True, z_spacing=1.0, device="cpu").labels
    np.testing.assert_array_equal(given, cubic)
    np.testing.assert_array_equal(cli_labels(model_path, path, tmp_path / "cli1", "--instances",
                                             "--z-spacing", "1"), cubic)
    config = btunet.PredictConfig(instances=True, device="cpu")
    np.testing.assert_array_equal(btunet.predict(model_path, path, config).labels, spaced)


def test_a_declared_time_axis_is_labelled_plane_by_plane_in_the_api_and_the_cli(model_path, stack, tmp_path):
    path = tmp_path / "tyx.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TYX"})
    from_path = btunet.predict(model_path, path, instances=True, device="cpu").labels
    np.testing.assert_array_equal(from_path, cli_labels(model_path, path, tmp_path / "cli", "--instances"))
    per_plane = btunet.predict(model_path, stack, instances=True, instances_3d=False, device="cpu").labels
    np.testing.assert_array_equal(from_path, per_plane)
    as_z = btunet.predict(model_path, path, axes="ZYX", instances=True, device="cpu").labels
    np.testing.assert_array_equal(as_z, btunet.predict(model_path, stack, instances=True, device="cpu").labels)
    streamed = [labels for _, _, labels in iter_predict(model_path, path, instances=True, device="cpu")]
    np.testing.assert_array_equal(np.stack(streamed), per_plane)
    predict_to_tiff(model_path, path, tmp_path / "streamed.tif", instances=True, device="cpu")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "streamed.tif"), per_plane)


# --------------------------------------------------------------------------- one threshold rule

@pytest.mark.parametrize("threshold", [None, 0.3, 0.6])
def test_every_way_of_predicting_uses_the_same_threshold(model_path, stack, tmp_path, threshold):
    image = stack[0]
    path = tmp_path / "plane.tif"
    tifffile.imwrite(path, image)
    given = {} if threshold is None else {"threshold": threshold}
    flag = [] if threshold is None else ["--threshold", str(threshold)]
    ref = btunet.predict(model_path, image, device="cpu", **given)
    cut = STORED if threshold is None else threshold
    np.testing.assert_array_equal(ref.labels, (ref.probabilities > cut).astype(np.uint8))
    ways = {"predict_chunked": np.asarray(predict_chunked(model_path, image, depth=0, device="cpu", **given)),
            "cli": cli_labels(model_path, path, tmp_path / "cli", *flag),
            "cli block-wise": cli_labels(model_path, path, tmp_path / "blocks", "--scheduler", "threads", *flag)}
    for way, labels in ways.items():
        differ = labels != ref.labels  # block-wise sums in another order: only a hair from the cut
        assert differ.sum() <= 2 and np.all(np.abs(ref.probabilities[differ] - cut) < 1e-4), way
    other = btunet.predict(model_path, image, device="cpu", threshold=0.5 if threshold is None else STORED)
    assert not np.array_equal(other.labels, ref.labels)  # the threshold decides: a mix-up would show


def test_block_wise_prediction_of_a_path_reads_its_declared_channels(stack, tmp_path):
    colour = btunet.create_model("unet", in_channels=3, base_filters=4).eval()
    path = tmp_path / "cyx.ome.tif"  # three channels; without its axes they would be three planes
    tifffile.imwrite(path, stack[:3], ome=True, metadata={"axes": "CYX"})
    from_path = np.asarray(predict_chunked(colour, path, depth=0, device="cpu", output="probabilities"))
    named = np.asarray(predict_chunked(colour, stack[:3], axes="CYX", depth=0, device="cpu", output="probabilities"))
    assert from_path.shape == (96, 96)
    np.testing.assert_array_equal(from_path, named)
    as_planes = predict_chunked(colour, path, axes="ZYX", depth=0, device="cpu", output="probabilities")
    assert as_planes.shape == (3, 96, 96)  # the caller's axes win
