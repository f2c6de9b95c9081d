"""Memory stays bounded where it must: block-wise prediction never reads a whole plane, the in-memory
path refuses planes above its budget before reading them, running out of memory is one clear
error, and pre-training refuses images it cannot hold before reading them."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

import btunet
from btunet import BTUnetError
from btunet.cli.commands import main
from btunet.core.metadata import Normalization
from btunet.io.imageio import MAX_PLANE_PIXELS, max_plane_pixels
from btunet.pipeline import normalize
from btunet.pipeline.planes import plane_layout, stack_range
from btunet.pipeline.reference import CHECKED_UP_TO, QUANTILES, intensity_quantiles

LINUX = sys.platform.startswith("linux")


def _run(script: str, *args: str) -> dict:
    env = {**os.environ, "BTUNET_CACHE_DIR": ""}  # no ONNX file left in the user's cache
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mosaic(seed: int = 1, tiles: int = 5) -> np.ndarray:
    """A 2000 x 2000 uint16 field of real nuclei: BBBC007 crops in a random order."""
    from btunet.io.sample import sample_paths
    crops = [tifffile.imread(p)[:400, :400] for p in sample_paths()[0]]
    rng = np.random.default_rng(seed)
    rows = [np.concatenate([crops[k] for k in rng.integers(0, len(crops), tiles)], axis=1) for _ in range(tiles)]
    return np.concatenate(rows).astype(np.uint16) * 40 + 300


@pytest.mark.skipif(not LINUX, reason="peak RSS in kilobytes (ru_maxrss) as Linux reports it")
def test_a_huge_zarr_is_predicted_block_wise_in_bounded_memory(tmp_path):
    """20000 x 20000 of one fill value (zarr stores no chunk of it): the intensity range and one
    block grow the peak by a fraction of the 400 MB plane, where reading it whole took ~2 GB."""
    result = _run("""
        import json, resource, sys
        import zarr
        import btunet
        from btunet.infer.chunked import predict_chunked

        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        path = sys.argv[1]
        zarr.create_array(store=path, shape=(20000, 20000), chunks=(1024, 1024), dtype="uint8", fill_value=7)
        model = btunet.create_model("unet", base_filters=4).eval()
        before = peak()
        prob = predict_chunked(model, zarr.open_array(path, mode="r"), output="probabilities", device="cpu")
        ranged = peak()
        corner = prob[:1024, :1024].compute(scheduler="sync")
        print(json.dumps({"range": ranged - before, "block": peak() - before, "shape": list(corner.shape),
                          "finite": bool((corner >= 0).all() and (corner <= 1).all())}))
        """, str(tmp_path / "huge.zarr"))
    assert result["shape"] == [1024, 1024] and result["finite"]
    assert result["range"] < 200 * 2**20, result  # reading the plane whole: ~2 GB
    assert result["block"] < 1024 * 2**20, result
    assert sum(f.stat().st_size for f in (tmp_path / "huge.zarr").rglob("*") if f.is_file()) < 100_000


@pytest.mark.skipif(not LINUX, reason="peak RSS in kilobytes (ru_maxrss) as Linux reports it")
def test_the_reference_check_of_a_huge_zarr_reads_blocks_not_the_plane(tmp_path):
    """``predict --zarr`` checks a model's intensity reference before predicting: on 20000 x 20000
    pixels (400 MB as uint8) that check samples blocks, as the intensity range does."""
    result = _run("""
        import json, resource, sys
        import zarr
        import btunet
        from btunet.infer.chunked import ModelRef
        from btunet.cli.predict_cli import _reference_check

        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        path, model_path = sys.argv[1], sys.argv[2]
        zarr.create_array(store=path, shape=(20000, 20000), chunks=(1024, 1024), dtype="uint8", fill_value=7)
        model = btunet.create_model("unet", base_filters=4).eval()
        model.metadata = {"intensity_reference": {"quantiles": [5, 25, 50, 75, 95], "low": [0.3] * 5,
                                                  "high": [0.4] * 5}}
        ref = ModelRef(btunet.save_model(model, model_path))
        before = peak()
        unlike, norm_range = _reference_check(ref, zarr.open_array(path, mode="r"), None)
        print(json.dumps({"grown": peak() - before, "unlike": unlike, "range": norm_range}))
        """, str(tmp_path / "huge.zarr"), str(tmp_path / "model.safetensors"))
    assert result["range"] == [7.0, 8.0]  # one fill value: a constant image
    assert "5th percentile at 0.00 of the range, trained 0.30 to 0.40" in result["unlike"]  # the check ran
    assert result["grown"] < 100 * 2**20, result  # reading the plane whole grew it by ~300 MB


def test_the_sampled_reference_quantiles_of_a_large_plane_agree_with_the_whole_plane(monkeypatch):
    image = _mosaic()
    layout = plane_layout(image, 1)
    whole = np.percentile(layout.pixels(image), QUANTILES)
    monkeypatch.setattr(normalize, "WHOLE_PLANE_PIXELS", 1000 * 1000)  # this plane is now sampled in blocks
    sampled = np.array(intensity_quantiles(image, layout))
    assert not np.array_equal(sampled, whole)  # the blocks are a sample, not the plane
    checked = np.array(QUANTILES) <= CHECKED_UP_TO
    assert np.abs(sampled - whole)[checked].max() < 0.01, (sampled, whole)  # a tenth of the tolerance
    assert np.abs(sampled - whole).max() < 0.05, (sampled, whole)  # unchecked, and spread by object cover


@pytest.mark.parametrize("method", ["percentile", "background"])
def test_the_sampled_range_of_a_large_plane_agrees_with_the_whole_plane(method, monkeypatch):
    image = _mosaic()
    norm = Normalization(method=method)
    whole = stack_range(image, False, norm)
    monkeypatch.setattr(normalize, "WHOLE_PLANE_PIXELS", 1000 * 1000)  # this plane is now sampled in blocks
    sampled = stack_range(image, False, norm)
    span = whole[1] - whole[0]
    assert sampled != whole  # the blocks are a sample, not the plane
    assert abs(sampled[0] - whole[0]) < 0.02 * span and abs(sampled[1] - whole[1]) < 0.02 * span


def test_in_memory_and_block_wise_sources_sample_the_same_blocks(tmp_path, monkeypatch):
    """The rule depends on the plane's shape only, so a numpy array, a zarr array and a stack of
    them give one range whichever path reads them."""
    import zarr
    monkeypatch.setattr(normalize, "WHOLE_PLANE_PIXELS", 1000 * 1000)
    stack = np.stack([_mosaic(1), _mosaic(2)])
    stored = zarr.create_array(store=str(tmp_path / "s.zarr"), shape=stack.shape, chunks=(1, 512, 512),
                               dtype=stack.dtype)
    stored[...] = stack
    for norm in (Normalization(), Normalization(method="background")):
        assert stack_range(stack, False, norm) == stack_range(zarr.open_array(str(tmp_path / "s.zarr")), False, norm)


def test_the_in_memory_plane_budget_is_what_a_laptop_holds(monkeypatch):
    monkeypatch.delenv("BTUNET_MAX_PLANE_PIXELS", raising=False)
    assert max_plane_pixels() == MAX_PLANE_PIXELS == 4096 * 4096
    import dask.array as da
    model = btunet.create_model("unet", base_filters=4).eval()
    lazy = da.zeros((4097, 4096), np.uint8, chunks=1024)  # refused from its shape, nothing computed
    with pytest.raises(BTUnetError, match="4097 x 4096 pixels is over the in-memory limit.*--zarr"):
        btunet.predict(model, lazy, device="cpu")


def test_outputs_too_large_to_allocate_are_one_error():
    import dask.array as da
    model = btunet.create_model("unet", base_filters=4).eval()
    stack = da.zeros((4000, 4096, 4096), np.uint8, chunks=(1, 1024, 1024))  # 67 GB of labels
    with pytest.raises(BTUnetError, match=r"out of memory for the outputs of a stack of 4000 x 4096 x 4096.*plane by "
                                          r"plane.*--zarr"):
        btunet.predict(model, stack, device="cpu")


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried "
                 "to allocate 4294967296 bytes."),
    MemoryError("Unable to allocate 1.00 GiB for an array with shape (16384, 16384) and data type float32"),
])
def test_running_out_of_memory_in_a_plane_names_its_size_and_the_way_out(error, monkeypatch):
    import importlib
    predict_module = importlib.import_module("btunet.infer.predict")

    def allocate(*args, **kwargs):
        raise error

    monkeypatch.setattr(predict_module, "plane_result", allocate)
    model = btunet.create_model("unet", base_filters=4).eval()
    with pytest.raises(BTUnetError, match=r"out of memory predicting a plane of 48 x 64 pixels \(tile 1024\).*--zarr.*"
                                          r"smaller tile"):
        btunet.predict(model, np.zeros((48, 64), np.float32), device="cpu")
    monkeypatch.setattr(predict_module, "plane_result", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # other errors are not taken for memory
        btunet.predict(model, np.zeros((48, 64), np.float32), device="cpu")


@pytest.mark.skipif(not LINUX, reason="RLIMIT_AS caps the address space on Linux only")
def test_a_real_allocation_failure_is_one_error():
    result = _run("""
        import json, resource
        import numpy as np
        import btunet
        model = btunet.create_model("unet", base_filters=16).eval()
        image = np.random.default_rng(0).random((2048, 2048)).astype(np.float32)
        btunet.predict(model, image[:64, :64], device="cpu", runtime="eager")  # threads and imports first
        size = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize")][0]
        resource.setrlimit(resource.RLIMIT_AS, (size + 400 * 2**20, resource.RLIM_INFINITY))
        try:
            btunet.predict(model, image, device="cpu", runtime="eager", tile=2048)
            print(json.dumps({"error": None}))
        except Exception as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        """)
    assert result["error"] == "BTUnetError", result
    assert "out of memory predicting a plane of 2048 x 2048 pixels" in result["message"]


def test_pretrain_refuses_images_it_cannot_hold_before_reading_them(tmp_path, monkeypatch, capsys):
    import importlib
    pretrain_module = importlib.import_module("btunet.train.pretrain")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((8, 256, 256), np.uint16))
    monkeypatch.setattr(pretrain_module, "available_memory", lambda: 2**20)  # 1 MiB free

    def no_reading(*args, **kwargs):
        raise AssertionError("the images were read before the refusal")

    monkeypatch.setattr(pretrain_module, "load_sources", no_reading)
    with pytest.raises(BTUnetError, match=r"pre-training keeps every plane in memory: these images need about "
                                          r"3.1 MB, more than the 1.0 MB free"):
        btunet.pretrain(str(tmp_path / "stack.tif"))
    assert main(["pretrain", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "e.safetensors"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "keeps every plane in memory" in err and "--zarr" not in err
    need = 8 * 256 * 256 * (2 + 4)  # the uint16 file and its float32 planes
    monkeypatch.setattr(pretrain_module, "available_memory", lambda: need - 1)
    with pytest.raises(BTUnetError, match="keeps every plane in memory"):
        pretrain_module.check_memory([str(tmp_path / "stack.tif")], 1)
    monkeypatch.setattr(pretrain_module, "available_memory", lambda: need)
    pretrain_module.check_memory([str(tmp_path / "stack.tif")], 1)  # exactly enough: accepted


def test_pretrain_refuses_a_plane_above_the_budget_without_advising_zarr(tmp_path, monkeypatch, capsys):
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "big.tif", np.zeros((64, 80), np.uint8))
    monkeypatch.setenv("BTUNET_MAX_PLANE_PIXELS", str(64 * 80 - 1))
    with pytest.raises(BTUnetError, match="planes of 64 x 80 pixels.*cut it into smaller images"):
        btunet.pretrain(str(tmp_path / "images" / "big.tif"))
    assert main(["pretrain", str(tmp_path / "images"), "--out", str(tmp_path / "e.safetensors"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cut it into smaller images" in err and "zarr" not in err
