"""The plugin as napari sees it: manifest, menus, sample data, cheap import, launcher, test skipping."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_btunet import launch
from napari_btunet._sample_data import bbbc007_sample, load_sample, sparse_annotation

ROOT = Path(__file__).resolve().parents[2]


def npe2_command():
    exe = Path(sys.executable).with_name("npe2")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "npe2"]


def test_manifest_validates():
    result = subprocess.run(npe2_command() + ["validate", "napari-btunet"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_contributions():
    from npe2 import PluginManifest
    manifest = PluginManifest.from_distribution("napari-btunet")
    assert manifest.display_name == "BT-Unet"
    assert [w.display_name for w in manifest.contributions.widgets] == ["Pre-train", "Fine-tune", "Predict"]
    assert [s.key for s in manifest.contributions.sample_data] == ["bbbc007"]
    assert (ROOT / "napari.yaml").resolve() == (ROOT / "napari_btunet" / "napari.yaml").resolve()


def test_import_does_not_load_torch():
    code = ("import sys, napari_btunet, napari_btunet._session, napari_btunet._sample_data, "
            "napari_btunet.launch; napari_btunet._sample_data.bbbc007_sample(); "
            "print(sorted(m for m in ('torch', 'btunet', 'qtpy', 'napari') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=str(ROOT.parent))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_sample_data_layers():
    layers = bbbc007_sample()
    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("BBBC007 nuclei", "image"), ("BBBC007 mask", "labels"), ("BBBC007 annotation", "labels")]
    image, mask, sparse = (data for data, _, _ in layers)
    assert image.shape == mask.shape == sparse.shape == (400, 400)
    assert "BBBC007" in layers[0][1]["metadata"]["source"]
    # sparse strokes: label 2 only inside objects, label 1 only in background, most pixels unannotated
    assert set(np.unique(sparse)) == {0, 1, 2}
    assert np.all(mask[sparse == 2] > 0) and np.all(mask[sparse == 1] == 0)
    assert 0.005 < (sparse > 0).mean() < 0.05
    assert np.array_equal(sparse, sparse_annotation(load_sample()[1]))  # reproducible


def test_launch_without_display_runs_the_demo(monkeypatch, capsys):
    import btunet.cli.demo
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    calls = []
    monkeypatch.setattr(btunet.cli.demo, "main", lambda *a, **k: calls.append(a))
    assert not launch.has_display()
    launch.main()
    assert calls == [()]
    assert "No display found" in capsys.readouterr().out


@pytest.mark.viewer
def test_plugins_menu_and_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    menu = next(a.menu() for a in viewer.window.plugins_menu.actions() if a.text() == "BT-Unet")
    assert [a.text() for a in menu.actions()] == ["Pre-train", "Fine-tune", "Predict"]
    viewer.open_sample("napari-btunet", "bbbc007")
    assert [layer.name for layer in viewer.layers] == ["BBBC007 nuclei", "BBBC007 mask", "BBBC007 annotation"]
    assert viewer.layers["BBBC007 annotation"].data.dtype == np.uint8


@pytest.mark.viewer
def test_launch_opens_docked_widgets(make_napari_viewer, monkeypatch):
    import napari
    viewers = []
    monkeypatch.setattr(napari, "Viewer", lambda **kw: viewers.append(make_napari_viewer(**kw)) or viewers[-1])
    viewer = launch.open_viewer(show=False)
    assert len(viewer.layers) == 3
    assert {"Pre-train (napari-btunet)", "Fine-tune (napari-btunet)", "Predict (napari-btunet)"} <= set(
        viewer.window.dock_widgets)


def test_viewer_tests_skip_without_display(tmp_path):
    """Without a display and without pytest-xvfb, viewer tests are skipped (Qt would abort the run)."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs_viewer.py").write_text(
        "def test_viewer(make_napari_viewer):\n    make_napari_viewer()\n\n"
        "def test_plain():\n    assert True\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:xvfb",
                             "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout and "no display" in result.stdout
