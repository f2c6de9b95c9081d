"""Separating touching objects: the model's choice between its learnt borders and a distance
watershed, made on held-out objects, stored with it and followed (or overridden) by predict."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from btunet import BTUnetError, FinetuneConfig, finetune, predict
from btunet.checkpoint import load_model, model_metadata, read_metadata, save_model
from btunet.instances import boundary_instances, distance_instances
from btunet.planes import plane_layout, plane_outputs
from btunet.separation import best_separation, held_out_objects, validation_f1


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


def test_a_tie_goes_to_the_distance_watershed():
    assert best_separation({"boundary": 0.9, "distance": 0.9}) == "distance"
    assert best_separation({"boundary": 0.91, "distance": 0.9}) == "boundary"
    assert best_separation({"boundary": 0.5, "distance": 0.9}) == "distance"


@pytest.fixture(scope="module")
def border_model(small_sample, fast_finetune_config):
    import tifffile
    images = [tifffile.imread(p) for p in sorted((small_sample / "images").glob("*.tif"))]
    masks = [tifffile.imread(p) for p in sorted((small_sample / "masks").glob("*.tif"))]
    cfg = dataclasses.replace(fast_finetune_config, epochs=3, steps_per_epoch=5, instances="auto", val_fraction=0.5)
    return finetune(images[:2], masks[:2], cfg), images[2]


def test_instance_masks_choose_a_separation_on_held_out_objects(border_model, tmp_path):
    net, _ = border_model
    scores = net.metadata["separation_f1"]
    assert set(scores) == {"boundary", "distance"} and all(0.0 <= v <= 1.0 for v in scores.values())
    assert net.metadata["separate_by"] == best_separation(scores)
    path = save_model(net, tmp_path / "m.safetensors")
    assert read_metadata(path)["separate_by"] == net.metadata["separate_by"]
    assert load_model(path).metadata["separation_f1"] == scores


def test_predict_follows_the_model_and_can_be_told_otherwise(border_model):
    net, image = border_model
    pixels = next(plane_layout(image, 1).planes(image))[1]
    out = plane_outputs(net, pixels, fast=False)
    floor, threshold = net.metadata["min_size"], net.metadata["threshold"]
    by_borders = boundary_instances(out["object"], out["boundary"], threshold, min_size=floor)
    by_distance = distance_instances(out["object"] > threshold, min_size=floor)
    ask = lambda **kw: predict(net, image, instances=True, device="cpu", fast=False, **kw).labels
    assert np.array_equal(ask(separate_by="boundary"), by_borders)
    assert np.array_equal(ask(separate_by="distance"), by_distance)
    chosen = by_borders if net.metadata["separate_by"] == "boundary" else by_distance
    assert np.array_equal(ask(), chosen)
    net.metadata = {**net.metadata, "separate_by": "distance" if net.metadata["separate_by"] == "boundary"
                    else "boundary"}
    try:  # the stored choice is what predict follows
        assert np.array_equal(ask(), by_distance if net.metadata["separate_by"] == "distance" else by_borders)
    finally:
        net.metadata = {**net.metadata, "separate_by": best_separation(net.metadata["separation_f1"])}


def test_borders_cannot_be_asked_of_a_model_without_them(small_sample, fast_finetune_config, tmp_path, capsys):
    import tifffile
    from btunet.cli import main
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
    net, _ = border_model
    assert validation_f1(net, [], 0.5, 15) is None


def test_cli_fine_tune_with_borders_reports_the_choice(small_sample, tmp_path, capsys):
    from btunet.cli import main
    model = tmp_path / "m.safetensors"
    assert main(["finetune", "--images", str(small_sample / "images"), "--masks", str(small_sample / "masks"),
                 "--out", str(model), "--mask-mode", "dense", "--boundary", "--epochs", "2",
                 "--steps-per-epoch", "3", "--batch-size", "2", "--patch-size", "64", "--device", "cpu"]) == 0
    meta = read_metadata(model)
    f1 = meta["separation_f1"]
    way = "its learnt borders" if meta["separate_by"] == "boundary" else "a distance watershed"
    assert f"touching objects: split by {way}" in capsys.readouterr().out
    assert meta["separate_by"] == best_separation(f1)
    out = tmp_path / "out"
    assert main(["predict", str(model), str(small_sample / "images"), "--out", str(out), "--instances",
                 "--separate-by", "distance", "--device", "cpu"]) == 0
    import tifffile
    first = sorted((small_sample / "images").glob("*.tif"))[0]
    expected = predict(load_model(model), tifffile.imread(first), instances=True, separate_by="distance",
                       device="cpu").labels
    assert np.array_equal(tifffile.imread(out / first.name), expected)
