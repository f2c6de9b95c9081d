"""``python -m napari_btunet.launch`` (``make run``): napari with the three BT-Unet widgets and
the BBBC007 sample, or the headless demo where there is no display."""
from __future__ import annotations

import os
import sys

WIDGETS = ("Pre-train", "Fine-tune", "Predict")


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_viewer(show: bool = True):
    """A viewer with the sample loaded and the three widgets docked (tabbed, Fine-tune in front)."""
    import napari
    viewer = napari.Viewer(title="BT-Unet", show=show)
    viewer.open_sample("napari-btunet", "bbbc007")
    docks = {}
    for name in WIDGETS:
        docks[name], _ = viewer.window.add_plugin_dock_widget("napari-btunet", name, tabify=True)
    docks["Fine-tune"].raise_()
    viewer.layers.selection.active = viewer.layers["BBBC007 annotation"]
    return viewer


def main() -> None:
    if not has_display():
        print("No display found (DISPLAY / WAYLAND_DISPLAY are not set): running the headless "
              "BT-Unet demo instead of napari.", flush=True)
        from btunet.cli.demo import main as demo
        demo()
        return
    import napari
    open_viewer()
    napari.run()


if __name__ == "__main__":
    main()
