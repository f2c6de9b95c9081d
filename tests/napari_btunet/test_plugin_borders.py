"""Strokes around two touching cells: with *learn borders* the model learns where they meet and
Predict's instances give two objects."""
import numpy as np
import pytest

from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, small_training, wait_job

pytestmark = pytest.mark.viewer


def test_paint_around_two_touching_cells_get_two_instances(viewer, qtbot, messages):
    from tests.btunet.test_objects import touching_cells_with_strokes
    image, strokes = touching_cells_with_strokes()
    viewer.add_image(image, name="cells")
    viewer.add_labels(np.zeros_like(strokes), name="strokes")
    viewer.layers["strokes"].data = strokes  # painted: a stroke in each cell, background on the seam
    finetune = dock(viewer, "Fine-tune")
    assert [(r.image.layer(), r.labels.layer()) for r in finetune.pairs] == [
        (viewer.layers["cells"], viewer.layers["strokes"])]
    assert finetune.mode_combo.currentText() == "sparse" and not finetune.borders_check.isChecked()
    small_training(finetune, epochs=10, steps=5, preview_s=0)
    finetune.borders_check.setChecked(True)
    outcome = wait_job(qtbot, finetune.start(), timeout_s=240)
    assert outcome.error is None, outcome.error
    assert session.model.metadata["instances"] == "boundary"

    predict = dock(viewer, "Predict")
    predict.output_combo.setCurrentText("instances")
    outcome = wait_job(qtbot, predict.start())
    assert outcome.error is None, outcome.error
    labels = viewer.layers["cells labels [btunet]"].data
    left, right = np.unique(labels[40:56, 40:44]), np.unique(labels[40:56, 84:88])
    assert len(left) == len(right) == 1 and 0 not in (left[0], right[0]) and left[0] != right[0]
    assert not errors_of(messages)


def touching_pairs(grid: int = 4):
    """A grid of touching cell pairs, one pair per 64-px block, and their instance mask."""
    rng = np.random.default_rng(1)
    image = rng.normal(20, 4, (64 * grid, 64 * grid)).astype(np.float32)
    cells = np.zeros(image.shape, np.uint16)
    for k in range(grid * grid):
        y, x = 64 * (k // grid) + 20, 64 * (k % grid) + 12
        image[y:y + 24, x:x + 40] += 150
        image[y:y + 24, x + 19:x + 21] -= 60
        cells[y:y + 24, x:x + 20], cells[y:y + 24, x + 20:x + 40] = 2 * k + 1, 2 * k + 2
    return image, cells


def test_instance_masks_with_borders_report_how_objects_are_split(viewer, qtbot, messages):
    image, cells = touching_pairs()
    viewer.add_image(image, name="cells")
    viewer.add_labels(cells, name="cell masks")
    finetune = dock(viewer, "Fine-tune")
    finetune.mode_combo.setCurrentText("dense")
    small_training(finetune, epochs=3, steps=5, preview_s=0)
    finetune.borders_check.setChecked(True)
    outcome = wait_job(qtbot, finetune.start(), timeout_s=240)
    assert outcome.error is None, outcome.error
    meta = session.model.metadata
    assert meta["instances"] == "boundary" and meta["separation"]["by"] in ("validation", "object size")
    way = "its learnt borders" if meta["separate_by"] == "boundary" else "a distance watershed"
    assert f"touching objects: split by {way}" in finetune.progress.label.text()
    tuning = meta["threshold_tuning"]  # dense masks: the threshold was tried on validation pixels
    assert meta["threshold"] == tuning["chosen"]
    assert f"threshold {tuning['chosen']:g}" in finetune.progress.label.text()
    assert not errors_of(messages)
