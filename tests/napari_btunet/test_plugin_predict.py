"""Batch prediction over stacks: one output per layer, matching shapes, updates in place, user layers untouched."""
import numpy as np
import pytest

import btunet
from napari_btunet import _layers
from napari_btunet._sample_data import load_sample
from napari_btunet._session import session

from .plugin_helpers import closest_to_painted, dock, errors_of, wait_job

pytestmark = pytest.mark.viewer


@pytest.fixture
def stacks(viewer):
    """A 2-D+t stack (3 frames) and a 3-D stack (4 slices) made from the sample, plus an RGB image."""
    image, _ = load_sample()
    crop = image[:160, :192]
    movie = np.stack([np.roll(crop, 7 * t, axis=1) for t in range(3)])
    volume = np.stack([crop, crop[::-1], crop[:, ::-1], np.rot90(crop, 2)])
    rgb = np.stack([crop, crop // 2, crop], axis=-1)
    viewer.add_image(movie, name="movie", scale=(1.0, 0.3, 0.3), translate=(0, 10, 20))
    viewer.add_image(volume, name="volume", scale=(2.0, 0.5, 0.5))
    viewer.add_image(rgb, name="rgb", rgb=True, scale=(0.7, 0.7))
    session.set_model(btunet.create_model("unet", in_channels=1))
    return viewer


def run_predict(qtbot, widget):
    outcome = wait_job(qtbot, widget.start())
    assert outcome.error is None, outcome.error


def test_batch_predict_stacks(stacks, qtbot, messages):
    viewer = stacks
    sources = {name: viewer.layers[name].data.copy() for name in ("movie", "volume", "rgb")}
    predict = dock(viewer, "Predict")
    assert [layer.name for layer in predict.layers_list.layers()] == ["movie", "volume", "rgb"]
    predict.output_combo.setCurrentText("instances")
    predict.probability_check.setChecked(True)
    run_predict(qtbot, predict)
    for name, shape in (("movie", (3, 160, 192)), ("volume", (4, 160, 192)), ("rgb", (160, 192))):
        source = viewer.layers[name]
        labels = viewer.layers[f"{name} labels [btunet]"]
        prob = viewer.layers[f"{name} probability [btunet]"]
        assert labels.data.shape == prob.data.shape == shape
        assert labels.data.dtype == np.int32 and prob.data.dtype == np.float32
        assert prob.data.min() >= 0 and prob.data.max() <= 1
        assert tuple(labels.scale) == tuple(prob.scale) == tuple(source.scale)
        assert tuple(labels.translate) == tuple(source.translate)
        assert labels.metadata[_layers.OUTPUT_KEY] and labels.metadata[_layers.SOURCE_KEY] == name
        assert closest_to_painted(labels, range(1, 100)) > 0.3  # no instance in a painted colour
        np.testing.assert_array_equal(source.data, sources[name])  # sources untouched
    assert len(viewer.layers) == 3 + 6
    assert "done: 3 layer(s)" in predict.progress.label.text()
    assert not errors_of(messages)


def test_rerun_updates_own_layer_and_never_a_user_layer(stacks, qtbot, messages):
    viewer = stacks
    # a user layer that happens to carry the output name, without the plugin's metadata
    user = viewer.add_labels(np.full((3, 160, 192), 7, np.int32), name="movie labels [btunet]")
    predict = dock(viewer, "Predict")
    predict.layers_list.set_checked(["movie"])
    run_predict(qtbot, predict)
    own = _layers.find_output(viewer, "movie", "labels")
    assert own is not None and own is not user
    assert own.data.dtype == np.uint8 and own.data.shape == (3, 160, 192)
    count = len(viewer.layers)

    expected = btunet.predict(session.model, viewer.layers["movie"].data, probabilities=False).labels
    np.testing.assert_array_equal(own.data, expected)

    # another threshold: the same layer object gets the new result
    predict.threshold_spin.setValue(0.9)
    run_predict(qtbot, predict)
    assert len(viewer.layers) == count
    assert _layers.find_output(viewer, "movie", "labels") is own
    expected = btunet.predict(session.model, viewer.layers["movie"].data, threshold=0.9,
                              probabilities=False).labels
    np.testing.assert_array_equal(own.data, expected)
    assert np.all(user.data == 7)  # never touched
    assert sum(1 for layer in viewer.layers if layer.metadata.get(_layers.OUTPUT_KEY)) == 1
    assert not errors_of(messages)


def test_predict_from_file(stacks, qtbot, messages, tmp_path):
    viewer = stacks
    path = btunet.save_model(session.model, tmp_path / "m.safetensors")
    session.clear()
    predict = dock(viewer, "Predict")
    predict.model_combo.setCurrentText("from file")
    predict.model_file.set_path(path)
    predict._sync_model()
    assert "unet" in predict.model_label.text()
    predict.layers_list.set_checked(["volume"])
    run_predict(qtbot, predict)
    assert viewer.layers["volume labels [btunet]"].data.shape == (4, 160, 192)


def test_threshold_starts_at_the_models_saved_one(stacks, qtbot, messages, tmp_path):
    viewer = stacks
    path = btunet.save_model(session.model, tmp_path / "strict.safetensors", threshold=0.85)
    predict = dock(viewer, "Predict")
    assert predict.threshold_spin.value() == 0.5  # the session model stores none: 0.5
    predict.model_combo.setCurrentText("from file")
    predict.model_file.set_path(path)
    predict._sync_model()
    assert predict.threshold_spin.value() == 0.85
    predict.layers_list.set_checked(["movie"])
    run_predict(qtbot, predict)
    expected = btunet.predict(path, viewer.layers["movie"].data, probabilities=False).labels
    np.testing.assert_array_equal(viewer.layers["movie labels [btunet]"].data, expected)
    session.model.metadata = {"threshold": 0.3}
    predict.model_combo.setCurrentText("current model")
    assert predict.threshold_spin.value() == 0.3
    assert not errors_of(messages)


def test_averaging_flips_predicts_as_the_engine_does(stacks, qtbot, messages):
    viewer = stacks
    predict = dock(viewer, "Predict")
    predict.layers_list.set_checked(["volume"])
    predict.probability_check.setChecked(True)
    predict.tta_check.setChecked(True)
    run_predict(qtbot, predict)
    volume = viewer.layers["volume"].data
    expected = btunet.predict(session.model, volume, tta=True)
    plain = btunet.predict(session.model, volume)
    got = viewer.layers["volume probability [btunet]"].data
    assert np.abs(got - expected.probabilities).max() < 1e-5
    assert np.abs(got - plain.probabilities).max() > 1e-4  # the flips were used
    np.testing.assert_array_equal(viewer.layers["volume labels [btunet]"].data, expected.labels)
    assert not errors_of(messages)


def test_instances_on_a_3d_stack_are_linked_across_planes(viewer, qtbot, messages):
    """One object through every plane of a (Z, Y, X) layer keeps one id; "instances per plane"
    gives each plane its own ids; the layer's Z scale reaches the engine as the Z spacing."""
    model = btunet.create_model("unet", in_channels=1).eval()
    import torch
    with torch.no_grad():  # every pixel an object: one block through the whole stack
        model.head.weight.zero_()
        model.head.bias.fill_(10.0)
    session.set_model(model)
    volume = np.random.default_rng(0).random((4, 48, 64)).astype(np.float32)
    layer = viewer.add_image(volume, name="volume", scale=(2.0, 0.5, 0.5))
    predict = dock(viewer, "Predict")
    predict.output_combo.setCurrentText("instances")
    assert "through the Z planes" in predict.output_hint.text()
    request = predict._request()
    assert request.instances and request.instances_3d is None and request.sources[0].z_spacing == 4.0
    run_predict(qtbot, predict)
    labels = viewer.layers["volume labels [btunet]"].data
    assert [set(np.unique(plane)) for plane in labels] == [{1}] * 4
    predict.output_combo.setCurrentText("instances per plane")
    assert "not linked across Z" in predict.output_hint.text()
    run_predict(qtbot, predict)
    labels = viewer.layers["volume labels [btunet]"].data
    ids = [set(np.unique(plane)) - {0} for plane in labels]
    assert all(len(i) == 1 for i in ids) and len(set().union(*ids)) == 4
    assert layer.data is volume or np.array_equal(layer.data, volume)
    assert not errors_of(messages)
