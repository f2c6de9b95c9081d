"""Shared test setup.

The test folders are packages (``tests.btunet``, ``tests.napari_btunet``), so they never shadow
the installed ``btunet`` and ``napari_btunet``.

Viewer tests need a display: a real one, or the Xvfb server that pytest-xvfb starts (it sets
DISPLAY before collection). Without either, Qt aborts the whole run (exit 134, no summary), so
tests that use a Qt fixture are skipped with a reason instead.
"""
import os
import shutil
import sys
import tempfile

import pytest

# exported networks (btunet.models.runtime) go to a throw-away folder, never the user's cache; it is
# removed when the run ends
_OWN_CACHE = None
if "BTUNET_CACHE_DIR" not in os.environ:
    _OWN_CACHE = os.environ["BTUNET_CACHE_DIR"] = tempfile.mkdtemp(prefix="btunet-test-cache-")


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


QT_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy", "qtbot", "qapp"}


def display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_collection_modifyitems(config, items):
    # the environment checks first: a broken pair of installed releases is the first failure shown
    items.sort(key=lambda item: item.path.name != "test_environment.py")
    if display_available():
        return
    reason = ("no display: set DISPLAY, or install Xvfb (" +
              ("found, but pytest-xvfb did not start it" if shutil.which("Xvfb") else "not found") +
              ") and pytest-xvfb")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if QT_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.get_closest_marker("viewer"):
            item.add_marker(skip)
