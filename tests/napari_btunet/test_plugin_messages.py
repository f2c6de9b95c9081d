"""What the widgets say: file names keep their case, toasts show whole messages, descriptions
follow the file dialog, the variant follows an encoder file, one status line per outcome."""
import numpy as np
import pytest

import btunet
from napari_btunet import _messages
from napari_btunet._messages import sentence, shorten_paths
from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, small_training, wait_job


def test_sentence_keeps_file_names_as_they_are():
    assert sentence("model.safetensors is not a readable checkpoint") == (
        "model.safetensors is not a readable checkpoint.")
    assert sentence("Model.safetensors: damaged btunet metadata") == "Model.safetensors: damaged btunet metadata."
    # a full stop after a path would seem to belong to it
    assert sentence("checkpoint not found: /data/Model.safetensors") == "checkpoint not found: /data/Model.safetensors"
    assert sentence("  no annotated pixels found ") == "no annotated pixels found."
    assert sentence("") == "unknown error."


def test_engine_messages_in_the_widgets_words(monkeypatch):
    """What is missing comes first (a folded notification shows about 45 characters), and the
    engine's "mask mode" is the Fine-tune control's label, "annotation"."""
    from btunet import BTUnetError
    from btunet.exporting import network_export
    monkeypatch.setitem(network_export.NEEDS, "bioimageio", ("bioimageioz.spec", "onnxz"))
    with pytest.raises(BTUnetError) as caught:
        network_export.require("bioimageio")
    assert str(caught.value).startswith("exporting to bioimageio needs")  # the engine's words
    assert sentence(caught.value) == ("bioimageioz.spec and onnxz are not installed, and the bioimage.io "
                                      "export needs them (pip install 'napari-btunet[export]')")
    assert sentence("3 ids were found; use mask mode 'dense' for instance masks") == (
        "3 ids were found; use annotation 'dense' for instance masks.")


def test_long_paths_are_shortened_in_the_middle():
    short = shorten_paths("checkpoint not found: /mnt/lab/someone/projects/2024/nuclei/models/run-07/Model.safetensors")
    assert short == "checkpoint not found: /mnt/…/models/run-07/Model.safetensors"
    assert shorten_paths("saved to /tmp/m.safetensors") == "saved to /tmp/m.safetensors"  # short: kept
    assert shorten_paths("C:\\Users\\someone\\Documents\\projects\\nuclei\\Model.safetensors") == (
        "C:\\…\\projects\\nuclei\\Model.safetensors")


@pytest.mark.viewer
def test_a_toast_shows_the_whole_message(make_napari_viewer, qtbot, monkeypatch):
    """The notification napari shows for an error with a long path: every word fits a line (no
    word is cut at a '/'), and expanded, the whole text is shown without an ellipsis."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from napari.utils import notifications
    from qtpy.QtGui import QFontMetrics
    from qtpy.QtWidgets import QLabel
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    _messages.show_error("Fine-tuning failed: checkpoint not found: /mnt/lab/someone/projects/2024/"
                         "nuclei/models/run-07/Model.safetensors")
    assert shown == ["Fine-tuning failed: checkpoint not found: /mnt/…/models/run-07/Model.safetensors"]
    toast = NapariQtNotification.from_notification(notifications.Notification(shown[0], severity="error"),
                                                   viewer.window._qt_viewer.canvas.native)
    toast.DISMISS_AFTER = 0
    toast.show()
    qtbot.wait(300)
    metrics = QFontMetrics(toast.message.font())
    assert max(metrics.horizontalAdvance(word) for word in shown[0].split()) <= toast.message.width()
    toast.expand()
    qtbot.wait(400)
    assert QLabel.text(toast.message) == shown[0]  # nothing elided
    toast.close()


def encoder_file(tmp_path, variant="attention_unet"):
    model = btunet.create_model(variant, in_channels=1)
    return btunet.PretrainedEncoder(model.config, model.encoder.state_dict(), {}).save(
        tmp_path / "Encoder.safetensors")


def choose_in_dialog(monkeypatch, path):
    from qtpy.QtWidgets import QFileDialog
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))


@pytest.mark.viewer
def test_predict_describes_the_file_chosen_in_the_dialog(viewer, qtbot, monkeypatch, tmp_path):
    model_file = btunet.save_model(btunet.create_model("unet", in_channels=3), tmp_path / "Model.safetensors")
    predict = dock(viewer, "Predict")
    predict.model_combo.setCurrentText("from file")
    assert predict.model_label.text() == "choose a model file"
    choose_in_dialog(monkeypatch, model_file)
    predict.model_file.button.click()
    assert predict.model_file.path() == model_file
    assert predict.model_label.text() == "unet model (fine-tuned, 3 channels) from Model.safetensors"
    choose_in_dialog(monkeypatch, encoder_file(tmp_path))
    predict.model_file.button.click()
    assert predict.model_label.text() == ("attention_unet encoder (pre-trained, 1 channel) from "
                                          "Encoder.safetensors — an encoder: fine-tune it first")


@pytest.mark.viewer
def test_finetune_variant_follows_an_encoder_file(sample_viewer, qtbot, monkeypatch, messages, tmp_path):
    finetune = dock(sample_viewer, "Fine-tune")
    small_training(finetune, epochs=1, steps=2, preview_s=0)
    assert finetune.variant_combo.currentText() == "unet" and finetune.variant_combo.isEnabled()
    finetune.encoder_combo.setCurrentText("from file")
    choose_in_dialog(monkeypatch, encoder_file(tmp_path))
    finetune.encoder_file.button.click()
    assert finetune.encoder_label.text() == "attention_unet encoder (pre-trained, 1 channel) from Encoder.safetensors"
    assert finetune.variant_combo.currentText() == "attention_unet"
    assert not finetune.variant_combo.isEnabled()  # its weights only fit that variant
    outcome = wait_job(qtbot, finetune.start())
    assert outcome.error is None, outcome.error
    assert session.model.name == "attention_unet" and not errors_of(messages)
    # a path typed without Enter is read at Start too
    finetune.resume_check.setChecked(False)
    finetune.encoder_file.edit.setText(str(encoder_file(tmp_path, "unet")))
    assert finetune._request().config.model == "unet"


@pytest.mark.viewer
def test_each_outcome_replaces_the_status_line(sample_viewer, qtbot, messages, tmp_path):
    viewer = sample_viewer
    finetune = dock(viewer, "Fine-tune")
    small_training(finetune, epochs=1, steps=2, preview_s=0)
    status = finetune.progress.label.text
    empty = viewer.add_labels(np.zeros((400, 400), np.uint8), name="empty annotation")
    annotation = viewer.layers["BBBC007 annotation"]
    finetune.set_pairs([(viewer.layers["BBBC007 nuclei"], empty)])
    wait_job(qtbot, finetune.start())
    assert status().startswith("failed: no annotated pixels found")
    # refused before starting: the old failure is gone
    finetune.encoder_combo.setCurrentText("last pre-trained")
    assert finetune.start() is None
    assert status().startswith("not started: no encoder was pre-trained") and "failed" not in status()
    # a run that works
    finetune.encoder_combo.setCurrentText("none")
    finetune.set_pairs([(viewer.layers["BBBC007 nuclei"], annotation)])
    outcome = wait_job(qtbot, finetune.start())
    assert outcome.error is None and status().startswith("done: 1 epochs")
    # saving says where the model went, with the file name as it is
    path = finetune.save_model(tmp_path / "Nuclei.safetensors")
    assert status() == shorten_paths(f"model saved to {path}") and status().endswith("/Nuclei.safetensors")
    assert finetune.progress.label.toolTip() == f"model saved to {path}"  # the whole path
    # Predict: a refusal, then a result, each replacing the other
    predict = dock(viewer, "Predict")
    predict.model_combo.setCurrentText("from file")
    assert predict.start() is None and predict.progress.label.text() == "not started: choose a model file."
    predict.model_combo.setCurrentText("current model")
    assert wait_job(qtbot, predict.start()).error is None
    assert predict.progress.label.text() == "done: 1 layer(s)"
