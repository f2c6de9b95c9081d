"""Predict names the layer whose image is unlike the model's training images (the engine's reason)."""
import pytest

import btunet
from napari_btunet._sample_data import load_sample
from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, wait_job

pytestmark = pytest.mark.viewer


def test_predicting_an_inverted_layer_warns_naming_it(sample_viewer, qtbot, messages):
    image, mask = load_sample()
    cfg = btunet.FinetuneConfig(mask_mode="dense", epochs=1, steps_per_epoch=2, batch_size=2, patch_size=64,
                                device="cpu")
    session.set_model(btunet.finetune([image], [mask], cfg))  # a real model with its reference
    sample_viewer.add_image(255 - image, name="inverted")
    predict = dock(sample_viewer, "Predict")
    predict.layers_list.set_checked(["BBBC007 nuclei", "inverted"])
    outcome = wait_job(qtbot, predict.start())
    assert outcome.error is None, outcome.error
    warned = [text for level, text in messages if level == "warning"]
    assert len(warned) == 1, messages
    assert warned[0].startswith("'inverted': intensities unlike the training images (")
    assert "train on an image like it" in warned[0]
    assert not errors_of(messages)
    assert "inverted labels [btunet]" in sample_viewer.layers  # predicted all the same
    assert "1 unlike the training images" in predict.progress.label.text()
