"""Pre-training and fine-tuning on real images, for a few steps."""
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch

from btunet import BTUnetError, FinetuneConfig, PretrainConfig, create_model, finetune, pretrain
from btunet.train.pretrain import PretrainedEncoder
from btunet.train.training_set import annotated_planes, hold_out_validation


def test_pretrain_changes_the_encoder_and_reports_progress(small_sample, fast_pretrain_config):
    reports = []
    torch.manual_seed(fast_pretrain_config.seed)
    fresh = create_model("unet").encoder.state_dict()
    enc = pretrain(small_sample / "images", fast_pretrain_config, on_progress=reports.append)
    assert enc.variant == "unet" and enc.channels == 1
    assert len(reports) == 2 and reports[-1].step == reports[-1].total_steps == 2
    assert all(np.isfinite(r.loss) for r in reports)
    changed = [k for k, v in enc.encoder_state.items() if v.dtype.is_floating_point
               and not torch.equal(v, fresh[k])]
    assert len(changed) > len(fresh) // 2
    assert enc.metadata["trained_on"]["planes"] == 4
    assert len(enc.metadata["loss_history"]) == 1


def test_pretrain_loss_decreases_on_real_images(small_sample):
    cfg = PretrainConfig(epochs=6, batch_size=8, patch_size=64, samples_per_epoch=16, device="cpu",
                         projector_dim=64, lr=3e-3)
    history = pretrain(small_sample / "images", cfg).metadata["loss_history"]
    assert history[-1] < history[0]


def test_pretrain_stop_request_and_resume(small_sample, fast_pretrain_config, tmp_path):
    calls = iter(range(100))
    enc = pretrain(small_sample / "images", fast_pretrain_config, should_stop=lambda: next(calls) >= 1)
    assert enc.metadata["stopped_early"] is True
    path = enc.save(tmp_path / "enc.safetensors")
    resumed = pretrain(small_sample / "images", fast_pretrain_config, resume=path)
    assert len(resumed.metadata["loss_history"]) == 2
    other = PretrainConfig(**{**fast_pretrain_config.__dict__, "model": "attention_unet"})
    with pytest.raises(BTUnetError, match="cannot resume"):
        pretrain(small_sample / "images", other, resume=path)


def test_pretrain_skips_unreadable_files_with_a_warning(small_sample, fast_pretrain_config, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in (small_sample / "images").iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.tif").write_bytes(b"not a tiff at all")
    (folder / "notes.txt").write_text("ignored: not an image")
    with pytest.warns(UserWarning, match="broken.tif"):
        enc = pretrain(folder, fast_pretrain_config)
    assert enc.metadata["trained_on"]["files"] == sorted(p.name for p in (small_sample / "images").iterdir())


def test_pretrain_mixed_gray_rgb_and_stacks(fast_pretrain_config):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (70, 80, 3), dtype=np.uint8),          # RGB
              rng.integers(0, 4000, (3, 64, 64), dtype=np.uint16),         # stack: 3 samples
              rng.random((40, 50)).astype(np.float32)]                     # small float image
    enc = pretrain(images, fast_pretrain_config)
    assert enc.metadata["trained_on"]["planes"] == 5


def test_pretrained_encoder_weights_land_in_the_finetune_model(small_sample, fast_pretrain_config):
    enc = pretrain(small_sample / "images", fast_pretrain_config)
    cfg = FinetuneConfig(mask_mode="dense", epochs=0, device="cpu")
    images = sorted((small_sample / "images").iterdir())[:2]
    masks = sorted((small_sample / "masks").iterdir())[:2]
    model = finetune(images, masks, cfg, encoder=enc)
    for k, v in model.encoder.state_dict().items():  # BatchNorm statistics: re-estimated on the images
        statistic = "running" in k or "num_batches" in k
        assert torch.equal(v, enc.encoder_state[k]) != statistic, k
    kept = finetune(images, masks, replace(cfg, encoder_refit_bn=False), encoder=enc)
    for k, v in kept.encoder.state_dict().items():
        assert torch.equal(v, enc.encoder_state[k]), k


def test_encoder_lr_scale_zero_keeps_the_pretrained_encoder(small_sample, fast_pretrain_config):
    enc = pretrain(small_sample / "images", fast_pretrain_config)
    cfg = FinetuneConfig(mask_mode="dense", epochs=1, steps_per_epoch=3, batch_size=2, patch_size=64,
                         device="cpu", encoder_lr_scale=0.0)
    images = sorted((small_sample / "images").iterdir())[:1]
    masks = sorted((small_sample / "masks").iterdir())[:1]
    model = finetune(images, masks, cfg, encoder=enc)
    weights = {k: v for k, v in model.encoder.state_dict().items() if k.endswith("weight")}
    assert all(torch.equal(v, enc.encoder_state[k]) for k, v in weights.items())
    untrained = finetune(images, masks, replace(cfg, epochs=0), encoder=enc).decoder.state_dict()
    assert any(not torch.equal(v, untrained[k]) for k, v in model.decoder.state_dict().items()
               if k.endswith("weight"))  # the rest trained (BatchNorm running stats move even at lr 0)
    with pytest.raises(BTUnetError, match="encoder_lr_scale"):
        finetune(images, masks, FinetuneConfig(encoder_lr_scale=-1, device="cpu"), encoder=enc)


def test_finetune_learns_from_two_real_images(sample):
    images, masks = sample
    def crop(p):
        return tifffile.imread(p)[50:306, 50:306]
    cfg = FinetuneConfig(mask_mode="dense", epochs=6, steps_per_epoch=8, batch_size=4, patch_size=96, device="cpu")
    model = finetune([crop(p) for p in images[:2]], [crop(p) for p in masks[:2]], cfg)
    from btunet import evaluate, predict
    dice = evaluate(predict(model, crop(images[5]), device="cpu").labels, crop(masks[5]))["dice"]
    assert dice > 0.8
    meta = model.metadata
    assert meta["trained_on"]["annotated_pixels"]["object"] > 0
    assert meta["trained_on"]["validation_pixels"] > 0
    assert any(d is not None for d in meta["val_dice_history"])


def test_finetune_on_sparse_scribbles(small_sample, fast_finetune_config):
    image = tifffile.imread(sorted((small_sample / "images").iterdir())[0])
    mask = tifffile.imread(sorted((small_sample / "masks").iterdir())[0])
    scribble = np.zeros(mask.shape, np.uint8)
    scribble[(mask > 0) & (np.arange(mask.size).reshape(mask.shape) % 7 == 0)] = 2
    scribble[(mask == 0) & (np.arange(mask.size).reshape(mask.shape) % 11 == 0)] = 1
    cfg = FinetuneConfig(**{**fast_finetune_config.__dict__, "mask_mode": "sparse"})
    model = finetune(image, scribble, cfg)
    px = model.metadata["trained_on"]["annotated_pixels"]
    assert px["object"] == int((scribble == 2).sum()) and px["background"] == int((scribble == 1).sum())


def test_finetune_stop_returns_a_usable_model(small_sample, fast_finetune_config):
    steps = iter(range(100))
    images = sorted((small_sample / "images").iterdir())[:1]
    masks = sorted((small_sample / "masks").iterdir())[:1]
    model = finetune(images, masks, fast_finetune_config, should_stop=lambda: next(steps) >= 2)
    assert model.metadata["stopped"] == "cancelled"
    from btunet import predict
    assert predict(model, tifffile.imread(images[0]), device="cpu").labels.shape == (128, 128)


def test_time_budget_ends_within_it_and_reports_time(small_sample, fast_finetune_config):
    """A run limited by time stops before the step that would overrun it (also mid-epoch, with
    the plateau schedule) and reports elapsed of budget, with the rest of the budget as ETA."""
    import time
    images = sorted((small_sample / "images").iterdir())[:1]
    masks = sorted((small_sample / "masks").iterdir())[:1]
    budget = 4.0
    cfg = replace(fast_finetune_config, epochs=100000, steps_per_epoch=40, time_budget_s=budget)
    reports = []
    start = time.perf_counter()
    model = finetune(images, masks, cfg, on_progress=lambda p: reports.append(replace(p, model=None)))
    wall = time.perf_counter() - start
    longest_step = max(b.elapsed_s - a.elapsed_s for a, b in zip(reports, reports[1:], strict=False))
    assert model.metadata["stopped"] == "time_budget"
    assert model.metadata["seconds"] <= budget
    assert wall <= budget + longest_step + 0.5
    for p in reports:
        assert p.time_budget_s == budget
        assert p.fraction == pytest.approx(min(1.0, p.elapsed_s / budget))
        assert p.eta_s == pytest.approx(max(0.0, budget - p.elapsed_s))


def test_finetune_continues_from_given_weights(small_sample, fast_finetune_config):
    images = sorted((small_sample / "images").iterdir())[:1]
    masks = sorted((small_sample / "masks").iterdir())[:1]
    first = finetune(images, masks, fast_finetune_config)
    snapshot = {k: v.clone() for k, v in first.state_dict().items()}
    cfg0 = FinetuneConfig(**{**fast_finetune_config.__dict__, "epochs": 0})
    again = finetune(images, masks, cfg0, model=first)
    assert again is first and all(torch.equal(v, snapshot[k]) for k, v in again.state_dict().items())


@pytest.mark.parametrize("labels,match", [
    (np.zeros((64, 64), np.uint8), "no annotated pixels"),
    (np.ones((64, 64), np.uint8), "no object pixels"),
    (np.full((64, 64), 2, np.uint8), "no background pixels"),
    (np.full((64, 64), 20, np.uint8), "use mask mode 'dense' for instance masks"),
    (np.tile(np.array([1, 3], np.uint8), (64, 32)), "class 1 .*no annotated pixels"),
    (np.zeros((60, 64), np.uint8), "does not match image"),
])
def test_bad_annotations_are_clear_errors(labels, match):
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    with pytest.raises(BTUnetError, match=match):
        finetune(image, labels, FinetuneConfig(mask_mode="sparse", epochs=1, device="cpu"))


def test_encoder_variant_mismatch_is_a_clear_error():
    model = create_model("unet")
    enc = PretrainedEncoder(model.config, model.encoder.state_dict(), {}, {})
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint8)
    labels[:10], labels[-10:] = 1, 2
    with pytest.raises(BTUnetError, match="pre-trained for 'unet'"):
        finetune(image, labels, FinetuneConfig(model="rca_iunet", epochs=1, device="cpu"), encoder=enc)


def test_validation_blocks_are_taken_from_training(rng):
    image = rng.random((256, 256)).astype(np.float32)
    labels = (rng.random((256, 256)) > 0.5).astype(np.uint8)
    planes = annotated_planes([("a", image)], [("a", labels)], 1, "dense", 64)
    before = planes[0].weight.sum()
    assert hold_out_validation(planes, 0.25, rng)
    p = planes[0]
    assert p.weight.sum() + p.val_weight.sum() == before
    assert not np.any((p.weight > 0) & (p.val_weight > 0))
    assert p.val_weight.sum() == pytest.approx(0.25 * before, rel=0.1)
