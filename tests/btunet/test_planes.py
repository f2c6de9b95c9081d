"""One plane pipeline: every path (training, prediction, chunked, preview) reads the same planes and
predicts them the same way; planes too large to hold whole are refused before anything is read."""
import tracemalloc
import warnings

import numpy as np
import pytest
import tifffile
import torch
from scipy.special import expit

import btunet
from btunet import BTUnetError, Previewer, create_model, predict
from btunet.infer.chunked import predict_chunked
from btunet.infer.predict import iter_predict, predict_to_tiff
from btunet.io.imageio import read_lazy
from btunet.io.tiff_reader import LazyTiff
from btunet.pipeline.data import image_planes
from btunet.pipeline.planes import PlaneLayout, as_model, model_planes, plane_layout, predict_logits, predict_plane
from btunet.train.training_set import annotated_planes
from tests.btunet.nets import with_batchnorm_statistics

RNG = np.random.default_rng(0)
NAN = RNG.normal(50, 10, (2, 36, 40)).astype(np.float32)
NAN[0, 3:6, 4:9] = np.nan
NAN[1, 10, 10] = np.inf
ARRAYS = {  # name -> (array, is it RGB)
    "2d": (RNG.integers(0, 255, (40, 50)).astype(np.uint8), False),
    "stack": (RNG.normal(100, 20, (3, 36, 44)).astype(np.float32), False),
    "rgb": (RNG.integers(0, 255, (40, 48, 3)).astype(np.uint8), True),
    "rgba stack": (RNG.integers(0, 255, (2, 40, 48, 4)).astype(np.uint8), True),
    "2-channel": (RNG.integers(0, 4000, (2, 40, 44)).astype(np.uint16), False),  # channels are planes
    "uint16": (RNG.integers(0, 65535, (40, 44)).astype(np.uint16), False),
    "float with NaN": (NAN, False),
    "TxZ": (RNG.integers(0, 1000, (2, 3, 32, 36)).astype(np.uint16), False),
}


def reference_planes(array, rgb: bool, channels: int) -> dict:
    """What every path produced before the pipeline existed, written out naively: one range for
    the whole stack (1st and 99.8th percentile of its finite values, colour and alpha included),
    (x - lo) / (hi - lo) in float32 with NaN/inf -> 0; RGB -> gray by the mean of R, G, B, gray
    copied into each channel of an RGB model."""
    values = array.astype(np.float32).ravel()
    lo, hi = (float(v) for v in np.percentile(values[np.isfinite(values)], [1.0, 99.8]))
    lead = array.shape[:-3] if rgb else array.shape[:-2]
    out = {}
    for index in np.ndindex(*lead):
        x = (array[index].astype(np.float32) - lo) / (hi - lo)
        x[~np.isfinite(x)] = 0
        if rgb:
            x = np.moveaxis(x[..., :3], -1, 0)
            x = x.mean(axis=0, keepdims=True) if channels == 1 else x
        else:
            x = np.stack([x] * channels)
        out[index] = x
    return out


def close(a, b, atol=1e-6):
    np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def tiny_model(channels: int = 1, seed: int = 0):
    """A small random unet with non-trivial BatchNorm statistics (so folding them matters)."""
    torch.manual_seed(seed)
    return with_batchnorm_statistics(create_model("unet", in_channels=channels, base_filters=8))


@pytest.fixture(autouse=True)
def quiet_nan_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "image contains NaN")
        yield


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(ARRAYS))
def test_every_training_and_preview_path_reads_the_reference_planes(name, channels):
    array, rgb = ARRAYS[name]
    expected = reference_planes(array, rgb, channels)
    layout = plane_layout(array, channels)
    assert layout.rgb == rgb and layout.indices() == list(expected)
    got, lazily = dict(layout.planes(array)), dict(model_planes(array, channels))
    assert all(p.dtype == np.float32 and p.shape[0] == channels for p in got.values())
    previewer = Previewer(array)
    for index, pixels in expected.items():
        close(got[index], pixels)
        close(lazily[index], pixels)
        close(previewer.pixels(index, channels), pixels)
    # pre-training and fine-tuning
    training = {p.index: p.pixels for p in image_planes(name, array, channels)}
    for index, pixels in expected.items():
        close(training[index], pixels)
    labels = (np.indices(layout.spatial_shape).sum(0) % 2).astype(np.uint8)  # every pixel annotated
    annotated = annotated_planes([(name, array)], [(name, labels)], channels, "dense", 16)
    assert len(annotated) == len(expected)
    for plane, pixels in zip(annotated, expected.values(), strict=True):
        close(plane.pixels, pixels)


def test_lazy_tiff_sources_read_page_by_page(tmp_path):
    array = ARRAYS["TxZ"][0]
    tifffile.imwrite(tmp_path / "s.tif", array, compression="zlib", photometric="minisblack")
    expected = reference_planes(array, False, 1)
    stack = read_lazy(tmp_path / "s.tif")
    stack.read = lambda: pytest.fail("a plane read must not read the whole stack")
    for index, pixels in plane_layout(stack, 1).planes(stack):
        close(pixels, expected[index])
    stack.close()
    for index, pixels in model_planes(tmp_path / "s.tif", 1):  # a path is opened lazily too
        close(pixels, expected[index])
    lazy = LazyTiff(tmp_path / "s.tif")
    for index, pixels in plane_layout(lazy, 1).planes(lazy):
        close(pixels, expected[index])


def reference_probability(model, pixels, tile=None, overlap=0):
    """Probability of one plane, naively: reflect-pad to a multiple of 16, run the model (eval
    mode, BatchNorm not folded) on each tile (or the whole plane), blend tiles with weights that are 0 on the outer
    quarter of the overlap and a sin^2 ramp over the rest (none at the image border)."""
    c, h, w = pixels.shape
    padded = np.pad(pixels, [(0, 0), (0, -h % 16), (0, -w % 16)], mode="reflect")
    hp, wp = padded.shape[1:]
    def run(x):
        return model(torch.from_numpy(np.ascontiguousarray(x))[None])[0, 0].detach().numpy().astype(np.float64)
    if tile is None:
        return expit(run(padded)[:h, :w])
    margin, n = overlap // 4, overlap - overlap // 2
    edge = np.r_[np.zeros(margin), np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2]

    def ramp(start, size):
        r = np.ones(tile)
        if start > 0:
            r[:len(edge)] = edge
        if start + tile < size:
            r[tile - len(edge):] = edge[::-1]
        return r
    total, weight = np.zeros((hp, wp)), np.zeros((hp, wp))
    for y in range(0, hp - tile + 1, tile - overlap):
        for x in range(0, wp - tile + 1, tile - overlap):
            wgt = ramp(y, hp)[:, None] * ramp(x, wp)[None, :]
            total[y:y + tile, x:x + tile] += wgt * run(padded[:, y:y + tile, x:x + tile])
            weight[y:y + tile, x:x + tile] += wgt
    return expit((total / weight)[:h, :w])


def test_predict_plane_equals_the_reference_whole_and_tiled():
    model = tiny_model()
    array = ARRAYS["stack"][0][:, :, :40]  # 36 x 40 -> padded to 48 x 48: 32-px tiles at 0 and 16
    expected = reference_planes(array, False, 1)
    net = as_model(model, torch.device("cpu"))
    items = {item[0]: item[1] for item in iter_predict(model, array, device="cpu", fast=False)}
    tiled = {item[0]: item[1] for item in iter_predict(model, array, device="cpu", fast=False, tile=32, overlap=16)}
    for index, pixels in expected.items():
        whole = reference_probability(model, pixels)
        close(predict_plane(net, pixels, fast=False), whole)
        close(predict_plane(net, pixels, tile=None, fast=False), whole)
        close(items[index], whole)
        blended = reference_probability(model, pixels, tile=32, overlap=16)
        close(predict_plane(net, pixels, tile=32, overlap=16, fast=False), blended)
        close(tiled[index], blended)
        assert np.abs(blended - whole).max() > 1e-6  # the tiled reference is a different computation


def test_predict_plane_with_uncertainty_keeps_the_probability():
    net = as_model(tiny_model(), torch.device("cpu"))
    pixels = reference_planes(ARRAYS["2d"][0], False, 1)[()]
    prob, doubt = predict_plane(net, pixels, fast=False, uncertainty=True)
    close(prob, predict_plane(net, pixels, fast=False))
    assert doubt.shape == prob.shape and doubt.min() >= 0 and doubt.max() <= 1


@pytest.mark.parametrize("name", ["2d", "rgba stack", "TxZ", "float with NaN"])
def test_preview_equals_that_plane_of_a_whole_stack_predict(name):
    array, rgb = ARRAYS[name]
    model = tiny_model(3 if rgb else 1).train()  # a model in training, as during fine-tuning
    before = {k: v.clone() for k, v in model.state_dict().items()}
    whole = predict(model, array, device="cpu", uncertainty=True)
    previewer = Previewer(array)
    previewer.prepare()
    for index in plane_layout(array, 1).indices():
        result = previewer(model, index, uncertainty=True)
        close(result.probabilities, whole.probabilities[index], 1e-6)
        close(result.uncertainty, whole.uncertainty[index], 1e-6)
        assert np.array_equal(result.labels, whole.labels[index]) and result.labels.dtype == np.uint8
    assert model.training  # untouched: still training, same weights
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    last = index
    plain = btunet.preview(model, array, last)
    assert plain.uncertainty is None and np.array_equal(plain.labels, whole.labels[last])
    with pytest.raises(BTUnetError, match="plane index"):
        previewer(model, last + (0,))


def test_chunked_blocks_read_the_same_planes():
    """A block is predicted like a whole plane: one block covering the image gives the same
    probabilities as predict (RGB stays channel-last in the blocks)."""
    for name in ("rgb", "TxZ", "float with NaN"):
        array, rgb = ARRAYS[name]
        model = tiny_model(3 if rgb else 1)
        whole = predict(model, array, device="cpu", fast=False).probabilities
        blocks = predict_chunked(model, array, output="probabilities", chunks=64, depth=0, fast=False,
                                 device="cpu").compute(scheduler="sync")
        close(blocks, whole, 1e-6)


class HugeSource:
    """A lazy source declaring planes of 100 000 x 100 000 pixels; reading anything fails the test."""
    shape, dtype, ndim = (2, 100_000, 100_000), np.dtype(np.uint16), 3

    def __getitem__(self, index):
        pytest.fail("the source was read")

    def __array__(self, dtype=None, copy=None):
        pytest.fail("the source was read whole")


def test_planes_over_the_budget_are_refused_before_anything_is_read(tmp_path, fast_finetune_config):
    huge, model = HugeSource(), tiny_model()
    tracemalloc.start()
    try:
        for attempt in (
                lambda: plane_layout(huge, 1),
                lambda: next(model_planes(huge, 1)),
                lambda: predict(model, huge, device="cpu"),
                lambda: next(iter_predict(model, huge, device="cpu")),
                lambda: predict_to_tiff(model, huge, tmp_path / "out.tif"),
                lambda: Previewer(huge).prepare(),
                lambda: btunet.preview(model, huge, (0,)),
                lambda: image_planes("huge", huge, 1),
                lambda: annotated_planes([("huge", huge)], [("huge", HugeSource())], 1, "dense", 64),
                lambda: btunet.finetune([huge], [HugeSource()], fast_finetune_config)):
            with pytest.raises(BTUnetError, match=r"100000 x 100000 .*btunet predict --zarr"):
                attempt()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak  # nothing near a plane (20 GB) was allocated
    assert not list(tmp_path.iterdir())  # no output file was started


def test_the_budget_is_one_constant_and_blocks_are_not_bound_by_it(monkeypatch):
    array = RNG.integers(0, 255, (2, 32, 48)).astype(np.uint8)
    monkeypatch.setenv("BTUNET_MAX_PLANE_PIXELS", str(32 * 48))
    assert len(image_planes("fits", array, 1)) == 2  # exactly at the budget
    monkeypatch.setenv("BTUNET_MAX_PLANE_PIXELS", str(32 * 48 - 1))
    for attempt in (lambda: image_planes("over", array, 1), lambda: predict(tiny_model(), array, device="cpu")):
        with pytest.raises(BTUnetError, match="1,535 pixels"):
            attempt()
    # block-wise prediction reads 16 x 16 blocks, so the plane size does not matter there
    blocks = predict_chunked(tiny_model(), array, output="probabilities", chunks=16, depth=16, fast=False,
                             device="cpu").compute(scheduler="sync")
    assert blocks.shape == array.shape and np.isfinite(blocks).all()


def test_a_layout_describes_the_source_without_reading_planes():
    layout = PlaneLayout((2, 3, 20, 30, 3), True, 1, 0.0, 255.0)
    assert layout.spatial_shape == (2, 3, 20, 30) and len(layout.indices()) == 6
    with pytest.raises(BTUnetError, match="needs Y and X axes"):
        plane_layout(np.zeros(5), 1)
    with pytest.raises(BTUnetError, match="expected an image array"):
        plane_layout([[1, 2], [3, 4]], 1)
    logits = predict_logits(tiny_model(), np.zeros((1, 20, 20), np.float32), tile=None, fast=False)
    assert logits.shape == (20, 20)
