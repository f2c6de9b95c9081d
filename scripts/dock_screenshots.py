"""Screenshots of the docks as the Plugins menu opens them on a 1366 x 768 screen, for
docs/plugin.md; run under a display or Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/dock_screenshots.py

For each order (Fine-tune then Predict, Predict then Fine-tune) it opens napari with the BBBC007
sample, triggers Plugins -> BT-Unet -> <widget> for each, and grabs the main window. A third
shot shows the Fine-tune tab chosen after both were opened, with Advanced expanded.
"""
from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
SCREEN = (1366, 768)


def settle(seconds: float = 0.6) -> None:
    from qtpy.QtWidgets import QApplication
    app = QApplication.instance()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def open_from_menu(viewer, name: str):
    menu = next(a.menu() for a in viewer.window.plugins_menu.actions() if a.text() == "BT-Unet")
    next(a for a in menu.actions() if a.text() == name).trigger()
    settle()
    return viewer.window.dock_widgets[f"{name} (BT-Unet)"]


def shoot(viewer, name: str) -> None:
    settle()
    path = OUT / name
    viewer.window._qt_window.grab().save(str(path))
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> int:
    import napari
    OUT.mkdir(parents=True, exist_ok=True)
    for order, name in ((("Fine-tune", "Predict"), "menu_finetune_then_predict.png"),
                        (("Predict", "Fine-tune"), "menu_predict_then_finetune.png")):
        viewer = napari.Viewer(show=True)
        viewer.open_sample("napari-btunet", "bbbc007")
        viewer.window._qt_window.resize(*SCREEN)
        settle()
        widgets = {widget: open_from_menu(viewer, widget) for widget in order}
        shoot(viewer, name)
        if order[-1] == "Predict":
            finetune = widgets["Fine-tune"]
            finetune.dock().raise_()
            finetune.advanced.expand(animate=False)
            shoot(viewer, "menu_finetune_tab.png")
        viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
