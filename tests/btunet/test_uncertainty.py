"""The uncertainty map from the model and the forest on the same strokes (btunet.pipeline.uncertainty)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

import btunet
from btunet import BTUnetError, create_model
from btunet.pipeline.uncertainty import binary_entropy, forest_disagreement, stroke_uncertainty


def disk(shape, cy, cx, r):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def test_binary_entropy_is_zero_when_sure_and_one_at_a_coin_toss():
    h = binary_entropy(np.array([0.0, 1.0, 0.5, 0.1, 0.9]))
    assert h.dtype == np.float32
    assert h[0] < 1e-4 and h[1] < 1e-4 and h[2] == pytest.approx(1.0)
    assert h[3] == pytest.approx(h[4]) and 0.4 < h[3] < 0.5  # symmetric; 0.469 bits at 0.1


def test_errors_where_the_teacher_was_unsure_rank_above_every_correct_pixel():
    """A false blob in haze the forest cannot decide: the model, sure of it, calls it certain;
    the stroke map marks it, and stays clear where the forest is sure."""
    shape = (64, 64)
    truth = disk(shape, 20, 20, 8)
    haze = disk(shape, 44, 44, 8)
    model = np.where(truth | haze, 0.98, 0.02).astype(np.float32)  # merged the haze into an object
    forest = np.where(truth, 0.95, np.where(haze, 0.55, 0.03)).astype(np.float32)
    errors = (model > 0.5) != truth
    doubt = stroke_uncertainty(forest)
    assert doubt.shape == shape and doubt.dtype == np.float32
    assert doubt[errors].min() > 0.95 and doubt[~errors].max() < 0.3
    assert binary_entropy(model)[errors].max() < 0.2  # the model alone calls the blob certain
    assert np.allclose(forest_disagreement(model, forest)[haze], 0.43)


def test_the_map_ranks_simulated_errors_on_the_sample(sample):
    """The commonest error of a model trained on strokes, objects a pixel or two too wide, against
    the forest on free-hand scribbles: the map ranks it high (ROC AUC; the true edge's inner side
    is as unsure and correct) and the flat background stays clear."""
    from scipy import ndimage as ndi
    from sklearn.metrics import roc_auc_score

    from btunet.train.simulate import first_strokes
    images, masks = sample
    image, mask = tifffile.imread(images[2]), tifffile.imread(masks[2])
    truth = mask > 0
    strokes = first_strokes(mask, "scribble", seed=0)
    doubt = stroke_uncertainty(btunet.forest_preview(image, strokes).probabilities)
    wide = ndi.binary_dilation(truth, iterations=2)
    errors = wide != truth
    auc = roc_auc_score(errors.ravel(), doubt.ravel())
    assert auc > 0.75  # 0.81 here
    assert doubt[errors].mean() > 2 * doubt[~errors].mean()
    assert np.median(doubt[ndi.distance_transform_edt(~truth) > 10]) < 0.1  # far background: clear


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_model("unet", base_filters=4).eval()


def test_previewer_uses_the_forest_when_given(tiny_model):
    image = (np.random.default_rng(1).random((48, 40)) * 255).astype(np.uint8)
    previewer = btunet.Previewer(image)
    plain = previewer(tiny_model, fast=False)
    forest = np.random.default_rng(2).random((48, 40)).astype(np.float32)
    with_forest = previewer(tiny_model, uncertainty=True, forest=forest, fast=False)
    assert np.array_equal(with_forest.labels, plain.labels)  # the map never changes the mask
    assert np.array_equal(with_forest.probabilities, plain.probabilities)
    assert np.allclose(with_forest.uncertainty, stroke_uncertainty(forest))
    flips = previewer(tiny_model, uncertainty=True, fast=False)  # without strokes: the flips
    expected = btunet.predict(tiny_model, image, uncertainty=True, device="cpu", fast=False).uncertainty
    assert np.allclose(flips.uncertainty, expected, atol=1e-5)
    assert not np.allclose(flips.uncertainty, with_forest.uncertainty)
    with pytest.raises(BTUnetError, match="forest's probability has shape"):
        previewer(tiny_model, uncertainty=True, forest=forest[:10], fast=False)
