"""Hostile inputs to the ``btunet`` command line: every user-caused failure is one line on stderr
and exit status 2 (130 when interrupted), inputs are never changed, nothing is written before the
checks pass, and no temporary file is left behind. Unreadable inputs are skipped with a warning.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from btunet.cli.commands import main

COMMON = ["--epochs", "1", "--patch-size", "32", "--device", "cpu", "--threads", "1"]
FAST_TRAIN = COMMON + ["--steps-per-epoch", "1", "--batch-size", "2"]
FAST_PRETRAIN = COMMON + ["--batch-size", "32"]  # 256 samples: 8 steps


# --------------------------------------------------------------------------- helpers

def run(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def lines(err: str) -> list[str]:
    """stderr lines, with progress-bar redraws (carriage returns) split off."""
    return [s.strip() for s in re.split(r"[\r\n]", err) if s.strip()]


def assert_error(status: int, err: str, *fragments: str) -> str:
    """Exit status 2 and exactly one line on stderr, the error, naming ``fragments``."""
    assert status == 2, err
    assert "Traceback" not in err
    found = lines(err)
    assert len(found) == 1 and found[0].startswith("btunet: error: "), err
    for fragment in fragments:
        assert fragment in found[0], found[0]
    return found[0]


def warnings_in(err: str) -> list[str]:
    assert "Traceback" not in err
    return [s for s in lines(err) if s.startswith("btunet: warning: ")]


def digest(*roots: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if ".tmp" in p.name]


def write_huge_tiff(path: Path, side: int = 20000) -> None:
    """A ~0.4 MB zlib TIFF that declares side x side pixels (written tile by tile: little memory)."""
    tile = np.zeros((1024, 1024), np.uint8)
    n = (-(-side // 1024)) ** 2
    tifffile.imwrite(path, (tile for _ in range(n)), shape=(side, side), dtype=np.uint8,
                     tile=(1024, 1024), compression="zlib")


def write_lying_tiff(path: Path, side: int = 20000) -> None:
    """An uncompressed 16 x 16 TIFF whose header (size, one strip of side * side bytes) claims
    side x side pixels: consistent, but more bytes than the file holds."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), rowsperstrip=16, metadata=None)
    values = {"ImageWidth": side, "ImageLength": side, "RowsPerStrip": side, "StripByteCounts": side * side}
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        fields = [(tags[name].valueoffset, int(tags[name].dtype), value) for name, value in values.items()]
    with open(path, "r+b") as f:
        for offset, dtype, value in fields:
            f.seek(offset)
            f.write(struct.pack("<H" if dtype == 3 else "<I", value))


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    import torch

    from btunet import save_model
    from btunet.models import create_model
    torch.manual_seed(0)  # the same weights whatever ran before (output sizes depend on them)
    net = create_model("unet").eval()
    net.metadata = {}
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(net, path)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        tifffile.imwrite(folder / f"{name}.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    return folder


@pytest.fixture
def pairs(tmp_path) -> tuple[Path, Path]:
    """Images a-d and their masks; each mask's object has its own size (100, 300, 500, 700 px)."""
    imgs, masks = tmp_path / "pimages", tmp_path / "pmasks"
    imgs.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(1)
    for name, area in zip("abcd", (100, 300, 500, 700), strict=True):
        tifffile.imwrite(imgs / f"{name}.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
        mask = np.zeros((64, 64), np.uint8)
        mask.flat[:area] = 1
        tifffile.imwrite(masks / f"{name}.tif", mask)
    return imgs, masks


def _mount(target: Path, options: str) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB file system (tmpfs, where the tests run as root), or None: then the caller
    makes the kernel's answer (ENOSPC) itself."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not _mount(mount, "size=1m"):
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be written to: a read-only tmpfs as root (root ignores modes), else chmod."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if _mount(folder, "ro,size=64k"):
        yield folder
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        return
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until only about ``leave`` bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
            f.flush()
        except OSError:
            pass


# --------------------------------------------------------------------------- pairing

def test_unreadable_image_and_mask_drop_their_own_pairs(pairs, tmp_path, capsys):
    from btunet import read_metadata
    imgs, masks = pairs
    (imgs / "b.tif").write_bytes(b"not a tiff")        # image b unreadable
    (masks / "c.tif").write_bytes(b"II*\0 truncated")  # mask c unreadable
    before = digest(imgs, masks)
    out = tmp_path / "m.safetensors"
    status, _, err = run(capsys, "finetune", "--images", imgs, "--masks", masks, "--out", out, *FAST_TRAIN)
    assert status == 0, err
    found = warnings_in(err)
    assert len(found) == 2 and "pair b" in found[0] and "pair c" in found[1]
    meta = read_metadata(out)
    assert meta["trained_on"]["images"] == ["a.tif", "d.tif"]
    # every image kept its own mask: the object pixels are those of masks a and d (100 + 700)
    assert meta["trained_on"]["annotated_pixels"]["object"] == 800
    assert digest(imgs, masks) == before and not leftovers(tmp_path)


def test_two_masks_with_one_name_are_refused(pairs, tmp_path, capsys):
    imgs, masks = pairs
    other = tmp_path / "more_masks"
    other.mkdir()
    tifffile.imwrite(other / "a.png", np.ones((64, 64), np.uint8))
    out = tmp_path / "m.safetensors"
    status, _, err = run(capsys, "finetune", "--images", imgs, "--masks", masks, other, "--out", out, *FAST_TRAIN)
    assert_error(status, err, "two masks are named 'a'")
    assert not out.exists()


# --------------------------------------------------------------------------- lost data

def test_same_stem_from_two_folders_is_refused(model_file, tmp_path, capsys):
    one, two, out = tmp_path / "one", tmp_path / "two", tmp_path / "out"
    for folder in (one, two):
        folder.mkdir()
        tifffile.imwrite(folder / "x.tif", np.zeros((32, 32), np.uint8))
    status, _, err = run(capsys, "predict", model_file, one, two, "--out", out, "--device", "cpu")
    assert_error(status, err, str(one / "x.tif"), str(two / "x.tif"), "separate --out")
    assert not out.exists()


def test_png_and_jpg_of_one_name_are_refused(model_file, tmp_path, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    imsave(folder / "x.png", np.zeros((32, 32), np.uint8), check_contrast=False)
    imsave(folder / "x.jpg", np.zeros((32, 32), np.uint8), check_contrast=False)
    status, _, err = run(capsys, "predict", model_file, folder, "--out", out, "--device", "cpu")
    assert_error(status, err, "x.png", "x.jpg")
    assert not out.exists()


def test_a_scheduler_without_distributed_installed_is_one_line(model_file, images, tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the scaling extra were not installed
    status, _, err = run(capsys, "predict", model_file, images, "--out", tmp_path / "out",
                         "--scheduler", "tcp://127.0.0.1:1", "--device", "cpu")
    assert_error(status, err, "needs dask.distributed", "napari-btunet[scaling]")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("engine", [[], ["--scheduler", "synchronous"]], ids=["in-memory", "chunked"])
def test_existing_probabilities_are_not_replaced(model_file, images, tmp_path, capsys, engine):
    out = tmp_path / "out"
    out.mkdir()
    tifffile.imwrite(out / "b_prob.tif", np.full((2, 2), 7, np.float32))
    before = digest(images, out)
    status, _, err = run(capsys, "predict", model_file, images, "--out", out, "--probabilities",
                         "--device", "cpu", *engine)
    assert_error(status, err, "b_prob.tif", "--overwrite")
    assert digest(images, out) == before
    status, _, err = run(capsys, "predict", model_file, images, "--out", out, "--probabilities",
                         "--device", "cpu", "--overwrite", *engine)
    assert status == 0, err
    assert tifffile.imread(out / "b_prob.tif").shape == (64, 64)
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "a_prob.tif", "b.tif", "b_prob.tif",
                                                     "c.tif", "c_prob.tif"]


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_an_existing_model_is_replaced_only_with_overwrite(command, pairs, tmp_path, capsys, monkeypatch):
    imgs, masks = pairs
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"an earlier model")
    args = (["finetune", "--images", imgs, "--masks", masks, *FAST_TRAIN] if command == "finetune"
            else ["pretrain", imgs, *FAST_PRETRAIN]) + ["--out", out]
    status, _, err = run(capsys, *args)
    assert_error(status, err, "exists", "--overwrite")
    assert out.read_bytes() == b"an earlier model"
    status, _, err = run(capsys, *args, "--overwrite")
    assert status == 0, err
    from btunet import read_metadata
    assert read_metadata(out)["kind"] == ("model" if command == "finetune" else "encoder")
    assert not leftovers(tmp_path)


def test_out_equal_to_the_input_folder_is_refused_even_with_overwrite(model_file, images, capsys):
    before = digest(images)
    status, _, err = run(capsys, "predict", model_file, images, "--out", images, "--overwrite", "--device", "cpu")
    assert_error(status, err, "input folder")
    assert digest(images) == before


def test_an_output_that_would_replace_an_input_file_is_refused(model_file, images, tmp_path, capsys):
    before = digest(images)  # files given one by one, --out their folder: a.tif would be its own label
    status, _, err = run(capsys, "predict", model_file, images / "a.tif", images / "b.tif", "--out", images,
                         "--overwrite", "--device", "cpu")
    assert_error(status, err, "would replace the input")
    assert digest(images) == before


# --------------------------------------------------------------------------- messages, not tracebacks

def test_a_truncated_tiff_is_skipped_and_the_rest_predicted(model_file, images, tmp_path, capsys):
    data = (images / "b.tif").read_bytes()
    (images / "b.tif").write_bytes(data[:len(data) // 2])
    stack = np.random.default_rng(2).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    for name in ("b2.tif", "b3.tif"):
        tifffile.imwrite(images / name, stack, compression="zlib", photometric="minisblack")
    damaged = (images / "b2.tif").read_bytes()
    (images / "b2.tif").write_bytes(damaged[:len(damaged) * 2 // 3])  # its last page is cut off
    with tifffile.TiffFile(images / "b3.tif") as tif:
        offset = tif.pages[1].dataoffsets[0]
    with open(images / "b3.tif", "r+b") as f:  # page 2 of 3 does not decode, the header is intact
        f.seek(offset)
        f.write(b"\xff" * 64)
    before, out = digest(images), tmp_path / "out"
    status, stdout, err = run(capsys, "predict", model_file, images, "--out", out, "--device", "cpu")
    assert status == 0, err
    found = warnings_in(err)
    assert [w.split(":")[2].strip() for w in found] == ["skipping b.tif", "skipping b2.tif", "skipping b3.tif"]
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "c.tif"]  # c comes after the bad ones
    assert "skipped (could not read): b.tif, b2.tif, b3.tif" in stdout
    assert digest(images) == before and not leftovers(tmp_path)


def test_nothing_readable_is_an_error(model_file, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.tif").write_bytes(b"II*\0garbage")
    with pytest.warns(UserWarning, match="zero-size"):  # tifffile writes it, under protest
        tifffile.imwrite(folder / "empty.tif", np.zeros((0, 30), np.uint8))
    status, _, err = run(capsys, "predict", model_file, folder, "--out", tmp_path / "out", "--device", "cpu")
    assert status == 2 and len(warnings_in(err)) == 2
    assert "empty" in warnings_in(err)[0]
    assert [s for s in lines(err) if s.startswith("btunet: error: none of the 2 input(s)")]


def test_an_empty_folder_is_an_error(model_file, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status, _, err = run(capsys, "predict", model_file, tmp_path / "empty", "--out", tmp_path / "out")
    assert_error(status, err, "no images or zarr arrays found")
    assert not (tmp_path / "out").exists()


def test_out_of_the_wrong_kind(model_file, images, pairs, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    status, _, err = run(capsys, "predict", model_file, images, "--out", tmp_path / "a_file")
    assert_error(status, err, "is a file")
    imgs, masks = pairs
    for args in (["pretrain", imgs, *FAST_PRETRAIN], ["finetune", "--images", imgs, "--masks", masks, *FAST_TRAIN]):
        status, _, err = run(capsys, *args, "--out", tmp_path)
        assert_error(status, err, "is a folder", "model.safetensors")


@pytest.mark.parametrize("command", ["pretrain", "finetune", "predict"])
@pytest.mark.parametrize("option,value", [
    ("--epochs", "0"), ("--patch-size", "0"), ("--batch-size", "0"), ("--lr", "nan"),
    ("--time-budget", "inf"), ("--threshold", "1.5"), ("--chunk", "0"), ("--depth", "-16"),
    ("--threads", "0"), ("--steps-per-epoch", "-1"), ("--encoder-lr-scale", "nan"),
])
def test_bad_numbers(command, option, value, model_file, pairs, tmp_path, capsys):
    imgs, masks = pairs
    args = {"pretrain": ["pretrain", imgs, "--out", tmp_path / "e.safetensors"],
            "finetune": ["finetune", "--images", imgs, "--masks", masks, "--out", tmp_path / "m.safetensors"],
            "predict": ["predict", model_file, imgs, "--out", tmp_path / "out"]}[command]
    status, _, err = run(capsys, *args, option, value)
    if "unrecognized arguments" in err:  # an option of another command: a usage error, one line
        assert_error(status, err, option, "--help")
    else:
        assert_error(status, err, option, value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pimages", "pmasks"]


def test_depth_larger_than_chunk_is_refused(model_file, images, tmp_path, capsys):
    status, _, err = run(capsys, "predict", model_file, images, "--out", tmp_path / "out", "--zarr",
                         "--chunk", "64", "--depth", "128")
    assert_error(status, err, "--depth", "--chunk")


def test_zarr_on_images_smaller_than_the_overlap(model_file, tmp_path, capsys):
    import zarr
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    tifffile.imwrite(folder / "small.tif", np.random.default_rng(3).integers(0, 255, (20, 30), np.uint8))
    tifffile.imwrite(folder / "thin.tif", np.zeros((20, 2100), np.uint8))  # several blocks, 20 px high
    status, _, err = run(capsys, "predict", model_file, folder, "--out", out, "--zarr", "--device", "cpu",
                         "--exact")
    assert status == 0, err
    found = warnings_in(err)
    assert len(found) == 1 and "thin.tif" in found[0] and "--depth 16" in found[0]
    assert zarr.open_array(str(out / "small.zarr")).shape == (20, 30)
    assert not (out / "thin.zarr").exists() and not leftovers(tmp_path)


def test_an_unreachable_scheduler_is_one_message_before_any_work(model_file, images, tmp_path, capsys):
    import dask
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        status, _, err = run(capsys, "predict", model_file, images, "--out", tmp_path / "out",
                             "--scheduler", "tcp://127.0.0.1:1", "--device", "cpu")
    assert_error(status, err, "cannot reach the dask scheduler at tcp://127.0.0.1:1")
    assert not (tmp_path / "out").exists()
    status, _, err = run(capsys, "predict", model_file, images, "--out", tmp_path / "out",
                         "--scheduler", "no-port-here", "--device", "cpu")
    assert_error(status, err, "cannot reach the dask scheduler")


@pytest.mark.parametrize("engine", [[], ["--scheduler", "synchronous"]], ids=["in-memory", "chunked"])
def test_a_bad_plane_budget_is_one_error_before_any_work(model_file, images, tmp_path, capsys, monkeypatch, engine):
    """Block-wise prediction skips a file it cannot read; a bad setting is no file's fault."""
    monkeypatch.setenv("BTUNET_MAX_PLANE_PIXELS", "abc")
    status, _, err = run(capsys, "predict", model_file, images, "--out", tmp_path / "out", "--device", "cpu", *engine)
    assert_error(status, err, "BTUNET_MAX_PLANE_PIXELS must be a finite positive number", "'abc'")
    assert not (tmp_path / "out").exists()


def test_zero_size_pairs_are_skipped_in_finetune(pairs, tmp_path, capsys):
    imgs, masks = pairs
    for folder in (imgs, masks):
        with pytest.warns(UserWarning, match="zero-size"):
            tifffile.imwrite(folder / "e.tif", np.zeros((0, 64), np.uint8))
    status, _, err = run(capsys, "finetune", "--images", imgs, "--masks", masks,
                         "--out", tmp_path / "m.safetensors", *FAST_TRAIN)
    assert status == 0, err
    assert len(warnings_in(err)) == 1 and "pair e" in warnings_in(err)[0]


# --------------------------------------------------------------------------- disks

def test_a_full_disk_is_reported_before_predicting(model_file, images, small_disk, tmp_path, capsys,
                                                   monkeypatch):
    if small_disk is not None:
        fill(small_disk, leave=0)
        out = small_disk / "out"
    else:
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, "fsync", full)
        out = tmp_path / "out"
    before = digest(images)
    status, _, err = run(capsys, "predict", model_file, images, "--out", out, "--device", "cpu")
    assert_error(status, err, "cannot write to", "No space left on device")
    assert not out.exists() and digest(images) == before


def test_a_disk_that_fills_up_while_predicting(model_file, tmp_path, small_disk, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for name in "abcd":
        tifffile.imwrite(folder / f"{name}.tif", rng.integers(0, 255, (128, 128), dtype=np.uint8))
    if small_disk is not None:
        fill(small_disk, leave=45_000)  # room for one image's outputs (14-37 KB), not four
        out = small_disk / "out"
    else:
        import btunet.base.atomic
        calls = []

        def replace(src, dst):
            calls.append(dst)
            if len(calls) > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return os.rename(src, dst)
        monkeypatch.setattr(btunet.base.atomic.os, "replace", replace)
        out = tmp_path / "out"
    status, _, err = run(capsys, "predict", model_file, folder, "--out", out, "--probabilities", "--device", "cpu")
    assert status == 2 and "Traceback" not in err
    errors = [s for s in lines(err) if s.startswith("btunet: error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    assert not leftovers(out)
    for written in out.glob("*.tif"):  # whatever was written is whole
        assert tifffile.imread(written).shape == (128, 128)


def test_a_read_only_out(model_file, images, pairs, read_only_dir, capsys, monkeypatch):
    status, _, err = run(capsys, "predict", model_file, images, "--out", read_only_dir / "pred", "--device", "cpu")
    message = assert_error(status, err, "cannot write to")
    assert "Read-only file system" in message or "Permission denied" in message
    # a model whose --out cannot be written is refused before training, not after it
    import btunet.train.finetune  # noqa: F401  (btunet.finetune is also the function: patch the module)
    import btunet.train.pretrain  # noqa: F401
    for name in ("finetune", "pretrain"):
        monkeypatch.setattr(sys.modules[f"btunet.train.{name}"], name,
                            lambda *a, **k: pytest.fail("training started"))
    imgs, masks = pairs
    for args in (["pretrain", imgs, *FAST_PRETRAIN], ["finetune", "--images", imgs, "--masks", masks, *FAST_TRAIN]):
        status, _, err = run(capsys, *args, "--out", read_only_dir / "sub" / "m.safetensors")
        assert_error(status, err, "cannot write to")
    assert list(read_only_dir.iterdir()) == []


# --------------------------------------------------------------------------- status

def test_evaluate_without_pairs_and_with_an_unreadable_prediction(tmp_path, capsys):
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    status, stdout, err = run(capsys, "evaluate", "--pred", pred, "--truth", truth, "--json")
    assert_error(status, err, "no ground-truth images")
    assert stdout == ""
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 1
    for name in ("a", "b"):
        tifffile.imwrite(truth / f"{name}.tif", mask)
    tifffile.imwrite(pred / "a.tif", mask)
    (pred / "b.tif").write_bytes(b"II*\0broken")
    status, stdout, err = run(capsys, "evaluate", "--pred", pred, "--truth", truth, "--json")
    assert status == 0 and len(warnings_in(err)) == 1 and "b.tif" in warnings_in(err)[0]
    report = json.loads(stdout)
    assert [r["name"] for r in report["images"]] == ["a.tif"] and report["mean"]["dice"] == 1.0
    (pred / "a.tif").write_bytes(b"II*\0broken too")
    status, stdout, err = run(capsys, "evaluate", "--pred", pred, "--truth", truth, "--json")
    assert status == 2 and stdout == "" and "NaN" not in err
    assert [s for s in lines(err) if s.startswith("btunet: error: none of the prediction")]


def test_ctrl_c_is_130_and_leaves_no_temporary_file(model_file, images, tmp_path, capsys, monkeypatch):
    from btunet.io.tiff_reader import LazyTiff
    original = LazyTiff.__getitem__

    def interrupted(self, index):
        if self.path.name == "b.tif":
            raise KeyboardInterrupt
        return original(self, index)
    monkeypatch.setattr(LazyTiff, "__getitem__", interrupted)
    out = tmp_path / "out"
    status, _, err = run(capsys, "predict", model_file, images, "--out", out, "--device", "cpu")
    assert status == 130 and "Traceback" not in err and "btunet: interrupted" in lines(err)
    assert sorted(p.name for p in out.iterdir()) == ["a.tif"]


def test_a_bug_keeps_its_traceback(model_file, images, tmp_path, monkeypatch):
    import btunet.cli.outputs

    def broken(*args, **kwargs):
        raise TypeError("a bug, not the user's fault")
    monkeypatch.setattr(btunet.cli.outputs, "plan_predictions", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["predict", str(model_file), str(images), "--out", str(tmp_path / "out")])


# --------------------------------------------------------------------------- memory

MEASURE = textwrap.dedent("""
    import json, resource, sys
    import btunet.cli.commands, btunet.infer.predict, btunet.train.finetune, btunet.train.pretrain, torch
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status = btunet.cli.commands.main(sys.argv[1:])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"status": status, "grew_kb": after - before}))
""")


@pytest.mark.parametrize("kind", ["compressed", "lying header"])
def test_a_tiny_file_declaring_a_huge_image_is_refused_without_the_memory(kind, model_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (write_huge_tiff if kind == "compressed" else write_lying_tiff)(folder / "huge.tif")
    assert (folder / "huge.tif").stat().st_size < 1_000_000
    tifffile.imwrite(folder / "huge_mask.tif", np.zeros((16, 16), np.uint8))
    masks = tmp_path / "masks"
    masks.mkdir()
    (folder / "huge_mask.tif").rename(masks / "huge.tif")
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    expected = "BTUNET_MAX_PLANE_PIXELS" if kind == "compressed" else "truncated or damaged"
    for args in (["predict", model_file, folder, "--out", tmp_path / "out", "--device", "cpu"],
                 ["finetune", "--images", folder, "--masks", masks, "--out", tmp_path / "m.safetensors",
                  *FAST_TRAIN],
                 ["pretrain", folder, "--out", tmp_path / "e.safetensors", *FAST_PRETRAIN]):
        result = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                                timeout=300)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["status"] == 2, result.stderr
        assert report["grew_kb"] < 1_000_000, report  # peak RSS grew by less than 1 GB
        assert "Traceback" not in result.stderr and expected in result.stderr
        if kind == "compressed" and args[0] == "predict":
            assert "--zarr" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.safetensors").exists()


# --------------------------------------------------------------------------- signals

DRIVER = textwrap.dedent("""
    import sys, time
    import btunet.train.finetune, btunet.infer.predict
    finetune, predict = sys.modules["btunet.train.finetune"], sys.modules["btunet.infer.predict"]
    slow = float(sys.argv[1])
    augment = finetune.finetune_augment
    def slow_augment(*args, **kwargs):  # a slow training step
        time.sleep(slow)
        return augment(*args, **kwargs)
    finetune.finetune_augment = slow_augment
    iter_predict = predict.iter_predict
    def slow_planes(*args, **kwargs):  # a slow stack, so a signal arrives while it is written
        for item in iter_predict(*args, **kwargs):
            time.sleep(slow)
            yield item
    predict.iter_predict = slow_planes
    from btunet.cli.commands import main
    sys.exit(main(sys.argv[2:]))
""")


def _start(tmp_path: Path, args: list, slow: float = 1.0) -> tuple[subprocess.Popen, Path]:
    script, log = tmp_path / "driver.py", tmp_path / "stderr.log"
    script.write_text(DRIVER)
    with open(log, "w") as stderr:  # the child keeps its own handle
        process = subprocess.Popen([sys.executable, str(script), str(slow), *map(str, args)],
                                   stdout=subprocess.PIPE, stderr=stderr, text=True)
    return process, log


def _wait_for(process: subprocess.Popen, log: Path, condition, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def stack_being_written(out: Path) -> bool:
    """True once a prediction's temporary file is in ``out``; the check that ``out`` is writable
    creates (and removes again) its own short-lived file and the folder itself, which do not count."""
    try:
        return any(p.name.endswith(".tmp") and not p.name.startswith(".btunet-probe-")
                   for p in out.iterdir())
    except FileNotFoundError:
        return False


def test_sigterm_while_predicting_leaves_no_temporary_file(model_file, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    # 16 planes of 1 s: the signal lands while the stack is written even on a busy machine
    tifffile.imwrite(folder / "stack.tif", np.zeros((16, 64, 64), np.uint8), photometric="minisblack")
    before = digest(folder)
    process, log = _start(tmp_path, ["predict", model_file, folder, "--out", out, "--device", "cpu",
                                     "--threads", "1"], slow=1.0)
    _wait_for(process, log, lambda: stack_being_written(out))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 130
    err = log.read_text()
    assert "Traceback" not in err and "btunet: interrupted" in lines(err)
    assert list(out.iterdir()) == [] and digest(folder) == before


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_while_training_saves_once_and_aborts_twice(signals, pairs, tmp_path):
    imgs, masks = pairs
    out = tmp_path / "m.safetensors"
    process, log = _start(tmp_path, ["finetune", "--images", imgs, "--masks", masks, "--out", out,
                                     "--epochs", "50", "--steps-per-epoch", "5", "--batch-size", "2",
                                     "--patch-size", "32", "--device", "cpu", "--threads", "1"])
    _wait_for(process, log, lambda: "finetune" in log.read_text())  # the first step is done
    process.send_signal(signal.SIGTERM)
    if signals == 2:
        _wait_for(process, log, lambda: "stopping after this step" in log.read_text())
        process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 130
    err, stdout = log.read_text(), process.stdout.read()
    assert "Traceback" not in err and not leftovers(tmp_path)
    if signals == 1:
        from btunet import read_metadata
        assert "stopped by an interrupt" in stdout
        assert read_metadata(out)["stopped"] == "cancelled"
    else:
        assert "btunet: interrupted" in lines(err) and not out.exists()
