"""Pre-training in the widget: the encoder goes to the session, to a file, and to the fine-tune widget."""
import pytest

import btunet
from napari_btunet import _messages
from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, finetune_recording_calls, small_pretraining, wait_job

pytestmark = pytest.mark.viewer


def test_pretrain_then_finetune_from_it(sample_viewer, qtbot, messages, tmp_path, monkeypatch):
    viewer = sample_viewer
    pretrain, finetune = dock(viewer, "Pre-train"), dock(viewer, "Fine-tune")
    assert finetune.encoder_combo.currentText() == "none"
    assert "CPU" in pretrain.device_label.text()
    import torch
    if not torch.cuda.is_available():
        pretrain.device_combo.setCurrentText("cuda")
        assert "not available here" in pretrain.device_label.text()
    assert [layer.name for layer in pretrain.layers_list.layers()] == ["BBBC007 nuclei"]
    small_pretraining(pretrain, epochs=2)
    path = tmp_path / "encoder.safetensors"
    path.write_bytes(b"keep me")
    pretrain.output_file.set_path(path)
    monkeypatch.setattr(_messages, "ask_overwrite", lambda parent, p: False)
    assert pretrain.start() is None  # the user said no: nothing runs, the file stays
    assert path.read_bytes() == b"keep me"
    assert messages == [("warning", (f"Pre-training not started: {path} was kept; choose another "
                                     "encoder file."))]
    messages.clear()
    monkeypatch.setattr(_messages, "ask_overwrite", lambda parent, p: True)
    outcome = wait_job(qtbot, pretrain.start())
    assert outcome.error is None, outcome.error
    encoder = session.encoder
    assert encoder is not None and encoder.variant == "attention_unet" and encoder.channels == 1
    assert len(encoder.metadata["loss_history"]) == 2
    assert len(pretrain.plot.loss[0]) == 4  # 2 epochs x 2 steps
    assert btunet.read_metadata(path)["kind"] == "encoder" and session.encoder_path == path
    # the fine-tune widget switched to it, with its variant
    assert finetune.encoder_combo.currentText() == "last pre-trained"
    assert finetune.variant_combo.currentText() == "attention_unet"
    assert "attention_unet encoder, 2 epochs" in finetune.encoder_label.text()
    outcome, calls = finetune_recording_calls(qtbot, finetune, monkeypatch)
    assert outcome.error is None, outcome.error
    assert calls[0]["encoder"] is encoder and session.model.name == "attention_unet"
    assert not errors_of(messages)


def test_pretrain_from_folder_and_cancel(viewer, qtbot, messages, tmp_path):
    import shutil

    from napari_btunet._sample_data import sample_folder
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for image in sorted((sample_folder() / "images").iterdir())[:2]:
        shutil.copy(image, folder)
    pretrain = dock(viewer, "Pre-train")
    pretrain.source_combo.setCurrentText("folder")
    pretrain.folder.set_path(folder)
    pretrain.epochs_spin.setValue(1000)
    pretrain.samples_spin.setValue(8)
    pretrain.batch_spin.setValue(4)
    pretrain.patch_spin.setValue(64)
    job = pretrain.start()
    qtbot.waitUntil(lambda: len(pretrain.plot.loss[0]) >= 2, timeout=60_000)
    pretrain.cancel()
    outcome = wait_job(qtbot, job)
    assert outcome.error is None and outcome.cancelled
    step_s = pretrain.last_progress.elapsed_s / pretrain.last_progress.step
    assert job.finished_at - job.stop_requested_at < max(5.0, 3 * step_s)
    assert session.encoder.metadata["stopped_early"] is True
    assert session.encoder.metadata["trained_on"]["files"] == sorted(p.name for p in folder.iterdir())
    assert not errors_of(messages)
