"""The Fine-tune widget offers the encoder shipped with btunet and says what it was trained on."""
import pytest

from btunet.train.builtin_encoder import builtin_metadata
from napari_btunet._session import session

from .plugin_helpers import dock, small_training, wait_job

pytestmark = pytest.mark.viewer


def test_finetune_from_the_builtin_encoder(sample_viewer, qtbot, messages):
    finetune = dock(sample_viewer, "Fine-tune")
    choices = [finetune.encoder_combo.itemText(i) for i in range(finetune.encoder_combo.count())]
    assert "built-in encoder" in choices
    finetune.variant_combo.setCurrentText("attention_unet")
    finetune.encoder_combo.setCurrentText("built-in encoder")
    prov = builtin_metadata()["provenance"]
    text = finetune.encoder_label.text()
    assert "built-in unet encoder" in text and f"{prov['epochs']} epochs" in text
    assert prov["data"] in text  # what it was trained on
    assert not finetune.encoder_file.isVisible()
    # the encoder fixes the variant
    assert finetune.variant_combo.currentText() == "unet" and not finetune.variant_combo.isEnabled()
    small_training(finetune, epochs=1, steps=2, preview_s=0)
    outcome = wait_job(qtbot, finetune.start())
    assert outcome.error is None, outcome.error
    assert session.model.metadata["encoder"]["provenance"]["data_files"] == prov["data_files"]
    finetune.encoder_combo.setCurrentText("none")
    assert finetune.variant_combo.isEnabled()
