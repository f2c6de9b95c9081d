"""The threshold chosen on validation pixels: the choice itself, and what a fine-tune saves."""
import copy
import dataclasses

import numpy as np
import pytest
import tifffile

from btunet import FinetuneConfig, finetune, load_model, save_model
from btunet.cli.commands import main
from btunet.pipeline.thresholds import CANDIDATES, MIN_GAIN, choose_threshold, describe_threshold, dice_at


def disk_probability(fat: float, softness: float = 2.0):
    """(probability, truth) of a disk of radius 20 whose probability crosses 0.5 ``fat`` px
    outside the true edge (a model whose objects come out too fat or too thin) and falls from 1
    to 0 over about 4 x ``softness`` px."""
    yy, xx = np.mgrid[:96, :96]
    r = np.hypot(yy - 48, xx - 48)
    prob = 1 / (1 + np.exp((r - 20 - fat) / softness))
    return prob.ravel(), (r <= 20).ravel()


def test_a_fat_model_gets_a_higher_threshold_and_better_dice():
    prob, truth = disk_probability(fat=2.0)
    chosen, record = choose_threshold(prob, truth, 0.5)
    assert chosen > 0.6 and chosen in CANDIDATES
    assert dice_at(prob, truth, chosen) >= dice_at(prob, truth, 0.5) + MIN_GAIN
    assert record["chosen"] == chosen and record["configured"] == 0.5
    assert record["validation_dice"] > record["validation_dice_configured"]
    assert set(record["candidates"]) == {f"{t:.2f}" for t in CANDIDATES} and record["pixels"] == truth.size


def test_a_thin_model_gets_a_lower_threshold():
    chosen, _ = choose_threshold(*disk_probability(fat=-2.0), 0.5)
    assert chosen < 0.4


def test_a_calibrated_model_keeps_the_configured_threshold():
    prob, truth = disk_probability(fat=0.0, softness=0.3)
    for configured in (0.5, 0.45):
        chosen, record = choose_threshold(prob, truth, configured)
        assert chosen == configured and record["validation_dice"] == record["validation_dice_configured"]


@pytest.fixture(scope="module")
def dense_run(sample):
    """A few steps on two full-size BBBC007 images with masks: enough pixels for validation blocks."""
    cfg = FinetuneConfig(mask_mode="dense", epochs=1, steps_per_epoch=2, batch_size=4, patch_size=64, device="cpu")
    images, masks = [p[:2] for p in sample]
    return cfg, images, masks, finetune(images, masks, cfg)


def test_dense_fine_tune_saves_the_tuned_threshold(dense_run, tmp_path):
    cfg, images, masks, net = dense_run
    record = net.metadata["threshold_tuning"]
    assert net.metadata["threshold"] == record["chosen"]
    assert record["pixels"] == net.metadata["trained_on"]["validation_pixels"] > 0
    best = max(record["candidates"].values())
    if record["chosen"] != cfg.threshold:  # moved only for a clear gain, to the best candidate
        assert record["validation_dice"] == best >= record["validation_dice_configured"] + MIN_GAIN - 1e-4
    else:
        assert best < record["validation_dice_configured"] + MIN_GAIN + 1e-4
    loaded = load_model(save_model(net, tmp_path / "m.safetensors"))
    assert loaded.metadata["threshold"] == record["chosen"]
    assert loaded.metadata["threshold_tuning"]["candidates"] == record["candidates"]


def test_tuning_off_keeps_the_configured_threshold(dense_run):
    cfg, images, masks, _ = dense_run
    net = finetune(images, masks, dataclasses.replace(cfg, threshold=0.55, tune_threshold=False))
    assert net.metadata["threshold"] == 0.55 and "threshold_tuning" not in net.metadata


def test_strokes_are_not_used_to_tune(small_sample, fast_finetune_config):
    mask = tifffile.imread(sorted((small_sample / "masks").iterdir())[0])
    strokes = np.zeros(mask.shape, np.uint8)
    strokes[::6][(mask[::6] > 0)] = 2
    strokes[::6][(mask[::6] == 0)] = 1
    image = tifffile.imread(sorted((small_sample / "images").iterdir())[0])
    cfg = dataclasses.replace(fast_finetune_config, mask_mode="sparse", threshold=0.45, pseudo_labels="none")
    net = finetune(image, strokes, cfg)
    assert net.metadata["threshold"] == 0.45 and "threshold_tuning" not in net.metadata


def test_a_continued_model_keeps_its_threshold(dense_run):
    cfg, images, masks, trained = dense_run
    net = copy.deepcopy(trained)  # a continuation trains in place
    net.metadata = {**net.metadata, "threshold": 0.65}
    more = finetune(images[:1], masks[:1], dataclasses.replace(cfg.continuation(), epochs=1, steps_per_epoch=1),
                    model=net)
    assert more.metadata["threshold"] == 0.65
    assert more.metadata["finetune_config"]["threshold"] == 0.65  # the run itself used it
    assert cfg.threshold == 0.5  # the caller's config is not changed


def test_the_choice_is_described_in_one_line(dense_run):
    meta = dense_run[3].metadata
    line = describe_threshold(meta)
    assert line.startswith(f"threshold {meta['threshold']:g}") and "validation pixels" in line
    moved = {**meta, "threshold_tuning": {**meta["threshold_tuning"], "chosen": 0.7, "validation_dice": 0.95,
                                          "validation_dice_configured": 0.93}}
    assert describe_threshold(moved).startswith("threshold 0.7, chosen on")
    assert describe_threshold({"threshold": 0.5}) is None


def test_cli_threshold_is_saved_as_given(small_sample, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    args = ["finetune", "--images", str(small_sample / "images"), "--masks", str(small_sample / "masks"),
            "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
            "--patch-size", "64", "--device", "cpu", "--threads", "1"]
    assert main(args + ["--threshold", "0.6"]) == 0
    meta = load_model(out).metadata
    assert meta["threshold"] == 0.6 and "threshold_tuning" not in meta
    tuned = tmp_path / "tuned.safetensors"
    capsys.readouterr()
    assert main(args[:6] + [str(tuned)] + args[7:]) == 0  # no --threshold: tried on the validation pixels
    meta = load_model(tuned).metadata
    assert f"threshold {meta['threshold']:g}" in capsys.readouterr().out and "threshold_tuning" in meta
    assert main(args + ["--threshold", "1.5", "--overwrite"]) == 2
    assert "--threshold must be between 0 and 1" in capsys.readouterr().err
    assert load_model(out).metadata["threshold"] == 0.6  # the earlier file is untouched
