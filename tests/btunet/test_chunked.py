"""Chunked (dask) prediction: equals in-memory prediction; zarr / OME-Zarr; local threads and a cluster."""
import pickle

import numpy as np
import pytest
import tifffile
import torch
import zarr

from btunet import create_model, predict, save_model
from btunet.cli.commands import main
from btunet.infer.chunked import ModelRef, axis_chunks, open_zarr, predict_chunked

da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def volume(sample):
    """Three real BBBC007 planes, 256 x 320 (not a multiple of the 128-px blocks in X)."""
    return np.stack([tifffile.imread(p)[:256, :320] for p in sample[0][:3]]).astype(np.uint16) * 40


@pytest.fixture(scope="module")
def segmenter(volume, tmp_path_factory):
    """A unet whose output head is scaled and shifted so that it splits the sample into
    foreground and background (training one here would cost a minute), and its checkpoint."""
    from btunet.infer.predict import predict_logits
    from btunet.pipeline.normalize import normalize_plane, percentile_range
    torch.manual_seed(0)
    net = create_model("unet").eval()
    logits = predict_logits(net, normalize_plane(volume[0], *percentile_range(volume))[None], fast=False)
    low, mid, high = np.percentile(logits, [5, 70, 95])
    with torch.no_grad():
        net.head.weight.mul_(4 / (high - low))
        net.head.bias.sub_(mid).mul_(4 / (high - low))
    path = save_model(net, tmp_path_factory.mktemp("model") / "model.safetensors")
    return net, path


@pytest.fixture(scope="module")
def reference(segmenter, volume):
    return predict(segmenter[0], volume, fast=False, device="cpu")


def _assert_matches(prob, labels, ref):
    """Block-wise = whole-plane prediction up to float rounding.

    The planes fit one 512-px tile, so ``predict`` sees each plane whole; blocks start on the
    16-px pooling grid with a 128-px halo (more than the unet's receptive-field radius), so
    only summation order differs: measured max |dp| = 3.6e-7 (2.2e-3 with a 64-px halo, on a
    trained model). Labels can then only differ where the probability is that close to 0.5.
    """
    diff = np.abs(prob - ref.probabilities)
    assert diff.max() < 1e-4, diff.max()
    differ = labels != ref.labels
    assert np.all(np.abs(ref.probabilities[differ] - 0.5) <= diff.max())
    assert differ.sum() <= 1e-4 * labels.size


def test_axis_chunks_keep_blocks_at_least_as_thick_as_the_halo():
    assert axis_chunks(320, 128, 64) == (128, 128, 64)
    assert axis_chunks(320, 128, 128) == (128, 192)
    assert axis_chunks(100, 128, 128) == (100,)


def test_blocks_equal_in_memory_prediction_and_stay_lazy(segmenter, volume, reference):
    net, path = segmenter
    lazy = predict_chunked(path, volume, chunks=128, output="probabilities", fast=False,
                           device="cpu")
    assert isinstance(lazy, da.Array) and lazy.shape == volume.shape and lazy.dtype == np.float32
    assert lazy.chunks[0] == (1, 1, 1)                    # one plane per block
    prob = lazy.compute(scheduler="threads", num_workers=2)
    labels = predict_chunked(net, volume, chunks=128, fast=False, device="cpu")
    assert labels.dtype == np.uint8
    _assert_matches(prob, labels.compute(), reference)
    assert 0.05 < reference.labels.mean() < 0.95         # the model really segments


def test_model_reaches_workers_as_a_path_or_plain_weights(segmenter):
    net, path = segmenter
    by_path = pickle.dumps(ModelRef(path))
    assert len(by_path) < 20_000 and b"safetensors" in by_path
    by_weights = pickle.loads(pickle.dumps(ModelRef(net)))
    assert by_weights._model is None and by_weights.get("cpu", False).config == net.config


def _write_ome_zarr(path, volume):
    root = zarr.open_group(str(path), mode="w")
    root.create_array("0", data=volume, chunks=(1, 100, 100))
    root.create_array("1", data=volume[:, ::2, ::2], chunks=(1, 100, 100))
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in "zyx"],
                                  "datasets": [{"path": "0"}, {"path": "1"}]}]


def test_cli_predicts_ome_zarr_and_tiff_to_zarr(segmenter, volume, reference, tmp_path):
    _write_ome_zarr(tmp_path / "stack.ome.zarr", volume)
    tifffile.imwrite(tmp_path / "stack2.tif", volume, photometric="minisblack")
    assert open_zarr(tmp_path / "stack.ome.zarr").shape == volume.shape      # level 0
    out = tmp_path / "out"
    args = ["predict", str(segmenter[1]), str(tmp_path / "stack.ome.zarr"), str(tmp_path / "stack2.tif"),
            "--out", str(out), "--zarr", "--chunk", "128", "--exact", "--device", "cpu",
            "--probabilities"]
    assert main(args) == 0
    for name in ("stack", "stack2"):
        labels, prob = zarr.open_array(str(out / f"{name}.zarr")), zarr.open_array(str(out / f"{name}_prob.zarr"))
        assert labels.shape == volume.shape and labels.dtype == np.uint8
        _assert_matches(prob[:], labels[:], reference)
    assert main(args) == 2                                   # no silent overwrite
    assert main(args + ["--overwrite"]) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_local_cluster_with_two_workers(segmenter, volume, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    zarr.create_array(str(tmp_path / "in.zarr"), data=volume, chunks=(1, 64, 64))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        # the command line: the checkpoint path travels, each worker process loads it
        assert main(["predict", str(segmenter[1]), str(tmp_path / "in.zarr"), "--out", str(tmp_path / "out"),
                     "--scheduler", cluster.scheduler_address, "--chunk", "128", "--exact",
                     "--device", "cpu"]) == 0
        labels = zarr.open_array(str(tmp_path / "out" / "in.zarr"))[:]
        # the Python API with a model object: its weights travel, not a file
        with distributed.Client(cluster) as client:
            path = predict_chunked(segmenter[0], tmp_path / "in.zarr", chunks=128, fast=False, device="cpu",
                                   scheduler=client, out=tmp_path / "api.zarr",
                                   probabilities_out=tmp_path / "api_prob.zarr")
    _assert_matches(zarr.open_array(str(tmp_path / "api_prob.zarr"))[:], labels, reference)
    assert np.array_equal(zarr.open_array(str(path))[:], labels)


def test_an_image_thinner_than_the_halo_is_one_line_or_one_block(segmenter):
    """One block needs no halo; a strip thinner than the halo cannot be cut (BTUnetError, no dask error)."""
    from btunet.base.errors import BTUnetError
    net = segmenter[0]
    small = np.random.default_rng(0).random((100, 90)).astype(np.float32)
    whole = predict(net, small, fast=False, device="cpu")
    lazy = predict_chunked(net, small, output="labels", fast=False, device="cpu").compute()
    assert lazy.shape == small.shape and 0 < lazy.mean() < 1
    np.testing.assert_array_equal(lazy, whole.labels > 0)
    strip = np.random.default_rng(1).random((40, 600)).astype(np.float32)
    with pytest.raises(BTUnetError, match=r"40 x 600 pixels, thinner than the block overlap \(depth 128\)"):
        predict_chunked(net, strip, chunks=256, depth=128)
