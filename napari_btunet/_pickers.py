"""Layer pickers: one layer of a type (a combo box) or several (a checklist), never the
plugin's own output layers."""
from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QVBoxLayout, QWidget

from ._layers import is_output


class LayerCombo(QComboBox):
    """Pick a layer of one type (outputs of this plugin excluded); refreshed as layers change.

    A name too long for the box is shortened in the middle ('BBBC007 nu…tion by Ben'), or at the
    start where that would read like another layer's name; the tooltip has the whole name and
    ``role``."""

    def __init__(self, viewer, layer_type: type, parent: QWidget | None = None, role: str = ""):
        super().__init__(parent)
        self.viewer, self.layer_type, self.role = viewer, layer_type, role
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)
        self.currentTextChanged.connect(self._update_tooltip)
        self.refresh()
        self._update_tooltip()

    def _update_tooltip(self, *_) -> None:
        self.setToolTip("\n".join(text for text in (self.currentText(), self.role) if text))

    def _text_rect(self):
        from qtpy.QtWidgets import QStyle, QStyleOptionComboBox
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        return option, self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                                   QStyle.SubControl.SC_ComboBoxEditField, self)

    def shown_text(self) -> str:
        """The current name as the box shows it, shortened to its width."""
        width = self._text_rect()[1].width()
        metrics = self.fontMetrics()

        def elided(name: str, mode: Qt.TextElideMode) -> str:
            return metrics.elidedText(name, mode, width)
        name = self.currentText()
        others = [self.itemText(i) for i in range(self.count()) if self.itemText(i) != name]
        for mode in (Qt.TextElideMode.ElideMiddle, Qt.TextElideMode.ElideLeft):
            text = elided(name, mode)
            if all(text != elided(other, mode) for other in others):
                return text
        return elided(name, Qt.TextElideMode.ElideMiddle)

    def paintEvent(self, event) -> None:
        from qtpy.QtWidgets import QStyle, QStylePainter
        painter = QStylePainter(self)
        option, _ = self._text_rect()
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        option.currentText = self.shown_text()
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)

    def candidates(self) -> list:
        return [layer for layer in self.viewer.layers
                if isinstance(layer, self.layer_type) and not is_output(layer)]

    def refresh(self) -> None:
        current = self.currentText()
        names = [layer.name for layer in self.candidates()]
        if names == [self.itemText(i) for i in range(self.count())]:
            return
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        for i, name in enumerate(names):  # the popup shows each whole name as a tooltip too
            self.setItemData(i, name, Qt.ItemDataRole.ToolTipRole)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()

    def layer(self):
        name = self.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def set_layer(self, layer) -> None:
        self.refresh()
        if layer is not None:
            self.setCurrentText(layer.name)


class LayerChecklist(QWidget):
    """Tick image layers (outputs of this plugin excluded); new layers start ticked."""

    def __init__(self, viewer, layer_type: type, parent: QWidget | None = None):
        super().__init__(parent)
        from qtpy.QtWidgets import QListWidget
        self.viewer, self.layer_type = viewer, layer_type
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self._unticked: set[str] = set()
        self.list.itemChanged.connect(self._remember)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        self.refresh()

    def _remember(self, item) -> None:
        if item.checkState() == Qt.CheckState.Checked:
            self._unticked.discard(item.text())
        else:
            self._unticked.add(item.text())

    def refresh(self) -> None:
        from qtpy.QtWidgets import QListWidgetItem
        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, self.layer_type) and not is_output(layer)]
        if names == [self.list.item(i).text() for i in range(self.list.count())]:
            return
        self.list.blockSignals(True)
        self.list.clear()
        for name in names:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if name in self._unticked
                               else Qt.CheckState.Checked)
            self.list.addItem(item)
        self.list.blockSignals(False)

    def set_checked(self, names) -> None:
        """Tick exactly these layers."""
        self.refresh()
        names = set(names)
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    def layers(self) -> list:
        self.refresh()
        return [self.viewer.layers[self.list.item(i).text()] for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked
                and self.list.item(i).text() in self.viewer.layers]
