"""The *Export…* button of the Fine-tune widget: the current model as a bioimage.io package (for
deepImageJ, ilastik, bioimageio.core), an ONNX file or a TorchScript file, written in a worker.

The export's packages (bioimageio.spec, onnx: seconds to import the first time) are imported in
the worker too; the GUI thread only looks whether they are installed."""
from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QPushButton, QWidget

from . import _messages
from ._jobs import Job, Outcome

#: file-dialog filter -> (export format, file suffix)
FILTERS = {"bioimage.io package (*.zip)": ("bioimageio", ".zip"), "ONNX (*.onnx)": ("onnx", ".onnx"),
           "TorchScript (*.pt)": ("torchscript", ".pt")}


def export_button(parent: QWidget, get_model: Callable[[], Any],
                  status: Callable[[str], None] | None = None) -> QPushButton:
    """A button that asks for a file and exports ``get_model()`` there; ``status`` shows a line."""
    button = QPushButton("Export…")
    button.setToolTip("Save the model for use outside napari: a bioimage.io package (deepImageJ, ilastik, "
                      "bioimageio.core; btunet reads it back), ONNX or TorchScript")
    button.clicked.connect(lambda: choose_and_export(parent, get_model, button, status))
    return button


def choose_and_export(parent: QWidget, get_model: Callable[[], Any], button: QPushButton | None = None,
                      status: Callable[[str], None] | None = None) -> Job | None:
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
                        button, status)


def installed(export_format: str) -> bool:
    """Whether the packages of ``export_format`` are installed (found, not imported)."""
    from btunet.exporting.network_export import NEEDS

    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ImportError:  # its parent package is missing
            return False
    return all(found(name) for name in NEEDS[export_format])


def _export(model: Any, path: Path, export_format: str) -> Path:
    """Runs in the worker thread: the export's imports, then the export."""
    import btunet
    from btunet.exporting import network_export
    network_export.require(export_format)  # imports bioimageio.spec / onnx (seconds, the first time)
    return btunet.export(model, path, export_format, overwrite=True)


def start_export(parent: QWidget | None, model: Any, path: str | Path, export_format: str,
                 button: QPushButton | None = None, status: Callable[[str], None] | None = None) -> Job | None:
    """Export a copy of ``model`` in a worker (asks before replacing a file; a missing package is
    reported without asking)."""
    path = Path(path)
    if installed(export_format) and not _messages.may_write(parent, path):
        return None
    model = copy.deepcopy(model)  # training may go on with the session model meanwhile
    say = status or (lambda text: None)
    if button is not None:
        button.setEnabled(False)
    say(f"exporting the model to {path.name}…")

    def done(outcome: Outcome) -> None:
        if button is not None:
            button.setEnabled(True)
        if outcome.error is not None:
            say(f"export failed: {_messages.sentence(outcome.error)}")
            _messages.report_failure("Export", outcome.error)
        else:
            written = Path(outcome.result)
            say(f"exported {written.name} to {written.parent}")
            _messages.show_info(f"Exported {written.name} to {written.parent}")

    return Job(lambda job: _export(model, path, export_format), done).start()
