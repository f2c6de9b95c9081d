import subprocess
import sys

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from btunet import BTUnetError
from btunet.io.imageio import is_rgb, list_images, read_images, to_channels
from btunet.io.pairs import pair_by_name
from btunet.labels.annotations import targets_and_weights
from btunet.pipeline.data import image_planes
from btunet.pipeline.normalize import normalize_plane, percentile_range


def test_folder_listing_and_unreadable_files(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint8))
    imsave(tmp_path / "b.png", np.zeros((8, 8, 3), np.uint8), check_contrast=False)
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "readme.txt").write_text("not an image")
    assert [p.name for p in list_images([tmp_path])] == ["a.tif", "b.png", "c.jpg"]
    with pytest.warns(UserWarning, match="c.jpg"):
        images = read_images([tmp_path])
    assert [p.name for p, _ in images] == ["a.tif", "b.png"]


def test_no_readable_image_is_an_error(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"nope")
    with pytest.raises(BTUnetError, match="x.tif"):  # the only file: its own reason, not a skip
        read_images([tmp_path])
    (tmp_path / "y.tif").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="skipping [xy].tif") as caught, \
            pytest.raises(BTUnetError, match="no readable images"):
        read_images([tmp_path])
    assert sorted(str(w.message).split(":")[0] for w in caught) == ["skipping x.tif", "skipping y.tif"]


def test_rgb_detection_and_channel_conversion():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 90
    assert is_rgb(rgb) and not is_rgb(np.zeros((3, 20, 30))) and not is_rgb(np.zeros((20, 30)))
    assert to_channels(rgb, True, 1).shape == (1, 20, 30)
    assert to_channels(rgb, True, 1).max() == pytest.approx(30)
    assert to_channels(rgb, True, 3).shape == (3, 20, 30)
    assert to_channels(np.ones((20, 30)), False, 3).shape == (3, 20, 30)
    rgba = np.zeros((20, 30, 4), np.uint8)
    assert to_channels(rgba, True, 3).shape == (3, 20, 30)


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 200), (np.uint16, 60000), (np.float32, 3.5), (np.int32, 1e6)])
def test_normalisation_maps_every_dtype_to_unit_range(dtype, scale):
    image = (np.random.default_rng(0).random((64, 64)) * scale).astype(dtype)
    lo, hi = percentile_range(image)
    out = normalize_plane(image, lo, hi)
    assert out.dtype == np.float32
    assert -0.05 < np.percentile(out, 1) < 0.05 and 0.95 < np.percentile(out, 99.8) < 1.05


def test_stack_uses_whole_stack_range_so_empty_planes_stay_dark():
    stack = np.zeros((4, 32, 32), np.uint16)
    stack[0] = np.random.default_rng(0).integers(0, 5, (32, 32))   # faint noise only
    stack[1:, 8:24, 8:24] = 1000                                   # bright objects
    planes = image_planes("s", stack, channels=1)
    assert len(planes) == 4 and planes[0].pixels.max() < 0.01


def test_constant_and_nan_images():
    lo, hi = percentile_range(np.full((10, 10), 7.0))
    assert hi > lo
    with pytest.warns(UserWarning, match="NaN"):
        out = normalize_plane(np.array([[np.nan, 1.0]]), 0.0, 1.0)
    assert np.isfinite(out).all()


def test_annotation_conventions():
    sparse = np.array([[0, 1, 2]])
    t, w = targets_and_weights(sparse, "sparse")
    assert t.tolist() == [[0, 0, 1]] and w.tolist() == [[0, 1, 1]]
    dense = np.array([[0, 5, 9]])
    t, w = targets_and_weights(dense, "dense")
    assert t.tolist() == [[0, 1, 1]] and w.tolist() == [[1, 1, 1]]
    t, w = targets_and_weights(dense, "dense", region=np.array([[1, 1, 0]]))
    assert w.tolist() == [[1, 1, 0]]
    with pytest.raises(BTUnetError, match="whole-number"):
        targets_and_weights(np.array([[0.5]]), "dense")
    with pytest.raises(BTUnetError, match="unknown mask mode"):
        targets_and_weights(sparse, "scribble")


def test_pairing_by_name(tmp_path):
    from pathlib import Path
    images = [Path("a.tif"), Path("b.tif")]
    assert pair_by_name(images, [Path("m/b.png"), Path("m/a.tif")]) == [
        (Path("a.tif"), Path("m/a.tif")), (Path("b.tif"), Path("m/b.png"))]
    with pytest.raises(BTUnetError, match="b.tif"):
        pair_by_name(images, [Path("a.tif")])


def test_engine_never_imports_qt_or_napari():
    code = ("import sys, numpy as np, btunet, btunet.cli.commands, btunet.cli.demo\n"
            "m = btunet.create_model('unet')\n"
            "btunet.predict(m, np.zeros((32, 32), np.float32), device='cpu')\n"
            "bad = [k for k in sys.modules if k.split('.')[0] in "
            "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_object_f1_of_a_binary_prediction_uses_connected_components():
    from btunet.labels.metrics import evaluate
    truth = np.zeros((40, 40), np.int32)
    truth[5:15, 5:15], truth[25:35, 25:35] = 1, 2
    binary = (truth > 0).astype(np.uint8)
    assert evaluate(binary, truth, objects=True)["object_f1"] == 1.0
    binary[25:35, 25:35] = 0
    assert evaluate(binary, truth, objects=True)["object_f1"] == pytest.approx(2 / 3)
