"""The dense Barlow Twins objective: point mapping between views, its loss, and pre-training with it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from btunet import BTUnetError, PretrainConfig, pretrain
from btunet.cli.commands import main
from btunet.core.config import seed_everything
from btunet.models import create_model
from btunet.pipeline.data import image_planes, load_sources
from btunet.train.augment import random_resized_crop, two_views
from btunet.train.dense_twins import DenseTwins, level_channels, sample_at, shared_points, to_view
from btunet.train.losses import barlow_twins_loss
from btunet.train.pretrain import EncoderRun, build_encoder, embed, pair_loss, pretrain_ddp, train_encoder


def smooth_fields(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """(n, channels, size, size) sums of a few slow sinusoids: bilinear resampling is nearly exact."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = torch.zeros(n, channels, size, size)
    for _ in range(3):
        fx, fy, phase = (torch.rand(3, n, channels, 1, 1, generator=g) * torch.tensor([3.0, 3.0, 6.3])[:, None,
                                                                                                      None, None, None])
        out += torch.sin(math.pi * (fx * xx + fy * yy) + phase)
    return out


def crops(x: torch.Tensor, seed: int):
    g = torch.Generator().manual_seed(seed)
    view_a, theta_a = random_resized_crop(x, generator=g, return_theta=True)
    view_b, theta_b = random_resized_crop(x, generator=g, return_theta=True)
    return view_a, view_b, theta_a, theta_b


def test_two_views_are_unchanged_when_the_geometry_is_asked_for():
    x = torch.rand(6, 1, 32, 32)
    plain = two_views(x, torch.Generator().manual_seed(3))
    view_a, view_b, theta_a, theta_b = two_views(x, torch.Generator().manual_seed(3), return_geometry=True)
    assert torch.equal(plain[0], view_a) and torch.equal(plain[1], view_b)
    assert theta_a.shape == theta_b.shape == (6, 2, 3) and not torch.equal(theta_a, theta_b)
    assert torch.equal(random_resized_crop(x, generator=torch.Generator().manual_seed(5)),
                       random_resized_crop(x, generator=torch.Generator().manual_seed(5), return_theta=True)[0])


def test_mapped_points_see_the_same_source_pixel_in_both_views():
    source = smooth_fields(32, 2, 128, seed=0)  # 32 samples: every flip/rotation occurs
    view_a, view_b, theta_a, theta_b = crops(source, seed=1)
    p = shared_points(theta_a, theta_b, 7)
    v_a, v_b = to_view(theta_a, p), to_view(theta_b, p)
    assert p.shape == (32, 49, 2)
    assert v_a.abs().max() <= 1 and v_b.abs().max() <= 1  # inside both views
    truth = sample_at(source, p)
    seen_a, seen_b = sample_at(view_a, v_a), sample_at(view_b, v_b)
    assert (seen_a - truth).abs().max() < 0.05 and (seen_b - truth).abs().max() < 0.05
    # the mapping matters: reading view b where view a's points are is far off
    assert (sample_at(view_b, v_a) - truth).abs().mean() > 10 * (seen_b - truth).abs().mean()


def test_points_spread_over_the_intersection_of_the_crops():
    theta_a = torch.tensor([[[0.8, 0.0, -0.2], [0.0, 0.8, 0.1]]])
    theta_b = torch.tensor([[[0.0, -0.75, 0.25], [0.75, 0.0, 0.0]]])  # rotated crop
    p = shared_points(theta_a, theta_b, 3)[0]
    # boxes x [-1.0, 0.6] and [-0.5, 1.0], y [-0.7, 0.9] and [-0.75, 0.75]: cell centres of the overlap
    centres = torch.tensor([1.0, 3.0, 5.0]) / 6
    assert torch.allclose(p[:, 0].reshape(3, 3)[0], -0.5 + 1.1 * centres)
    assert torch.allclose(p[:, 1].reshape(3, 3)[:, 0], -0.7 + 1.45 * centres)
    assert torch.equal(p[:, 0].reshape(3, 3)[0], p[:, 0].reshape(3, 3)[2])  # x varies along a row only
    # disjoint boxes (smaller crops than the default allows): all points collapse between them
    far = torch.tensor([[[0.2, 0.0, 0.7], [0.0, 0.2, 0.0]]])
    near = torch.tensor([[[0.2, 0.0, -0.7], [0.0, 0.2, 0.0]]])
    assert torch.allclose(shared_points(far, near, 2)[0, :, 0], torch.zeros(4))


def test_dense_loss_is_low_for_aligned_features_and_high_for_unrelated_ones():
    torch.manual_seed(0)
    source = smooth_fields(16, 8, 64, seed=2)
    feats_a, feats_b, theta_a, theta_b = crops(source, seed=3)
    dense = DenseTwins(8, 32, points=5)
    aligned = barlow_twins_loss(*dense(feats_a, feats_b, theta_a, theta_b))
    other = crops(smooth_fields(16, 8, 64, seed=4), seed=3)[1]
    unrelated = barlow_twins_loss(*dense(feats_a, other, theta_a, theta_b))
    same = barlow_twins_loss(*dense(feats_a, feats_a, theta_a, theta_a))
    # identical maps leave only the off-diagonal term; matched points of two crops come close to it
    assert same < 1 and aligned < 1.1 * same and unrelated > 20 * aligned


def test_zero_dense_weight_is_exactly_the_global_loss():
    g = torch.Generator().manual_seed(0)
    z_a, z_b, d_a, d_b = (torch.randn(8, 16, generator=g) for _ in range(4))
    plain = barlow_twins_loss(z_a, z_b, 5e-3)
    assert torch.equal(pair_loss((z_a, z_b, d_a, d_b), 5e-3, 0.0), plain)
    assert torch.equal(pair_loss((z_a, z_b), 5e-3, 1.0), plain)
    assert torch.allclose(pair_loss((z_a, z_b, d_a, d_b), 5e-3, 0.5), plain + 0.5 * barlow_twins_loss(d_a, d_b))


def _tiny(**overrides) -> PretrainConfig:
    return PretrainConfig(**{"epochs": 2, "batch_size": 4, "patch_size": 32, "base_filters": 4, "samples_per_epoch": 8,
                             "projector_dim": 32, "device": "cpu", **overrides})


@pytest.fixture(scope="module")
def planes():
    return [smooth_fields(1, 1, 96, seed=i)[0, 0].numpy() + 0.1 * np.random.default_rng(i).random((96, 96),
                                                                                                 np.float32)
            for i in range(4)]


def test_pretraining_without_dense_weight_is_the_global_loop(planes):
    """dense_weight 0 draws no extra random numbers and trains exactly as the pooled objective alone."""
    cfg = _tiny()
    result = pretrain(planes, cfg)
    seed_everything(cfg.seed)
    run_planes = [p.pixels for name, arr in load_sources(planes) for p in image_planes(name, arr, 1, min_size=32)]
    model, projector, history = build_encoder(cfg, None, torch.device("cpu"))
    enc, proj = model.encoder, projector
    run = EncoderRun(planes=run_planes, total_planes=4, files=[],
                     device=torch.device("cpu"), batch_size=4, rng=np.random.default_rng(cfg.seed),
                     embed_pair=lambda a, b: (embed(enc, proj, a), embed(enc, proj, b)),
                     loss=barlow_twins_loss, stop=lambda: False, report=None)
    old = train_encoder(cfg, run, model.config, enc, proj, history)
    assert result.metadata["loss_history"] == old.metadata["loss_history"]
    assert all(torch.equal(v, old.encoder_state[k]) for k, v in result.encoder_state.items())


def test_dense_pretraining_trains_saves_and_resumes(planes, tmp_path):
    cfg = _tiny(dense_weight=1.0)
    seed_everything(cfg.seed)
    fresh = create_model("unet", base_filters=4).encoder.state_dict()
    enc = pretrain(planes, cfg)
    history = enc.metadata["loss_history"]
    assert len(history) == 2 and all(np.isfinite(history))
    changed = [k for k, v in enc.encoder_state.items() if v.dtype.is_floating_point and not torch.equal(v, fresh[k])]
    assert len(changed) > len(fresh) // 2
    assert enc.metadata["pretrain_config"]["dense_weight"] == 1.0
    # the dense loss adds to the global one and changes what the encoder learns
    plain = pretrain(planes, _tiny())
    assert history[0] > plain.metadata["loss_history"][0]
    assert not torch.equal(enc.encoder_state["blocks.0.shortcut.0.weight"],
                           plain.encoder_state["blocks.0.shortcut.0.weight"])
    # the file holds the encoder and the global projector only; a resumed run starts a new dense projector
    path = enc.save(tmp_path / "dense.safetensors")
    resumed = pretrain(planes, _tiny(dense_weight=1.0, epochs=1), resume=path)
    assert len(resumed.metadata["loss_history"]) == 3


def test_level_channels_follow_the_encoder():
    encoder = create_model("unet", base_filters=4).encoder
    assert [level_channels(encoder, 1, k) for k in range(5)] == [4, 8, 16, 32, 64]
    assert encoder.training
    with pytest.raises(BTUnetError, match="dense_level"):
        level_channels(encoder, 1, 5)


@pytest.mark.parametrize("field,value", [("dense_weight", -1.0), ("dense_weight", math.nan),
                                         ("dense_level", 5), ("dense_points", 0)])
def test_bad_dense_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(BTUnetError, match=field):
        PretrainConfig(**{field: value})


def test_distributed_pretraining_refuses_the_dense_loss(planes):
    with pytest.raises(BTUnetError, match="dense_weight"):
        pretrain_ddp(planes, _tiny(dense_weight=1.0))


def test_cli_refuses_a_negative_dense_weight_in_one_line(tmp_path, capsys):
    assert main(["pretrain", str(tmp_path), "--out", str(tmp_path / "e.safetensors"), "--dense-weight", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dense-weight" in err and "\n" not in err
