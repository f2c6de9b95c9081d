"""One id per object in a volume: regions merged across shallow saddles (``instances.merge_shallow``)."""
from __future__ import annotations

import numpy as np

from btunet.labels.instances import distance_instances, merge_shallow, volume_floor


def lobes(neck: float, gap: int = 24, radius: float = 10.0, shape=(30, 40, 70)) -> np.ndarray:
    """Two balls ``gap`` px apart along X joined by a neck that tapers smoothly to radius ``neck``
    midway: no distance peak on the neck, and the two peaks farther apart than their radii."""
    z, y, x = np.indices(shape)
    cz, cy, cx = shape[0] // 2, shape[1] // 2, (shape[2] - gap) // 2
    across = (z - cz) ** 2 + (y - cy) ** 2
    mask = (across + (x - cx) ** 2 <= radius ** 2) | (across + (x - cx - gap) ** 2 <= radius ** 2)
    r = neck + (radius - neck) * (np.abs(x - cx - gap / 2) / (gap / 2)) ** 2
    return mask | ((across <= r ** 2) & (x >= cx) & (x <= cx + gap))


def test_a_lobed_nucleus_gets_one_id_in_a_volume():
    mask = lobes(neck=8.0)              # the neck dips 2 px: one object with two lobes
    labels = distance_instances(mask)
    assert labels.max() == 1 and np.array_equal(labels > 0, mask)


def test_a_narrow_neck_still_separates_two_objects():
    labels = distance_instances(lobes(neck=4.0))   # dips 6 px below both peaks
    assert labels.max() == 2
    left, right = labels[15, 20, 15], labels[15, 20, 50]
    assert left != right and 0 not in (left, right)


def test_merge_shallow_by_hand():
    labels = np.zeros((1, 3, 9), np.int32)
    labels[0, :, :3], labels[0, :, 3:6], labels[0, :, 6:] = 1, 2, 3
    distance = np.zeros(labels.shape)
    distance[0, 1] = [1, 5, 4, 4, 6, 2, 1, 3, 4]   # 1|2: saddle 4 (peaks 5, 6); 2|3: saddle 1 (peaks 6, 4)
    merged = merge_shallow(labels, distance, depth=1.5)
    assert merged[0, 1, 1] == merged[0, 1, 4] != merged[0, 1, 7]
    assert merged.max() == 2
    assert merge_shallow(labels, distance, depth=0.5).max() == 3       # a 1-px dip separates
    assert merge_shallow(labels, distance, depth=3.0).max() == 1       # a 3-px dip does not
    assert np.array_equal(merge_shallow(np.zeros((2, 2), np.int32), np.zeros((2, 2))), np.zeros((2, 2)))


def test_a_volume_floor_scales_the_plane_floor_by_the_planes_an_object_spans():
    # median area 1,400 px (floor 140): radius 21 px, a ball spans 4/3 * 21 / 1.1 = 25 planes
    assert volume_floor(140, 1.1, 60) == round(140 * 4 / 3 * np.sqrt(1400 / np.pi) / 1.1)
    assert volume_floor(140, 1.1, 5) == 140 * 5            # never more planes than the stack has
    assert volume_floor(140, 100.0, 60) == 140             # planes far apart: the plane floor
    sliver = np.zeros((20, 40, 40), bool)
    sliver[5:15, 0:3, 10:30] = True                        # 600 voxels of a nucleus cut by the edge
    assert distance_instances(sliver, min_size=volume_floor(140, 1.1, 20)).max() == 0
    assert distance_instances(sliver, min_size=140).max() == 1


def test_a_model_with_borders_labels_volumes_by_distance_unless_asked(monkeypatch):
    import sys

    import torch

    from btunet import predict
    from btunet.models import create_model
    model = create_model("unet", out_channels=2).eval()
    model.metadata = {"instances": "boundary", "separate_by": "boundary"}
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([10.0, -10.0]))
    module = sys.modules["btunet.infer.predict"]
    calls = []
    real = module.boundary_instances
    monkeypatch.setattr(module, "boundary_instances", lambda *a, **k: calls.append(a[0].ndim) or real(*a, **k))
    stack = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    assert predict(model, stack, instances=True, device="cpu").labels.max() == 1
    assert calls == []                                     # per-plane borders see no border in Z
    assert predict(model, stack, instances=True, separate_by="boundary", device="cpu").labels.max() == 1
    assert calls == [3]
    predict(model, stack, instances=True, instances_3d=False, device="cpu")
    assert calls[1:] == [2, 2, 2]                          # planes keep the model's choice
