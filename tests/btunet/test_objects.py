"""Touching objects: boundary targets, the boundary watershed, object metrics and the boundary head."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from btunet import FinetuneConfig, finetune, predict
from btunet.core.checkpoint import load_model, read_metadata, save_model
from btunet.labels.annotations import boundary_target
from btunet.labels.heads import head_of
from btunet.labels.instances import (
    MIN_SIZE,
    boundary_instances,
    distance_instances,
    drop_small,
    object_sizes,
    size_floor,
)
from btunet.labels.metrics import AP_THRESHOLDS, evaluate, object_f1, object_scores


def naive_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Reference: every IoU from pixel masks, optimal (Hungarian) matching at every threshold."""
    p_ids = [i for i in np.unique(pred) if i]
    t_ids = [i for i in np.unique(truth) if i]
    iou = np.zeros((len(p_ids), len(t_ids)))
    for a, i in enumerate(p_ids):
        for b, j in enumerate(t_ids):
            inter = np.logical_and(pred == i, truth == j).sum()
            iou[a, b] = inter / np.logical_or(pred == i, truth == j).sum()
    aps, f1, matched = [], None, None
    for t in AP_THRESHOLDS:
        rows, cols = linear_sum_assignment(-((iou > t) * 1.0) - iou * 1e-6) if iou.size else ([], [])
        good = [iou[r, c] for r, c in zip(rows, cols, strict=True) if iou[r, c] > t]
        tp = len(good)
        aps.append(tp / (len(p_ids) + len(t_ids) - tp))
        if t == 0.5:
            f1 = 2 * tp / (len(p_ids) + len(t_ids))
            matched = float(np.mean(good)) if good else 0.0
    return {"object_f1": f1, "mean_matched_iou": matched, "ap": float(np.mean(aps))}


def squares_case():
    truth = np.zeros((40, 60), np.int32)
    pred = np.zeros_like(truth)
    truth[2:12, 2:12], pred[2:12, 2:12] = 1, 5            # exact: IoU 1
    truth[2:12, 20:30], pred[2:12, 22:32] = 2, 7          # shifted by 2: IoU 80 / 120
    truth[20:30, 2:12] = 3                                 # missed
    pred[20:30, 40:50] = 9                                 # a false object
    return pred, truth


def test_object_scores_exact_values():
    pred, truth = squares_case()
    s = object_scores(pred, truth)
    assert s["object_f1"] == pytest.approx(4 / 6)
    assert s["mean_matched_iou"] == pytest.approx((1 + 80 / 120) / 2)
    # TP = 2 up to t = 0.65 (AP 2/4), TP = 1 from 0.7 (AP 1/5)
    assert s["ap"] == pytest.approx((4 * 0.5 + 6 * 0.2) / 10)
    assert s["ap50"] == pytest.approx(0.5) and s["ap75"] == pytest.approx(0.2)
    assert object_f1(pred, truth) == pytest.approx(4 / 6)
    assert object_scores(np.zeros((4, 4)), np.zeros((4, 4)))["ap"] == 1.0
    assert object_scores(np.zeros((4, 4), int), truth[:4, :4] * 0 + 1)["ap"] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_object_scores_match_a_naive_reference(seed):
    rng = np.random.default_rng(seed)
    truth = np.zeros((64, 64), np.int32)
    pred = np.zeros_like(truth)
    for k in range(1, 9):
        y, x, h, w = rng.integers(0, 52), rng.integers(0, 52), rng.integers(4, 12), rng.integers(4, 12)
        truth[y:y + h, x:x + w] = k
        if rng.random() < 0.8:  # a jittered copy, sometimes resized
            dy, dx, dh = rng.integers(-3, 4), rng.integers(-3, 4), rng.integers(-2, 3)
            pred[max(0, y + dy):y + dy + h + dh, max(0, x + dx):x + dx + w] = 10 + k
    got, want = object_scores(pred, truth), naive_scores(pred, truth)
    for key in want:
        assert got[key] == pytest.approx(want[key]), key


def test_evaluate_reports_object_scores():
    pred, truth = squares_case()
    s = evaluate(pred, truth, objects=True)
    assert {"dice", "object_f1", "mean_matched_iou", "ap", "ap50", "ap75"} <= set(s)


def test_boundary_target_is_thin_and_between_ids():
    labels = np.zeros((12, 20), np.int32)
    labels[2:10, 2:10], labels[2:10, 10:18] = 1, 2        # two touching squares
    b = boundary_target(labels)
    assert b[5, 9] == 1 and b[5, 10] == 1                  # both sides of the contact line
    assert b[5, 5] == 0 and b[0, 0] == 0                   # inside, background
    assert b[2, 5] == 1 and b[5, 2] == 1                   # the outer border
    assert b[labels == 0].sum() == 0                       # inner: never on background
    assert b.sum() == (8 * 8 - 6 * 6) * 2


def touching_rods():
    """Two long rods side by side: one rectangle to the distance transform."""
    truth = np.zeros((40, 60), np.int32)
    truth[10:18, 5:55], truth[18:26, 5:55] = 1, 2
    return truth


def test_boundary_watershed_separates_touching_objects():
    truth = touching_rods()
    obj = (truth > 0).astype(np.float32)
    boundary = boundary_target(truth)
    by_boundary = boundary_instances(obj, boundary)
    by_distance = distance_instances(truth > 0)
    assert object_f1(by_boundary, truth) == 1.0
    assert np.array_equal(by_boundary > 0, truth > 0)
    assert object_f1(by_distance, truth) < 1.0             # merged, or cut across the rods


@pytest.fixture(scope="module")
def boundary_model(small_sample, fast_finetune_config):
    import dataclasses

    import tifffile
    images = sorted((small_sample / "images").glob("*.tif"))
    masks = sorted((small_sample / "masks").glob("*.tif"))
    cfg = dataclasses.replace(fast_finetune_config, epochs=3, steps_per_epoch=5, instances="auto")
    net = finetune([tifffile.imread(p) for p in images[:2]], [tifffile.imread(p) for p in masks[:2]], cfg)
    return net, tifffile.imread(images[2])


def test_instance_masks_train_a_boundary_head(boundary_model, tmp_path):
    net, image = boundary_model
    assert net.metadata["instances"] == "boundary" and net.config["out_channels"] == 2
    path = save_model(net, tmp_path / "m.safetensors")
    assert read_metadata(path)["instances"] == "boundary"
    again = load_model(path)
    assert head_of(again).boundary
    assert again.metadata["min_size"] == net.metadata["min_size"] >= MIN_SIZE
    result = predict(again, image, instances=True, device="cpu", fast=False, min_size=0)
    assert result.labels.dtype == np.int32
    binary = predict(again, image, device="cpu", fast=False).labels
    assert np.array_equal(result.labels > 0, binary > 0)   # with min_size 0: the object mask exactly
    floored = predict(again, image, instances=True, device="cpu", fast=False).labels
    assert np.all(binary[floored > 0] > 0)                 # the model's floor only removes objects
    assert np.bincount(floored.ravel())[1:].min() >= again.metadata["min_size"]
    assert not predict(again, image, instances=True, device="cpu", fast=False, min_size=image.size).labels.any()


def test_model_floor_is_a_tenth_of_the_median_training_object(boundary_model, small_sample):
    import tifffile
    net, _ = boundary_model
    masks = [tifffile.imread(p) for p in sorted((small_sample / "masks").glob("*.tif"))[:2]]
    sizes = np.concatenate([object_sizes(m) for m in masks])
    assert net.metadata["min_size"] == max(MIN_SIZE, int(0.1 * np.median(sizes)))


def test_drop_small_removes_specks_and_renumbers():
    labels = np.zeros((30, 30), np.int32)
    labels[0:10, 0:10] = 4      # 100 px
    labels[20, 20] = 7          # a speck
    labels[12:16, 12:16] = 9    # 16 px
    out = drop_small(labels.copy(), 16)
    assert sorted(np.unique(out)) == [0, 1, 2] and out.dtype == np.int32
    assert (out > 0).sum() == 116 and out[20, 20] == 0
    assert np.array_equal(drop_small(labels.copy(), 0), labels)
    assert not drop_small(labels.copy(), 101).any()
    speck = np.zeros((20, 20), bool)
    speck[2:8, 2:8], speck[15, 15] = True, True
    assert distance_instances(speck).max() == 1 and distance_instances(speck, min_size=0).max() == 2


def test_object_sizes_count_blobs_of_a_binary_mask_and_instances_of_ids():
    binary = np.zeros((20, 20), np.uint8)
    binary[0:4, 0:4], binary[10:12, 10:15] = 1, 1
    assert sorted(object_sizes(binary)) == [10, 16]
    touching = np.zeros((10, 10), np.int32)
    touching[0:5, 0:5], touching[0:5, 5:8] = 1, 2   # touching instances: two objects
    assert sorted(object_sizes(touching)) == [15, 25]
    assert size_floor([]) == MIN_SIZE and size_floor([10, 20]) == MIN_SIZE
    assert size_floor([1000, 3000, 5000]) == 300


def test_without_the_boundary_option_one_channel(small_sample, fast_finetune_config):
    import dataclasses

    import tifffile
    image = tifffile.imread(sorted((small_sample / "images").glob("*.tif"))[0])
    mask = tifffile.imread(sorted((small_sample / "masks").glob("*.tif"))[0])
    cfg = dataclasses.replace(fast_finetune_config, epochs=1, steps_per_epoch=1)  # the default
    net = finetune(image, mask, cfg)
    assert net.config["out_channels"] == 1 and "instances" not in net.metadata
    labels = predict(net, image, instances=True, device="cpu", fast=False).labels
    assert labels.dtype == np.int32


def test_cli_instances_and_object_metrics(boundary_model, small_sample, tmp_path, capsys):
    from btunet.cli.commands import main
    net, _ = boundary_model
    model = save_model(net, tmp_path / "m.safetensors")
    out = tmp_path / "out"
    assert main(["predict", str(model), str(small_sample / "images"), "--out", str(out), "--instances",
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(out), "--truth", str(small_sample / "masks"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["images"]) == 4
    for key in ("object_f1", "mean_matched_iou", "ap", "ap50", "ap75"):
        assert 0.0 <= report["mean"][key] <= 1.0 and key in report["images"][0]


def test_cli_min_size(boundary_model, small_sample, tmp_path, capsys):
    import tifffile

    from btunet.cli.commands import main
    net, _ = boundary_model
    model = save_model(net, tmp_path / "m.safetensors")
    image = sorted((small_sample / "images").glob("*.tif"))[0]
    assert main(["predict", str(model), str(image), "--out", str(tmp_path / "bad"), "--instances",
                 "--min-size", "-3", "--device", "cpu"]) == 2
    assert "--min-size" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    for size, folder in ((0, "all"), (10**6, "none")):
        assert main(["predict", str(model), str(image), "--out", str(tmp_path / folder), "--instances",
                     "--min-size", str(size), "--device", "cpu"]) == 0
    kept = tifffile.imread(next((tmp_path / "all").glob("*.tif")))
    dropped = tifffile.imread(next((tmp_path / "none").glob("*.tif")))
    assert kept.max() > 0 and not dropped.any()


def touching_cells_with_strokes():
    """Two bright cells touching along a faint seam; a stroke in each, background painted along
    the seam and outside."""
    rng = np.random.default_rng(0)
    image = rng.normal(20, 4, (96, 128)).astype(np.float32)
    image[24:72, 24:104] += 150
    image[24:72, 63:65] -= 60
    strokes = np.zeros(image.shape, np.uint8)
    strokes[40:56, 40:44], strokes[40:56, 84:88] = 2, 2
    strokes[30:66, 64] = 1
    strokes[8:12, 10:118], strokes[84:88, 10:118] = 1, 1
    return image, strokes


def test_background_stroke_between_two_objects_is_a_border():
    from btunet.labels.annotations import has_stroke_boundary, stroke_boundary
    _, strokes = touching_cells_with_strokes()
    border = stroke_boundary(strokes)
    assert border[30:66, 64].all()                        # the seam stroke, 20 px from both strokes
    assert not border[strokes != 1].any()                 # only background strokes are borders
    assert not border[8:12, :10].any()                    # out of reach of the second object
    one = strokes.copy()
    one[40:56, 84:88] = 0                                 # one object stroke: nothing lies between two
    assert not stroke_boundary(one).any() and not has_stroke_boundary(one)
    assert has_stroke_boundary(np.stack([one, strokes]))  # stacks: plane by plane


def test_sparse_strokes_between_objects_train_a_border_and_give_two_instances():
    image, strokes = touching_cells_with_strokes()
    cfg = FinetuneConfig(mask_mode="sparse", instances="auto", epochs=10, steps_per_epoch=5, batch_size=4,
                         patch_size=64, device="cpu", seed=0)
    net = finetune(image, strokes, cfg)
    assert net.metadata["instances"] == "boundary" and head_of(net).boundary
    labels = predict(net, image, instances=True, device="cpu", fast=False).labels
    left, right = np.unique(labels[40:56, 40:44]), np.unique(labels[40:56, 84:88])
    assert len(left) == len(right) == 1 and 0 not in (left[0], right[0]) and left[0] != right[0]
    plain = FinetuneConfig(mask_mode="sparse", instances="auto", epochs=1, steps_per_epoch=1, device="cpu")
    no_between = strokes.copy()
    no_between[40:56, 84:88] = 0
    assert not head_of(finetune(image, no_between, plain)).boundary  # auto: only when strokes mark one


def test_class_masks_cannot_learn_borders():
    from btunet import BTUnetError
    image, _ = touching_cells_with_strokes()
    classes = (image > 100).astype(np.uint8)
    with pytest.raises(BTUnetError, match="not from class masks"):
        finetune(image, classes, FinetuneConfig(mask_mode="classes", instances="boundary", epochs=1,
                                                steps_per_epoch=1, device="cpu"))
