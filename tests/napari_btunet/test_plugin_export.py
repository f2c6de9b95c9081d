"""The Export… button of the Fine-tune widget: a bioimage.io package written in the background."""
import numpy as np
import torch

import btunet
from napari_btunet import _messages
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
    assert messages[-1] == ("info", f"Model exported to {package}")
    restored = btunet.load_model(package)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in model.state_dict().items())

    # an existing file is only replaced after a "yes"
    before = package.read_bytes()
    monkeypatch.setattr(_messages, "ask_overwrite", lambda parent, path: False)
    finetune.export_button.click()
    assert finetune.export_button.isEnabled() and package.read_bytes() == before
    image = np.zeros((64, 64), np.uint8)
    assert btunet.predict(package, image, device="cpu").labels.shape == (64, 64)
