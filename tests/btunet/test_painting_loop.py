"""Learning from strokes: forest pseudo-labels, continuation after more painting, uncertainty maps."""
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch
from scipy.special import expit

from btunet import FinetuneConfig, create_model, finetune, predict
from btunet.infer.predict import predict_logits, uncertainty_map
from btunet.pipeline.data import AnnotatedPlane
from btunet.train.losses import masked_bce_dice_loss
from btunet.train.pseudo import focus_on_errors, model_probabilities
from btunet.train.teacher import forest_probabilities, pseudo_targets


def strokes(mask: np.ndarray) -> np.ndarray:
    """Sparse labels: every 9th object pixel and every 13th background pixel, the rest unpainted."""
    flat = np.arange(mask.size).reshape(mask.shape)
    ann = np.zeros(mask.shape, np.uint8)
    ann[(mask > 0) & (flat % 9 == 0)] = 2
    ann[(mask == 0) & (flat % 13 == 0)] = 1
    return ann


@pytest.fixture(scope="module")
def crop(small_sample):
    image = tifffile.imread(sorted((small_sample / "images").iterdir())[0])
    mask = tifffile.imread(sorted((small_sample / "masks").iterdir())[0])
    return image, mask


def test_pseudo_targets_keep_only_confident_pixels():
    prob = np.array([[0.05, 0.3, 0.5], [0.7, 0.85, 0.99]], np.float32)
    target, weight = pseudo_targets(prob, 0.8)
    assert target.tolist() == [[0, 0, 0], [1, 1, 1]]
    assert weight.tolist() == [[1, 0, 0], [0, 1, 1]]


def test_edge_emphasis_weighs_up_both_sides_of_every_label_edge():
    from btunet.train.pseudo import EDGE_SIGMA, edge_emphasis
    target = np.zeros((40, 40), np.float32)
    target[10:20, 10:20] = 1
    target[25:30, 5:35] = 2  # an edge between two classes counts as one too
    factor = edge_emphasis(target, 4.0)
    assert factor[10, 15] == factor[9, 15] == 5.0  # inside and outside the square's top edge
    assert factor[24, 20] == factor[25, 20] == 5.0
    assert factor[15, 15] == pytest.approx(1 + 4 * np.exp(-16 / (2 * EDGE_SIGMA ** 2)), rel=1e-5)
    assert factor[0, 39] == pytest.approx(1.0, abs=1e-6) and factor.min() >= 1.0
    assert np.array_equal(edge_emphasis(np.ones((8, 8), np.float32), 4.0), np.ones((8, 8), np.float32))


def test_pseudo_labels_move_weight_to_the_teachers_edge_and_strokes_keep_theirs(rng):
    from btunet.train.pseudo import add_pseudo_labels
    from btunet.train.training_set import annotated_planes
    image = np.zeros((128, 128), np.float32)
    image[40:90, 40:90] = 1.0
    image += rng.normal(0, 0.05, image.shape).astype(np.float32)
    labels = np.zeros((128, 128), np.uint8)
    labels[60:70, 60:70] = 2
    labels[5:8, 5:60] = 1
    planes = annotated_planes([("a", image)], [("a", labels)], 1, "sparse", 128)
    add_pseudo_labels(planes, FinetuneConfig(pseudo_edge_weight=5.0, device="cpu"))
    w = planes[0].weight
    far = w[110, 110]
    assert w[36:44, 65].max() > 5 * far and w[86:94, 65].max() > 5 * far  # at the square's edges
    pseudo = (w > 0) & (labels == 0)
    assert w[pseudo].mean() == pytest.approx(1.0, rel=1e-4)  # moved, not added: the plane counts as before
    assert np.all(w[labels > 0] == 1.0)  # what was painted keeps its own weight
    # a continuation's pseudo-labels (the current model's and a new forest's) stay flat
    planes = annotated_planes([("a", image)], [("a", labels)], 1, "sparse", 128)
    model_probs = [np.clip(image, 0.01, 0.99)]
    add_pseudo_labels(planes, FinetuneConfig(pseudo_edge_weight=5.0, device="cpu"), model_probs)
    assert set(np.unique(planes[0].weight).tolist()) == {0.0, 1.0}


def disk(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_a_correction_reaches_as_deep_as_the_models_mistake():
    from btunet.train.pseudo import CORRECTION_MARGIN, CORRECTION_RADIUS, overruled_by
    truth = disk((64, 64), (32, 32), 10)
    fat = disk((64, 64), (32, 32), 11).astype(np.float32)  # the model draws the nucleus a pixel too fat
    rim = np.zeros((64, 64), bool)
    rim[32, 43] = True  # background painted on that rim
    cleared = overruled_by(rim, fat, truth.astype(np.float32))
    assert cleared[32, 43 - CORRECTION_MARGIN] and not cleared[32, 40 - CORRECTION_MARGIN]
    assert not cleared[32, 32]  # the nucleus keeps its pseudo-labels
    # background painted in the middle of a false blob in the haze clears the whole blob
    blob = disk((64, 64), (12, 50), 8)
    centre = np.zeros((64, 64), bool)
    centre[12, 50] = True
    cleared = overruled_by(centre, blob.astype(np.float32), np.zeros((64, 64), np.float32))
    assert cleared[blob].all() and cleared.sum() < disk((64, 64), (12, 50), CORRECTION_RADIUS).sum()
    # an object the model missed altogether: the largest reach; a fixed radius: that radius everywhere
    missed = overruled_by(centre, np.zeros((64, 64), np.float32), np.ones((64, 64), np.float32))
    assert np.array_equal(missed, disk((64, 64), (12, 50), CORRECTION_RADIUS))
    assert np.array_equal(overruled_by(rim, fat, truth.astype(np.float32), 12.0), disk((64, 64), (32, 43), 12))


def test_rim_corrections_leave_the_continuation_its_pseudo_labels_inside_the_object():
    from btunet.train.pseudo import add_pseudo_labels
    from btunet.train.training_set import annotated_planes
    truth = disk((128, 128), (64, 64), 20)
    image = truth.astype(np.float32)
    labels = np.zeros((128, 128), np.uint8)
    labels[62:66, 62:66] = 2
    labels[5:8, 5:60] = 1
    rim = disk((128, 128), (64, 64), 21) & ~truth
    labels[rim & (np.arange(128)[None, :] > 64)] = 1  # background painted along half the fat rim
    model_probs = [np.where(disk((128, 128), (64, 64), 21), 0.95, 0.05).astype(np.float32)]
    weights = {}
    for radius in (None, 12.0):
        planes = annotated_planes([("a", image)], [("a", labels)], 1, "sparse", 128)
        add_pseudo_labels(planes, FinetuneConfig(device="cpu", continue_teacher="model", correction_radius=radius),
                          model_probs)
        weights[radius] = planes[0].weight
    inside = truth & (labels == 0)
    assert (weights[None][inside] > 0).mean() > 0.8  # the nucleus keeps its labels
    assert (weights[12.0][inside] > 0).mean() < 0.5  # a fixed 12 px strips most of it
    assert np.all(weights[None][rim & (labels == 0) & (np.arange(128)[None, :] > 66)] == 0)


def test_after_the_first_continuation_the_model_alone_teaches_near_its_edges(monkeypatch):
    import btunet.train.teacher as teacher
    from btunet.train.pseudo import MODEL_EDGE_BAND, add_pseudo_labels, near_edges
    from btunet.train.training_set import annotated_planes
    nucleus = disk((96, 96), (48, 48), 16)
    labels = np.zeros((96, 96), np.uint8)
    labels[46:50, 46:50] = 2
    labels[2:5, 2:90] = 1
    model = np.where(nucleus, 0.9, 0.1).astype(np.float32)
    # a forest that has just seen background painted on rims: it calls the nucleus's rim background
    monkeypatch.setattr(teacher, "forest_probabilities", lambda *a, **k: [np.where(
        disk((96, 96), (48, 48), 13), 0.9, 0.1).astype(np.float32)])
    band = near_edges(nucleus.astype(np.float32))
    assert band[48, 48 + 16] and band[48, 48 + 16 + MODEL_EDGE_BAND] and not band[48, 48]
    targets = {}
    for own in (False, True):
        planes = annotated_planes([("a", model)], [("a", labels)], 1, "sparse", 96)
        add_pseudo_labels(planes, FinetuneConfig(device="cpu"), [model], model_edges=own)
        targets[own] = (planes[0].target, planes[0].weight)
    rim = disk((96, 96), (48, 48), 15) & ~disk((96, 96), (48, 48), 14)
    assert np.all(targets[False][1][rim] == 0)  # the mean of 0.9 and 0.1 is no label
    assert np.all(targets[True][0][rim] == 1) and np.all(targets[True][1][rim] > 0)  # the model's own
    inner = disk((96, 96), (48, 48), 10) & (labels == 0)
    assert np.array_equal(targets[False][0][inner], targets[True][0][inner])  # away from edges: the same


def test_only_a_model_continued_before_keeps_its_edges(crop, fast_finetune_config, monkeypatch):
    import sys
    ft = sys.modules["btunet.train.finetune"]  # the module; btunet.finetune is the function
    image, mask = crop
    cfg = replace(fast_finetune_config, mask_mode="sparse")
    seen, real = [], ft.add_pseudo_labels
    monkeypatch.setattr(ft, "add_pseudo_labels", lambda *a, model_edges=False, **k: (
        seen.append(model_edges), real(*a, model_edges=model_edges, **k))[1])
    model = finetune(image, strokes(mask), cfg)
    for _ in range(2):
        model = finetune(image, strokes(mask), replace(cfg.continuation(), epochs=1), model=model)
    assert seen == [False, False, True]


def test_forest_learns_the_sample_from_strokes(crop):
    image, mask = crop
    ann = strokes(mask)
    pixels = ((image - image.min()) / np.ptp(image)).astype(np.float32)[None]
    prob = forest_probabilities([pixels], [(ann == 2).astype(np.float32)], [(ann > 0).astype(np.float32)])[0]
    unpainted = ann == 0
    agreement = ((prob > 0.5) == (mask > 0))[unpainted].mean()
    assert prob.shape == mask.shape and agreement > 0.9


def test_sparse_finetune_adds_pseudo_labels_but_counts_only_painted_pixels(crop, fast_finetune_config):
    image, mask = crop
    ann = strokes(mask)
    cfg = replace(fast_finetune_config, mask_mode="sparse")
    meta = finetune(image, ann, cfg).metadata["trained_on"]
    assert meta["annotated_pixels"] == {"object": int((ann == 2).sum()), "background": int((ann == 1).sum())}
    assert 0 < meta["pseudo_labelled_pixels"] <= int((ann == 0).sum())
    off = finetune(image, ann, replace(cfg, pseudo_labels="none")).metadata["trained_on"]
    assert off["pseudo_labelled_pixels"] == 0


def test_weighted_loss_matches_a_naive_per_pixel_reference(rng):
    logits = torch.tensor(rng.normal(size=(2, 1, 5, 6)), dtype=torch.float32)
    target = torch.tensor(rng.random((2, 1, 5, 6)) > 0.5, dtype=torch.float32)
    weight = torch.tensor(rng.choice([0.0, 0.5, 1.0], size=(2, 1, 5, 6)), dtype=torch.float32)
    bce, inter, psum, tsum = 0.0, 0.0, 0.0, 0.0
    for z, t, w in zip(logits.flatten().tolist(), target.flatten().tolist(), weight.flatten().tolist(), strict=True):
        p = 1 / (1 + np.exp(-z))
        bce += -w * (t * np.log(p) + (1 - t) * np.log(1 - p))
        inter, psum, tsum = inter + w * p * t, psum + w * p, tsum + w * t
    naive = 0.5 * (bce / weight.sum().item() + 1 - (2 * inter + 1) / (psum + tsum + 1))
    assert masked_bce_dice_loss(logits, target, weight).item() == pytest.approx(naive, rel=1e-5)


def test_cosine_schedule_for_strokes_keeps_the_last_weights(crop, fast_finetune_config):
    image, mask = crop
    cfg = replace(fast_finetune_config, mask_mode="sparse", epochs=None)
    assert cfg.total_epochs() == 12 and cfg.uses_cosine()
    assert replace(cfg, mask_mode="dense").total_epochs() == 60
    assert not replace(cfg, mask_mode="dense").uses_cosine()
    lrs = []
    model = finetune(image, strokes(mask), replace(cfg, epochs=2), on_progress=lambda p: lrs.append(p.lr))
    assert lrs[0] > lrs[-1] and lrs == sorted(lrs, reverse=True)
    assert model.metadata["best_epoch"] == 2


def test_continuation_is_short_and_centres_on_new_mistakes(crop, fast_finetune_config):
    image, mask = crop
    cfg = replace(fast_finetune_config, mask_mode="sparse")
    cont = cfg.continuation()
    assert cont.total_epochs() == cfg.continue_epochs and cont.lr < cfg.lr and cont.uses_cosine()
    ann = strokes(mask)
    first = finetune(image, ann, cfg)
    assert first.metadata["trained_on"]["painted_pixels_wrong_at_start"] is None
    pred = predict(first, image, device="cpu").labels
    more = ann.copy()
    wrong = (pred > 0) != (mask > 0)
    more[wrong & (mask > 0)] = 2
    more[wrong & (mask == 0)] = 1
    steps = []
    again = finetune(image, more, replace(cont, epochs=1), model=first, on_progress=lambda p: steps.append(p.step))
    assert again is first and steps[-1] == cfg.steps_per_epoch
    assert again.metadata["trained_on"]["painted_pixels_wrong_at_start"] >= int(wrong.sum()) // 2


def test_focus_on_errors_points_at_wrong_painted_pixels():
    torch.manual_seed(0)
    net = create_model("unet").eval()
    pixels = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    logits = predict_logits(net, pixels, fast=False)
    target = (logits <= 0).astype(np.float32)  # the model gets every pixel wrong
    painted = np.zeros((32, 32), bool)
    painted[:4] = True
    plane = AnnotatedPlane(pixels, target, painted.astype(np.float32), np.zeros((32, 32), np.float32), "a",
                           painted=painted)
    assert focus_on_errors([plane], model_probabilities(net, [plane], fast=False)) == painted.sum()
    assert np.array_equal(plane.focus, painted)


def test_uncertainty_matches_a_naive_flip_ensemble():
    torch.manual_seed(0)
    net = create_model("unet").eval()
    pixels = np.random.default_rng(1).random((1, 48, 40)).astype(np.float32)
    prob, doubt = uncertainty_map(net, pixels, fast=False)
    x = torch.from_numpy(pixels)[None]
    with torch.no_grad():
        probs = [torch.sigmoid(net(x.flip(d)).flip(d)) if d else torch.sigmoid(net(x))
                 for d in ((), (-1,), (-2,), (-2, -1))]
    mean = torch.stack(probs).mean(0)[0, 0].clamp(1e-6, 1 - 1e-6).numpy()
    naive = -(mean * np.log2(mean) + (1 - mean) * np.log2(1 - mean))
    assert doubt.shape == (48, 40) and doubt.dtype == np.float32
    assert np.abs(doubt - naive).max() < 1e-4
    assert np.abs(prob - expit(predict_logits(net, pixels, fast=False))).max() < 1e-5
    assert doubt.min() >= 0 and doubt.max() <= 1


def test_predict_uncertainty_leaves_labels_unchanged_and_flags_the_boundary(crop, fast_finetune_config):
    image, mask = crop
    model = finetune(image, mask, fast_finetune_config)
    plain = predict(model, image, device="cpu")
    with_map = predict(model, image, device="cpu", uncertainty=True)
    assert plain.uncertainty is None
    assert np.array_equal(plain.labels, with_map.labels)
    u = with_map.uncertainty
    assert u.shape == image.shape and u.min() >= 0 and u.max() <= 1
    near = np.abs(with_map.probabilities - 0.5) < 0.2
    if near.any() and (~near).any():
        assert u[near].mean() > u[~near].mean()


def test_forest_recomputes_features_instead_of_keeping_large_ones(monkeypatch, rng):
    import btunet.train.teacher as teacher
    pixels = [rng.random((1, 48, 48)).astype(np.float32) for _ in range(2)]
    targets = [(p[0] > 0.5).astype(np.float32) for p in pixels]
    masks = [(rng.random((48, 48)) < 0.2).astype(np.float32) for _ in pixels]
    kept = forest_probabilities(pixels, targets, masks)
    calls = []
    real = teacher.pixel_features
    monkeypatch.setattr(teacher, "pixel_features", lambda p: calls.append(1) or real(p))
    monkeypatch.setattr(teacher, "FEATURE_CACHE_BYTES", 0)
    recomputed = forest_probabilities(pixels, targets, masks)
    assert len(calls) == 4  # each plane twice: once to fit, once to predict
    assert all(np.array_equal(a, b) for a, b in zip(kept, recomputed, strict=True))


@pytest.mark.parametrize("field,value,match", [
    ("schedule", "linear", "schedule must be one of"), ("pseudo_labels", "forrest", "pseudo_labels must be"),
    ("continue_teacher", "teacher", "continue_teacher must be"), ("pseudo_confidence", 0.5, "above 0.5"),
    ("pseudo_weight", float("nan"), "pseudo_weight"), ("batch_size", 0, "batch_size must be"),
])
def test_bad_settings_are_refused_before_any_work(field, value, match):
    from btunet import BTUnetError
    image = np.zeros((32, 32), np.float32)
    labels = np.zeros((32, 32), np.uint8)
    with pytest.raises(BTUnetError, match=match):
        finetune(image, labels, replace(FinetuneConfig(device="cpu"), **{field: value}))


def test_pseudo_labels_stay_off_padding_and_held_out_blocks(rng):
    from btunet.train.pseudo import add_pseudo_labels
    from btunet.train.training_set import annotated_planes, hold_out_validation
    image = rng.random((200, 100)).astype(np.float32)
    labels = np.zeros((200, 100), np.uint8)
    labels[::2, ::2] = np.where(image[::2, ::2] > 0.5, 2, 1)
    planes = annotated_planes([("a", image)], [("a", labels)], 1, "sparse", 128)  # padded to 200 x 128
    assert hold_out_validation(planes, 0.3, rng)
    p = planes[0]
    p.painted = p.weight > 0
    assert add_pseudo_labels(planes, FinetuneConfig()) > 0
    pseudo = (p.weight > 0) & ~p.painted
    assert not pseudo[:, 100:].any() and not pseudo[p.val_region].any()
    assert pseudo[:, :100][~p.val_region[:, :100]].mean() > 0.5


def test_continuation_trains_every_plane_and_holds_nothing_out(crop, fast_finetune_config, monkeypatch):
    from btunet.train.training_set import PatchSampler
    image, mask = crop
    cfg = replace(fast_finetune_config, mask_mode="dense")
    first = finetune([image, image[::-1]], [mask, mask[::-1]], cfg)
    seen, real = [], PatchSampler.__init__

    def spy(self, planes, *args):
        real(self, planes, *args)
        seen.append(self.plane_p.copy())
    monkeypatch.setattr(PatchSampler, "__init__", spy)
    again = finetune([image, image[::-1]], [mask, mask[::-1]], replace(cfg.continuation(), epochs=1), model=first)
    assert np.all(seen[0] > 0.4)  # both planes are drawn, mistakes or not
    assert again.metadata["trained_on"]["validation_pixels"] == 0
    assert again.metadata["continued_from"]["trained_on"]["validation_pixels"] > 0


def test_corrections_weigh_as_set_and_the_other_strokes_keep_theirs():
    from btunet.train.pseudo import add_pseudo_labels
    from btunet.train.training_set import annotated_planes
    truth = disk((96, 96), (48, 48), 14)
    labels = np.zeros((96, 96), np.uint8)
    labels[46:50, 46:50] = 2  # inside: the model gets it right
    labels[2:5, 2:90] = 1  # far background: right
    rim = disk((96, 96), (48, 48), 16) & ~truth
    labels[rim] = 1  # background on the rim the model draws too fat: corrections
    model_probs = [np.where(disk((96, 96), (48, 48), 16), 0.95, 0.05).astype(np.float32)]
    weights = {}
    for factor in (1.0, 3.0):
        planes = annotated_planes([("a", truth.astype(np.float32))], [("a", labels)], 1, "sparse", 96)
        add_pseudo_labels(planes, FinetuneConfig(device="cpu", continue_teacher="model", correction_weight=factor),
                          model_probs)
        weights[factor] = planes[0].weight
    assert np.all(weights[3.0][rim] == 3.0) and np.all(weights[1.0][rim] == 1.0)
    right = (labels > 0) & ~rim
    assert np.all(weights[3.0][right] == 1.0)  # strokes the model already follows keep weight 1
    assert np.array_equal(weights[3.0][labels == 0], weights[1.0][labels == 0])  # pseudo-labels unchanged
