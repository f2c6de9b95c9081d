"""Uncertainty while training -> paint corrections where the preview is wrong -> continue (short warm start)."""
import time

import numpy as np
import pytest

import btunet
from btunet import FinetuneConfig
from napari_btunet import _layers
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


def final_model_uncertainty(model, image):
    """The uncertainty map of this 2-D image as a whole-image prediction computes it."""
    device = next(model.parameters()).device.type
    return btunet.predict(model, image, uncertainty=True, probabilities=False, device=device).uncertainty


def test_uncertainty_guides_corrections_and_continue(sample_viewer, qtbot, messages, monkeypatch):
    viewer = sample_viewer
    image, truth = viewer.layers[SOURCE], viewer.layers["BBBC007 mask"].data > 0
    annotation = viewer.layers["BBBC007 annotation"]
    finetune = dock(viewer, "Fine-tune")
    calls = record_finetune(monkeypatch)

    # defaults: uncertainty on; epochs follow the mode until the user types a number
    assert finetune.uncertainty_check.isChecked() and not finetune.resume_check.isChecked()
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
    start = time.perf_counter()
    outcome = wait_job(qtbot, finetune.start(), timeout_s=120)
    first_s = time.perf_counter() - start
    assert outcome.error is None, outcome.error
    config, given = calls[0]
    assert given is None and config.epochs == 3 and config.lr == finetune.lr_spin.value()

    layer, preview = viewer.layers[UNCERTAINTY], viewer.layers[PREVIEW]
    before = checked_uncertainty(layer, image.data.shape)
    assert finetune.uncertainty_shown and set(finetune.uncertainty_shown) == {()}
    assert layer.colormap.name == "magma" and tuple(layer.contrast_limits) == (0.0, 1.0)
    assert layer.blending == "additive" and layer.opacity == pytest.approx(0.6)
    assert viewer.layers.index(layer) == viewer.layers.index(preview) + 1  # next to the preview
    first = session.model
    # the last map is the final model's, and the preview agrees with it
    np.testing.assert_allclose(before, final_model_uncertainty(first, image.data), atol=1e-4)
    predicted = preview.data > 0
    assert 0 < predicted.sum() < predicted.size

    # paint corrections where the preview is wrong and the map is bright: background (1) on
    # false objects, object (2) on missed ones, only on unpainted pixels
    painted = annotation.data.copy()
    free = painted == 0
    corrections = np.zeros_like(painted)
    for wrong, label in ((predicted & ~truth & free, 1), (~predicted & truth & free, 2)):
        where = np.flatnonzero(wrong)
        brightest = where[np.argsort(before.ravel()[where])[::-1][:300]]
        corrections.ravel()[brightest] = label
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
    np.testing.assert_allclose(after, final_model_uncertainty(model, image.data), atol=1e-4)
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
