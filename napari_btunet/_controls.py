"""Qt building blocks of the widgets: progress, file fields and what a checkpoint file holds,
device choice, number fields with their settings' declared ranges, hints, and the dock layout (a
fixed header over a scrolling, collapsible body)."""
from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QEvent, QSize, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from btunet.base.settings_schema import limits
from btunet.core.config import PredictConfig

from ._classes import class_dice_text
from ._messages import sentence

DEVICE_CHOICES = limits(PredictConfig, "device").choices


def format_seconds(seconds: float | None) -> str:
    """'m:ss' or 'h:mm:ss'; '…' for a time not known yet."""
    if seconds is None:
        return "…"
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressPanel(QWidget):
    """A progress bar with a one-line status: what runs, how far, the loss and the time left.

    Training reports arrive after every step; the panel shows at most ``min_interval_s`` apart
    (each change repaints the window, which can cost tens of milliseconds on the GUI thread), and
    at once for outcomes (``set_fraction`` / ``set_text``). Long paths in the line are shortened
    in the middle; the tooltip has the whole text.
    """

    def __init__(self, parent: QWidget | None = None, min_interval_s: float = 0.5):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.bar.setMaximumHeight(18)
        self.label = QLabel("idle")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._pending: tuple[float, str] | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(1000 * min_interval_s))
        self._timer.timeout.connect(self._show_pending)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.bar)
        layout.addWidget(self.label)

    def set_fraction(self, fraction: float, text: str = "") -> None:
        """Show this now (an outcome); a report still waiting is dropped."""
        self._pending = None
        self._timer.stop()
        self._apply(fraction, text)

    def set_text(self, text: str) -> None:
        self._pending = None
        self._timer.stop()
        self._set_label(text)

    def report(self, fraction: float, text: str) -> None:
        """A running job's report: shown now if the last one is old enough, else soon."""
        if self._timer.isActive():
            self._pending = (fraction, text)
            return
        self._apply(fraction, text)
        self._timer.start()

    def _show_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._apply(*pending)
            self._timer.start()

    def _apply(self, fraction: float, text: str) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        # QProgressBar.setValue repaints at once; with updates held, the bar and the line below
        # are painted together in one pass (each pass redraws the window, the canvas included)
        self.bar.setUpdatesEnabled(False)
        self.bar.setValue(int(round(1000 * fraction)))
        self.bar.setFormat(f"{100 * fraction:.0f} %")
        self.bar.setUpdatesEnabled(True)
        if text:
            self._set_label(text)

    def _set_label(self, text: str) -> None:
        from ._messages import shorten_paths
        self.label.setText(shorten_paths(text))
        self.label.setToolTip(text if shorten_paths(text) != text else "")

    def show_training(self, p, note: str = "") -> None:
        """One engine ``Progress``: epochs and steps, or the time spent of a time budget, then ``note``."""
        self.report(p.fraction, training_text(p) + (f" · {note}" if note else ""))


def training_text(p) -> str:
    """'epoch 2/12 · step 40/300 · loss 0.213 · 0:05 elapsed · ETA 0:32', or with a time budget
    '1:23 of 2:00 · epoch 14 · loss 0.213 · ETA 0:37' (the ETA is what is left of the budget)."""
    dice = (f" · val Dice {p.val_dice:.2f}" if p.val_dice is not None else "") + class_dice_text(
        getattr(p, "val_class_dice", None))
    budget = getattr(p, "time_budget_s", None)
    if budget:
        return (f"{format_seconds(p.elapsed_s)} of {format_seconds(budget)} · epoch {p.epoch} · "
                f"loss {p.loss:.3f}{dice} · ETA {format_seconds(p.eta_s)}")
    return (f"epoch {p.epoch}/{p.epochs} · step {p.step}/{p.total_steps} · loss {p.loss:.3f}{dice}"
            f" · {format_seconds(p.elapsed_s)} elapsed · ETA {format_seconds(p.eta_s)}")


class PathField(QWidget):
    """A line edit with a browse button for a file (open or save) or a folder.

    ``changed`` is emitted when a path is chosen in the dialog, typed (editing finished) or set
    in code, so descriptions that depend on the file stay current.
    """

    changed = Signal()

    def __init__(self, mode: str = "open", file_filter: str = "Checkpoints (*.safetensors)",
                 placeholder: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.mode, self.filter = mode, file_filter
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.editingFinished.connect(self.changed)
        self.button = QPushButton("…")
        self.button.setFixedWidth(28)
        self.button.setToolTip("choose in a file dialog")
        self.button.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(self.button)

    def path(self) -> Path | None:
        text = self.edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_path(self, path: str | Path | None) -> None:
        self.edit.setText("" if path is None else str(path))
        self.changed.emit()

    def _browse(self) -> None:
        start = self.edit.text() or str(Path.home())
        no_confirm = QFileDialog.Option.DontConfirmOverwrite  # we ask ourselves, once
        if self.mode == "folder":
            chosen = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        elif self.mode == "save":
            chosen, _ = QFileDialog.getSaveFileName(self, "Save as", start, self.filter,
                                                    options=no_confirm)
            if chosen and not Path(chosen).suffix:
                chosen += ".safetensors"
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, "Open", start, self.filter)
        if chosen:
            self.set_path(chosen)


def describe_checkpoint(path: Path | None, wanted: str) -> tuple[str, dict | None]:
    """What a checkpoint file holds, in a line, and its metadata (None if unreadable):
    'unet model (fine-tuned, 1 channel) from nuclei.safetensors' or
    'unet encoder (pre-trained, 3 channels) from enc.safetensors'; ``wanted`` ('model' or
    'encoder') adds what to do with the other kind."""
    from btunet import BTUnetError
    from btunet.core.checkpoint import read_metadata
    if path is None:
        return f"choose {'a model' if wanted == 'model' else 'an encoder'} file", None
    if not path.is_file():
        return f"{path.name} does not exist", None
    try:
        meta = read_metadata(path)
    except BTUnetError as exc:
        return sentence(exc), None
    kind = meta.get("kind")
    channels = meta.get("channels", meta["model"].get("in_channels", "?"))
    how = "fine-tuned" if kind == "model" else "pre-trained"
    text = (f"{meta['model']['name']} {kind} ({how}, {channels} channel{'' if channels == 1 else 's'}) "
            f"from {path.name}")
    if kind != wanted:
        text += (" — an encoder: fine-tune it first" if kind == "encoder"
                 else " — a fine-tuned model, not an encoder")
    return text, meta


def device_combo() -> QComboBox:
    combo = QComboBox()
    combo.addItems(DEVICE_CHOICES)
    return combo


def add_device_row(form) -> tuple[QComboBox, QLabel]:
    """A device choice plus a line, kept current, saying what actually runs the work."""
    combo = device_combo()
    label = hint(describe_device_choice(combo.currentText()))
    combo.currentTextChanged.connect(lambda choice: label.setText(describe_device_choice(choice)))
    form.addRow("device", combo)
    form.addRow(label)
    return combo, label


def describe_device_choice(choice: str) -> str:
    from btunet import BTUnetError
    from btunet.base.device import describe_device, resolve_device
    try:
        return "runs on " + describe_device(resolve_device(choice))
    except BTUnetError as exc:
        return sentence(str(exc).replace("use --device cpu", "choose cpu or auto"))


def hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    font = label.font()
    font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
    label.setFont(font)
    return label


class BodyArea(QScrollArea):
    """A vertical-only scroll area whose minimum width is its content's: the dock is never
    narrower than what it holds, so nothing is cut at the right and nothing scrolls sideways."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(QWidget())
        self.widget().installEventFilter(self)

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        bar = max(self.verticalScrollBar().sizeHint().width(), self.verticalScrollBar().width())
        width = self.widget().minimumSizeHint().width() + bar + 2 * self.frameWidth() + 4
        return QSize(width, hint.height())

    def eventFilter(self, watched, event) -> bool:
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the content's minimum width may have changed
        return super().eventFilter(watched, event)


def header_and_body(widget: QWidget) -> tuple[QVBoxLayout, QVBoxLayout]:
    """Give ``widget`` a fixed header (the action buttons and progress: always visible, however
    short the dock) over a vertically scrolling body; returns both layouts to fill."""
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.setSpacing(4)
    header = QVBoxLayout()
    header.setContentsMargins(4, 4, 4, 0)
    header.setSpacing(3)
    outer.addLayout(header)
    area = BodyArea()
    outer.addWidget(area, 1)
    widget._scroll_area = area
    body = QVBoxLayout(area.widget())
    body.setContentsMargins(4, 0, 4, 4)
    return header, body


def collapsible(title: str):
    """A collapsed section with a form layout: returns (section, form)."""
    from qtpy.QtWidgets import QFormLayout
    from superqt import QCollapsible
    section = QCollapsible(title)
    content = QWidget()
    form = QFormLayout(content)
    form.setContentsMargins(0, 0, 0, 0)
    section.addWidget(content)
    return section, form


class UnitSpinBox(QDoubleSpinBox):
    """A number field with a unit that a narrow dock never cuts ('0.2 mi'): at least as wide as
    its longest value with the unit, however the style sheet (napari's sets a smaller
    ``min-width`` on spin boxes) sizes spin boxes."""

    def event(self, event) -> bool:
        handled = super().event(event)
        if event.type() in (QEvent.Type.Polish, QEvent.Type.StyleChange, QEvent.Type.FontChange):
            self.setMinimumWidth(self.sizeHint().width())
        return handled


def setting_spin(config: type, name: str, value: float | None = None, *, ceiling: float = 100_000,
                 step: float = 1, decimals: int = 2, spin: QAbstractSpinBox | None = None) -> QAbstractSpinBox:
    """A number field for the setting ``name`` of ``config``, its range the one the setting declares
    (``btunet.base.settings_schema``), so the widget offers what the engine accepts: an excluded bound
    moves in by the smallest step the field shows, and ``ceiling`` caps a setting without an upper
    bound. ``spin`` (a QDoubleSpinBox, e.g. with a unit) is set up instead of a new one."""
    lim = limits(config, name)
    if spin is None:
        spin = QSpinBox() if lim.kind == "whole" else QDoubleSpinBox()
    unit = 1 if isinstance(spin, QSpinBox) else 10.0 ** -decimals
    if isinstance(spin, QDoubleSpinBox):
        spin.setDecimals(decimals)
    spin.setRange(lim.lo + (unit if lim.lo_open else 0),
                  ceiling if lim.hi is None else lim.hi - (unit if lim.hi_open else 0))
    spin.setSingleStep(step)
    spin.setValue(lim.default if value is None else value)
    return spin
