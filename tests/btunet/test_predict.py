import numpy as np
import pytest
import tifffile
import torch

from btunet import Cancelled, create_model, predict
from btunet.infer.predict import instance_labels, predict_logits

LOCAL_VARIANTS = ["unet", "attention_unet"]        # only local operations: tiling is exact
SPECTRAL_VARIANTS = ["inception_unet", "rca_iunet"]  # spectral pooling sees the whole tile


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("name", LOCAL_VARIANTS)
def test_tiled_equals_whole_image(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    plane = np.random.default_rng(0).random((1, 300, 420), dtype=np.float32)
    whole = predict_logits(model, plane, tile=512, overlap=128, fast=False)
    tiled = predict_logits(model, plane, tile=128, overlap=64, fast=False)
    assert whole.shape == tiled.shape == (300, 420)
    assert np.abs(_sigmoid(whole) - _sigmoid(tiled)).max() < 1e-4


@pytest.mark.parametrize("name", SPECTRAL_VARIANTS)
def test_tiled_close_to_whole_image_with_spectral_pooling(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    plane = np.random.default_rng(0).random((1, 200, 260), dtype=np.float32)
    whole = predict_logits(model, plane, tile=512, overlap=128, fast=False)
    tiled = predict_logits(model, plane, tile=128, overlap=64, fast=False)
    assert np.abs(_sigmoid(whole) - _sigmoid(tiled)).max() < 3e-3


def test_tile_settings_are_checked():
    with pytest.raises(ValueError, match="multiples of 16"):
        predict_logits(create_model("unet"), np.zeros((1, 32, 32), np.float32), tile=100)


class CountingStack:
    """A read-only stack that records which planes were read and refuses whole reads."""

    def __init__(self, data):
        self.data, self.reads = data, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, index):
        if not (isinstance(index, tuple) and len(index) == self.ndim - 2):
            raise AssertionError(f"read more than one plane: {index}")
        self.reads.append(index)
        return self.data[index]


def test_stack_is_streamed_plane_by_plane():
    model = create_model("unet").eval()
    data = np.random.default_rng(1).integers(0, 255, (3, 2, 40, 48), dtype=np.uint8)
    stack = CountingStack(data)
    result = predict(model, stack, device="cpu")
    assert result.labels.shape == (3, 2, 40, 48) and result.labels.dtype == np.uint8
    planes_read_for_prediction = list(stack.reads)
    assert set(planes_read_for_prediction) >= {(t, z) for t in range(3) for z in range(2)}
    # each plane equals predicting that plane on its own with the same normalisation
    single = predict(model, data, device="cpu").probabilities
    assert np.allclose(result.probabilities, single)


def test_memmap_and_dask_inputs(tmp_path):
    da = pytest.importorskip("dask.array")
    data = np.random.default_rng(2).integers(0, 2**16, (4, 64, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data)
    mm = tifffile.memmap(tmp_path / "s.tif", mode="r")
    model = create_model("unet").eval()
    ref = predict(model, data, device="cpu").probabilities
    assert np.allclose(predict(model, mm, device="cpu").probabilities, ref)
    assert np.allclose(predict(model, da.from_array(data, chunks=(1, 64, 64)), device="cpu").probabilities, ref)


def test_rgb_and_dtypes_are_accepted():
    rng = np.random.default_rng(3)
    gray_model, rgb_model = create_model("unet", 1).eval(), create_model("unet", 3).eval()
    rgb = rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)
    assert predict(rgb_model, rgb, device="cpu").labels.shape == (50, 60)
    assert predict(gray_model, rgb, device="cpu").labels.shape == (50, 60)  # converted to gray
    for image in (rng.random((50, 60)).astype(np.float64), rng.integers(0, 4000, (50, 60)).astype(np.uint16)):
        assert predict(rgb_model, image, device="cpu").labels.shape == (50, 60)


def test_nan_pixels_do_not_poison_the_image():
    image = np.random.default_rng(4).random((48, 48)).astype(np.float32)
    image[10:20, 10:20] = np.nan
    with pytest.warns(UserWarning, match="NaN"):
        result = predict(create_model("unet").eval(), image, device="cpu")
    assert np.isfinite(result.probabilities).all()


def test_instances_are_unique_across_a_stack():
    mask = np.zeros((60, 60), bool)
    mask[5:20, 5:20] = mask[30:50, 30:50] = True
    labels = instance_labels(mask)
    assert len(np.unique(labels)) == 3
    touching = np.zeros((40, 80), bool)
    yy, xx = np.mgrid[:40, :80]
    touching |= (yy - 20) ** 2 + (xx - 22) ** 2 < 15 ** 2
    touching |= (yy - 20) ** 2 + (xx - 50) ** 2 < 15 ** 2
    assert instance_labels(touching, split_touching=False).max() == 1
    assert instance_labels(touching, split_touching=True).max() == 2


def test_stack_instances_do_not_reuse_ids():
    torch.manual_seed(0)
    model = create_model("unet").eval()
    with torch.no_grad():
        model.head.bias.fill_(0)
    stack = np.random.default_rng(5).random((3, 64, 64)).astype(np.float32)
    labels = predict(model, stack, instances=True, instances_3d=False, threshold=0.5, device="cpu").labels
    ids = [set(np.unique(p)) - {0} for p in labels]  # per-plane ids (3-D ids: test_instances_3d.py)
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])


def test_cancel_raises_cancelled():
    stack = np.zeros((5, 32, 32), np.float32)
    with pytest.raises(Cancelled, match="1 of 5"):
        predict(create_model("unet").eval(), stack, device="cpu", should_stop=lambda: True)


def test_fast_path_agrees_with_fp32():
    torch.manual_seed(0)
    model = create_model("unet").eval()
    plane = np.random.default_rng(0).random((1, 128, 128), dtype=np.float32)
    exact = _sigmoid(predict_logits(model, plane, fast=False))
    fast = _sigmoid(predict_logits(model, plane, fast=True))
    assert np.abs(exact - fast).max() < 2e-2


@pytest.mark.parametrize("size", [64, 256, 400, 1024, 1040, 1104, 2048, 2064, 4096])
def test_tiles_cover_the_axis_with_full_overlap_and_little_waste(size):
    from btunet.pipeline.tiling import OVERLAP, TILE, _origins, _tile_length
    length = _tile_length(size, TILE, OVERLAP)
    origins = _origins(size, length, length - OVERLAP)
    assert length <= TILE and (length % 16 == 0 or length == size)
    assert origins[0] == 0 and origins[-1] + length == size
    # neighbours overlap enough
    assert all(b - a <= length - OVERLAP for a, b in zip(origins, origins[1:], strict=False))
    assert len(origins) * length <= 1.3 * size  # at most 30 % of the pixels computed twice
