"""The *Export…* button of the Fine-tune widget: the current model as a bioimage.io package (for
deepImageJ, ilastik, bioimageio.core), an ONNX file or a TorchScript file, written in a worker."""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QPushButton, QWidget

from . import _messages
from ._jobs import Job, Outcome

#: file-dialog filter -> (export format, file suffix)
FILTERS = {"bioimage.io package (*.zip)": ("bioimageio", ".zip"), "ONNX (*.onnx)": ("onnx", ".onnx"),
           "TorchScript (*.pt)": ("torchscript", ".pt")}


def export_button(parent: QWidget, get_model: Callable[[], Any]) -> QPushButton:
    """A button that asks for a file and exports ``get_model()`` there."""
    button = QPushButton("Export…")
    button.setToolTip("Save the model for use outside napari: a bioimage.io package (deepImageJ, ilastik, "
                      "bioimageio.core; btunet reads it back), ONNX or TorchScript")
    button.clicked.connect(lambda: choose_and_export(parent, get_model, button))
    return button


def choose_and_export(parent: QWidget, get_model: Callable[[], Any],
                      button: QPushButton | None = None) -> Job | None:
    from qtpy.QtWidgets import QFileDialog
    if get_model() is None:
        _messages.show_warning("There is no model to export yet: fine-tune one first.")
        return None
    chosen, kind = QFileDialog.getSaveFileName(parent, "Export model", str(Path.home() / "model.zip"),
                                               ";;".join(FILTERS),
                                               options=QFileDialog.Option.DontConfirmOverwrite)
    if not chosen:
        return None
    export_format, suffix = FILTERS.get(kind, FILTERS[next(iter(FILTERS))])
    return start_export(parent, get_model(), chosen if Path(chosen).suffix else chosen + suffix, export_format,
                        button)


def start_export(parent: QWidget | None, model: Any, path: str | Path, export_format: str,
                 button: QPushButton | None = None) -> Job | None:
    """Export a copy of ``model`` in a worker (asks before replacing a file)."""
    import btunet
    from btunet import BTUnetError
    from btunet.export import require
    path = Path(path)
    try:
        require(export_format)  # a missing optional package is said at once, not after a wait
    except BTUnetError as exc:
        _messages.show_error(f"Could not export the model: {_messages.sentence(exc)}")
        return None
    if not _messages.may_write(parent, path):
        return None
    model = copy.deepcopy(model)  # training may go on with the session model meanwhile
    if button is not None:
        button.setEnabled(False)

    def done(outcome: Outcome) -> None:
        if button is not None:
            button.setEnabled(True)
        if outcome.error is not None:
            _messages.report_failure("Export", outcome.error)
        else:
            _messages.show_info(f"Model exported to {outcome.result}")

    return Job(lambda job: btunet.export(model, path, export_format, overwrite=True), done).start()
