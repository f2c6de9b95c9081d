"""Fine-tuning data: one row per (image layer, labels layer) pair, with a live shape check."""
from __future__ import annotations

from typing import Any

from napari.layers import Image, Labels
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ._layers import is_output, spatial_shape
from ._pickers import LayerCombo

#: the text of the button that adds an empty labels layer (the pair hint names it)
NEW_ANNOTATION = "New annotation"


class PairRow(QWidget):
    """One (image layer, labels layer) pair with a live shape check."""

    def __init__(self, viewer, on_remove, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.image = LayerCombo(viewer, Image, role="the image layer to train on")
        self.labels = LayerCombo(viewer, Labels, role="its painted labels layer (same shape)")
        self.remove = QPushButton("✕")
        self.remove.setFixedWidth(REMOVE_WIDTH)
        self.remove.setToolTip("remove this pair")
        self.remove.clicked.connect(lambda: on_remove(self))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #f0a050")
        row = QHBoxLayout()  # under the column titles of ``pair_titles``
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        row.addWidget(self.image, 1)
        row.addWidget(self.labels, 1)
        row.addWidget(self.remove)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(1)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.image.currentTextChanged.connect(self._image_changed)
        self.labels.currentTextChanged.connect(self.check)
        self._image_changed()

    def _image_changed(self, *_: Any) -> None:
        image, labels = self.image.layer(), self.labels.layer()
        if image is not None and (labels is None or spatial_shape(labels) != spatial_shape(image)):
            match = matching_labels(self.viewer, image)
            if match is not None:
                self.labels.set_layer(match)
        self.check()

    def refresh(self) -> None:
        self.image.refresh()
        self.labels.refresh()
        self.check()

    def problem(self) -> str | None:
        """None if the pair can be trained on, else a sentence saying what is wrong."""
        image, labels = self.image.layer(), self.labels.layer()
        if image is None:
            return "Choose an image layer."
        if labels is None:
            return (f"Choose a labels layer for {image.name!r} (add one with "
                    f"'{NEW_ANNOTATION}' and paint on it).")
        img_shape, lab_shape = spatial_shape(image), spatial_shape(labels)
        if img_shape != lab_shape:
            rgb = " (without its colour axis)" if image.rgb else ""
            return (f"Labels {labels.name!r} have shape {lab_shape} but image {image.name!r} has "
                    f"shape {img_shape}{rgb}; they must match.")
        if len(img_shape) < 2:
            return f"Image {image.name!r} needs at least two spatial axes."
        return None

    def check(self, *_: Any) -> None:
        problem = self.problem()
        self.status.setText(problem or "")
        self.status.setVisible(bool(problem))


def pair_titles() -> QHBoxLayout:
    """The column titles over the pair rows: 'image', 'labels'."""
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.setSpacing(4)
    row.addWidget(QLabel("image"), 1)
    row.addWidget(QLabel("labels"), 1)
    row.addSpacing(REMOVE_WIDTH)
    return row


REMOVE_WIDTH = 26


def matching_labels(viewer, image):
    """A labels layer the same shape as ``image``, preferring one named like an annotation."""
    shape = spatial_shape(image)
    found = [layer for layer in viewer.layers if isinstance(layer, Labels)
             and not is_output(layer) and spatial_shape(layer) == shape]
    found.sort(key=lambda layer: ("annot" not in layer.name.lower(),
                                  not layer.name.startswith(image.name)))
    return found[0] if found else None
