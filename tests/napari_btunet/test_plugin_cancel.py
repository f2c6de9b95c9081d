"""Cancel stops training within seconds and leaves a model that predicts; cancelled prediction keeps what finished."""
import re
import sys
import time

import numpy as np
import pytest

import btunet
from napari_btunet._controls import format_seconds, training_text
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
    # the GUI thread waits at most GIL_SWITCH_S for the interpreter lock behind the worker
    from napari_btunet import _jobs
    assert sys.getswitchinterval() <= _jobs.GIL_SWITCH_S < 0.005
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
    shown = []
    show_line = finetune.progress._set_label
    finetune.progress._set_label = lambda text: shown.append(text) or show_line(text)
    start = time.perf_counter()
    job = finetune.start()
    outcome = wait_job(qtbot, job)
    wall = job.finished_at - start
    assert outcome.error is None, outcome.error
    meta = session.model.metadata
    assert meta["stopped"] == "time_budget" and 1 <= meta["epochs"] < 1000
    # progress is time spent of the budget, the ETA what is left of it; never epochs of 100000
    running = [text for text in shown if " of 0:06 · " in text]
    assert running and all(
        re.fullmatch(r"0:0\d of 0:06 · epoch \d+ · loss [\d.]+( · val Dice [\d.]+)? · ETA 0:0\d", text)
        for text in running), running
    assert not any("100000" in text or "step" in text for text in shown)
    last = finetune.last_progress
    assert last.time_budget_s == 6.0 and last.eta_s == pytest.approx(max(0.0, 6.0 - last.elapsed_s))
    assert training_text(last).endswith(f"ETA {format_seconds(6.0 - last.elapsed_s)}")
    # the run ends within the budget (the engine stops before a step that would overrun it)
    print(f"\n6 s budget: training {meta['seconds']} s, Start to done {wall:.1f} s")
    assert meta["seconds"] <= 6.0 + 0.5 and wall <= 6.0 + 2.0
    assert meta["trained_on"]["mask_mode"] == "dense"
    assert meta["trained_on"]["annotated_pixels"]["object"] == int((viewer.layers["BBBC007 mask"].data > 0).sum())
    assert not errors_of(messages)
