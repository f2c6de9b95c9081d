"""Start on strokes shows the random forest's preview at once; the U-Net's replaces it from epoch 2."""
import time

import numpy as np
import pytest

import btunet
from napari_btunet._live_preview import FOREST_PREVIEW_KIND, FOREST_SHOWN, PREVIEW_KIND, UNET_PREVIEW_EPOCH, UNET_SHOWN

from .plugin_helpers import dock, errors_of, small_training, wait_job

pytestmark = pytest.mark.viewer


def record_previews(finetune, monkeypatch) -> list[dict]:
    """What the dock had shown as each preview arrived: its kind, the preview layer, the status
    line and the latest training progress (previews and progress arrive in the order sent)."""
    seen = []
    real = finetune._on_item

    def on_item(item):
        real(item)
        seen.append({"kind": item[0], "at": time.perf_counter(), "status": finetune.progress.label.text(),
                     "layer": finetune.preview_layers.preview_layer.data.copy(),
                     "progress": finetune.last_progress})
    monkeypatch.setattr(finetune, "_on_item", on_item)  # before Start: the job connects it
    return seen


def test_start_shows_the_forest_then_the_unet(sample_viewer, qtbot, messages, monkeypatch):
    viewer = sample_viewer
    image, annotation = viewer.layers["BBBC007 nuclei"], viewer.layers["BBBC007 annotation"]
    finetune = dock(viewer, "Fine-tune")
    assert finetune.mode_combo.currentText() == "sparse"
    small_training(finetune, epochs=3, steps=4, preview_s=0.1)  # U-Net previews would come every step
    seen = record_previews(finetune, monkeypatch)
    start = time.perf_counter()
    outcome = wait_job(qtbot, finetune.start(), timeout_s=240)
    assert outcome.error is None, outcome.error

    # first the forest: before any training step, the same mask as the engine's forest preview
    forest = seen[0]
    config = finetune.config()
    expected = btunet.forest_preview(image.data, annotation.data, seed=config.seed,
                                     normalization=config.normalization).labels
    print(f"\nforest preview on screen {forest['at'] - start:.2f} s after Start; "
          f"previews: {[s['kind'] for s in seen]}")
    assert forest["kind"] == FOREST_PREVIEW_KIND and forest["progress"] is None
    assert forest["layer"].any() and np.array_equal(forest["layer"], expected)
    assert forest["status"] == FOREST_SHOWN and "random forest" in forest["status"]

    # then the U-Net, from the end of its second epoch on, and never the forest again
    kinds = [s["kind"] for s in seen]
    assert kinds.count(FOREST_PREVIEW_KIND) == 1 and kinds[1:] == [PREVIEW_KIND] * (len(kinds) - 1)
    unet = seen[1]
    assert unet["progress"].epoch_end and unet["progress"].epoch == UNET_PREVIEW_EPOCH
    assert unet["status"] == UNET_SHOWN and "random forest" not in unet["status"]
    assert len(seen) >= 3  # and the final model after epoch 3
    assert not np.array_equal(seen[-1]["layer"], forest["layer"])
    assert finetune.preview_note == UNET_SHOWN
    assert finetune.preview_kinds == kinds

    # a continuation after more painting: its model is already better than a forest
    assert finetune.resume_check.isChecked()
    small_training(finetune, epochs=2, steps=3, preview_s=0.1)
    seen.clear()
    outcome = wait_job(qtbot, finetune.start(), timeout_s=120)
    assert outcome.error is None, outcome.error
    assert seen and {s["kind"] for s in seen} == {PREVIEW_KIND}
    assert seen[0]["progress"].epoch == 1  # no wait for the end of epoch 2
    assert not errors_of(messages)
