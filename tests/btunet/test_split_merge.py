"""Object counts, splits and merges (``btunet.labels.metrics.split_merge_counts``) on hand-made label images,
and their place in ``evaluate`` and ``btunet evaluate``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from btunet.cli.commands import main
from btunet.labels.metrics import evaluate, mean_scores, object_scores, split_merge_counts


def rods() -> np.ndarray:
    """Three rods end to end in one channel and one round cell apart: 4 true objects."""
    truth = np.zeros((30, 80), np.int32)
    truth[5:11, 2:22], truth[5:11, 22:42], truth[5:11, 42:62] = 1, 2, 3
    truth[18:28, 30:40] = 4
    return truth


def test_a_cell_cut_in_two_is_one_split():
    truth = rods()
    pred = truth.copy()
    pred[5:11, 12:22] = 7                                   # rod 1 given two ids
    s = split_merge_counts(pred, truth)
    assert s == {"n_pred": 5.0, "n_true": 4.0, "splits": 1.0, "merges": 0.0, "count_error": 0.25}


def test_two_cells_under_one_id_are_one_merge_and_a_fragment_inside_a_cell_a_split():
    truth = rods()
    pred = truth.copy()
    pred[pred == 3] = 2                                     # rods 2 and 3 under one id
    pred[20:23, 33:36] = 9                                  # a small id nested inside cell 4
    s = split_merge_counts(pred, truth)
    assert (s["splits"], s["merges"], s["n_pred"]) == (1.0, 1.0, 4.0)
    assert s["count_error"] == 0.0                          # the count is right, the ids are not


def test_a_neighbour_grazing_an_edge_is_neither():
    truth = rods()
    pred = truth.copy()
    pred[5:11, 20:22] = 2                                   # rod 2 reaches 2 px into rod 1
    s = split_merge_counts(pred, truth)
    assert (s["splits"], s["merges"], s["count_error"]) == (0.0, 0.0, 0.0)


def test_a_cell_cut_in_three_counts_once_and_misses_count_in_the_error():
    truth = rods()
    pred = np.zeros_like(truth)
    pred[5:11, 2:9], pred[5:11, 9:16], pred[5:11, 16:22] = 1, 2, 3   # rod 1 in thirds, the rest missed
    s = split_merge_counts(pred, truth)
    assert (s["splits"], s["merges"], s["n_pred"]) == (1.0, 0.0, 3.0)
    assert s["count_error"] == pytest.approx(1 / 4)


def test_volumes_and_empty_truth():
    truth = np.zeros((6, 20, 20), np.int32)
    truth[1:5, 4:16, 4:16] = 1
    pred = truth.copy()
    pred[3:5] *= 2                                          # the lower planes get another id
    assert split_merge_counts(pred, truth)["splits"] == 1.0
    empty = split_merge_counts(pred, np.zeros_like(truth))
    assert empty["n_pred"] == 2.0 and np.isnan(empty["count_error"])


def test_object_scores_and_evaluate_carry_the_counts():
    truth = rods()
    pred = truth.copy()
    pred[pred == 3] = 2
    s = object_scores(pred, truth)
    assert s["merges"] == 1.0 and s["object_f1"] == pytest.approx(2 * 2 / 7)
    e = evaluate(pred, truth, objects=True)
    assert {"n_pred", "n_true", "splits", "merges", "count_error"} <= set(e)
    assert "merges" not in evaluate(pred, truth, classes=True)
    means = mean_scores([e, evaluate(truth, truth, objects=True)])
    assert means["merges"] == 0.5 and means["count_error"] == pytest.approx(0.125)


def test_cli_evaluate_prints_counts(tmp_path, capsys):
    truth = rods()
    pred = truth.copy()
    pred[5:11, 12:22] = 7
    for folder, image in (("pred", pred), ("truth", truth)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", image)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mean"]["splits"] == 1 and out["mean"]["count_error"] == 0.25
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert "splits" in header and "merges" in header and "count_error" in header
    assert "      5.0" in row                                  # 5 predicted ids, printed as a count
