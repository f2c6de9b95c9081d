"""Shared test setup.

Viewer tests need a display: a real one, or the Xvfb server that pytest-xvfb starts (it sets
DISPLAY before collection). Without either, Qt aborts the whole run (exit 134, no summary), so
tests that use a Qt fixture are skipped with a reason instead.
"""
import os
import shutil
import sys

import pytest


def _import_installed_packages() -> None:
    """Import the real ``btunet`` and ``napari_btunet`` before any test module does.

    pytest puts ``tests/`` on sys.path, and ``tests/btunet`` / ``tests/napari_btunet`` (folders
    without ``__init__.py``) would then be picked up as namespace packages that shadow the
    installed ones (no ``btunet.finetune``, no ``napari.yaml`` for the plugin).
    """
    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        for name in ("btunet", "napari_btunet"):
            module = sys.modules.get(name)
            if module is not None and getattr(module, "__file__", None) is None:
                del sys.modules[name]  # a namespace package made from a tests folder
            try:
                __import__(name)
            except ImportError:
                pass
    finally:
        sys.path[:] = saved


_import_installed_packages()

QT_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy", "qtbot", "qapp"}


def display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_collection_modifyitems(config, items):
    if display_available():
        return
    reason = ("no display: set DISPLAY, or install Xvfb (" +
              ("found, but pytest-xvfb did not start it" if shutil.which("Xvfb") else "not found") +
              ") and pytest-xvfb")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if QT_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.get_closest_marker("viewer"):
            item.add_marker(skip)
