"""Cancel stops training within seconds and leaves a model that predicts; cancelled prediction keeps what finished."""
import numpy as np
import pytest

import btunet
from napari_btunet._session import session
from .plugin_helpers import dock, errors_of, small_training, wait_job

pytestmark = pytest.mark.viewer


def test_cancel_finetune_leaves_usable_model(sample_viewer, qtbot, messages):
    viewer = sample_viewer
    finetune, predict = dock(viewer, "Fine-tune"), dock(viewer, "Predict")
    small_training(finetune, epochs=1000, steps=10, preview_s=0)
    job = finetune.start()
    # wait until a few steps have run, then cancel
    qtbot.waitUntil(lambda: len(finetune.plot.loss[0]) >= 3, timeout=60_000)
    assert job.running and finetune.cancel_button.isEnabled()
    finetune.cancel_button.click()
    assert job.should_stop()
    outcome = wait_job(qtbot, job, timeout_s=60)
    stop_s = job.finished_at - job.stop_requested_at
    steps = len(finetune.plot.loss[0])
    step_s = finetune.last_progress.elapsed_s / finetune.last_progress.step
    print(f"\ncancel -> model back on the GUI thread in {stop_s:.2f} s, after {steps} of 10000 steps "
          f"({step_s:.2f} s per step)")
    # the engine checks should_stop before every step: at most the step under way finishes
    assert stop_s < max(5.0, 3 * step_s)
    assert outcome.error is None and outcome.cancelled
    assert steps < 1000
    assert "cancelled" in finetune.progress.label.text()
    assert finetune.start_button.isEnabled() and not finetune.cancel_button.isEnabled()
    model = session.model
    assert model is not None and model.metadata["stopped"] == "cancelled"

    # the cancelled model predicts through the widget
    outcome = wait_job(qtbot, predict.start())
    assert outcome.error is None, outcome.error
    labels = viewer.layers["BBBC007 nuclei labels [btunet]"]
    assert labels.data.shape == viewer.layers["BBBC007 nuclei"].data.shape
    assert not errors_of(messages)


def test_cancel_prediction_keeps_finished_layers(viewer, qtbot, messages):
    session.set_model(btunet.create_model("unet", in_channels=1))
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((2, 64, 64), np.float32), name="small")
    viewer.add_image(rng.random((400, 128, 128), np.float32), name="long")
    predict = dock(viewer, "Predict")
    job = predict.start()
    qtbot.waitUntil(lambda: "long" in predict.progress.label.text(), timeout=60_000)
    predict.cancel_button.click()
    outcome = wait_job(qtbot, job, timeout_s=60)
    assert outcome.cancelled and isinstance(outcome.error, btunet.Cancelled)
    assert job.finished_at - job.stop_requested_at < 5.0
    names = [layer.name for layer in viewer.layers]
    assert "small labels [btunet]" in names and "long labels [btunet]" not in names
    assert ("info", "Prediction cancelled; 1 finished layer(s) were kept.") in messages
    assert not errors_of(messages)


def test_closing_the_widget_stops_its_training(sample_viewer, qtbot, messages):
    from napari_btunet import _jobs
    finetune = dock(sample_viewer, "Fine-tune")
    small_training(finetune, epochs=1000, steps=10, preview_s=0)
    job = finetune.start()
    qtbot.waitUntil(lambda: len(finetune.plot.loss[0]) >= 2, timeout=60_000)
    sample_viewer.window.remove_dock_widget(finetune)  # the user closes the dock
    assert finetune.parent() is None
    qtbot.waitUntil(lambda: not job.running, timeout=30_000)
    assert job.outcome.cancelled and job.outcome.error is None
    assert job not in _jobs._RUNNING
    assert not errors_of(messages)


def test_time_budget_and_dense_masks(sample_viewer, qtbot, messages):
    viewer = sample_viewer
    finetune = dock(viewer, "Fine-tune")
    small_training(finetune, steps=5, preview_s=0)
    finetune.set_pairs([(viewer.layers["BBBC007 nuclei"], viewer.layers["BBBC007 mask"])])
    finetune.mode_combo.setCurrentText("dense")
    assert finetune.convention_label.text().startswith("dense: 0 = background")
    finetune.length_combo.setCurrentText("time budget")
    finetune.budget_spin.setValue(0.1)  # 6 s
    assert finetune.config().time_budget_s == 6.0 and finetune.config().mask_mode == "dense"
    outcome = wait_job(qtbot, finetune.start())
    assert outcome.error is None, outcome.error
    meta = session.model.metadata
    assert meta["stopped"] == "time_budget" and 1 <= meta["epochs"] < 1000
    assert meta["trained_on"]["mask_mode"] == "dense"
    assert meta["trained_on"]["annotated_pixels"]["object"] == int((viewer.layers["BBBC007 mask"].data > 0).sum())
    assert not errors_of(messages)
