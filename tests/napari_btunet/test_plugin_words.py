"""What the docks say in words a biologist reads: the label values of each annotation mode, the
pair hint naming the button as it reads, a time budget that ends inside the first epoch, and how
a layer's colour was fitted to the model."""
import re

import numpy as np
import pytest

import btunet
from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, small_training, wait_job

pytestmark = pytest.mark.viewer


def test_hints_use_plain_words(viewer, qtbot, messages):
    image = viewer.add_image(np.zeros((64, 64), np.float32), name="cells")
    finetune = dock(viewer, "Fine-tune")
    hints = {}
    for mode in ("sparse", "dense", "classes"):
        finetune.mode_combo.setCurrentText(mode)
        hints[mode] = finetune.convention_label.text()
    assert hints["sparse"].startswith("sparse: 1 = background, 2 = object, 0 = not painted (ignored)")
    assert "2 = first class, 3 = second class" in hints["sparse"]
    assert hints["classes"].startswith("classes: 0 = background, 1 = first class, 2 = second class")
    assert not any(re.search(r"\.\.|K\+1", hint) for hint in hints.values()), hints
    # a pair without labels names the button as it reads
    row = finetune.pairs[0]
    assert row.image.currentText() == image.name and row.labels.layer() is None
    assert f"'{finetune.new_labels_button.text()}'" in row.status.text()
    finetune.new_labels_button.click()
    assert not row.status.isVisible() and row.labels.layer().name == "cells annotation"


def test_a_budget_that_ends_inside_the_first_epoch_says_so(sample_viewer, qtbot, messages):
    viewer = sample_viewer
    finetune = dock(viewer, "Fine-tune")
    small_training(finetune, steps=100000, preview_s=0)  # an epoch far longer than the budget
    finetune.set_pairs([(viewer.layers["BBBC007 nuclei"], viewer.layers["BBBC007 mask"])])
    finetune.mode_combo.setCurrentText("dense")
    finetune.length_combo.setCurrentText("time budget")
    finetune.budget_spin.setValue(0.1)  # 6 s
    outcome = wait_job(qtbot, finetune.start())
    assert outcome.error is None, outcome.error
    meta = session.model.metadata
    assert meta["epochs"] == 0 and meta["stopped"] == "time_budget"
    steps = finetune.last_progress.step
    status = finetune.progress.label.text()
    assert status.startswith(f"stopped by the time budget before one epoch ended; the model has {steps} "
                             f"training step{'' if steps == 1 else 's'} ("), status
    assert steps >= 1 and "0 epochs" not in status and "best epoch" not in status
    assert not errors_of(messages)


def test_predict_says_how_a_layer_was_fitted_to_the_model(viewer, qtbot, messages):
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (48, 64, 3), np.uint8), name="colour", rgb=True)
    viewer.add_image(rng.random((48, 64), np.float32), name="grey")
    predict = dock(viewer, "Predict")
    predict.device_combo.setCurrentText("cpu")
    session.set_model(btunet.create_model("unet", in_channels=1, base_filters=4))
    assert wait_job(qtbot, predict.start()).error is None
    note = "'colour' was turned grey (the mean of its colour channels): the model reads grey images."
    assert messages == [("info", note)]
    messages.clear()
    session.set_model(btunet.create_model("unet", in_channels=3, base_filters=4))
    assert wait_job(qtbot, predict.start()).error is None
    assert messages == [("info", "'grey' is grey: copied into the 3 colour channels the model reads.")]
    assert predict.progress.label.text() == "done: 2 layer(s)"
