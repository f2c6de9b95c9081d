"""Every dock reads the session when it opens: an encoder or a model made before a dock was
opened (or while it was closed) is the one it starts from."""
import pytest

import btunet
from napari_btunet._session import session

from .plugin_helpers import (
    errors_of,
    finetune_recording_calls,
    open_from_menu,
    small_pretraining,
    wait_job,
)

pytestmark = pytest.mark.viewer


def test_pretrain_then_open_finetune_then_open_predict(sample_viewer, qtbot, messages, monkeypatch):
    viewer = sample_viewer
    pretrain = open_from_menu(viewer, "Pre-train")
    small_pretraining(pretrain, epochs=1000)
    job = pretrain.start()
    qtbot.waitUntil(lambda: len(pretrain.plot.loss[0]) >= 1, timeout=60_000)
    pretrain.cancel()  # a cancelled pre-training keeps its encoder too
    assert wait_job(qtbot, job).cancelled
    encoder = session.encoder
    assert encoder is not None and "Fine-tune (BT-Unet)" not in viewer.window.dock_widgets

    # Fine-tune opened after the encoder was made starts from it, with its variant
    finetune = open_from_menu(viewer, "Fine-tune")
    assert finetune.encoder_combo.currentText() == "last pre-trained"
    assert finetune.encoder_label.text() == session.describe_encoder()
    assert finetune.variant_combo.currentText() == "attention_unet" and not finetune.variant_combo.isEnabled()
    assert not finetune.resume_check.isEnabled()  # no model yet
    outcome, calls = finetune_recording_calls(qtbot, finetune, monkeypatch)
    assert outcome.error is None, outcome.error
    assert calls[0]["encoder"] is encoder
    model = session.model

    # Predict opened after the model was made uses it, with its threshold
    predict = open_from_menu(viewer, "Predict")
    assert predict.model_combo.currentText() == "current model"
    assert predict.model_label.text() == session.describe_model()
    assert predict.model_label.text().startswith("attention_unet, 1 epochs")
    assert predict.threshold_spin.value() == pytest.approx(btunet.model_metadata(model).threshold, abs=0.01)
    assert wait_job(qtbot, predict.start()).error is None
    assert "BBBC007 nuclei labels [btunet]" in viewer.layers

    # closed and opened again, Fine-tune and Pre-train take up the session where it is
    viewer.window.remove_dock_widget(finetune)
    viewer.window.remove_dock_widget(pretrain)
    finetune = open_from_menu(viewer, "Fine-tune")
    assert finetune.encoder_combo.currentText() == "last pre-trained"
    assert finetune.resume_check.isEnabled() and finetune.resume_check.isChecked()
    assert finetune.model_label.text() == "current model: " + session.describe_model()
    assert finetune.config().total_epochs() == btunet.FinetuneConfig().continue_epochs  # a continuation
    pretrain = open_from_menu(viewer, "Pre-train")
    assert pretrain.encoder_label.text() == session.describe_encoder()
    assert "attention_unet encoder" in pretrain.encoder_label.text()
    assert not errors_of(messages)


def test_a_dock_opened_on_an_empty_session_starts_fresh(sample_viewer, qtbot, messages):
    """The counterpart: with nothing in the session, nothing is chosen for the user."""
    finetune = open_from_menu(sample_viewer, "Fine-tune")
    predict = open_from_menu(sample_viewer, "Predict")
    assert finetune.encoder_combo.currentText() == "none"
    assert not finetune.resume_check.isChecked() and not finetune.resume_check.isEnabled()
    assert predict.model_label.text() == "no model trained in this session yet"
    assert not errors_of(messages)
