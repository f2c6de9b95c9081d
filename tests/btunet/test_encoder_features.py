"""The forest teacher with a pre-trained encoder's maps beside its filters."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch

from btunet import FinetuneConfig, finetune
from btunet.train import encoder_features as ef
from btunet.train.encoder_features import teacher_features
from btunet.train.model_start import build_from_encoder
from btunet.train.pretrain import as_encoder
from btunet.train.teacher import forest_probabilities


@pytest.fixture(scope="module")
def builtin_net():
    enc = as_encoder("builtin")
    return build_from_encoder(FinetuneConfig(), enc, enc.channels)


def test_maps_of_the_first_two_levels_at_full_resolution(builtin_net, rng):
    pixels = rng.random((1, 70, 90), dtype=np.float32)  # not a multiple of 16
    features = ef.encoder_features(builtin_net.encoder)(pixels)
    import copy
    probe = copy.deepcopy(builtin_net.encoder).eval()  # a train-mode call would move the fixture's BatchNorm
    widths = [probe(torch.zeros(1, 1, 32, 32))[0][k].shape[1] for k in ef.LEVELS]
    assert features.shape == (70, 90, sum(widths)) and features.dtype == np.float32
    assert np.isfinite(features).all() and features.std() > 0


def test_strips_give_the_maps_of_the_whole_plane(builtin_net, rng, monkeypatch):
    pixels = rng.random((1, 200, 64), dtype=np.float32)
    whole = ef.encoder_features(builtin_net.encoder)(pixels)
    monkeypatch.setattr(ef, "STRIP", 48)  # four strips with margins instead of one pass
    stripped = ef.encoder_features(builtin_net.encoder)(pixels)
    np.testing.assert_allclose(stripped, whole, atol=1e-4)


def test_the_caller_encoder_is_neither_changed_nor_put_in_eval_mode(builtin_net, rng):
    builtin_net.train()
    before = {k: v.clone() for k, v in builtin_net.encoder.state_dict().items()}
    ef.encoder_features(builtin_net.encoder)(rng.random((1, 64, 64), dtype=np.float32))
    assert builtin_net.encoder.training
    assert all(torch.equal(before[k], v) for k, v in builtin_net.encoder.state_dict().items())


def test_forest_takes_extra_features(small_sample):
    image = tifffile.imread(sorted((small_sample / "images").iterdir())[0]).astype(np.float32)
    mask = tifffile.imread(sorted((small_sample / "masks").iterdir())[0]) > 0
    pixels = ((image - image.min()) / np.ptp(image))[None]
    ann = np.zeros(mask.shape, np.float32)
    ann[::7, ::7] = 1
    seen = []

    def extra(p):
        seen.append(p.shape)
        return np.stack([p[0], p[0] ** 2], axis=-1)  # two more features per pixel

    prob = forest_probabilities([pixels], [mask.astype(np.float32)], [ann], extra_features=extra)[0]
    assert prob.shape == mask.shape and seen and seen[0] == pixels.shape
    assert ((prob > 0.5) == mask)[ann == 0].mean() > 0.9


def test_teacher_uses_the_given_encoder_else_the_builtin(builtin_net):
    assert teacher_features("filters", None, 1) is None  # filters only, the default
    plane = np.random.default_rng(0).random((1, 32, 48), dtype=np.float32)
    from_builtin = teacher_features("encoder", None, 1)(plane)
    reference = ef.encoder_features(build_from_encoder(FinetuneConfig(), as_encoder("builtin"), 1).encoder)(plane)
    np.testing.assert_allclose(from_builtin, reference, atol=1e-5)
    other = as_encoder("builtin")
    other.encoder_state = {k: v * 0.5 if v.is_floating_point() else v for k, v in other.encoder_state.items()}
    own = teacher_features("encoder", other, 1)(plane)  # the run's encoder, not the built-in one
    assert own.shape == from_builtin.shape and not np.allclose(own, from_builtin)
    rgb = teacher_features("encoder", None, 3)(np.repeat(plane, 3, axis=0))
    np.testing.assert_allclose(rgb, from_builtin, atol=1e-5)  # colour: the mean of the channels


def test_strokes_fine_tune_with_the_encoder_teacher(small_sample, fast_finetune_config):
    image = tifffile.imread(sorted((small_sample / "images").iterdir())[0])
    mask = tifffile.imread(sorted((small_sample / "masks").iterdir())[0])
    ann = np.zeros(mask.shape, np.uint8)
    ann[::5, ::5] = np.where(mask[::5, ::5] > 0, 2, 1)
    cfg = replace(fast_finetune_config, mask_mode="sparse", teacher_features="encoder")
    net = finetune(image, ann, cfg)
    assert net.metadata["finetune_config"]["teacher_features"] == "encoder"
    assert 0 < net.metadata["trained_on"]["pseudo_labelled_pixels"] <= int((ann == 0).sum())


def test_fine_teacher_sees_the_raw_pixel_and_the_finest_scales(small_sample, fast_finetune_config):
    """``teacher_features="fine"``: three intensities per channel (raw, sigma 0.3, sigma 0.7) beside the
    filters, so a one-pixel rim is visible to the forest; a stroke run with them trains and says so."""
    from scipy.ndimage import gaussian_filter
    plane = np.random.default_rng(0).random((2, 24, 30), dtype=np.float32)
    fine = teacher_features("fine", None, 2)(plane)
    assert fine.shape == (24, 30, 6)
    np.testing.assert_array_equal(fine[..., :2], np.moveaxis(plane, 0, -1))
    np.testing.assert_allclose(fine[..., 4], gaussian_filter(plane[0], 0.7), atol=1e-6)
    rim = np.zeros((1, 24, 30), np.float32)
    rim[0, 12, :] = 1.0  # a line one pixel wide: the filters from sigma 1 on blur it into its neighbours
    raw = teacher_features("fine", None, 1)(rim)[..., 0]
    assert raw[12, 5] == 1 and raw[11, 5] == 0
    image = tifffile.imread(sorted((small_sample / "images").iterdir())[0])
    mask = tifffile.imread(sorted((small_sample / "masks").iterdir())[0])
    ann = np.zeros(mask.shape, np.uint8)
    ann[::5, ::5] = np.where(mask[::5, ::5] > 0, 2, 1)
    net = finetune(image, ann, replace(fast_finetune_config, mask_mode="sparse", teacher_features="fine"))
    assert net.metadata["finetune_config"]["teacher_features"] == "fine"
    assert 0 < net.metadata["trained_on"]["pseudo_labelled_pixels"] <= int((ann == 0).sum())
