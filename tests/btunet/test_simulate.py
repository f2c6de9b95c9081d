"""Annotator styles of the simulated user: every style paints honest labels, and each one paints
the way its person would (strokes along objects, scribbles across them, a hurried few)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from btunet.train.simulate import STYLES, first_strokes, scribbles


@pytest.fixture(scope="module")
def ellipses() -> np.ndarray:
    """12 ellipses (instance ids) of various orientations and elongations (axis ratio 1 to 4),
    one per cell of a 3x4 grid in 256x256, so that clear background lies between them."""
    from skimage.draw import ellipse
    rng = np.random.default_rng(7)
    mask = np.zeros((256, 256), np.uint16)
    ratios = [1.0, 1.5, 2.5, 4.0] * 3
    for i, ratio in enumerate(ratios):
        cy, cx = 43 + 85 * (i // 4), 32 + 64 * (i % 4)
        major = rng.uniform(20, 26)
        rr, cc = ellipse(cy, cx, major, max(major / ratio, 5), shape=mask.shape, rotation=rng.uniform(0, np.pi))
        mask[rr, cc] = i + 1
    return mask


@pytest.fixture(scope="module")
def bbbc007(sample) -> np.ndarray:
    """The first shipped BBBC007 mask (400x400, small round nuclei)."""
    return tifffile.imread(sample[1][0])


@pytest.mark.parametrize("style", STYLES)
def test_labels_are_honest_and_both_present(style, ellipses, bbbc007):
    for mask in (ellipses, bbbc007, ellipses > 0):
        for seed in range(5):
            ann = first_strokes(mask, style, seed)
            assert ann.dtype == np.uint8 and ann.shape == mask.shape
            assert set(np.unique(ann)) == {0, 1, 2}
            assert np.all(mask[ann == 2] > 0) and np.all(mask[ann == 1] == 0)


@pytest.mark.parametrize("style", STYLES)
def test_reproducible_by_seed(style, ellipses):
    assert np.array_equal(first_strokes(ellipses, style, 3), first_strokes(ellipses, style, 3))
    assert not np.array_equal(first_strokes(ellipses, style, 3), first_strokes(ellipses, style, 4))


def test_blobs_is_scribbles(ellipses, bbbc007):
    for mask in (ellipses, bbbc007):
        for seed in range(3):
            assert np.array_equal(first_strokes(mask, "blobs", seed), scribbles(mask, seed=seed))
    assert np.array_equal(first_strokes(ellipses, seed=0), scribbles(ellipses))


def test_hurried_paints_few_objects_and_fewer_pixels_than_blobs(ellipses, bbbc007):
    for mask in (ellipses, bbbc007):
        for seed in range(5):
            hurried = first_strokes(mask, "hurried", seed)
            assert len(np.unique(mask[hurried == 2])) <= 3
            assert np.count_nonzero(hurried) < np.count_nonzero(first_strokes(mask, "blobs", seed))


def test_along_strokes_follow_the_long_axis(ellipses):
    from skimage.measure import regionprops
    props = {p.label: p for p in regionprops(ellipses)}
    checked = 0
    for seed in range(3):
        ann = first_strokes(ellipses, "along", seed)
        painted = np.unique(ellipses[ann == 2])
        assert len(painted) == 10  # up to 10 objects, and this mask has 12
        for i in painted:
            p = props[i]
            ys, xs = np.nonzero((ann == 2) & (ellipses == i))
            if p.axis_major_length < 2 * p.axis_minor_length:
                continue
            major = np.array([np.cos(p.orientation), np.sin(p.orientation)])
            coords = np.stack([ys - p.centroid[0], xs - p.centroid[1]], 1)
            along, across = coords @ major, coords @ np.array([-major[1], major[0]])
            assert np.ptp(along) + 1 >= 2 * (np.ptp(across) + 1)
            assert np.ptp(along) + 1 >= 0.6 * p.axis_major_length  # most of the object's length
            checked += 1
    assert checked >= 6


def test_along_keeps_off_the_border_of_wide_objects(ellipses):
    from scipy import ndimage as ndi
    ann = first_strokes(ellipses, "along", 0)
    inner = ndi.distance_transform_edt(ellipses > 0)
    assert np.all(inner[ann == 2] >= 2)


def test_scribble_crosses_several_objects_and_long_background(ellipses, bbbc007):
    from skimage.measure import label
    from skimage.segmentation import find_boundaries
    for mask in (ellipses, bbbc007):
        border = find_boundaries(mask, mode="thick")
        for seed in range(5):
            ann = first_strokes(mask, "scribble", seed)
            assert len(np.unique(mask[ann == 2])) >= 3
            background = ann == 1
            assert label(background).max() >= 2 or np.count_nonzero(background) > 3 * 100
            assert not np.any(border & (ann > 0))  # a brush is not that precise


def hole_and_threads() -> list[np.ndarray]:
    """Masks where strokes miss by chance: background only in one small hole of a large object,
    and objects only 2 px thin (nothing 1 px away from their border)."""
    from skimage.draw import disk
    hole = np.ones((300, 300), np.uint8)
    hole[disk((150, 150), 8)] = 0
    threads = np.zeros((200, 200), np.uint8)
    for k in range(5):
        threads[20 + 30 * k:22 + 30 * k, 20:180] = k + 1
    return [hole, threads]


@pytest.mark.parametrize("style", STYLES)
def test_both_labels_even_where_strokes_miss(style):
    for mask in hole_and_threads():
        for seed in range(4):
            ann = first_strokes(mask, style, seed)
            assert set(np.unique(ann)) == {0, 1, 2}
            assert np.all(mask[ann == 2] > 0) and np.all(mask[ann == 1] == 0)


def test_unknown_style_names_the_styles(ellipses):
    with pytest.raises(ValueError, match="unknown annotator style") as err:
        first_strokes(ellipses, "sloppy")
    assert all(style in str(err.value) for style in STYLES)


@pytest.mark.parametrize("style", STYLES)
def test_no_objects_paints_no_object(style):
    for mask in (np.zeros((128, 128), np.uint8), np.zeros((128, 128), bool)):
        ann = first_strokes(mask, style, 0)
        assert not np.any(ann == 2) and ann.shape == mask.shape


@pytest.mark.parametrize("style", STYLES)
def test_all_object_paints_no_background(style):
    ann = first_strokes(np.ones((64, 64), np.uint8), style, 0)
    assert not np.any(ann == 1) and np.any(ann == 2)
