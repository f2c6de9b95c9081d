"""The Export… button of the Fine-tune widget: a bioimage.io package written in the background."""
import threading
from pathlib import Path

import numpy as np
import torch

import btunet
from napari_btunet import _messages
from napari_btunet._messages import shorten_paths
from napari_btunet._session import session

from .plugin_helpers import dock


def test_export_button_writes_a_package_btunet_reads_back(viewer, qtbot, messages, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog
    finetune = dock(viewer, "Fine-tune")
    finetune.export_button.click()
    assert messages == [("warning", "There is no model to export yet: fine-tune one first.")]

    torch.manual_seed(0)
    model = btunet.create_model("unet", base_filters=4).eval()
    session.set_model(model)
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(tmp_path / "nuclei"), "bioimage.io package (*.zip)"))
    finetune.export_button.click()
    assert not finetune.export_button.isEnabled()  # working in the background
    qtbot.waitUntil(lambda: finetune.export_button.isEnabled(), timeout=120_000)
    package = tmp_path / "nuclei.zip"
    assert messages[-1] == ("info", f"Exported nuclei.zip to {tmp_path}")  # the file name first
    restored = btunet.load_model(package)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in model.state_dict().items())

    # an existing file is only replaced after a "yes"
    before = package.read_bytes()
    monkeypatch.setattr(_messages, "ask_overwrite", lambda parent, path: False)
    finetune.export_button.click()
    assert finetune.export_button.isEnabled() and package.read_bytes() == before
    image = np.zeros((64, 64), np.uint8)
    assert btunet.predict(package, image, device="cpu").labels.shape == (64, 64)


def small_model():
    torch.manual_seed(0)
    return btunet.create_model("unet", base_filters=4).eval()


def choose_in_save_dialog(monkeypatch, path, kind):
    from qtpy.QtWidgets import QFileDialog
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), kind))


def test_export_runs_in_a_worker_and_the_status_says_so(viewer, qtbot, messages, tmp_path, monkeypatch):
    """The export's imports (bioimageio.spec, onnx: seconds the first time) and the export itself
    run off the GUI thread; the status line says what runs, then where the file went."""
    from btunet.exporting import network_export
    finetune = dock(viewer, "Fine-tune")
    session.set_model(small_model())
    threads, release = {}, threading.Event()
    real_require = network_export.require

    def require(export_format):
        threads["require"] = threading.current_thread()
        return real_require(export_format)

    def export(model, path, export_format, **kwargs):
        threads["export"] = threading.current_thread()
        release.wait(60)  # the test looks at the dock meanwhile
        Path(path).write_bytes(b"onnx")
        return Path(path)
    monkeypatch.setattr(network_export, "require", require)
    monkeypatch.setattr(btunet, "export", export)
    choose_in_save_dialog(monkeypatch, tmp_path / "Nuclei", "ONNX (*.onnx)")
    finetune.export_button.click()
    qtbot.waitUntil(lambda: "export" in threads, timeout=60_000)
    gui = threading.current_thread()
    assert threads["require"] is not gui and threads["export"] is not gui
    assert finetune.progress.label.text() == "exporting the model to Nuclei.onnx…"
    assert not finetune.export_button.isEnabled() and finetune.start_button.isEnabled()
    release.set()
    qtbot.waitUntil(lambda: finetune.export_button.isEnabled(), timeout=60_000)
    assert messages == [("info", f"Exported Nuclei.onnx to {tmp_path}")]
    assert finetune.progress.label.text() == shorten_paths(f"exported Nuclei.onnx to {tmp_path}")


def test_a_missing_export_package_is_named_first(viewer, qtbot, messages, tmp_path, monkeypatch):
    """Without the export extra, the notification starts with the missing package (a folded
    notification shows about 45 characters), and no overwrite question comes first."""
    from btunet.exporting import network_export
    finetune = dock(viewer, "Fine-tune")
    session.set_model(small_model())
    monkeypatch.setitem(network_export.NEEDS, "onnx", ("onnxz",))  # a package that is not installed
    asked = []
    monkeypatch.setattr(_messages, "ask_overwrite", lambda parent, path: asked.append(path) or True)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"keep me")
    choose_in_save_dialog(monkeypatch, target, "ONNX (*.onnx)")
    finetune.export_button.click()
    qtbot.waitUntil(lambda: finetune.export_button.isEnabled(), timeout=60_000)
    error = ("Export failed: onnxz is not installed, and the ONNX export needs it "
             "(pip install 'napari-btunet[export]')")
    assert messages == [("error", error)]
    assert "onnxz is not installed" in error[:45]
    assert finetune.progress.label.text().startswith("export failed: onnxz is not installed")
    assert not asked and target.read_bytes() == b"keep me"
