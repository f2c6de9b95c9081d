"""Several classes: the label conventions, the loss, training, metadata and prediction."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from btunet import FinetuneConfig, finetune, predict
from btunet.base.errors import BTUnetError
from btunet.core.checkpoint import load_model, read_metadata, save_model
from btunet.core.metadata import CheckpointMetadata
from btunet.labels.annotations import infer_classes, targets_and_weights
from btunet.labels.heads import HeadSpec, head_of
from btunet.train.losses import masked_ce_dice_loss, segmentation_loss
from btunet.train.teacher import forest_probabilities, pseudo_targets


def ring_image(size: int = 96, seed: int = 0):
    """Bright discs (class 1) inside dimmer rings (class 2) on a dark background, and the truth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.uint8)
    for cy, cx in [(y, x) for y in range(24, size - 16, 48) for x in range(24, size - 16, 48)]:
        d = np.hypot(yy - cy, xx - cx)
        truth[(d < 16) & (truth == 0)] = 2
        truth[d < 9] = 1
    image = np.choose(truth, [0.1, 0.9, 0.45]) + rng.normal(0, 0.03, truth.shape)
    return (image * 200).astype(np.float32), truth


def strokes_of(truth: np.ndarray) -> np.ndarray:
    """Sparse labels: every 2nd row of the truth, 1 = background, 2 = class 1, 3 = class 2."""
    strokes = np.zeros_like(truth)
    strokes[::2] = truth[::2] + 1
    return strokes


def test_sparse_labels_hold_classes():
    labels = np.array([[0, 1, 2, 3]])
    assert infer_classes(labels, "sparse") == 2
    t, w = targets_and_weights(labels, "sparse")
    assert t.tolist() == [[0, 0, 1, 2]] and w.tolist() == [[0, 1, 1, 1]]
    assert infer_classes(np.array([[0, 1, 2]]), "sparse") == 1  # today's convention
    t, w = targets_and_weights(np.array([[0, 3, 1]]), "classes")
    assert t.tolist() == [[0, 3, 1]] and w.tolist() == [[1, 1, 1]]
    t, _ = targets_and_weights(np.array([[0, 3, 1]]), "dense")
    assert t.tolist() == [[0, 1, 1]]
    with pytest.raises(BTUnetError, match="sparse annotations"):
        targets_and_weights(labels, "sparse", n_classes=1)


def test_multiclass_loss_matches_a_naive_reference():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 4)
    target = torch.randint(0, 3, (2, 1, 5, 4)).float()
    weight = (torch.rand(2, 1, 5, 4) > 0.3).float()
    # naive: a loop over annotated pixels for the cross-entropy, over classes for the Dice
    ce, n = 0.0, 0
    prob = torch.softmax(logits, 1)
    for b in range(2):
        for y in range(5):
            for x in range(4):
                if weight[b, 0, y, x] > 0:
                    ce += -torch.log(prob[b, int(target[b, 0, y, x]), y, x]).item()
                    n += 1
    dices = []
    for k in (1, 2):
        p = prob[:, k] * weight[:, 0]
        t = (target[:, 0] == k).float() * weight[:, 0]
        dices.append(((2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)).item())
    expected = 0.5 * (ce / n + 1 - np.mean(dices))
    assert masked_ce_dice_loss(logits, target, weight).item() == pytest.approx(expected, rel=1e-5)
    # with a boundary channel the boundary BCE + Dice is added on the same pixels
    boundary = (torch.rand(2, 1, 5, 4) > 0.7).float()
    lg4 = torch.cat([logits, torch.zeros(2, 1, 5, 4)], 1)
    total = segmentation_loss(lg4, torch.cat([target, boundary], 1), weight, 2, True).item()
    bce = F.binary_cross_entropy_with_logits(torch.zeros(2, 1, 5, 4), boundary, weight=weight,
                                             reduction="sum").item() / weight.sum().item()
    p = 0.5 * weight
    dice = ((2 * (p * boundary).sum() + 1) / (p.sum() + (boundary * weight).sum() + 1)).item()
    assert total == pytest.approx(expected + 0.5 * (bce + 1 - dice), rel=1e-5)


def test_forest_teacher_handles_classes():
    image, truth = ring_image()
    strokes = strokes_of(truth)
    target, weight = targets_and_weights(strokes, "sparse")
    probs = forest_probabilities([image[None] / 200], [target], [weight], n_classes=2)
    assert probs[0].shape == (3,) + truth.shape
    assert np.allclose(probs[0].sum(0), 1, atol=1e-5)
    t, w = pseudo_targets(probs[0], 0.6)
    agree = (t[w > 0] == truth[w > 0]).mean()
    assert agree > 0.95 and w.mean() > 0.5


@pytest.fixture(scope="module")
def class_model():
    image, truth = ring_image(160)
    cfg = FinetuneConfig(epochs=4, steps_per_epoch=15, batch_size=4, patch_size=64, device="cpu",
                         class_names=["nuclei", "ring"], val_fraction=0.2, lr=3e-3)
    return finetune(image, strokes_of(truth), cfg), image, truth


def test_finetune_learns_three_labels(class_model):
    net, image, truth = class_model
    assert net.config["out_channels"] == 3 and head_of(net) == HeadSpec(2, False)
    assert [c["name"] for c in net.metadata["classes"]] == ["nuclei", "ring"]
    classes = [d for d in net.metadata["val_class_dice_history"] if d is not None]
    assert classes and len(classes[-1]) == 2
    result = predict(net, image, class_probabilities=True, device="cpu", fast=False)
    assert result.labels.dtype == np.uint8 and set(np.unique(result.labels)) <= {0, 1, 2}
    assert result.class_probabilities.shape == (3,) + truth.shape
    for k in (1, 2):
        p, t = result.labels == k, truth == k
        assert 2 * (p & t).sum() / (p.sum() + t.sum()) > 0.7, k


def test_checkpoint_keeps_classes(class_model, tmp_path):
    net, image, _ = class_model
    path = save_model(net, tmp_path / "m.safetensors")
    meta = read_metadata(path)
    assert meta["classes"][1] == {"id": 2, "name": "ring", "colour": meta["classes"][1]["colour"]}
    again = load_model(path)
    assert head_of(again).n_classes == 2
    a = predict(net, image, device="cpu", fast=False).labels
    b = predict(again, image, device="cpu", fast=False).labels
    assert np.array_equal(a, b)


@pytest.mark.parametrize("classes, message", [
    ([{"id": 2, "name": "a", "colour": "#ffffff"}], "id must be 1"),
    ([{"id": 1, "name": "", "colour": "#ffffff"}], "name"),
    ([{"id": 1, "name": "a", "colour": "red"}], "colour"),
    ("nuclei", "list"),
    ([{"id": 1, "name": "a", "colour": "#ffffff"}, {"id": 2, "name": "b", "colour": "#000000"}],
     "out_channels"),
])
def test_class_metadata_is_checked(classes, message):
    raw = {"format": "btunet", "format_version": 1, "kind": "model", "channels": 1, "classes": classes,
           "model": {"name": "unet", "in_channels": 1, "out_channels": 1, "base_filters": 4, "dropout": 0.1}}
    with pytest.raises(BTUnetError, match=message):
        CheckpointMetadata.from_dict(raw)


def test_missing_class_is_refused():
    image, truth = ring_image()
    strokes = strokes_of(truth)
    with pytest.raises(BTUnetError, match="class 1 .*no annotated pixels"):
        finetune(image, np.where(strokes == 2, 0, strokes), FinetuneConfig(n_classes=2, epochs=1, device="cpu"))


def test_cli_finetune_predict_evaluate_classes(tmp_path, capsys):
    from btunet.cli.commands import main
    image, truth = ring_image(128)
    for folder, data in (("images", image), ("truth", truth)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", data)
    model = tmp_path / "m.safetensors"
    assert main(["finetune", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "truth"),
                 "--out", str(model), "--mask-mode", "classes", "--class-names", "nuclei,ring", "--epochs", "3",
                 "--steps-per-epoch", "5", "--batch-size", "2", "--patch-size", "64", "--device", "cpu"]) == 0
    meta = read_metadata(model)
    assert [c["name"] for c in meta["classes"]] == ["nuclei", "ring"]
    assert meta["trained_on"]["mask_mode"] == "classes" and meta["model"]["out_channels"] == 3
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "images"), "--out", str(out), "--device", "cpu"]) == 0
    labels = tifffile.imread(out / "a.tif")
    assert labels.dtype == np.uint8 and labels.max() <= 2
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(out), "--truth", str(tmp_path / "truth"), "--classes", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["mean"]
    assert {"dice_class_1", "dice_class_2", "dice"} <= set(scores)
    assert main(["finetune", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "truth"),
                 "--out", str(tmp_path / "bad.safetensors"), "--mask-mode", "classes",
                 "--class-names", "a,b,c", "--epochs", "1", "--device", "cpu"]) == 2
