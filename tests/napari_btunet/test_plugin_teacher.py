"""Fine-tune's Advanced switch: the forest teacher looks at the encoder's maps too."""
import numpy as np
import pytest

from btunet import FinetuneConfig
from napari_btunet._session import session

from .plugin_helpers import dock, errors_of, small_training, wait_job
from .test_plugin_uncertainty import SOURCE, record_finetune

pytestmark = pytest.mark.viewer


def test_teacher_switch_reaches_the_engine(sample_viewer, qtbot, messages, monkeypatch):
    viewer = sample_viewer
    finetune = dock(viewer, "Fine-tune")
    calls = record_finetune(monkeypatch)
    assert finetune.teacher_check.isChecked() == (FinetuneConfig.teacher_features == "encoder")
    finetune.teacher_check.setChecked(False)
    assert finetune.config().teacher_features == "filters"
    finetune.teacher_check.setChecked(True)
    assert finetune.config().teacher_features == "encoder"
    small_training(finetune, epochs=1, steps=2, preview_s=0)
    outcome = wait_job(qtbot, finetune.start(), timeout_s=240)
    assert outcome.error is None, outcome.error
    assert calls and calls[-1][0].teacher_features == "encoder"
    meta = session.model.metadata
    assert meta["finetune_config"]["teacher_features"] == "encoder"
    painted = np.asarray(viewer.layers["BBBC007 annotation"].data) > 0
    assert 0 < meta["trained_on"]["pseudo_labelled_pixels"] <= int((~painted).sum())
    assert SOURCE in [layer.name for layer in viewer.layers] and not errors_of(messages)


def test_forest_vote_switch_reaches_a_continuation(sample_viewer, qtbot, messages, monkeypatch):
    finetune = dock(sample_viewer, "Fine-tune")
    calls = record_finetune(monkeypatch)
    assert finetune.forest_edges_check.isChecked() == (FinetuneConfig.continue_teacher == "mean")
    assert finetune.config().continue_teacher == "both"
    small_training(finetune, epochs=1, steps=2, preview_s=0)
    assert wait_job(qtbot, finetune.start(), timeout_s=240).error is None
    finetune.forest_edges_check.setChecked(True)
    assert finetune.resume_check.isChecked()  # the next Start continues the session model
    planned = finetune.config()
    assert planned.continue_teacher == "mean" and planned.epochs == FinetuneConfig().continue_epochs
    finetune.steps_spin.setValue(2)
    outcome = wait_job(qtbot, finetune.start(), timeout_s=240)
    assert outcome.error is None, outcome.error
    config, given = calls[-1]
    assert given is not None and config.continue_teacher == "mean"
    assert session.model.metadata["finetune_config"]["continue_teacher"] == "mean"
    assert not errors_of(messages)
