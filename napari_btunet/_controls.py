"""Qt building blocks of the widgets: progress, live loss plot, file fields, device choice,
hints, and the scrollable, collapsible layout."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                            QPushButton, QVBoxLayout, QWidget)

from ._classes import class_dice_text
from ._messages import sentence

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressPanel(QWidget):
    """A progress bar with a one-line status: epoch, step, loss and ETA."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.label = QLabel("idle")
        self.label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.label)

    def set_fraction(self, fraction: float, text: str = "") -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        self.bar.setValue(int(round(1000 * fraction)))
        self.bar.setFormat(f"{100 * fraction:.0f} %")
        if text:
            self.label.setText(text)

    def set_text(self, text: str) -> None:
        self.label.setText(text)

    def show_training(self, p, time_budget_s: Optional[float] = None) -> None:
        fraction, eta = p.fraction, p.eta_s
        if time_budget_s:
            fraction = max(fraction, p.elapsed_s / time_budget_s)
            eta = min(eta, max(0.0, time_budget_s - p.elapsed_s))
        text = (f"epoch {p.epoch}/{p.epochs} · step {p.step}/{p.total_steps} · loss {p.loss:.3f}"
                + (f" · val Dice {p.val_dice:.2f}" if p.val_dice is not None else "")
                + class_dice_text(getattr(p, "val_class_dice", None))
                + f" · {format_seconds(p.elapsed_s)} elapsed · ETA {format_seconds(eta)}")
        self.set_fraction(fraction, text)


class LivePlot(QWidget):
    """A small matplotlib plot in the dock: training loss (left axis), optional Dice (right axis).

    Points are added on every progress signal; the canvas redraws at most every
    ``min_interval_s`` seconds, so a fast stream of steps never floods the GUI thread.
    """

    def __init__(self, right_label: Optional[str] = None, min_interval_s: float = 1.0,
                 parent: Optional[QWidget] = None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        fg, bg = "#d0d3d8", "#262930"
        # fixed margins, few ticks: a redraw costs a few ms on the GUI thread (a "tight" layout
        # would lay the text out twice per draw)
        self.figure = Figure(figsize=(3.2, 1.9), dpi=90, facecolor=bg)
        self.figure.subplots_adjust(left=0.17, right=0.85 if right_label else 0.96, bottom=0.2, top=0.95)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(150)
        self.ax = self.figure.add_subplot()
        self.ax2 = self.ax.twinx() if right_label else None
        for ax in filter(None, (self.ax, self.ax2)):
            ax.set_facecolor(bg)
            ax.tick_params(colors=fg, labelsize=7)
            ax.locator_params(nbins=4)
            for spine in ax.spines.values():
                spine.set_color("#5a5f69")
        self.ax.set_xlabel("step", color=fg, fontsize=7)
        self.ax.set_ylabel("loss", color="#5fb3f9", fontsize=7)
        (self.loss_line,) = self.ax.plot([], [], color="#5fb3f9", lw=1.2)
        self.right_line = None
        if self.ax2 is not None:
            self.ax2.set_ylabel(right_label, color="#f9a65f", fontsize=7)
            self.ax2.set_ylim(0, 1)
            (self.right_line,) = self.ax2.plot([], [], color="#f9a65f", lw=1.2, marker="o", ms=3)
        self.loss: tuple[list, list] = ([], [])
        self.right: tuple[list, list] = ([], [])
        self.redraws = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(1000 * min_interval_s))
        self._timer.timeout.connect(self._redraw)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

    def clear(self) -> None:
        self.loss, self.right = ([], []), ([], [])
        self._redraw()

    def add_loss(self, step: float, value: float) -> None:
        self.loss[0].append(step)
        self.loss[1].append(value)
        self._schedule()

    def add_right(self, step: float, value: float) -> None:
        self.right[0].append(step)
        self.right[1].append(value)
        self._schedule()

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        self._timer.stop()
        self._redraw()

    def showEvent(self, event) -> None:  # catch up after being hidden (e.g. another dock tab)
        super().showEvent(event)
        self._schedule()

    def _redraw(self) -> None:
        if not self.isVisible():
            return  # drawing costs GUI time; showEvent redraws
        self.loss_line.set_data(*self.loss)
        if self.right_line is not None:
            self.right_line.set_data(*self.right)
        self.ax.relim()
        self.ax.autoscale_view()  # the Dice axis shares x (twinx) and keeps its 0..1 range
        self.canvas.draw_idle()
        self.redraws += 1


class PathField(QWidget):
    """A line edit with a browse button for a file (open or save) or a folder."""

    def __init__(self, mode: str = "open", filter: str = "Checkpoints (*.safetensors)",
                 placeholder: str = "", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.mode, self.filter = mode, filter
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.button = QPushButton("…")
        self.button.setFixedWidth(28)
        self.button.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(self.button)

    def path(self) -> Optional[Path]:
        text = self.edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_path(self, path: "str | Path | None") -> None:
        self.edit.setText("" if path is None else str(path))

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
            self.edit.setText(chosen)


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
    form.addRow("", label)
    return combo, label


def describe_device_choice(choice: str) -> str:
    from btunet.device import describe_device, resolve_device
    from btunet import BTUnetError
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


def scroll_layout(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a scroll area and return the layout to fill (a tall dock never squashes rows)."""
    from qtpy.QtWidgets import QFrame, QScrollArea
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    inner = QWidget()
    area.setWidget(inner)
    outer.addWidget(area)
    widget._scroll_area = area
    return QVBoxLayout(inner)


def fit_width(widget: QWidget) -> None:
    """Make the dock at least as wide as the content of ``scroll_layout`` (no clipped rows)."""
    area = widget._scroll_area
    needed = area.widget().minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width() + 4
    area.setMinimumWidth(needed)


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
