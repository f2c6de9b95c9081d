"""The widgets offer what the engine accepts: each number field's range and each choice list is
the one its setting declares (btunet.base.settings_schema), as on the command line and in the API."""
import pytest
from qtpy.QtWidgets import QComboBox, QSpinBox

from btunet import FinetuneConfig, PredictConfig, PretrainConfig
from btunet.base.settings_schema import limits

from .plugin_helpers import dock

pytestmark = pytest.mark.viewer

#: dock -> widget attribute -> (config, setting)
FIELDS = {
    "Pre-train": {"epochs_spin": (PretrainConfig, "epochs"), "samples_spin": (PretrainConfig, "samples_per_epoch"),
                  "batch_spin": (PretrainConfig, "batch_size"), "patch_spin": (PretrainConfig, "patch_size"),
                  "device_combo": (PretrainConfig, "device")},
    "Fine-tune": {"epochs_spin": (FinetuneConfig, "continue_epochs"), "steps_spin": (FinetuneConfig, "steps_per_epoch"),
                  "batch_spin": (FinetuneConfig, "batch_size"), "patch_spin": (FinetuneConfig, "patch_size"),
                  "lr_spin": (FinetuneConfig, "lr"), "budget_spin": (FinetuneConfig, "time_budget_s"),
                  "mode_combo": (FinetuneConfig, "mask_mode"), "device_combo": (FinetuneConfig, "device")},
    "Predict": {"threshold_spin": (PredictConfig, "threshold"), "device_combo": (PredictConfig, "device")},
}


@pytest.mark.parametrize("name", list(FIELDS))
def test_widget_ranges_are_the_settings_ranges(viewer, name):
    widget = dock(viewer, name)
    for attribute, (config, setting) in FIELDS[name].items():
        field, lim = getattr(widget, attribute), limits(config, setting)
        if isinstance(field, QComboBox):
            assert tuple(field.itemText(i) for i in range(field.count())) == lim.choices, attribute
            continue
        # the smallest step the field shows: an excluded bound is one step inside
        step = 1 if isinstance(field, QSpinBox) else 10.0 ** -field.decimals()
        assert field.minimum() == pytest.approx(lim.lo + (step if lim.lo_open else 0)), attribute
        if lim.hi is not None:
            assert field.maximum() == pytest.approx(lim.hi - (step if lim.hi_open else 0)), attribute
        for value in (field.minimum(), field.maximum()):
            assert value in lim, (attribute, value)
        for value in (field.minimum() - step, field.maximum() + step):  # one step out is refused or unbounded
            assert value not in lim or (value > field.maximum() and lim.hi is None), (attribute, value)


def test_pretrain_channel_choices_are_the_settings(viewer):
    combo = dock(viewer, "Pre-train").channels_combo
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert texts[0] == "auto"
    assert tuple(int(t.split()[0]) for t in texts[1:]) == limits(PretrainConfig, "channels").choices
