"""Hostile zip packages: a checkpoint member is read into memory after its declared size, its
compression ratio and its flags are checked; nothing is ever unpacked to the temporary folder,
and every refusal is one BTUnetError (one line, exit 2) naming the zip and the member. A genuine
package works on every path that takes a model, the block-wise (zarr) one included.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from btunet import BTUnetError, create_model, inspect_checkpoint, load_model, read_metadata, save_model
from btunet.io.package_reader import CHECKPOINT, MAX_CHECKPOINT_BYTES, MAX_RATIO, RATIO_FREE_BYTES

from .test_export import offline, settled  # noqa: F401  (offline: no network while exporting)
from .test_hostile_cli import assert_error, run

MIB = 2**20


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch) -> Path:
    """A fresh, empty temporary folder for this test (TMPDIR and tempfile's own setting)."""
    import tempfile
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    """A real btunet checkpoint (a small unet), as a package would carry it."""
    torch.manual_seed(0)
    net = create_model("unet", base_filters=4).eval()
    return save_model(net, tmp_path_factory.mktemp("ckpt") / "m.safetensors").read_bytes()


def make_package(path: Path, member: bytes | None = None, *, zeros: int = 0,
                 compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip with a bioimage.io yaml and a checkpoint member: ``member``'s bytes, or ``zeros`` zero
    bytes streamed in (a zip bomb that never sits in memory here)."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("rdf.yaml", "type: model\nname: test\n")
        if member is not None:
            archive.writestr(CHECKPOINT, member)
        else:
            block = bytes(MIB)
            with archive.open(CHECKPOINT, "w", force_zip64=zeros > 2**31) as out:
                for _ in range(zeros // MIB):
                    out.write(block)
    return path


def patch_member(path: Path, *, flags: int | None = None, file_size: int | None = None,
                 flip_data_byte: bool = False) -> None:
    """Edit the checkpoint member's local header and central directory entry in place."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(CHECKPOINT)
    data = bytearray(path.read_bytes())
    local = info.header_offset
    assert data[local:local + 4] == b"PK\x03\x04"
    central = struct.unpack_from("<I", data, data.rindex(b"PK\x05\x06") + 16)[0]  # the directory's start
    while data[central + 46:central + 46 + len(CHECKPOINT)] != CHECKPOINT.encode():
        central += 46 + sum(struct.unpack_from("<HHH", data, central + 28))  # name, extra, comment
    if flags is not None:
        struct.pack_into("<H", data, local + 6, struct.unpack_from("<H", data, local + 6)[0] | flags)
        struct.pack_into("<H", data, central + 8, struct.unpack_from("<H", data, central + 8)[0] | flags)
    if file_size is not None:
        struct.pack_into("<I", data, local + 22, file_size)
        struct.pack_into("<I", data, central + 24, file_size)
    if flip_data_byte:
        name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
        start = local + 30 + name_len + extra_len
        data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def refused(path: Path, *words: str) -> str:
    """Every way of reading the package refuses it with one line naming the zip and ``words``."""
    messages = []
    for reader in (load_model, read_metadata, inspect_checkpoint):
        with pytest.raises(BTUnetError) as caught:
            reader(path)
        messages.append(str(caught.value))
    for text in messages:
        assert "\n" not in text and path.name in text, text
        for word in words:
            assert word in text, text
    return messages[0]


def peak_bytes(fn) -> int:
    """The most memory Python held at once while ``fn`` ran (tracemalloc sees every bytes object)."""
    tracemalloc.start()
    try:
        fn()
    except BTUnetError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# --------------------------------------------------------------------------- the bound

def test_the_size_bound_holds_the_largest_model_btunet_builds():
    from btunet.core.checkpoint import MAX_HEADER_BYTES
    from btunet.models import MODELS
    from btunet.models.registry import MAX_BASE_FILTERS, MAX_OUT_CHANNELS
    largest = 0
    for name in MODELS:
        with torch.device("meta"):
            net = create_model(name, in_channels=3, out_channels=MAX_OUT_CHANNELS, base_filters=MAX_BASE_FILTERS)
        largest = max(largest, sum(t.numel() * t.element_size() for t in net.state_dict().values()))
    assert largest + 8 + MAX_HEADER_BYTES <= MAX_CHECKPOINT_BYTES
    assert largest > MAX_CHECKPOINT_BYTES // 2  # the bound is not far above what a model needs


# --------------------------------------------------------------------------- hostile zips

def test_a_zip_bomb_is_refused_before_a_byte_is_unpacked(tmp_path, tmpdir_env):
    bomb = make_package(tmp_path / "bomb.zip", zeros=200 * MIB)  # 200 MiB of zeros in ~0.2 MB
    packed = zipfile.ZipFile(bomb).getinfo(CHECKPOINT).compress_size
    assert packed * MAX_RATIO < 200 * MIB and bomb.stat().st_size < MIB
    refused(bomb, CHECKPOINT, "declares 209715200 bytes", "limit")
    assert peak_bytes(lambda: load_model(bomb)) < 4 * MIB  # nothing unpacked, not even in memory
    assert list(tmpdir_env.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip", "tmp"]


def test_a_member_declaring_more_than_any_model_is_refused(tmp_path, tmpdir_env, checkpoint_bytes, capsys):
    huge = make_package(tmp_path / "huge.zip", checkpoint_bytes, compression=zipfile.ZIP_STORED)
    patch_member(huge, file_size=3 * 2**30)
    refused(huge, CHECKPOINT, f"declares {3 * 2**30} bytes")
    status, _, err = run(capsys, "info", huge)
    assert_error(status, err, "huge.zip", CHECKPOINT, "limit")
    assert list(tmpdir_env.iterdir()) == []


def test_a_member_that_unpacks_to_more_than_it_declares_is_refused(tmp_path, tmpdir_env, checkpoint_bytes):
    lying = make_package(tmp_path / "lying.zip", checkpoint_bytes)
    patch_member(lying, file_size=1000)  # fewer bytes than the data holds: the checksum fails
    refused(lying, CHECKPOINT, "cannot be unpacked", "damaged")
    longer = make_package(tmp_path / "longer.zip", checkpoint_bytes)
    patch_member(longer, file_size=len(checkpoint_bytes) + 5000)  # more than the data holds
    refused(longer, CHECKPOINT, f"unpacks to {len(checkpoint_bytes)} bytes, not the")
    assert list(tmpdir_env.iterdir()) == []


def test_a_bad_checksum_leaves_nothing_behind(tmp_path, tmpdir_env, checkpoint_bytes, capsys):
    damaged = make_package(tmp_path / "damaged.zip", checkpoint_bytes, compression=zipfile.ZIP_STORED)
    patch_member(damaged, flip_data_byte=True)
    refused(damaged, CHECKPOINT, "Bad CRC-32")
    status, _, err = run(capsys, "predict", damaged, tmp_path, "--out", tmp_path / "out", "--device", "cpu")
    assert_error(status, err, "damaged.zip", "Bad CRC-32")
    assert list(tmpdir_env.iterdir()) == [] and not (tmp_path / "out").exists()


def test_an_encrypted_member_is_one_line_not_a_traceback(tmp_path, tmpdir_env, checkpoint_bytes, capsys):
    locked = make_package(tmp_path / "locked.zip", checkpoint_bytes)
    patch_member(locked, flags=0x1)
    refused(locked, CHECKPOINT, "encrypted")
    status, _, err = run(capsys, "info", locked)
    assert_error(status, err, "locked.zip", "encrypted")
    assert list(tmpdir_env.iterdir()) == []


def test_a_damaged_checkpoint_inside_is_named_by_the_zip(tmp_path, tmpdir_env, checkpoint_bytes):
    cut = make_package(tmp_path / "cut.zip", checkpoint_bytes[:len(checkpoint_bytes) // 2])
    text = refused(cut, f"{CHECKPOINT} in cut.zip", "truncated")
    assert ".btunet-package" not in text and ".tmp" not in text


def test_the_command_line_leaves_the_temporary_folder_empty(tmp_path):
    """A real process, TMPDIR a fresh folder: refused, one line, exit 2, nothing left there."""
    bomb = make_package(tmp_path / "bomb.zip", zeros=64 * MIB)
    folder = tmp_path / "tmp"
    folder.mkdir()
    result = subprocess.run([sys.executable, "-m", "btunet", "info", str(bomb)], capture_output=True, text=True,
                            env={**os.environ, "TMPDIR": str(folder)}, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("btunet: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "bomb.zip" in result.stderr and CHECKPOINT in result.stderr
    assert list(folder.iterdir()) == []


# --------------------------------------------------------------------------- genuine packages

def test_a_large_genuine_checkpoint_passes_the_ratio_check(tmp_path, tmpdir_env):
    torch.manual_seed(0)
    net = create_model("unet", base_filters=64).eval()  # ~20 MiB of float32 weights
    data = save_model(net, tmp_path / "big.safetensors").read_bytes()
    assert len(data) > RATIO_FREE_BYTES  # so the ratio bound applies to it
    package = make_package(tmp_path / "big.zip", data)
    loaded = load_model(package)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values(),
                                                  strict=True))
    assert list(tmpdir_env.iterdir()) == []


def test_a_package_loads_without_any_temporary_folder(tmp_path, monkeypatch, checkpoint_bytes):
    """Nothing goes to the temporary folder: a missing one (as a full or read-only one) changes nothing."""
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "does-not-exist"))
    package = make_package(tmp_path / "ok.zip", checkpoint_bytes)
    assert read_metadata(package)["kind"] == "model"
    assert load_model(package).name == "unet"


@pytest.fixture(scope="module")
def exported(image, tmp_path_factory):
    """A model, its checkpoint, and the same model exported as a zip and as a folder package."""
    from btunet.exporting.export import export
    folder = tmp_path_factory.mktemp("exported")
    model = settled("unet", 1, image)
    checkpoint = save_model(model, folder / "model.safetensors")
    return checkpoint, export(model, folder / "model.zip"), export(model, folder / "package")


@pytest.fixture(scope="module")
def image(sample):
    return tifffile.imread(sample[0][0])


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_an_exported_package_predicts_block_wise_like_its_checkpoint(exported, image, tmp_path, tmpdir_env,
                                                                     capsys, kind):
    import zarr
    checkpoint, zipped, folder = exported
    package = zipped if kind == "zip" else folder
    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(inputs / "cells.tif", image[:200, :300])
    results = {}
    for name, model in (("package", package), ("checkpoint", checkpoint)):
        out = tmp_path / name
        status, _, err = run(capsys, "predict", model, inputs, "--out", out, "--zarr", "--chunk", "128",
                             "--exact", "--device", "cpu", "--probabilities")
        assert status == 0, err
        results[name] = (zarr.open_array(str(out / "cells.zarr"))[:], zarr.open_array(str(out / "cells_prob.zarr"))[:])
    assert results["package"][1].shape == (200, 300)
    assert np.array_equal(results["package"][0], results["checkpoint"][0])
    assert np.array_equal(results["package"][1], results["checkpoint"][1])
    assert list(tmpdir_env.iterdir()) == []


def test_an_exported_package_works_in_the_block_wise_python_api(exported, image):
    from btunet.infer.chunked import predict_chunked
    checkpoint, zipped, _ = exported
    crop = image[:160, :160]
    from_package = predict_chunked(zipped, crop, chunks=64, depth=16, output="probabilities").compute()
    from_checkpoint = predict_chunked(checkpoint, crop, chunks=64, depth=16, output="probabilities").compute()
    assert from_package.shape == (160, 160) and np.array_equal(from_package, from_checkpoint)
