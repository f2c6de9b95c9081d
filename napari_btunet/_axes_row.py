"""The Axes row of the Fine-tune and Predict docks: what each axis of an image layer is.

One short line edit ("TZYX", "CYX", ...), prefilled from the layer's napari axis labels when they
are letters, else from the axes its file declares (OME-TIFF, ImageJ), else the engine's default.
The value is kept on the layer (``_layers.AXES_KEY``), names the viewer's sliders, and goes into
the engine calls (``axes=``); a C axis is the model's input channels, T and Z are planes.
"""
from __future__ import annotations

import contextlib

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QWidget

from btunet import BTUnetError
from btunet.io.axes import LETTERS, check_axes, declared, default_axes

from ._layers import AXES_KEY, axes_of, layer_array
from ._messages import sentence


def _fits(axes: str | None, shape) -> str | None:
    try:
        return check_axes(axes, shape) if axes else None
    except BTUnetError:
        return None


def suggested_axes(layer) -> str | None:
    """The axes of an image layer: set before, the layer's own letters, what its file declares
    (``btunet.io.axes.declared``, the rule of ``btunet predict``), the default."""
    shape = tuple(layer_array(layer).shape)
    rgb = bool(getattr(layer, "rgb", False))
    labels = [str(n).strip().upper() for n in (getattr(layer, "axis_labels", None) or ())]
    own = ("".join(labels) + ("C" if rgb else "")
           if labels and all(n in LETTERS and len(n) == 1 for n in labels) else None)
    path = getattr(getattr(layer, "source", None), "path", None)
    found = axes_of(layer) or _fits(own, shape) or (declared(path, shape).axes if path else None)
    if found is not None:
        return found
    plain = default_axes((8,) * (len(shape) - int(rgb)))  # napari decides the colour axis, not the size
    return plain + "C" if plain is not None and rgb else plain


def name_sliders(viewer, layer, axes: str) -> None:
    """Name the viewer's sliders (and the layer's axes) by the letters; RGB's C is no slider."""
    letters = tuple(axes[:-1] if getattr(layer, "rgb", False) else axes)
    with contextlib.suppress(Exception):  # a napari without layer axis labels, or a layer that refuses them
        layer.axis_labels = letters
    current = list(viewer.dims.axis_labels)
    if len(letters) <= len(current):
        current[len(current) - len(letters):] = letters
        viewer.dims.axis_labels = tuple(current)


class AxesRow(QWidget):
    """'Axes [TZYX]' for one followed image layer; ``changed`` after a new value is taken."""

    changed = Signal()

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer, self.layer = viewer, None
        self.edit = QLineEdit()
        self.edit.setMaximumWidth(80)
        self.edit.setPlaceholderText("TZYX")
        self.edit.setToolTip("what each axis of the image is, one letter per axis: T time, Z depth, "
                             "C channels (the model's input: 1 or 3), Y, X (last, apart from C); "
                             "e.g. TZYX, ZCYX, CYX, YXC. T and Z are predicted plane by plane; "
                             "labels have the image's axes without C")
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #f0a050")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Axes"))
        row.addWidget(self.edit)
        row.addWidget(self.note, 1)
        self.edit.editingFinished.connect(self.apply)

    def follow(self, layer) -> None:
        """Show (and keep on the layer) the axes of ``layer``, the one the row now describes."""
        if layer is self.layer and (layer is None or self.edit.text() == (axes_of(layer) or "")):
            return
        self.layer = layer
        axes = suggested_axes(layer) if layer is not None else None
        self.edit.setText(axes or "")
        self.note.setText("")
        if axes is not None:
            self._take(axes)

    def apply(self) -> bool:
        """Take the typed axes for the followed layer; a wrong value is explained beside it."""
        if self.layer is None:
            return False
        text = self.edit.text().strip()
        try:
            axes = check_axes(text, layer_array(self.layer).shape)
            if getattr(self.layer, "rgb", False) and not axes.endswith("C"):
                raise BTUnetError(f"{self.layer.name!r} is shown as RGB: its axes end in C, e.g. 'YXC'")
        except BTUnetError as exc:
            self.note.setText(sentence(exc))
            return False
        self.note.setText("")
        self.edit.setText(axes)
        if axes != axes_of(self.layer):
            self._take(axes)
            self.changed.emit()
        return True

    def _take(self, axes: str) -> None:
        self.layer.metadata[AXES_KEY] = axes
        name_sliders(self.viewer, self.layer, axes)


def engine_axes(layer) -> str | None:
    """The axes an engine call gets for ``layer`` (None: the engine's default rule)."""
    return axes_of(layer) or suggested_axes(layer)
