"""The Fine-tune dock shows no time left until the pace of the steps includes the live previews."""
import pytest

from napari_btunet._live_preview import PACE_STEPS, UNET_PREVIEW_EPOCH

from .plugin_helpers import dock, small_training, wait_job

pytestmark = pytest.mark.viewer


def test_the_eta_waits_for_the_previews_to_be_in_the_pace(sample_viewer, qtbot, monkeypatch):
    finetune = dock(sample_viewer, "Fine-tune")
    steps = 10
    small_training(finetune, epochs=UNET_PREVIEW_EPOCH + 4, steps=steps, preview_s=0.1)
    seen = []
    real = finetune._on_progress

    def on_progress(p):
        real(p)
        if not isinstance(p, str):
            seen.append((p.step, p.eta_s, finetune.progress.label.text()))
    monkeypatch.setattr(finetune, "_on_progress", on_progress)  # before Start: the job connects it
    outcome = wait_job(qtbot, finetune.start(), timeout_s=300)
    assert outcome.error is None, outcome.error
    first_unet = UNET_PREVIEW_EPOCH * steps  # the U-Net's first preview comes at the end of epoch 2
    hidden = [(step, text) for step, eta, text in seen if eta is None]
    shown = [(step, eta) for step, eta, _ in seen if eta is not None]
    assert hidden and all(step < first_unet + PACE_STEPS for step, _ in hidden)
    assert any("ETA …" in text for _, text in hidden)  # the panel shows at most twice a second
    assert shown and shown[0][0] >= first_unet + PACE_STEPS
    assert shown[-1][1] == 0.0
