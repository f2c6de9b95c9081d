"""The uncertainty map from the model and the forest on the same strokes (btunet.uncertainty)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

import btunet
from btunet import BTUnetError, create_model
from btunet.uncertainty import binary_entropy, forest_disagreement, stroke_uncertainty


def disk(shape, cy, cx, r):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def test_binary_entropy_is_zero_when_sure_and_one_at_a_coin_toss():
    h = binary_entropy(np.array([0.0, 1.0, 0.5, 0.1, 0.9]))
    assert h.dtype == np.float32
    assert h[0] < 1e-4 and h[1] < 1e-4 and h[2] == pytest.approx(1.0)
    assert h[3] == pytest.approx(h[4]) and 0.4 < h[3] < 0.5  # symmetric; 0.469 bits at 0.1


def test_a_false_blob_the_model_is_sure_of_is_ranked_above_every_correct_pixel():
    shape = (64, 64)
    truth = disk(shape, 20, 20, 8)
    blob = disk(shape, 44, 44, 8)  # haze the model merged into a confident false object
    model = np.where(truth | blob, 0.98, 0.02).astype(np.float32)
    forest = np.where(truth, 0.9, 0.05).astype(np.float32)  # decides from the pixels: no object there
    errors = (model > 0.5) != truth
    sharp = stroke_uncertainty(model, forest, sigma=0)
    assert sharp.shape == shape and sharp.dtype == np.float32
    assert sharp[errors].min() > 0.9 and sharp[~errors].max() < 0.5
    assert binary_entropy(model)[errors].max() < 0.2  # the model alone calls the blob certain
    assert np.allclose(forest_disagreement(model, forest)[blob], 0.93)
    doubt = stroke_uncertainty(model, forest)  # blurred: the blob's rim and the true edge get doubt too
    far = ~disk(shape, 44, 44, 16) & ~disk(shape, 20, 20, 16)
    assert doubt[disk(shape, 44, 44, 5)].min() > 0.9 and doubt[far].max() < 0.25
    assert doubt[errors].mean() > 3 * doubt[~errors].mean()


def test_the_map_ranks_simulated_errors_on_the_sample(sample):
    """A model that merges a false blob into the background and misses a nucleus, against the
    forest on free-hand scribbles: the errors rank high (ROC AUC)."""
    from scipy import ndimage as ndi
    from sklearn.metrics import roc_auc_score

    from btunet.simulate import first_strokes
    images, masks = sample
    image, mask = tifffile.imread(images[2]), tifffile.imread(masks[2])
    truth = mask > 0
    strokes = first_strokes(mask, "scribble", seed=0)
    forest = btunet.forest_preview(image, strokes).probabilities
    far = ndi.distance_transform_edt(~truth) > 12  # background well away from every nucleus
    cy, cx = np.argwhere(far)[len(np.argwhere(far)) // 2]
    blob = disk(truth.shape, cy, cx, 6) & far
    missed = mask == np.bincount(mask[(strokes == 0) & truth]).argmax()  # a nucleus nobody painted
    model = np.where((truth & ~missed) | blob, 0.97, 0.03).astype(np.float32)
    errors = (model > 0.5) != truth
    assert blob.sum() > 50 and missed.sum() > 50
    doubt = stroke_uncertainty(model, forest)
    assert roc_auc_score(errors.ravel(), doubt.ravel()) > 0.9
    assert np.median(doubt[blob]) > 0.8 and np.median(doubt[missed]) > 0.8
    assert np.median(doubt[~errors]) < 0.2


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
    assert np.allclose(with_forest.uncertainty, stroke_uncertainty(plain.probabilities, forest))
    flips = previewer(tiny_model, uncertainty=True, fast=False)  # without strokes: the flips
    expected = btunet.predict(tiny_model, image, uncertainty=True, device="cpu", fast=False).uncertainty
    assert np.allclose(flips.uncertainty, expected, atol=1e-5)
    assert not np.allclose(flips.uncertainty, with_forest.uncertainty)
    with pytest.raises(BTUnetError, match="forest's probability has shape"):
        previewer(tiny_model, uncertainty=True, forest=forest[:10], fast=False)
