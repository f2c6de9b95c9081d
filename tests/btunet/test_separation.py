"""Separating touching objects: the model's choice between its learnt borders and a distance
watershed, made on held-out objects, stored with it and followed (or overridden) by predict."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from btunet import BTUnetError, finetune, predict
from btunet.core.checkpoint import load_model, model_metadata, read_metadata, save_model
from btunet.labels.instances import boundary_instances, distance_instances, object_sizes
from btunet.pipeline.planes import plane_layout, plane_outputs
from btunet.pipeline.separation import (
    LARGE_OBJECT_PX,
    MIN_VALIDATION_OBJECTS,
    choose_separation,
    held_out_objects,
    validation_f1,
)


def test_held_out_objects_keeps_whole_objects_at_least_half_inside():
    labels = np.zeros((10, 20), np.int32)
    labels[2:6, 0:4] = 1     # all inside
    labels[2:6, 6:12] = 2    # 4 of 6 columns inside
    labels[2:6, 14:20] = 3   # outside
    region = np.zeros(labels.shape, bool)
    region[:, :10] = True
    kept = held_out_objects(labels, region)
    assert set(np.unique(kept)) == {0, 1, 2}
    assert np.array_equal(kept == 2, labels == 2)   # kept whole, not cut at the region's edge


def test_validation_decides_when_clear_else_the_objects_size():
    many, few = MIN_VALIDATION_OBJECTS, MIN_VALIDATION_OBJECTS - 1
    small, large = LARGE_OBJECT_PX - 1, LARGE_OBJECT_PX
    assert choose_separation({"boundary": 0.95, "distance": 0.90, "objects": many}, small) == ("boundary", "validation")
    assert choose_separation({"boundary": 0.80, "distance": 0.90, "objects": many}, large) == ("distance", "validation")
    # a tie, or too few objects to tell: the size of the training objects decides
    assert (choose_separation({"boundary": 0.90, "distance": 0.91, "objects": many}, large)
            == ("boundary", "object size"))
    assert choose_separation({"boundary": 0.50, "distance": 1.0, "objects": few}, large) == ("boundary", "object size")
    assert choose_separation(None, small) == ("distance", "object size")


@pytest.fixture(scope="module")
def border_model(small_sample, fast_finetune_config):
    import tifffile
    images = [tifffile.imread(p) for p in sorted((small_sample / "images").glob("*.tif"))]
    masks = [tifffile.imread(p) for p in sorted((small_sample / "masks").glob("*.tif"))]
    cfg = dataclasses.replace(fast_finetune_config, epochs=3, steps_per_epoch=5, instances="auto", val_fraction=0.5)
    return finetune(images[:2], masks[:2], cfg), images[2], masks[:2]


def test_instance_masks_choose_a_separation_on_held_out_objects(border_model, tmp_path):
    net = border_model[0]
    info = net.metadata["separation"]
    scores = info["f1"]
    assert scores["objects"] > 0 and all(0.0 <= scores[w] <= 1.0 for w in ("boundary", "distance"))
    sizes = np.concatenate([object_sizes(m) for m in border_model[2]])
    assert info["median_object_px"] == pytest.approx(float(np.median(sizes)), abs=0.05)
    assert (net.metadata["separate_by"], info["by"]) == choose_separation(scores, info["median_object_px"])
    with pytest.raises(BTUnetError, match="separate_by"):  # a tampered value
        model_metadata(net, separate_by="edges")
    path = save_model(net, tmp_path / "m.safetensors")
    assert read_metadata(path)["separate_by"] == net.metadata["separate_by"]
    assert load_model(path).metadata["separation"] == info


def test_predict_follows_the_model_and_can_be_told_otherwise(border_model):
    net, image = border_model[:2]
    pixels = next(plane_layout(image, 1).planes(image))[1]
    out = plane_outputs(net, pixels, fast=False)
    floor, threshold = net.metadata["min_size"], net.metadata["threshold"]
    by_borders = boundary_instances(out["object"], out["boundary"], threshold, min_size=floor)
    by_distance = distance_instances(out["object"] > threshold, min_size=floor)
    def ask(**kw):
        return predict(net, image, instances=True, device="cpu", fast=False, **kw).labels
    assert np.array_equal(ask(separate_by="boundary"), by_borders)
    assert np.array_equal(ask(separate_by="distance"), by_distance)
    chosen = by_borders if net.metadata["separate_by"] == "boundary" else by_distance
    assert np.array_equal(ask(), chosen)
    net.metadata = {**net.metadata, "separate_by": "distance" if net.metadata["separate_by"] == "boundary"
                    else "boundary"}
    try:  # the stored choice is what predict follows
        assert np.array_equal(ask(), by_distance if net.metadata["separate_by"] == "distance" else by_borders)
    finally:
        net.metadata = {**net.metadata, "separate_by": "distance" if net.metadata["separate_by"] == "boundary"
                        else "boundary"}


def test_borders_cannot_be_asked_of_a_model_without_them(small_sample, fast_finetune_config, tmp_path, capsys):
    import tifffile

    from btunet.cli.commands import main
    image = tifffile.imread(sorted((small_sample / "images").glob("*.tif"))[0])
    mask = tifffile.imread(sorted((small_sample / "masks").glob("*.tif"))[0])
    net = finetune(image, mask, dataclasses.replace(fast_finetune_config, epochs=1, steps_per_epoch=1))
    assert "separate_by" not in net.metadata and model_metadata(net).separate_by == "distance"
    with pytest.raises(BTUnetError, match="learnt borders"):
        predict(net, image, instances=True, separate_by="boundary", device="cpu")
    with pytest.raises(BTUnetError, match="separate_by"):
        predict(net, image, instances=True, separate_by="edges", device="cpu")
    with pytest.raises(BTUnetError, match="boundary channel"):  # a tampered checkpoint
        model_metadata(net, separate_by="boundary")
    path = save_model(net, tmp_path / "plain.safetensors")
    out = tmp_path / "out"
    assert main(["predict", str(path), str(small_sample / "images"), "--out", str(out), "--instances",
                 "--separate-by", "boundary", "--device", "cpu"]) == 2
    assert "learnt borders" in capsys.readouterr().err and not out.exists()


def test_validation_f1_needs_held_out_instance_masks(border_model):
    net = border_model[0]
    assert validation_f1(net, [], 0.5, 15) is None


def test_cli_fine_tune_with_borders_reports_the_choice(small_sample, tmp_path, capsys):
    from btunet.cli.commands import main
    model = tmp_path / "m.safetensors"
    assert main(["finetune", "--images", str(small_sample / "images"), "--masks", str(small_sample / "masks"),
                 "--out", str(model), "--mask-mode", "dense", "--boundary", "--epochs", "2",
                 "--steps-per-epoch", "3", "--batch-size", "2", "--patch-size", "64", "--device", "cpu"]) == 0
    meta = read_metadata(model)
    info = meta["separation"]
    way = "its learnt borders" if meta["separate_by"] == "boundary" else "a distance watershed"
    printed = capsys.readouterr().out
    assert f"touching objects: split by {way}" in printed and f"median {info['median_object_px']:g} px" in printed \
        or "chosen on validation" in printed
    assert (meta["separate_by"], info["by"]) == choose_separation(info["f1"], info["median_object_px"])
    out = tmp_path / "out"
    assert main(["predict", str(model), str(small_sample / "images"), "--out", str(out), "--instances",
                 "--separate-by", "distance", "--device", "cpu"]) == 0
    import tifffile
    first = sorted((small_sample / "images").glob("*.tif"))[0]
    expected = predict(load_model(model), tifffile.imread(first), instances=True, separate_by="distance",
                       device="cpu").labels
    assert np.array_equal(tifffile.imread(out / first.name), expected)


def test_validation_scores_at_most_max_planes(border_model, small_sample, monkeypatch):
    import tifffile

    from btunet.pipeline import planes as planes_module
    from btunet.pipeline import separation
    from btunet.pipeline.data import AnnotatedPlane
    net = border_model[0]
    planes = []
    for path in sorted((small_sample / "images").glob("*.tif"))[:3]:
        image = tifffile.imread(path)
        mask = tifffile.imread(small_sample / "masks" / path.name).astype(np.int32)
        pixels = next(plane_layout(image, 1).planes(image))[1]
        zeros = np.zeros(mask.shape, np.float32)
        planes.append(AnnotatedPlane(pixels, (mask > 0).astype(np.float32), zeros, zeros, path.name,
                                     size=mask.shape, val_region=np.ones(mask.shape, bool), instances=mask))
    calls = []
    real = planes_module.plane_outputs
    monkeypatch.setattr(planes_module, "plane_outputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(separation, "MAX_PLANES", 2)
    scores = validation_f1(net, planes, 0.5, 15, fast=False)
    assert len(calls) == 2
    assert scores["objects"] == sum(len(np.unique(p.instances)) - 1 for p in planes[:2])
