"""How long the GUI thread stalls while the Fine-tune widget trains; run under a display or Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/responsiveness.py --runs 3

Opens napari (1366 x 768) with the BBBC007 sample, opens Fine-tune and Predict from the Plugins
menu, and fine-tunes ``--runs`` times (40 steps each, live preview every second with the
uncertainty map, as a user would) while a 10 ms QTimer heartbeat on the GUI thread records the
gaps between its ticks. Prints, per run, the largest gap and the 99th percentile, with the
machine's load average. ``--stall-dump FILE`` writes every thread's stack to FILE whenever the
GUI thread has not ticked for ``--stall-ms`` (Python's faulthandler, which needs no GIL): what
the GUI thread and the training thread were doing during a stall.
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stall-dump", default=None)
    parser.add_argument("--stall-ms", type=float, default=150)
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-btunet", "bbbc007")
    viewer.window._qt_window.resize(1366, 768)
    app = QApplication.instance()

    def settle(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.002)

    menu = next(a.menu() for a in viewer.window.plugins_menu.actions() if a.text() == "BT-Unet")
    for name in ("Fine-tune", "Predict"):
        next(a for a in menu.actions() if a.text() == name).trigger()
        settle(0.5)
    finetune = viewer.window.dock_widgets["Fine-tune (BT-Unet)"]
    viewer.layers.selection.active = viewer.layers["BBBC007 annotation"]

    with contextlib.ExitStack() as files:
        dump = files.enter_context(open(args.stall_dump, "w")) if args.stall_dump else None
        gaps: list[float] = []
        last = [None]

        def tick() -> None:
            now = time.perf_counter()
            if last[0] is not None:
                gaps.append(now - last[0])
            last[0] = now
            if dump is not None:
                faulthandler.dump_traceback_later(args.stall_ms / 1000, file=dump)

        heartbeat = QTimer()
        heartbeat.setInterval(10)
        heartbeat.timeout.connect(tick)
        for run in range(args.runs):
            finetune.length_combo.setCurrentText("epochs")
            finetune.resume_check.setChecked(False)
            finetune.epochs_spin.setValue(4)
            finetune.steps_spin.setValue(10)
            finetune.patch_spin.setValue(64)
            finetune.batch_spin.setValue(4)
            finetune.preview_spin.setValue(1.0)
            finetune.device_combo.setCurrentText("cpu")
            gaps.clear()
            last[0] = None
            heartbeat.start()
            start = time.perf_counter()
            job = finetune.start()
            while job.running:
                app.processEvents()
                time.sleep(0.002)
            seconds = time.perf_counter() - start
            heartbeat.stop()
            if dump is not None:
                faulthandler.cancel_dump_traceback_later()
            g = np.asarray(gaps)
            print(f"run {run + 1}: {seconds:.1f} s, {len(g)} ticks, largest gap {1000 * g.max():.0f} ms, "
                  f"99th percentile {1000 * np.percentile(g, 99):.0f} ms, load average "
                  f"{os.getloadavg()[0]:.1f} (torch threads: {__import__('torch').get_num_threads()})",
                  flush=True)
            settle(0.5)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
