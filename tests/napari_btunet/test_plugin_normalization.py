"""Fine-tune's Advanced switch: normalise by the background level; the model keeps the rule and
Predict uses it."""
import numpy as np
import pytest

from btunet import FinetuneConfig
from btunet.core.checkpoint import model_metadata
from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, small_training, wait_job

pytestmark = pytest.mark.viewer


def test_background_switch_reaches_the_model_and_predict_uses_it(sample_viewer, qtbot, messages):
    viewer = sample_viewer
    finetune = dock(viewer, "Fine-tune")
    assert finetune.background_check.isChecked() == (FinetuneConfig.normalization == "background")
    assert finetune.config().normalization == "percentile"
    finetune.background_check.setChecked(True)
    assert finetune.config().normalization == "background"
    small_training(finetune, epochs=1, steps=2, preview_s=0)
    outcome = wait_job(qtbot, finetune.start(), timeout_s=240)
    assert outcome.error is None, outcome.error
    assert model_metadata(session.model).normalization.method == "background"
    assert session.model.metadata["finetune_config"]["normalization"] == "background"
    image = np.asarray(viewer.layers["BBBC007 nuclei"].data)
    from btunet import predict
    direct = predict(session.model, image, device="cpu").labels
    from btunet.pipeline.normalize import background_range
    lo, hi = background_range(image)
    assert 0 <= lo < np.percentile(image, 50)  # the background of a nuclei image: dark, most pixels
    assert direct.shape == image.shape and not errors_of(messages)
