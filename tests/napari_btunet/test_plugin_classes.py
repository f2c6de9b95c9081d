"""Three painted labels: the widget trains a class model and Predict writes a coloured class layer."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_btunet._classes import class_dice_text
from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, small_training, wait_job

pytestmark = pytest.mark.viewer


def test_three_labels_train_and_predict_classes(sample_viewer, qtbot, messages):
    viewer = sample_viewer
    image, mask = viewer.layers["BBBC007 nuclei"], viewer.layers["BBBC007 mask"]
    annotation = viewer.layers["BBBC007 annotation"]
    # label 3: strokes on a 3-px ring just outside the nuclei, every 6th row
    ring = (ndi.distance_transform_edt(mask.data == 0) <= 3) & (mask.data == 0)
    rows = np.zeros_like(ring)
    rows[::6] = True
    painted = annotation.data.copy()
    painted[ring & rows & (painted == 0)] = 3
    annotation.data = painted
    assert set(np.unique(annotation.data)) == {0, 1, 2, 3}

    finetune = dock(viewer, "Fine-tune")
    small_training(finetune, epochs=2, steps=5)
    outcome = wait_job(qtbot, finetune.start(), timeout_s=240)
    assert outcome.error is None, outcome.error
    model = session.model
    assert model.config["out_channels"] == 3 and len(model.metadata["classes"]) == 2

    predict = dock(viewer, "Predict")
    predict.output_combo.setCurrentText("binary mask")
    outcome = wait_job(qtbot, predict.start())
    assert outcome.error is None, outcome.error
    labels = viewer.layers["BBBC007 nuclei labels [btunet]"]
    assert labels.data.shape == image.data.shape and labels.data.dtype == np.uint8
    assert set(np.unique(labels.data)) <= {0, 1, 2} and labels.data.max() >= 1
    colours = [c["colour"] for c in model.metadata["classes"]]
    want = [int(colours[0][i:i + 2], 16) / 255 for i in (1, 3, 5)]
    np.testing.assert_allclose(labels.colormap.map(np.array([1]))[0][:3], want, atol=1e-3)
    assert labels.metadata["btunet_classes"] == {1: "class 1", 2: "class 2"}
    assert not errors_of(messages)
    assert class_dice_text([0.912, 0.5]) == " · class Dice 0.91/0.50"
