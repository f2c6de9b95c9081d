"""Fixtures for the plugin tests: a viewer with the sample, captured notifications, job waits."""
import gc

import pytest

pytest.importorskip("napari")

from napari_btunet import _messages  # noqa: E402
from napari_btunet._sample_data import bbbc007_sample  # noqa: E402
from napari_btunet._session import session  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests check the GUI, not speed: run torch on one thread.

    On a 2-core machine that other processes keep busy, torch's two OpenMP threads were
    measured ~50x slower than one (10 fine-tuning steps: 37 s against 0.7 s).
    """
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def messages(monkeypatch):
    """Every notification the widgets show, as (level, text)."""
    shown = []
    for level in ("error", "warning", "info"):
        monkeypatch.setattr(_messages, f"show_{level}", lambda text, level=level: shown.append((level, text)))
    return shown


@pytest.fixture
def viewer(make_napari_viewer, messages):
    session.clear()
    v = make_napari_viewer()
    yield v
    session.clear()
    gc.collect()


def add_sample(viewer):
    for data, meta, kind in bbbc007_sample():
        getattr(viewer, f"add_{kind}")(data, **meta)
    return viewer


@pytest.fixture
def sample_viewer(viewer):
    return add_sample(viewer)


@pytest.fixture
def shown_sample_viewer(make_napari_viewer, messages):
    """A visible window (under Xvfb), so rendering and plots cost GUI time as for a user."""
    session.clear()
    v = add_sample(make_napari_viewer(show=True))
    yield v
    session.clear()
    gc.collect()
