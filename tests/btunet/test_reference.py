"""Saying when an image lies outside what a model knows: the intensity reference of its training
images (kept at fine-tuning, checked in the checkpoint) and the warning of predict / `btunet predict`."""
from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import tifffile

import btunet
from btunet import CheckpointError, OutsideReferenceWarning, load_model, read_metadata, save_model
from btunet.cli.commands import main
from btunet.infer.predict import iter_predict, predict_to_tiff
from btunet.pipeline.planes import plane_layout
from btunet.pipeline.reference import QUANTILES, TOLERANCE, intensity_quantiles, outside_reference

UNLIKE = "intensities unlike the training images"


def quantiles_of(image) -> np.ndarray:
    return np.array(intensity_quantiles(image, plane_layout(image, 1)))


@pytest.fixture(scope="module")
def training(sample):
    """Two shipped BBBC007 images with their masks: the first has few nuclei, the second more."""
    images, masks = sample
    return [tifffile.imread(p) for p in images[:2]], [tifffile.imread(p) for p in masks[:2]]


@pytest.fixture(scope="module")
def model(training, fast_finetune_config):
    """A small real fine-tune on the two images."""
    return btunet.finetune(*training, fast_finetune_config)


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    return save_model(model, tmp_path_factory.mktemp("reference") / "model.safetensors")


def recorded(call):
    """(result, the OutsideReferenceWarnings ``call`` gave)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [w for w in caught if issubclass(w.category, OutsideReferenceWarning)]


def test_reference_covers_every_training_image(model, model_file, training):
    reference = model.metadata["intensity_reference"]
    assert reference["quantiles"] == list(QUANTILES)
    rows = np.array([quantiles_of(image) for image in training[0]])
    assert not np.allclose(rows[0], rows[1])  # two different images: the band is a real range
    np.testing.assert_allclose(reference["low"], rows.min(axis=0), atol=1e-4)
    np.testing.assert_allclose(reference["high"], rows.max(axis=0), atol=1e-4)
    # the file keeps it, typed and checked
    assert read_metadata(model_file)["intensity_reference"] == reference
    typed = btunet.inspect_checkpoint(model_file).intensity_reference
    assert typed.quantiles == tuple(QUANTILES) and typed.low == tuple(reference["low"])


def test_training_images_do_not_warn(model_file, training):
    for image in training[0]:
        result, caught = recorded(lambda image=image: btunet.predict(model_file, image, device="cpu"))
        assert caught == [] and result.outside_reference is None


@pytest.mark.parametrize("make", ["inverted", "bright canvas"])
def test_an_unlike_image_warns_once(model_file, training, make):
    image = training[0][0]
    if make == "inverted":
        unlike = 255 - image
    else:  # the image inside a large canvas of bright, constant background
        unlike = np.full((3 * image.shape[0], 3 * image.shape[1]), 255, np.uint8)
        unlike[:image.shape[0], :image.shape[1]] = image
    result, caught = recorded(lambda: btunet.predict(model_file, unlike, device="cpu"))
    assert len(caught) == 1
    assert str(caught[0].message) == result.outside_reference
    assert result.outside_reference.startswith(UNLIKE) and "train on an image like it" in result.outside_reference
    assert caught[0].filename == __file__  # stacklevel: the caller's line, not the engine's
    assert result.labels.shape == unlike.shape  # predicted all the same


def test_streaming_paths_warn_once_per_image(model_file, training, tmp_path):
    stack = np.stack([255 - training[0][0][:128, :128]] * 3)
    items, caught = recorded(lambda: list(iter_predict(model_file, stack, device="cpu")))
    assert len(items) == 3 and len(caught) == 1 and str(caught[0].message).startswith(UNLIKE)
    reason, caught = recorded(lambda: predict_to_tiff(model_file, stack, tmp_path / "labels.tif", device="cpu"))
    assert len(caught) == 1 and reason == str(caught[0].message)
    assert tifffile.imread(tmp_path / "labels.tif").shape == stack.shape
    reason, caught = recorded(lambda: predict_to_tiff(model_file, training[0][0], tmp_path / "same.tif",
                                                      device="cpu"))
    assert reason is None and caught == []


def test_the_tolerance_is_a_tenth_of_the_range(training):
    image = training[0][1]
    median = float(quantiles_of(image)[2])

    def band(offset):
        return {"quantiles": [50], "low": [median + offset], "high": [median + offset]}
    assert TOLERANCE == 0.1
    assert outside_reference(band(0.09), image) is None
    assert outside_reference(band(-0.09), image) is None
    reason = outside_reference(band(0.11), image)
    assert reason.startswith(f"{UNLIKE} (median at {median:.2f} of the range")
    assert outside_reference(None, image) is None


def test_a_large_stack_is_sampled_not_read_whole():
    class CountingStack:
        def __init__(self, data):
            self.data, self.reads = data, []
            self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

        def __getitem__(self, index):
            self.reads.append(index)
            return self.data[index]

    stack = CountingStack(np.random.default_rng(0).integers(0, 255, (60, 32, 32), dtype=np.uint8))
    layout = plane_layout(stack, 1)
    stack.reads.clear()
    intensity_quantiles(stack, layout)
    assert len(stack.reads) == 16 and all(len(i) == 1 for i in stack.reads)


def test_cli_warns_one_line_naming_the_file_and_info_shows_the_reference(model_file, training, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "same.tif", training[0][0])
    tifffile.imwrite(images / "unlike.tif", 255 - training[0][0])
    out = tmp_path / "out"
    assert main(["predict", str(model_file), str(images), "--out", str(out), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "btunet: warning:" in line]
    assert len(lines) == 1, err
    assert lines[0].split("btunet: warning: ", 1)[1].startswith(f"unlike.tif: {UNLIKE} (")
    assert sorted(p.name for p in out.iterdir()) == ["same.tif", "unlike.tif"]

    assert main(["info", str(model_file)]) == 0
    text = capsys.readouterr().out
    reference = read_metadata(model_file)["intensity_reference"]
    assert json.loads(text)["intensity_reference"] == reference
    line = next(line for line in text.splitlines() if '"intensity_reference"' in line)
    assert json.loads("{" + line.strip().rstrip(",") + "}")["intensity_reference"] == reference  # one line


def test_block_wise_prediction_warns_the_same(model_file, training, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "same.tif", training[0][0])
    tifffile.imwrite(images / "unlike.tif", 255 - training[0][0])
    assert main(["predict", str(model_file), str(images), "--out", str(tmp_path / "out"), "--zarr",
                 "--chunk", "256", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "btunet: warning:" in line]
    assert len(lines) == 1 and f"unlike.tif: {UNLIKE} (" in lines[0], err


def rewrite_metadata(path, out, change):
    """A copy of the checkpoint at ``path`` whose btunet metadata went through ``change(dict)``."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    meta = json.loads(header["__metadata__"]["btunet"])
    change(meta)
    header["__metadata__"]["btunet"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    out.write_bytes(len(raw).to_bytes(8, "little") + raw + blob[8 + n:])
    return out


def set_reference(key, value):
    def change(meta):
        meta["intensity_reference"][key] = value
    return change


@pytest.mark.parametrize("change, says", [
    (set_reference("low", [0.0, 0.0, 0.5, 0.1, 0.3]), r"intensity_reference\.low\[2\] \(0\.5\) is above"),
    (set_reference("high", [0.1, 0.2, float("nan"), 0.4, 0.9]), r"intensity_reference\.high\[2\] must be a finite"),
    (set_reference("low", [0.0, 0.0, 0.0]), r"intensity_reference\.low has 3 values but .* has 5"),
    (set_reference("quantiles", [5, 50, 25, 75, 95]), r"intensity_reference\.quantiles must rise"),
    (set_reference("extra", 1), r"intensity_reference\.extra is not a setting"),
    (lambda meta: meta.update(intensity_reference=[0.1, 0.2]), "intensity_reference must be a JSON object"),
])
def test_a_tampered_reference_is_refused(model_file, tmp_path, change, says, capsys):
    path = rewrite_metadata(model_file, tmp_path / "tampered.safetensors", change)
    with pytest.raises(CheckpointError, match=says) as caught:
        load_model(path)
    assert "\n" not in str(caught.value) and "tampered.safetensors" in str(caught.value)
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.uint8))
    assert main(["predict", str(path), str(image), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "intensity_reference" in err, err


def test_an_old_checkpoint_without_a_reference_never_warns(model_file, training, tmp_path):
    path = rewrite_metadata(model_file, tmp_path / "old.safetensors", lambda meta: meta.pop("intensity_reference"))
    old = load_model(path)
    assert btunet.model_metadata(old).intensity_reference is None
    result, caught = recorded(lambda: btunet.predict(old, 255 - training[0][0], device="cpu"))
    assert caught == [] and result.outside_reference is None


def test_a_continued_fine_tune_widens_the_band(model, training, sample, fast_finetune_config):
    images, masks = sample
    other, other_mask = tifffile.imread(images[12]), tifffile.imread(masks[12])
    before = model.metadata["intensity_reference"]
    new = quantiles_of(other)
    assert (new > np.array(before["high"]) + 1e-3).any()  # an image the band did not cover
    cfg = fast_finetune_config.continuation()
    cfg.epochs = 1
    continued = btunet.finetune([other], [other_mask], cfg, model=copy.deepcopy(model))
    after = continued.metadata["intensity_reference"]
    np.testing.assert_allclose(after["low"], np.minimum(before["low"], new), atol=1e-4)
    np.testing.assert_allclose(after["high"], np.maximum(before["high"], new), atol=1e-4)
    for image in [*training[0], other]:  # every image trained on, the first run's included
        assert outside_reference(after, image) is None
    # a model trained before btunet kept a reference: its first images are unknown, so none
    old = copy.deepcopy(model)
    old.metadata = {k: v for k, v in old.metadata.items() if k != "intensity_reference"}
    assert btunet.finetune([other], [other_mask], cfg, model=old).metadata["intensity_reference"] is None


def test_only_the_percentiles_up_to_the_median_are_checked(training):
    """The upper percentiles follow how much of the field objects cover: a crowded sibling of the
    training image must not warn for them, however far they lie."""
    image = training[0][1]
    values = [float(v) for v in quantiles_of(image)]
    far_above = {"quantiles": [5, 25, 50, 75, 95], "low": values[:3] + [v - 0.5 for v in values[3:]],
                 "high": values[:3] + [v - 0.5 for v in values[3:]]}
    assert outside_reference(far_above, image) is None
    far_below = {**far_above, "low": [values[0] + 0.5, *values[1:]], "high": [values[0] + 0.5, *values[1:]]}
    assert outside_reference(far_below, image).startswith(f"{UNLIKE} (5th percentile at")
