"""Instance ids on stacks: linked through Z, never through time, and no straight cuts in a plane."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from btunet import BTUnetError, predict
from btunet.labels.instances import boundary_instances, distance_instances, link_planes, linked_axis
from btunet.models import create_model


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True))
    return d2 <= radius ** 2


def capsule(shape, y, x0, x1, radius) -> np.ndarray:
    """A long object: every point within ``radius`` of the segment (y, x0)-(y, x1)."""
    yy, xx = np.indices(shape)
    dx = np.clip(xx, x0, x1) - xx
    return (yy - y) ** 2 + dx ** 2 <= radius ** 2


def constant_model(logit: float, boundary_logit: float | None = None):
    """A real network whose head ignores its features: every pixel gets ``logit``."""
    channels = 1 if boundary_logit is None else 2
    model = create_model("unet", out_channels=channels).eval()
    if boundary_logit is not None:
        model.metadata = {"instances": "boundary"}
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([logit] + ([boundary_logit] if boundary_logit is not None else [])))
    return model


def test_a_ball_split_across_planes_gets_one_id():
    mask = ball((16, 48, 48), (8, 24, 24), 9)
    labels = distance_instances(mask)
    assert set(np.unique(labels)) == {0, 1}
    assert all((labels[z][mask[z]] == 1).all() for z in range(16) if mask[z].any())
    per_plane = link_planes(lambda m: distance_instances(m), [mask[:, None]], 1, 2)  # planes alone
    assert per_plane.max() == int(mask.any(axis=(1, 2)).sum())


def test_two_separate_balls_get_two_ids_and_touching_balls_are_split():
    apart = ball((16, 40, 80), (8, 20, 18), 8) | ball((16, 40, 80), (8, 20, 60), 8)
    assert distance_instances(apart).max() == 2
    touching = ball((20, 40, 60), (10, 20, 18), 10) | ball((20, 40, 60), (10, 20, 36), 10)
    labels = distance_instances(touching)
    assert labels.max() == 2
    assert labels[10, 20, 12] != labels[10, 20, 42]


def test_anisotropic_stack_seeds_by_real_shape():
    """Z steps 3x the pixel width: balls of radius 9 (in pixel widths) span 7 planes; with the
    spacing the distance transform sees them round, one id each, split at their neck."""
    shape, spacing = (9, 40, 64), (3.0, 1.0, 1.0)
    one = ball(shape, (4, 20, 20), 9, spacing)
    assert distance_instances(one, sampling=spacing).max() == 1
    two = one | ball(shape, (4, 20, 37), 9, spacing)
    labels = distance_instances(two, sampling=spacing)
    assert labels.max() == 2 and labels[4, 20, 16] != labels[4, 20, 41]


def test_elongated_object_is_not_cut_by_straight_lines():
    """The flat distance ridge of a long object held many local maxima, and the watershed
    between them cut it across; ridge-merged seeds give it one id."""
    mask = capsule((80, 400), 40, 30, 370, 14)
    assert distance_instances(mask).max() == 1
    assert distance_instances(np.stack([mask, mask])).max() == 1


def test_boundary_instances_in_3d():
    a, b = ball((12, 32, 64), (6, 16, 20), 9), ball((12, 32, 64), (6, 16, 40), 9)
    obj = (a | b).astype(np.float32)
    border = np.zeros_like(obj)
    border[:, :, 29:31] = 1.0  # the model saw a border between the two
    labels = boundary_instances(obj, border)
    assert labels.max() == 2 and labels[6, 16, 20] != labels[6, 16, 40]
    assert len(np.unique(labels[:, 16, 20][a[:, 16, 20]])) == 1  # one id through the planes


def test_linked_axis_rules():
    assert linked_axis(1, None, None) == 0          # Z, Y, X
    assert linked_axis(0, None, None) is None       # a 2-D image
    assert linked_axis(1, False, None) is None      # asked for planes
    assert linked_axis(2, None, None) is None       # T, Z unknown: time is never linked
    assert linked_axis(2, None, 1) == 1
    with pytest.raises(BTUnetError, match="z_axis=1"):
        linked_axis(2, True, None)
    with pytest.raises(BTUnetError, match="plane axes"):
        linked_axis(2, None, 2)


def test_predict_links_planes_of_a_z_stack_and_never_time():
    model = constant_model(10.0)  # every pixel an object
    stack = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    linked = predict(model, stack, instances=True, split_touching=False, device="cpu")
    assert linked.labels.max() == 1 and (linked.labels == 1).all()
    planes = predict(model, stack, instances=True, instances_3d=False, device="cpu").labels
    assert sorted(int(p.max()) for p in planes) == [1, 2, 3, 4]
    movie = np.random.default_rng(1).random((2, 3, 32, 32)).astype(np.float32)  # T, Z, Y, X
    by_time = predict(model, movie, instances=True, split_touching=False, z_axis=1, device="cpu").labels
    assert [set(np.unique(v)) for v in by_time] == [{1}, {2}]
    unknown = predict(model, movie, instances=True, split_touching=False, device="cpu").labels
    assert len(np.unique(unknown)) == 6  # no Z axis known: plane by plane
    with pytest.raises(BTUnetError, match="which one is Z"):
        predict(model, movie, instances=True, instances_3d=True, device="cpu")
    assert linked.probabilities is not None
    assert predict(model, stack, instances=True, probabilities=False, device="cpu").probabilities is None


def test_named_axes_choose_what_is_linked():
    model = constant_model(10.0)
    movie = np.random.default_rng(2).random((3, 32, 32)).astype(np.float32)
    per_frame = predict(model, movie, axes="TYX", instances=True, split_touching=False, device="cpu").labels
    assert sorted(int(p.max()) for p in per_frame) == [1, 2, 3]  # T: one id per frame
    z_stack = predict(model, movie, axes="ZYX", instances=True, split_touching=False, device="cpu").labels
    assert (z_stack == 1).all()
    hyper = np.random.default_rng(3).random((2, 3, 32, 32)).astype(np.float32)
    by_time = predict(model, hyper, axes="TZYX", instances=True, split_touching=False, device="cpu").labels
    assert [set(np.unique(v)) for v in by_time] == [{1}, {2}]
    z_first = predict(model, np.moveaxis(hyper, 0, 1), axes="ZTYX", instances=True, split_touching=False,
                      device="cpu").labels
    assert [set(np.unique(z_first[:, t])) for t in range(2)] == [{1}, {2}]


def test_predict_boundary_model_in_3d():
    model = constant_model(10.0, boundary_logit=-10.0)  # objects everywhere, no border
    stack = np.random.default_rng(2).random((3, 32, 48)).astype(np.float32)
    assert set(np.unique(predict(model, stack, instances=True, device="cpu").labels)) == {1}
    per_plane = predict(model, stack, instances=True, instances_3d=False, device="cpu").labels
    assert len(np.unique(per_plane)) == 3


def test_a_large_object_spanning_tiles_keeps_one_id_per_plane():
    """Small tiles: the plane is blended from 12 tiles, labelled whole, one object, one id."""
    model = constant_model(10.0)
    image = np.random.default_rng(3).random((2, 200, 260)).astype(np.float32)
    labels = predict(model, image, instances=True, instances_3d=False, tile=96, overlap=32, device="cpu").labels
    assert [len(np.unique(p)) for p in labels] == [1, 1] and labels[0].max() != labels[1].max()


def test_stream_and_tiff_paths(tmp_path):
    import tifffile

    from btunet.infer.predict import iter_predict, predict_to_tiff
    model = constant_model(10.0)
    stack = np.random.default_rng(4).random((3, 32, 32)).astype(np.float32)
    predict_to_tiff(model, stack, tmp_path / "l.tif", tmp_path / "p.tif", instances=True,
                    split_touching=False, device="cpu")
    assert set(np.unique(tifffile.imread(tmp_path / "l.tif"))) == {1}
    assert tifffile.imread(tmp_path / "p.tif").shape == (3, 32, 32)
    streamed = [item[2].max() for item in iter_predict(model, stack, instances=True, split_touching=False,
                                                        device="cpu")]
    assert streamed == [1, 2, 3]  # streaming keeps one plane: ids per plane
    with pytest.raises(BTUnetError, match="predict"):
        list(iter_predict(model, stack, instances=True, instances_3d=True, device="cpu"))


def test_cli_instances_3d_by_default_per_plane_on_request(tmp_path, capsys):
    import tifffile

    from btunet.cli.commands import main
    from btunet.core.checkpoint import save_model
    save_model(constant_model(10.0), tmp_path / "m.safetensors")
    stack = np.random.default_rng(5).random((4, 32, 32)).astype(np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    common = ["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "stack.tif"), "--instances",
              "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "linked")]) == 0
    assert set(np.unique(tifffile.imread(tmp_path / "linked" / "stack.tif"))) == {1}
    assert main(common + ["--out", str(tmp_path / "planes"), "--per-plane"]) == 0
    assert [int(p.max()) for p in tifffile.imread(tmp_path / "planes" / "stack.tif")] == [1, 2, 3, 4]
    assert main(common + ["--out", str(tmp_path / "bad"), "--z-spacing", "0"]) == 2
    assert "--z-spacing" in capsys.readouterr().err
