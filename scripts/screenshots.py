"""Screenshots of the plugin for docs/plugin.md; run under a display or Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py

Opens napari with the BBBC007 sample (an image, its sparse annotation and the reference mask),
pre-trains briefly, fine-tunes on the painted pixels while the live preview updates, predicts,
and writes PNGs to docs/screenshots/. It also prints how long the GUI thread was blocked at most
while fine-tuning ran (a 10 ms QTimer heartbeat).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
SIZE = (1500, 950)


def wait(predicate, timeout_s: float = 600.0, step_ms: int = 50) -> None:
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication
    app = QApplication.instance()
    end = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > end:
            raise TimeoutError("timed out waiting for the widget")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, step_ms)
        time.sleep(step_ms / 1000 / 5)


def settle(seconds: float = 0.5) -> None:
    end = time.perf_counter() + seconds
    wait(lambda: time.perf_counter() > end)


def show_only(viewer, widget) -> None:
    """Show the dock that holds ``widget`` and hide the plugin's other docks."""
    for name, inner in viewer.window.dock_widgets.items():
        if name.endswith("(napari-btunet)"):
            inner.parent().setVisible(inner is widget)
    settle(0.3)


def shoot(viewer, name: str) -> Path:
    settle(0.6)
    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def main() -> int:
    import napari
    from qtpy.QtCore import QTimer

    import btunet
    from napari_btunet.launch import open_viewer
    OUT.mkdir(parents=True, exist_ok=True)

    viewer = open_viewer(show=True)
    viewer.window._qt_window.resize(*SIZE)
    docks = viewer.window.dock_widgets
    pretrain, finetune, predict = (docks[f"{n} (napari-btunet)"] for n in ("Pre-train", "Fine-tune", "Predict"))
    image, mask, annotation = (viewer.layers[n] for n in ("BBBC007 nuclei", "BBBC007 mask", "BBBC007 annotation"))
    viewer.reset_view()

    # 1. pre-training, briefly, on the sample image
    show_only(viewer, pretrain)
    pretrain.epochs_spin.setValue(6)
    pretrain.samples_spin.setValue(32)
    pretrain.batch_spin.setValue(8)
    pretrain.patch_spin.setValue(64)
    pretrain.advanced.expand(animate=False)
    pretrain.start()
    wait(lambda: not pretrain.job.running)
    shoot(viewer, "pretrain.png")

    # 2. the sparse annotation, then fine-tuning with the live preview and plot
    show_only(viewer, finetune)
    viewer.layers.selection.active = annotation
    finetune.epochs_spin.setValue(8)
    finetune.steps_spin.setValue(10)
    finetune.patch_spin.setValue(64)
    finetune.batch_spin.setValue(4)
    finetune.preview_spin.setValue(1.0)
    finetune.uncertainty_check.setChecked(True)
    shoot(viewer, "annotation.png")
    gaps, last = [], [None]

    def tick():
        now = time.perf_counter()
        if last[0] is not None:
            gaps.append(now - last[0])
        last[0] = now
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(tick)
    heartbeat.start()
    job = finetune.start()
    preview = viewer.layers["BBBC007 nuclei preview [btunet]"]
    # the forest's quick preview and the map of where to paint next, within a second of Start
    wait(lambda: preview.data.any() or not job.running)
    annotation.opacity = 0.9
    shoot(viewer, "finetune_quick_preview.png")
    wait(lambda: len(finetune.plot.loss[0]) >= 50 or not job.running)
    wait(lambda: preview.data.any() or not job.running)
    annotation.opacity = 0.9
    shoot(viewer, "finetune_live_preview.png")
    wait(lambda: not job.running)
    heartbeat.stop()
    blocked = np.clip(np.asarray(gaps) - 0.05, 0, None).sum() / sum(gaps)
    print(f"fine-tuning: {job.outcome.result[0].metadata['seconds']} s; GUI heartbeat (10 ms): "
          f"max blocked {1000 * max(gaps):.0f} ms, 99th percentile {1000 * np.percentile(gaps, 99):.0f} ms, "
          f"blocked share {100 * blocked:.1f} % over {len(gaps)} ticks")

    # 3. predictions overlaid
    show_only(viewer, predict)
    predict.output_combo.setCurrentText("instances")
    predict.start()
    wait(lambda: not predict.job.running)
    labels = viewer.layers["BBBC007 nuclei labels [btunet]"]
    for layer in (preview, annotation, viewer.layers["BBBC007 nuclei uncertainty [btunet]"]):
        layer.visible = False
    labels.opacity = 0.55
    viewer.layers.selection.active = labels
    dice = btunet.evaluate(labels.data, mask.data, objects=True)
    print(f"prediction on the sample: Dice {dice['dice']:.3f}, object F1 {dice['object_f1']:.3f}")
    shoot(viewer, "predict_overlay.png")
    viewer.close()
    napari.Viewer.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
