"""TIFF stacks are read page by page and predictions are written plane by plane, atomically."""
import numpy as np
import pytest
import tifffile

from btunet import BTUnetError, create_model, predict
from btunet.infer.predict import predict_to_tiff
from btunet.io.imageio import read_lazy, stack_writer
from btunet.io.tiff_reader import LazyTiff


def test_pages_are_read_one_at_a_time(tmp_path):
    data = np.random.default_rng(0).integers(0, 2**16, (2, 3, 20, 30), dtype=np.uint16)
    # compressed, so a memmap is impossible
    tifffile.imwrite(tmp_path / "s.tif", data, compression="zlib", photometric="minisblack")
    stack = read_lazy(tmp_path / "s.tif")
    assert isinstance(stack, LazyTiff)
    assert stack.shape == data.shape and stack.dtype == np.uint16
    assert np.array_equal(np.asarray(stack), data)
    stack.read = lambda: pytest.fail("a plane read must not read the whole stack")
    assert np.array_equal(stack[1, 2], data[1, 2])
    stack.close()


def test_rgb_pages(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (2, 20, 30, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", data)
    stack = read_lazy(tmp_path / "rgb.tif")
    assert stack.shape == data.shape and np.array_equal(stack[(1,)], data[1])


def test_stack_writer_writes_every_plane(tmp_path):
    planes = [np.full((6, 7), i, np.uint8) for i in range(4)]
    with stack_writer(tmp_path / "out.tif", (2, 2, 6, 7), np.uint8) as put:
        for plane in planes:
            put(plane)
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), np.stack(planes).reshape(2, 2, 6, 7))


def test_unfinished_or_failed_stack_leaves_old_file_and_no_debris(tmp_path):
    target = tmp_path / "out.tif"
    tifffile.imwrite(target, np.ones((3, 3), np.uint8))
    with pytest.raises(BTUnetError, match="not finished"), stack_writer(target, (3, 6, 7), np.uint8) as put:
        put(np.zeros((6, 7)))
    with pytest.raises(RuntimeError, match="user cancelled"), stack_writer(target, (3, 6, 7), np.uint8) as put:
        put(np.zeros((6, 7)))
        raise RuntimeError("user cancelled")
    assert np.array_equal(tifffile.imread(target), np.ones((3, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_predict_to_tiff_equals_in_memory_prediction(tmp_path):
    model = create_model("unet").eval()
    data = np.random.default_rng(2).integers(0, 4000, (3, 40, 56), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", data, compression="zlib", photometric="minisblack")
    stack = read_lazy(tmp_path / "in.tif")
    predict_to_tiff(model, stack, tmp_path / "labels.tif", tmp_path / "prob.tif", instances=True,
                    threshold=0.5, device="cpu")
    reference = predict(model, data, instances=True, threshold=0.5, device="cpu")
    assert np.array_equal(tifffile.imread(tmp_path / "labels.tif"), reference.labels)
    assert np.allclose(tifffile.imread(tmp_path / "prob.tif"), reference.probabilities)


def test_cli_predicts_a_compressed_stack_like_the_api(tmp_path, capsys):
    from btunet import save_model
    from btunet.cli.commands import main
    model = create_model("unet").eval()
    model.metadata = {}
    save_model(model, tmp_path / "model.safetensors")
    data = np.random.default_rng(3).integers(0, 255, (4, 48, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", data, compression="zlib", photometric="minisblack")
    assert main(["predict", str(tmp_path / "model.safetensors"), str(tmp_path / "stack.tif"),
                 "--out", str(tmp_path / "out"), "--instances", "--probabilities", "--device", "cpu"]) == 0
    reference = predict(model, data, instances=True, device="cpu")
    assert np.array_equal(tifffile.imread(tmp_path / "out" / "stack.tif"), reference.labels)
    assert np.allclose(tifffile.imread(tmp_path / "out" / "stack_prob.tif"), reference.probabilities, atol=1e-6)
    assert "plane 4/4" in capsys.readouterr().err
