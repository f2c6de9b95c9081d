"""Hostile masks: truncated, 1-bit, NaN or fractional label files, and an unusable pixel budget.

Masks pass the integrity checks of images (a cut file is refused, never read as zeros), 1-bit
TIFFs read as the 0/1 pixels they hold, and labels that are no labels are refused naming the file.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

import btunet
from btunet.base.errors import BTUnetError
from btunet.io.imageio import UnreadableImage, inspect_image, max_plane_pixels, read_image, read_lazy, read_mask
from btunet.pipeline.data import load_sources

from .test_hostile_cli import FAST_TRAIN, assert_error, run, warnings_in


def square_mask(shape=(400, 400), dtype=np.uint8) -> np.ndarray:
    mask = np.zeros(shape, dtype)
    mask[..., shape[-2] // 4:shape[-2] // 2, shape[-1] // 4:shape[-1] // 2] = 1
    return mask


def write_cut(path, array, keep: int = 3000) -> None:
    """An uncompressed TIFF of ``array`` cut to its first ``keep`` bytes."""
    tifffile.imwrite(path, array)
    path.write_bytes(path.read_bytes()[:keep])


def write_pair(images, masks, name: str, mask: np.ndarray) -> None:
    rng = np.random.default_rng(len(name))
    images.mkdir(exist_ok=True)
    masks.mkdir(exist_ok=True)
    tifffile.imwrite(images / f"{name}.tif", (rng.random(mask.shape) * 200 + 100 * (mask > 0)).astype(np.uint8))
    tifffile.imwrite(masks / f"{name}.tif", mask)


# --------------------------------------------------------------------------- truncated masks

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, bool])
def test_a_truncated_mask_is_refused_not_read_as_zeros(dtype, tmp_path):
    path = tmp_path / "cut.tif"
    write_cut(path, square_mask(dtype=dtype))
    for read in (read_image, read_mask, read_lazy):
        with pytest.raises(UnreadableImage, match="truncated or damaged"):
            read(path)


def test_the_command_line_skips_a_pair_with_a_truncated_mask_and_refuses_when_none_is_left(tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name in ("a", "b"):
        write_pair(images, masks, name, square_mask((64, 64)))
    write_cut(masks / "a.tif", square_mask())
    out = tmp_path / "m.safetensors"
    status, _, err = run(capsys, "finetune", "--images", images, "--masks", masks, "--out", out, *FAST_TRAIN)
    assert status == 0 and out.exists()
    (warning,) = warnings_in(err)
    assert "skipping the pair a" in warning and "truncated or damaged" in warning
    write_cut(masks / "b.tif", square_mask())
    status, _, err = run(capsys, "finetune", "--images", images, "--masks", masks,
                         "--out", tmp_path / "n.safetensors", *FAST_TRAIN)
    assert status == 2 and "none of the image/mask pairs could be read" in err and "Traceback" not in err
    assert not (tmp_path / "n.safetensors").exists()


def test_the_python_api_refuses_a_truncated_mask(tmp_path, fast_finetune_config):
    write_pair(tmp_path, tmp_path / "masks", "a", square_mask((64, 64)))
    write_cut(tmp_path / "masks" / "a.tif", square_mask())
    with pytest.raises(BTUnetError, match=r"a\.tif.*truncated or damaged"):  # one file: its own reason
        btunet.finetune(tmp_path / "a.tif", tmp_path / "masks" / "a.tif", fast_finetune_config)
    write_pair(tmp_path, tmp_path / "masks", "b", square_mask((64, 64)))
    with pytest.warns(UserWarning, match=r"skipping a\.tif.*truncated or damaged"):  # a folder: skipped
        assert [name for name, _ in load_sources(tmp_path / "masks", masks=True)] == ["b.tif"]


# --------------------------------------------------------------------------- 1-bit TIFFs

@pytest.mark.parametrize(("shape", "options"), [
    ((400, 400), {}),
    ((37, 53), {}),                          # rows padded to whole bytes
    ((3, 37, 53), {}),                       # a stack, read page by page
    ((40, 45), {"tile": (16, 16)}),
    ((40, 45), {"rowsperstrip": 5}),
    ((40, 45), {"compression": "zlib"}),
])
def test_one_bit_tiffs_read_as_written(shape, options, tmp_path):
    bits = np.random.default_rng(1).random(shape) > 0.5
    path = tmp_path / "bits.tif"
    tifffile.imwrite(path, bits, **options)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].bitspersample == 1  # really packed, 8 pixels a byte
    assert inspect_image(path) == shape
    for read in (read_image, read_mask, lambda p: np.asarray(read_lazy(p))):
        array = read(path)
        assert array.dtype == np.uint8 and np.array_equal(array, bits)
    if len(shape) == 3:
        assert np.array_equal(read_lazy(path)[1], bits[1]) and read_lazy(path).dtype == np.uint8


def test_a_truncated_one_bit_tiff_is_still_refused(tmp_path):
    path = tmp_path / "bits.tif"
    write_cut(path, square_mask(dtype=bool), keep=10_000)  # of 20,240 bytes
    with pytest.raises(UnreadableImage, match="declares 20,000 bytes"):
        read_image(path)


def test_one_bit_files_train_as_images_and_as_masks(tmp_path, fast_finetune_config, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    mask = square_mask((64, 64), bool)
    speckle = np.random.default_rng(2).random(mask.shape) > 0.9
    tifffile.imwrite(images / "a.tif", mask ^ speckle)  # a 1-bit image: the square under salt noise
    tifffile.imwrite(masks / "a.tif", mask)
    net = btunet.finetune(images / "a.tif", masks / "a.tif", fast_finetune_config)
    assert net.metadata["epochs"] == fast_finetune_config.epochs
    labels = btunet.predict(net, read_image(images / "a.tif"), device="cpu").labels
    assert labels.shape == mask.shape
    status, _, err = run(capsys, "finetune", "--images", images, "--masks", masks,
                         "--out", tmp_path / "m.safetensors", *FAST_TRAIN)
    assert status == 0 and warnings_in(err) == [] and (tmp_path / "m.safetensors").exists()


# --------------------------------------------------------------------------- labels that are no labels

@pytest.mark.parametrize(("bad", "message"), [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                              (0.5, "non-integer values (e.g. 0.5)")])
def test_a_mask_without_whole_number_labels_is_refused_naming_the_file(bad, message, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name in ("a", "b"):
        write_pair(images, masks, name, square_mask((64, 64), np.float32))
    mask = square_mask((64, 64), np.float32)
    mask[0, 0] = bad
    tifffile.imwrite(masks / "b.tif", mask)
    with pytest.raises(BTUnetError, match=re.escape(f"mask b.tif holds {message}")):
        read_mask(masks / "b.tif")
    out = tmp_path / "m.safetensors"
    status, _, err = run(capsys, "finetune", "--images", images, "--masks", masks, "--out", out, *FAST_TRAIN)
    assert_error(status, err, "mask b.tif", message)
    assert not out.exists()
    with pytest.raises(BTUnetError, match=re.escape(message)):  # the Python API: arrays and files alike
        btunet.finetune([read_image(images / "b.tif")], [mask], btunet.FinetuneConfig(device="cpu"))
    dense = btunet.FinetuneConfig(mask_mode="dense", n_classes=1, instances="auto", device="cpu")
    with pytest.raises(BTUnetError, match=re.escape(message)):
        btunet.finetune([images / "b.tif"], [masks / "b.tif"], dense)


def test_a_float_mask_of_whole_numbers_is_a_mask(tmp_path):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, square_mask(dtype=np.float32) * 3)
    assert np.array_equal(read_mask(path), square_mask() * 3)


# --------------------------------------------------------------------------- the pixel budget

@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "0.5", "lots"])
def test_an_unusable_pixel_budget_is_refused_in_one_line(value, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BTUNET_MAX_PLANE_PIXELS", value)
    with pytest.raises(BTUnetError, match="BTUNET_MAX_PLANE_PIXELS must be a finite positive number"):
        max_plane_pixels()
    tifffile.imwrite(tmp_path / "a.tif", square_mask((16, 16)))
    status, stdout, err = run(capsys, "evaluate", "--pred", tmp_path, "--truth", tmp_path)
    assert_error(status, err, "BTUNET_MAX_PLANE_PIXELS", repr(value))
    assert stdout == ""
