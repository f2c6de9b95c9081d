"""Uncertainty while training -> paint corrections where the preview is wrong -> continue (short warm start)."""
import time

import numpy as np
import pytest

import btunet
from btunet import FinetuneConfig
from btunet.pipeline.uncertainty import stroke_uncertainty
from btunet.train.simulate import correct_by_uncertainty
from napari_btunet import _layers
from napari_btunet._live_preview import CERTAIN_BELOW, FOREST_PREVIEW_KIND, MOST_OPAQUE
from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, small_training, wait_job

pytestmark = pytest.mark.viewer

SOURCE = "BBBC007 nuclei"
UNCERTAINTY = f"{SOURCE} uncertainty [btunet]"
PREVIEW = f"{SOURCE} preview [btunet]"


def record_finetune(monkeypatch):
    """Every call the widget makes to the engine, as (config, model passed in)."""
    calls = []
    real = btunet.finetune

    def spy(images, labels, config, **kwargs):
        calls.append((config, kwargs.get("model")))
        return real(images, labels, config, **kwargs)
    monkeypatch.setattr(btunet, "finetune", spy)
    return calls


def checked_uncertainty(layer, shape):
    """The layer's data (a copy), after checking it is the plugin's float map in [0, 1]."""
    from napari.layers import Image
    assert isinstance(layer, Image)
    assert layer.metadata[_layers.OUTPUT_KEY] and layer.metadata[_layers.KIND_KEY] == "uncertainty"
    data = np.array(layer.data)
    assert data.dtype == np.float32 and data.shape == shape
    assert np.isfinite(data).all() and data.min() >= 0.0 and data.max() <= 1.0
    assert data.max() > 0.5  # a map was written (the layer starts as zeros)
    return data


def stroke_map(image, strokes):
    """The map of this 2-D image from the forest on ``strokes``."""
    return stroke_uncertainty(btunet.forest_preview(image, strokes).probabilities)


def check_style(layer, viewer):
    """Clear where certain, never above the image's strokes or the preview."""
    alpha = layer.colormap.map(np.array([0.0, CERTAIN_BELOW, 0.5, 1.0]))[:, 3]
    assert alpha[0] == 0 and alpha[1] == 0 and 0 < alpha[2] < alpha[3] == pytest.approx(MOST_OPAQUE)
    assert tuple(layer.contrast_limits) == (0.0, 1.0) and layer.blending == "translucent"
    index = viewer.layers.index
    assert index(layer) == index(viewer.layers[SOURCE]) + 1
    assert index(layer) < index(viewer.layers["BBBC007 annotation"]) and index(layer) < index(viewer.layers[PREVIEW])


def test_uncertainty_guides_corrections_and_continue(sample_viewer, qtbot, messages, monkeypatch):
    viewer = sample_viewer
    image, truth = viewer.layers[SOURCE], viewer.layers["BBBC007 mask"].data > 0
    annotation = viewer.layers["BBBC007 annotation"]
    finetune = dock(viewer, "Fine-tune")
    calls = record_finetune(monkeypatch)

    # defaults: uncertainty off until asked; epochs follow the mode until the user types a number
    assert not finetune.uncertainty_check.isChecked() and not finetune.resume_check.isChecked()
    finetune.uncertainty_check.setChecked(True)
    assert finetune.epochs_spin.value() == FinetuneConfig().total_epochs() == 12
    assert finetune.config().total_epochs() == 12
    finetune.mode_combo.setCurrentText("dense")
    assert finetune.epochs_spin.value() == 60 and finetune.config().total_epochs() == 60
    assert finetune.convention_label.text().startswith("dense: 0 = background")
    finetune.mode_combo.setCurrentText("sparse")
    assert finetune.epochs_spin.value() == 12
    finetune.epochs_spin.setValue(7)  # the user's number stays when the mode changes
    finetune.mode_combo.setCurrentText("dense")
    assert finetune.epochs_spin.value() == 7 and finetune.config().epochs == 7
    finetune.mode_combo.setCurrentText("sparse")
    assert finetune.convention_label.text().startswith("sparse: 1 = background, 2 = object")

    finetune.preview_spin.setValue(0)  # no preview, no map
    assert not finetune.uncertainty_check.isEnabled()

    # train briefly with the uncertainty preview
    small_training(finetune, epochs=3, steps=8, preview_s=0.5)
    assert finetune.uncertainty_check.isEnabled()
    strokes = annotation.data.copy()
    start = time.perf_counter()
    outcome = wait_job(qtbot, finetune.start(), timeout_s=120)
    first_s = time.perf_counter() - start
    assert outcome.error is None, outcome.error
    config, given = calls[0]
    assert given is None and config.epochs == 3 and config.lr == finetune.lr_spin.value()

    layer, preview = viewer.layers[UNCERTAINTY], viewer.layers[PREVIEW]
    before = checked_uncertainty(layer, image.data.shape)
    assert finetune.uncertainty_shown and set(finetune.uncertainty_shown) == {()}
    # the map came with every preview, the forest's quick one within a second of Start included
    assert finetune.preview_kinds[0] == FOREST_PREVIEW_KIND
    assert len(finetune.uncertainty_shown) == len(finetune.previewed)
    check_style(layer, viewer)
    first = session.model
    # the map is the forest's on the strokes painted at Start
    np.testing.assert_allclose(before, stroke_map(image.data, strokes), atol=1e-4)
    predicted = preview.data > 0
    assert 0 < predicted.sum() < predicted.size
    wrong = predicted != truth
    assert 0.0 < (before > CERTAIN_BELOW).mean() < 0.5  # clear where the strokes' forest is sure

    # paint corrections as a user would: brush dabs in the brightest regions where the preview is
    # wrong, background (1) on false objects, object (2) on missed ones, only on unpainted pixels
    painted = annotation.data.copy()
    dabbed = correct_by_uncertainty(painted, np.where(wrong, before, 0), truth, budget=300)
    corrections = np.where(dabbed != painted, dabbed, 0).astype(painted.dtype)
    assert wrong[corrections > 0].all()
    new_background, new_object = int((corrections == 1).sum()), int((corrections == 2).sum())
    print(f"\nfirst run {first_s:.1f} s; corrections: {new_background} background, {new_object} object "
          f"pixels; their mean uncertainty {before[corrections > 0].mean():.2f} "
          f"(image mean {before.mean():.2f})")
    assert new_background + new_object > 0
    annotation.data[corrections > 0] = corrections[corrections > 0]
    annotation.refresh()

    # continue: the spin box shows the short continuation, and config() is continuation()
    assert finetune.resume_check.isChecked()
    assert finetune.epochs_spin.value() == FinetuneConfig().continue_epochs
    finetune.steps_spin.setValue(5)
    planned = finetune.config()
    assert planned.epochs == FinetuneConfig().continue_epochs and planned.schedule == "cosine"
    assert planned.lr < finetune.lr_spin.value()
    trained_before = first.metadata["trained_on"]
    assert trained_before["painted_pixels_wrong_at_start"] is None
    start = time.perf_counter()
    outcome = wait_job(qtbot, finetune.start(), timeout_s=120)
    continue_s = time.perf_counter() - start
    assert outcome.error is None, outcome.error
    config, given = calls[1]
    assert given is not None and given is not first  # a copy of the session model
    assert config.epochs == FinetuneConfig().continue_epochs and config.schedule == "cosine"
    model = session.model
    assert model is given and model.metadata["epochs"] == FinetuneConfig().continue_epochs
    trained = model.metadata["trained_on"]
    wrong_at_start = trained["painted_pixels_wrong_at_start"]
    assert wrong_at_start is not None and wrong_at_start > 0
    pixels_before, pixels_after = trained_before["annotated_pixels"], trained["annotated_pixels"]
    assert pixels_after["object"] == pixels_before["object"] + new_object
    assert pixels_after["background"] == pixels_before["background"] + new_background

    # the same uncertainty layer was updated in place with the continued model's map
    assert viewer.layers[UNCERTAINTY] is layer
    after = checked_uncertainty(layer, image.data.shape)
    assert finetune.uncertainty_shown and not np.array_equal(after, before)
    np.testing.assert_allclose(after, stroke_map(image.data, annotation.data), atol=1e-4)  # with the corrections
    check_style(layer, viewer)
    fixed = (preview.data > 0)[corrections > 0] == (corrections[corrections > 0] == 2)
    print(f"continued in {continue_s:.1f} s; {wrong_at_start} painted pixels wrong at start; "
          f"corrections now right: {100 * fixed.mean():.0f} %")
    assert fixed.mean() > 0.3  # all of them were wrong before the continuation
    assert np.array_equal(annotation.data[corrections == 0], painted[corrections == 0])
    assert not errors_of(messages)


def test_uncertainty_layer_never_replaces_a_user_layer(sample_viewer, qtbot, messages):
    viewer = sample_viewer
    mine = np.full(viewer.layers[SOURCE].data.shape, 0.25, np.float32)
    user = viewer.add_image(mine.copy(), name=UNCERTAINTY)  # a layer of the user's, same name
    finetune = dock(viewer, "Fine-tune")
    finetune.uncertainty_check.setChecked(True)
    small_training(finetune, epochs=1, steps=3, preview_s=0.2)
    outcome = wait_job(qtbot, finetune.start(), timeout_s=120)
    assert outcome.error is None, outcome.error
    assert np.array_equal(user.data, mine) and _layers.OUTPUT_KEY not in user.metadata
    assert user.name == UNCERTAINTY
    ours = _layers.find_output(viewer, SOURCE, "uncertainty")
    assert ours is not None and ours is not user and ours.name != UNCERTAINTY
    checked_uncertainty(ours, mine.shape)

    # unticked: the preview goes on, no uncertainty is computed or shown
    viewer.layers.remove(ours)
    finetune.uncertainty_check.setChecked(False)
    finetune.epochs_spin.setValue(1)  # the continuation's length, typed by the user
    assert finetune.config().epochs == 1
    outcome = wait_job(qtbot, finetune.start(), timeout_s=120)
    assert outcome.error is None, outcome.error
    assert session.model.metadata["epochs"] == 1
    assert finetune.previewed and not finetune.uncertainty_shown
    assert _layers.find_output(viewer, SOURCE, "uncertainty") is None
    assert np.array_equal(user.data, mine)
    assert not errors_of(messages)


def test_uncertainty_layer_leaves_certain_pixels_untouched(shown_sample_viewer, qtbot, messages):
    """Rendered in a real window: where the map says certain, the screen shows exactly what it
    shows without the layer; where it says unsure, the magenta shows."""
    viewer = shown_sample_viewer
    finetune = dock(viewer, "Fine-tune")
    finetune.uncertainty_check.setChecked(True)
    small_training(finetune, epochs=1, steps=3, preview_s=0.2)
    outcome = wait_job(qtbot, finetune.start(), timeout_s=120)
    assert outcome.error is None, outcome.error
    layer = _layers.find_output(viewer, SOURCE, "uncertainty")
    check_style(layer, viewer)
    for other in viewer.layers:  # the image and the map alone
        other.visible = other is layer or other.name == SOURCE
    height, width = layer.data.shape
    sure = 0.9 * CERTAIN_BELOW  # low, not zero: a colour map that tints every pixel a little fails
    layer.data = np.where(np.arange(width) < width // 2, sure, 1.0).astype(np.float32)[None].repeat(height, 0)
    viewer.reset_view()

    def screen():
        return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    shown = screen()
    layer.visible = False
    hidden = screen()
    changed = np.abs(shown - hidden).sum(axis=-1) > 0
    rows, cols = np.nonzero(changed)
    assert len(rows) > 1000
    box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # one filled rectangle, the unsure right half: nothing changed on the certain left half
    assert box.mean() > 0.95
    assert box.shape[1] / box.shape[0] == pytest.approx((width - width // 2) / height, rel=0.1)
    assert not errors_of(messages)
