"""Every user error ends as one clear notification (never a traceback dialog, never a hang)."""
import numpy as np
import pytest

import btunet
from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, small_training, wait_job

pytestmark = pytest.mark.viewer


def start_and_wait(qtbot, widget):
    job = widget.start()
    if job is not None:
        wait_job(qtbot, job, timeout_s=60)
    assert widget.start_button.isEnabled() if hasattr(widget, "start_button") else True
    return job


@pytest.fixture
def finetune(sample_viewer):
    widget = dock(sample_viewer, "Fine-tune")
    small_training(widget, epochs=1, steps=2, preview_s=0)
    return widget


def set_annotation(viewer, finetune, data):
    layer = viewer.add_labels(data, name="my annotation")
    finetune.set_pairs([(viewer.layers["BBBC007 nuclei"], layer)])
    return layer


def only_error(messages):
    errors = errors_of(messages)
    assert len(errors) == 1, messages
    return errors[0]


def test_no_labels_painted(sample_viewer, finetune, qtbot, messages):
    set_annotation(sample_viewer, finetune, np.zeros((400, 400), np.uint8))
    finetune.preview_spin.setValue(1.0)
    start_and_wait(qtbot, finetune)
    assert not [layer for layer in sample_viewer.layers if "[btunet]" in layer.name]
    assert only_error(messages) == ("Fine-tuning failed: no annotated pixels found; paint object "
                                    "pixels with label 2 and background with label 1.")
    assert session.model is None


def test_one_class_annotation(sample_viewer, finetune, qtbot, messages):
    data = np.zeros((400, 400), np.uint8)
    data[100:120, 100:120] = 2
    set_annotation(sample_viewer, finetune, data)
    start_and_wait(qtbot, finetune)
    assert "no background pixels" in only_error(messages)
    assert session.model is None


def test_instance_mask_in_sparse_mode(sample_viewer, finetune, qtbot, messages):
    finetune.set_pairs([(sample_viewer.layers["BBBC007 nuclei"], sample_viewer.layers["BBBC007 mask"])])
    start_and_wait(qtbot, finetune)
    # the engine's "mask mode" in the words of the dock's control, "annotation"
    assert "use annotation 'dense'" in only_error(messages) and "mask mode" not in only_error(messages)


def test_shape_mismatch(sample_viewer, finetune, qtbot, messages):
    set_annotation(sample_viewer, finetune, np.ones((300, 400), np.uint8))
    assert "must match" in finetune.pairs[0].status.text()
    assert finetune.start() is None  # refused on the GUI thread, nothing started
    error = only_error(messages)
    assert error.startswith("Fine-tuning cannot start: Labels 'my annotation' have shape (300, 400)")
    assert "(400, 400)" in error


def test_rgb_pair_shape_check(viewer, qtbot, messages):
    viewer.add_image(np.zeros((64, 80, 3), np.uint8), name="colour", rgb=True)
    viewer.add_labels(np.zeros((64, 80), np.uint8), name="colour annotation")
    viewer.add_labels(np.zeros((64, 80, 3), np.uint8), name="wrong")
    finetune = dock(viewer, "Fine-tune")
    row = finetune.pairs[0]
    assert row.labels.currentText() == "colour annotation" and row.problem() is None
    row.labels.setCurrentText("wrong")
    assert "without its colour axis" in row.problem()


def test_corrupt_checkpoint_files(sample_viewer, finetune, qtbot, messages, tmp_path):
    corrupt = tmp_path / "broken.safetensors"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    # as the encoder of a fine-tuning run
    finetune.encoder_combo.setCurrentText("from file")
    finetune.encoder_file.set_path(corrupt)
    start_and_wait(qtbot, finetune)
    assert only_error(messages).startswith("Fine-tuning failed: broken.safetensors is not a readable")
    messages.clear()
    # as the model of a prediction
    predict = dock(sample_viewer, "Predict")
    predict.model_combo.setCurrentText("from file")
    predict.model_file.set_path(corrupt)
    wait_job(qtbot, predict.start())
    assert only_error(messages).startswith("Prediction failed: broken.safetensors is not a readable")
    assert not [layer for layer in sample_viewer.layers if "[btunet]" in layer.name]


def test_wrong_checkpoint_kind(sample_viewer, finetune, qtbot, messages, tmp_path):
    model = btunet.create_model("unet", in_channels=1)
    model_file = btunet.save_model(model, tmp_path / "model.safetensors")
    encoder_file = btunet.PretrainedEncoder(model.config, model.encoder.state_dict(), {}).save(
        tmp_path / "encoder.safetensors")
    # a fine-tuned model given as the encoder
    finetune.encoder_combo.setCurrentText("from file")
    finetune.encoder_file.set_path(model_file)
    start_and_wait(qtbot, finetune)
    assert "it is a fine-tuned model, not a pre-trained encoder" in only_error(messages)
    messages.clear()
    # an encoder given as the model
    predict = dock(sample_viewer, "Predict")
    predict.model_combo.setCurrentText("from file")
    predict.model_file.set_path(encoder_file)
    predict._sync_model()
    assert "an encoder: fine-tune it first" in predict.model_label.text()
    wait_job(qtbot, predict.start())
    assert "it is a pre-trained encoder: fine-tune it first" in only_error(messages)


def test_missing_inputs_are_refused(viewer, qtbot, messages):
    predict = dock(viewer, "Predict")
    assert predict.start() is None
    assert only_error(messages) == ("Prediction cannot start: there is no model in this session "
                                    "yet; fine-tune one or choose 'from file'.")
    messages.clear()
    finetune = dock(viewer, "Fine-tune")
    assert finetune.start() is None
    assert only_error(messages) == "Fine-tuning cannot start: Choose an image layer."
    messages.clear()
    pretrain = dock(viewer, "Pre-train")
    assert pretrain.start() is None
    assert "tick at least one image layer" in only_error(messages).lower()
