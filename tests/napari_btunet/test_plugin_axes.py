"""The Axes row: prefilled from the layer or its file, names the sliders, and decides which axis
is the model's channels."""
import numpy as np
import pytest
import tifffile

import btunet
from napari_btunet import _layers
from napari_btunet._session import session

from .plugin_helpers import dock, wait_job

pytestmark = pytest.mark.viewer


def image_stack(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_a_tzyx_layer_names_the_sliders(viewer):
    viewer.add_image(image_stack((2, 3, 48, 48)), name="movie")
    predict = dock(viewer, "Predict")
    assert predict.axes_row.edit.text() == "TZYX"
    assert tuple(viewer.dims.axis_labels) == ("T", "Z", "Y", "X")
    assert viewer.layers["movie"].metadata[_layers.AXES_KEY] == "TZYX"


def test_the_files_own_axes_are_read(viewer, tmp_path):
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, image_stack((2, 3, 40, 40)), imagej=True, metadata={"axes": "ZCYX"})
    layer = viewer.open(str(path))[0]
    assert layer.data.shape == (2, 3, 40, 40)
    predict = dock(viewer, "Predict")
    assert predict.axes_row.edit.text() == "ZCYX"  # the default rule would have said TZYX
    assert tuple(viewer.dims.axis_labels) == ("Z", "C", "Y", "X")


def test_a_channel_axis_typed_in_the_row_goes_into_the_model(viewer, qtbot, messages):
    viewer.add_image(image_stack((3, 2, 48, 64)), name="colour")
    session.set_model(btunet.create_model("unet", in_channels=3, base_filters=8))
    predict = dock(viewer, "Predict")
    assert predict.axes_row.edit.text() == "TZYX"
    predict.axes_row.edit.setText("CZYX")
    assert predict.axes_row.apply()
    assert tuple(viewer.dims.axis_labels) == ("C", "Z", "Y", "X")
    predict.device_combo.setCurrentText("cpu")
    outcome = wait_job(qtbot, predict.start())
    assert outcome.error is None, outcome.error
    labels = _layers.find_output(viewer, "colour", "labels")
    assert labels.data.shape == (2, 48, 64)  # two planes, not 3 x 2


def test_a_wrong_axes_value_is_explained_and_refused(viewer, messages):
    viewer.add_image(image_stack((2, 3, 48, 48)), name="movie")
    predict = dock(viewer, "Predict")
    predict.axes_row.edit.setText("ZYX")
    assert not predict.axes_row.apply()
    assert "name 3 axes but the image has 4" in predict.axes_row.note.text()
    assert predict.start() is None
    assert viewer.layers["movie"].metadata[_layers.AXES_KEY] == "TZYX"  # the old value stays


def test_finetune_pairs_a_channel_image_with_labels_without_c(viewer):
    viewer.add_image(image_stack((2, 3, 48, 48)), name="cells")
    viewer.add_labels(np.zeros((2, 48, 48), np.uint8), name="cells annotation")
    finetune = dock(viewer, "Fine-tune")
    row = finetune.pairs[0]
    assert finetune.axes_row.layer.name == "cells"
    finetune.axes_row.edit.setText("ZCYX")
    assert finetune.axes_row.apply()
    row.labels.set_layer(viewer.layers["cells annotation"])
    assert row.problem() is None
    assert finetune._request().config.axes == "ZCYX"
    finetune.axes_row.edit.setText("TZYX")
    assert finetune.axes_row.apply()
    assert "must match" in (row.problem() or "")
