"""``evaluate`` conventions: exact scores without smoothing, empty ground truth, label-only inputs,
and command-line messages that name the side at fault."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile

from btunet import evaluate
from btunet.base.errors import BTUnetError
from btunet.labels.metrics import class_dice, mean_scores

from .test_hostile_cli import assert_error, run, warnings_in, write_huge_tiff


def square(shape=(20, 20), value: int = 1) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[5:10, 5:10] = value
    return labels


def test_scores_are_exact_without_smoothing():
    truth, pred = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    truth[0, :3] = 1
    pred[0, 1:4] = 1  # tp 2, fp 1, fn 1
    s = evaluate(pred, truth)
    assert s["dice"] == pytest.approx(4 / 6) and s["iou"] == pytest.approx(2 / 4)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)


def test_empty_truth_and_empty_prediction_is_perfect_with_undefined_precision_and_recall():
    empty = np.zeros((20, 20), np.uint8)
    s = evaluate(empty, empty, objects=True)
    assert s["dice"] == s["iou"] == s["object_f1"] == s["ap"] == 1.0
    assert math.isnan(s["precision"]) and math.isnan(s["recall"])


def test_one_false_pixel_on_an_empty_truth_scores_zero_not_half():
    empty, pred = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    pred[3, 3] = 1
    s = evaluate(pred, empty, objects=True)
    assert s["dice"] == s["iou"] == s["precision"] == s["object_f1"] == s["ap"] == 0.0
    assert math.isnan(s["recall"])  # no true pixel to recall
    missed = evaluate(empty, square())
    assert missed["dice"] == missed["recall"] == 0.0 and math.isnan(missed["precision"])


def test_means_leave_out_undefined_scores_but_keep_false_positives_on_empty_images():
    false_positive = np.zeros((20, 20), np.uint8)
    false_positive[0, 0] = 1
    rows = [evaluate(square(), square()), evaluate(false_positive, np.zeros((20, 20), np.uint8))]
    mean = mean_scores(rows)
    assert mean["dice"] == pytest.approx(0.5)   # the empty image counts, with Dice 0
    assert mean["recall"] == pytest.approx(1.0)  # recall of the empty truth is undefined: left out
    assert mean["precision"] == pytest.approx(0.5)
    assert math.isnan(mean_scores([evaluate(np.zeros((4, 4)), np.zeros((4, 4)))])["recall"])


def test_class_dice_follows_the_same_convention():
    truth, pred = square(value=1), square(value=1)
    pred[0, 0] = 2  # class 2 predicted where the truth has none
    assert class_dice(pred, truth) == {"dice_class_1": 1.0, "dice_class_2": 0.0}
    assert class_dice(truth, truth, classes=[1, 3])["dice_class_3"] == 1.0  # absent from both


@pytest.mark.parametrize("bad", [0.3, np.nan, np.inf])
def test_predictions_and_truths_must_hold_labels(bad):
    pred = square().astype(np.float32)
    pred[0, 0] = bad
    for kwargs in ({}, {"classes": True}):
        with pytest.raises(BTUnetError, match="the prediction holds"):
            evaluate(pred, square(), **kwargs)
        with pytest.raises(BTUnetError, match="the ground truth holds"):
            evaluate(square(), pred, **kwargs)
    assert evaluate(square().astype(np.float32), square())["dice"] == 1.0  # whole numbers stored as floats


# --------------------------------------------------------------------------- the command line

def folders(tmp_path):
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    return truth, pred


def test_a_missing_prediction_is_named_as_the_missing_side(tmp_path, capsys):
    truth, pred = folders(tmp_path)
    for name in ("a", "b"):
        tifffile.imwrite(truth / f"{name}.tif", square())
    tifffile.imwrite(pred / "a.tif", square())
    status, stdout, err = run(capsys, "evaluate", "--pred", pred, "--truth", truth)
    line = assert_error(status, err, "no prediction with the same name", "b.tif")
    assert "mask" not in line and stdout == ""


def test_empty_truth_in_the_table_and_in_json(tmp_path, capsys):
    truth, pred = folders(tmp_path)
    tifffile.imwrite(truth / "a.tif", square())
    tifffile.imwrite(pred / "a.tif", square())
    tifffile.imwrite(truth / "empty.tif", np.zeros((20, 20), np.uint8))
    false_positive = np.zeros((20, 20), np.uint8)
    false_positive[0, 0] = 1
    tifffile.imwrite(pred / "empty.tif", false_positive)
    status, stdout, err = run(capsys, "evaluate", "--pred", pred, "--truth", truth, "--json")
    assert status == 0 and "NaN" not in stdout and warnings_in(err) == []
    report = json.loads(stdout)
    empty = report["images"][1]
    assert empty["name"] == "empty.tif" and empty["dice"] == 0.0 and empty["recall"] is None
    assert report["mean"]["dice"] == pytest.approx(0.5) and report["mean"]["recall"] == 1.0
    status, stdout, _ = run(capsys, "evaluate", "--pred", pred, "--truth", truth)
    row = next(s for s in stdout.splitlines() if s.startswith("empty.tif")).split()
    assert status == 0 and "nan" not in stdout and row[1:5] == ["0.0000", "0.0000", "0.0000", "n/a"]


@pytest.mark.parametrize("flags", [["--classes"], []])
def test_float_predictions_are_refused_naming_the_file(flags, tmp_path, capsys):
    truth, pred = folders(tmp_path)
    tifffile.imwrite(truth / "a.tif", square())
    tifffile.imwrite(pred / "a.tif", square().astype(np.float32) * 0.7)  # probabilities, not classes
    status, stdout, err = run(capsys, "evaluate", "--pred", pred, "--truth", truth, *flags)
    assert_error(status, err, "prediction a.tif", "non-integer values (e.g. 0.7)")
    assert stdout == ""


def test_a_label_image_above_the_budget_gets_advice_that_fits_evaluate(tmp_path, capsys):
    truth, pred = folders(tmp_path)
    write_huge_tiff(truth / "big.tif", side=9000)
    write_huge_tiff(pred / "big.tif", side=9000)
    status, stdout, err = run(capsys, "evaluate", "--pred", pred, "--truth", truth)
    (warning,) = warnings_in(err)
    assert "big.tif has planes of 9000 x 9000 pixels" in warning and "crop it" in warning
    assert "--zarr" not in warning and "predict" not in warning
    assert status == 2 and stdout == ""
