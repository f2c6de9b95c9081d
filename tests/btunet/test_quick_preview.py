"""The random forest's quick preview: a usable first answer from the strokes, in well under a second."""
import time

import numpy as np
import pytest

import btunet
from btunet.infer.quick_preview import painted_planes
from btunet.io.imageio import read_image
from btunet.io.sample import sample_paths
from btunet.train.simulate import first_strokes

#: measured 0.885 on the first sample image with these strokes
MIN_DICE = 0.85


@pytest.fixture(scope="module")
def sample():
    """(image, 0/1 mask, strokes) of the first shipped BBBC007 image."""
    paths, masks = sample_paths()
    image, instances = read_image(paths[0]), read_image(masks[0])
    return image, (instances > 0).astype(np.uint8), first_strokes(instances, "blobs", seed=0)


def test_forest_preview_segments_the_sample(sample):
    image, mask, strokes = sample
    btunet.forest_preview(image, strokes)  # scikit-learn and scikit-image load their modules once
    start = time.perf_counter()
    result = btunet.forest_preview(image, strokes)
    seconds = time.perf_counter() - start
    dice = btunet.evaluate(result.labels, mask)["dice"]
    print(f"\nforest preview of a {image.shape} plane: {seconds:.2f} s, Dice {dice:.3f}")
    assert result.labels.shape == result.probabilities.shape == image.shape
    assert result.labels.dtype == np.uint8 and set(np.unique(result.labels)) == {0, 1}
    assert dice > MIN_DICE
    # the strokes it learnt from come back
    assert result.labels[strokes == 2].mean() > 0.95 and result.labels[strokes == 1].mean() < 0.05
    assert np.array_equal(btunet.forest_preview(image, strokes).labels, result.labels)  # seeded


def test_a_stack_previews_the_plane_asked_for(sample):
    image, mask, strokes = sample
    stack = np.stack([image, image[::-1], image[:, ::-1]])  # one intensity range, as one image's
    annotations = np.zeros(stack.shape, np.uint8)
    annotations[0] = strokes
    flat = btunet.forest_preview(image, strokes).labels
    assert np.array_equal(btunet.forest_preview(stack, annotations, (0,)).labels, flat)
    flipped = btunet.forest_preview(stack, annotations, (1,)).labels
    assert flipped.shape == image.shape
    assert btunet.evaluate(flipped, mask[::-1])["dice"] > MIN_DICE
    assert np.mean(flipped == flat[::-1]) > 0.99  # the same forest on the flipped plane
    assert np.array_equal(btunet.forest_preview(stack, annotations, -2).labels, flipped)
    with pytest.raises(btunet.BTUnetError, match="plane index"):
        btunet.forest_preview(stack, annotations, (3,))


def test_strokes_of_one_label_are_refused(sample):
    image, _, strokes = sample
    for only in (1, 2):
        with pytest.raises(btunet.BTUnetError, match=r"background \(1\) and of an object \(2\)"):
            btunet.forest_preview(image, np.where(strokes == only, only, 0))
    with pytest.raises(btunet.BTUnetError, match="does not match"):
        btunet.forest_preview(image, strokes[:-1])


def test_class_strokes_give_class_labels(sample):
    image, _, strokes = sample
    classes = strokes.copy()
    classes[:, image.shape[1] // 2:][classes[:, image.shape[1] // 2:] == 2] = 3  # objects on the right: class 2
    result = btunet.forest_preview(image, classes)
    assert result.class_probabilities.shape == (3,) + image.shape
    assert set(np.unique(result.labels)) == {0, 1, 2}
    assert result.labels[classes == 3].mean() > 1.9 and result.labels[classes == 1].max() == 0


def test_painted_planes_nearest_first_and_every_label_kept():
    labels = np.zeros((8, 4, 4), np.uint8)
    labels[[1, 2, 3, 5], 0, 0] = 2
    labels[7, 1, 1] = 1  # the only background stroke, far from plane 4
    assert painted_planes(labels, (4,), limit=3) == [(3,), (5,), (2,), (7,)]
    assert painted_planes(labels[0], ()) == []
