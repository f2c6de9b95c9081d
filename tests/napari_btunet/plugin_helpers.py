"""Helpers shared by the plugin tests."""
import time

import numpy as np


def dock(viewer, name):
    from qtpy.QtWidgets import QApplication
    _, widget = viewer.window.add_plugin_dock_widget("napari-btunet", name)
    QApplication.processEvents()  # the dock settles (joins the plugin's other docks as a tab)
    return widget


def open_from_menu(viewer, name):
    """Open a widget as the user does: Plugins -> BT-Unet -> ``name``; returns the widget."""
    from qtpy.QtWidgets import QApplication
    menu = next(a.menu() for a in viewer.window.plugins_menu.actions() if a.text() == "BT-Unet")
    next(a for a in menu.actions() if a.text() == name).trigger()
    QApplication.processEvents()
    return viewer.window.dock_widgets[f"{name} (BT-Unet)"]


def wait_job(qtbot, job, timeout_s=120.0):
    assert job is not None, "the job did not start"
    qtbot.waitUntil(lambda: not job.running, timeout=int(timeout_s * 1000))
    return job.outcome


def small_training(widget, epochs=4, steps=10, patch=64, batch=4, preview_s=1.0):
    """Settings that train the sample to Dice > 0.9 in about 40 steps."""
    widget.length_combo.setCurrentText("epochs")
    widget.epochs_spin.setValue(epochs)
    widget.steps_spin.setValue(steps)
    widget.patch_spin.setValue(patch)
    widget.batch_spin.setValue(batch)
    widget.preview_spin.setValue(preview_s)
    widget.device_combo.setCurrentText("cpu")


class Heartbeat:
    """A QTimer ticking on the GUI thread; the largest gap between ticks is the time the GUI was blocked."""

    def __init__(self, interval_ms=10):
        from qtpy.QtCore import QTimer
        self.interval_s = interval_ms / 1000
        self.gaps = []
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now

    def start(self):
        self._last = None
        self.timer.start()
        return self

    def stop(self):
        self.timer.stop()

    @property
    def p99_s(self):
        return float(np.percentile(self.gaps, 99)) if self.gaps else float("nan")

    @property
    def max_blocked_s(self):
        return max(self.gaps) if self.gaps else float("nan")

    def blocked_share(self, beyond_s=0.05):
        """Share of the time the GUI thread did not tick for more than ``beyond_s``."""
        gaps = np.asarray(self.gaps)
        return float(np.clip(gaps - beyond_s, 0, None).sum() / max(gaps.sum(), 1e-9))


def small_pretraining(widget, variant="attention_unet", epochs=2):
    """Pre-train settings that run a step in seconds on a CPU."""
    widget.variant_combo.setCurrentText(variant)
    widget.epochs_spin.setValue(epochs)
    widget.samples_spin.setValue(8)
    widget.batch_spin.setValue(4)
    widget.patch_spin.setValue(64)
    widget.device_combo.setCurrentText("cpu")


def finetune_recording_calls(qtbot, widget, monkeypatch):
    """Run a one-epoch fine-tune from ``widget``; (its outcome, the keyword arguments the engine got)."""
    import btunet
    small_training(widget, epochs=1, steps=2, preview_s=0)
    calls = []
    real = btunet.finetune
    monkeypatch.setattr(btunet, "finetune", lambda *a, **k: calls.append(k) or real(*a, **k))
    return wait_job(qtbot, widget.start()), calls


def errors_of(messages):
    return [text for level, text in messages if level == "error"]


def labels_inside(labels, mask):
    return np.all(mask[labels == 2] > 0) and np.all(mask[labels == 1] == 0)


def painted_colours():
    """How napari shows painted labels by default: 1 = background, 2 = object (RGB)."""
    from napari.layers import Labels
    painted = Labels(np.zeros((2, 2), np.uint8))
    return [np.asarray(painted.get_color(v))[:3] for v in (1, 2)]


def closest_to_painted(layer, values=None):
    """The smallest RGB distance between a predicted object's colour (of ``values``, default:
    those in the layer) and a painted label's."""
    if values is None:
        values = np.unique(np.asarray(layer.data))
        values = values[values > 0][:200]
    colours = [np.asarray(layer.get_color(v))[:3] for v in values]
    return min(np.linalg.norm(c - p) for c in colours for p in painted_colours())
