"""Pieces the three widgets share: engine jobs off the GUI thread, progress, live plot, output
layers, file fields and user messages.

Engine calls run in a napari ``thread_worker``; the engine's callbacks (training thread) emit
Qt signals of a small bridge object that lives on the GUI thread, so every widget update
happens on the GUI thread, and ``Cancel`` only sets a flag that the engine's ``should_stop`` reads.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from napari.utils import notifications
from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                            QProgressBar, QPushButton, QVBoxLayout, QWidget)

log = logging.getLogger("napari_btunet")

#: metadata keys that mark (and identify) the layers this plugin writes
OUTPUT_KEY = "btunet_output"
KIND_KEY = "btunet_kind"
SOURCE_KEY = "btunet_source"
SUFFIX = "[btunet]"

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


# ----------------------------------------------------------------------------- messages
# Widgets call these through the module (``_common.show_error(...)``) so tests can patch them.

def show_error(message: str) -> None:
    notifications.show_error(message)


def show_warning(message: str) -> None:
    notifications.show_warning(message)


def show_info(message: str) -> None:
    notifications.show_info(message)


def sentence(text: str) -> str:
    """'the annotations contain ...' -> 'The annotations contain ....'"""
    text = str(text).strip() or "unknown error"
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def report_failure(what: str, exc: BaseException) -> None:
    """One clear notification for a failed job; tracebacks only go to the log."""
    from btunet import BTUnetError
    if isinstance(exc, BTUnetError):
        show_error(f"{what} failed: {sentence(exc)}")
    else:
        log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
        show_error(f"{what} failed with an unexpected {type(exc).__name__}: {sentence(exc)}")


def ask_overwrite(parent: Optional[QWidget], path: Path) -> bool:
    """Ask before replacing an existing file (tests patch this)."""
    answer = QMessageBox.question(
        parent, "Overwrite file?", f"{path} already exists.\nReplace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def may_write(parent: Optional[QWidget], path: "str | Path") -> bool:
    path = Path(path)
    return not path.exists() or ask_overwrite(parent, path)


class Declined(Exception):
    """The user answered "no" to a question; nothing was started."""


# ----------------------------------------------------------------------------- jobs

class _Bridge(QObject):
    """Lives on the GUI thread; signals emitted from the worker thread arrive queued."""
    progress = Signal(object)
    item = Signal(object)


@dataclasses.dataclass
class Outcome:
    result: Any = None
    error: Optional[BaseException] = None
    cancelled: bool = False


#: jobs whose worker thread may still run: kept alive here until they finish, even if their
#: widget is closed, and asked to stop when the application quits
_RUNNING: set = set()
_quit_hook_installed = False


def cancel_all_jobs() -> None:
    for job in list(_RUNNING):
        job.cancel()


def _install_quit_hook() -> None:
    global _quit_hook_installed
    from qtpy.QtWidgets import QApplication
    app = QApplication.instance()
    if app is not None and not _quit_hook_installed:
        app.aboutToQuit.connect(cancel_all_jobs)
        _quit_hook_installed = True


class Job:
    """One engine call in a napari worker thread.

    ``task(job)`` runs in the worker thread; it may call ``job.progress(x)`` and ``job.item(x)``
    (delivered to ``on_progress`` / ``on_item`` on the GUI thread) and pass ``job.should_stop``
    to the engine. ``on_done(Outcome)`` runs on the GUI thread when the task ends, whatever happened.
    """

    def __init__(self, task: Callable[["Job"], Any], on_done: Callable[[Outcome], None],
                 on_progress: Optional[Callable[[Any], None]] = None,
                 on_item: Optional[Callable[[Any], None]] = None):
        self.task, self.on_done = task, on_done
        self._stop = threading.Event()
        self._bridge = _Bridge()
        if on_progress is not None:
            self._bridge.progress.connect(on_progress)
        if on_item is not None:
            self._bridge.item.connect(on_item)
        self.worker = None
        self.running = False
        self.outcome: Optional[Outcome] = None
        self.stop_requested_at: Optional[float] = None
        self.finished_at: Optional[float] = None

    # worker-thread side
    def should_stop(self) -> bool:
        return self._stop.is_set()

    def progress(self, value: Any) -> None:
        self._bridge.progress.emit(value)

    def item(self, value: Any) -> None:
        self._bridge.item.emit(value)

    def _run(self) -> Outcome:
        from btunet import Cancelled
        try:
            return Outcome(result=self.task(self), cancelled=self.should_stop())
        except Cancelled as exc:
            return Outcome(error=exc, cancelled=True)
        except Exception as exc:  # reported on the GUI thread as a notification
            return Outcome(error=exc)

    # GUI-thread side
    def start(self) -> "Job":
        from napari.qt.threading import thread_worker
        self.worker = thread_worker(self._run, start_thread=False)()
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.running = True
        _RUNNING.add(self)
        _install_quit_hook()
        self.worker.start()
        return self

    def detach(self) -> None:
        """The widget is going away: stop, and deliver nothing more to it."""
        self.cancel()
        self.on_done = lambda outcome: None
        try:  # at interpreter exit Qt may already have deleted the bridge
            signals = (self._bridge.progress, self._bridge.item)
        except RuntimeError:
            return
        for signal in signals:
            try:
                signal.disconnect()
            except (TypeError, RuntimeError):
                pass

    def cancel(self) -> None:
        if self.running and not self._stop.is_set():
            self.stop_requested_at = time.perf_counter()
            self._stop.set()

    def _returned(self, outcome: Outcome) -> None:
        self._finish(outcome)

    def _errored(self, exc: BaseException) -> None:  # only if _run itself failed
        self._finish(Outcome(error=exc))

    def _finish(self, outcome: Outcome) -> None:
        self.running = False
        _RUNNING.discard(self)
        self.outcome = outcome
        self.task = None  # drop the captured request (arrays, layers) now
        self.finished_at = time.perf_counter()
        self.on_done(outcome)


def snapshot(progress) -> Any:
    """A copy of an engine ``Progress`` that is safe to hand to the GUI thread (no model)."""
    history = {k: list(v) for k, v in (progress.history or {}).items()}
    return dataclasses.replace(progress, model=None, history=history)


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ----------------------------------------------------------------------------- widgets

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


# ----------------------------------------------------------------------------- layers

def layer_array(layer) -> Any:
    """The full-resolution data of a layer (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def spatial_shape(layer) -> tuple[int, ...]:
    """Shape without the colour axis of an RGB(A) image layer."""
    shape = tuple(layer_array(layer).shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def is_output(layer) -> bool:
    return bool(layer.metadata.get(OUTPUT_KEY, False))


def output_name(source_name: str, kind: str) -> str:
    return f"{source_name} {kind} {SUFFIX}"


def find_output(viewer, source_name: str, kind: str):
    """The plugin's own output layer of this kind for this source, if there is one.

    A layer counts only when it carries the plugin's metadata (so a user layer with the same
    name is never touched) and either has the expected name or records the same source.
    """
    expected = output_name(source_name, kind)
    for layer in viewer.layers:
        md = layer.metadata
        if md.get(OUTPUT_KEY) and md.get(KIND_KEY) == kind and (
                layer.name == expected or md.get(SOURCE_KEY) == source_name):
            return layer
    return None


def upsert_output(viewer, source, kind: str, data: np.ndarray, layer_type: str, **kwargs):
    """Create or update the output layer ``"<source> <kind> [btunet]"``, aligned with ``source``."""
    from napari.layers import Image, Labels
    cls = Labels if layer_type == "labels" else Image
    geometry = {"scale": tuple(source.scale), "translate": tuple(source.translate)}
    layer = find_output(viewer, source.name, kind)
    if layer is not None and isinstance(layer, cls) and layer.ndim == data.ndim:
        layer.data = data
        layer.scale, layer.translate = geometry["scale"], geometry["translate"]
        if layer_type == "image" and "contrast_limits" in kwargs:
            layer.contrast_limits = kwargs["contrast_limits"]
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    metadata = {OUTPUT_KEY: True, KIND_KEY: kind, SOURCE_KEY: source.name}
    add = viewer.add_labels if layer_type == "labels" else viewer.add_image
    return add(data, name=output_name(source.name, kind), metadata=metadata, **geometry, **kwargs)


class PlaneTracker:
    """The plane of ``layer`` the viewer shows now, for the training thread to read.

    Updated on the GUI thread from ``viewer.dims.events.current_step``; ``index`` is read
    from any thread (a tuple is replaced atomically, and a lock guards it anyway).
    """

    def __init__(self, viewer, layer):
        self.viewer, self.layer = viewer, layer
        self._lock = threading.Lock()
        self._index: tuple = ()
        self.update()
        viewer.dims.events.current_step.connect(self.update)

    @property
    def index(self) -> tuple:
        with self._lock:
            return self._index

    def update(self, event=None) -> None:
        leading = spatial_shape(self.layer)[:-2]
        index: tuple = ()
        if leading:
            coords = np.asarray(self.layer.world_to_data(self.viewer.dims.point), float)
            index = tuple(int(np.clip(round(c), 0, n - 1)) for c, n in zip(coords[:len(leading)], leading))
        with self._lock:
            self._index = index

    def close(self) -> None:
        try:
            self.viewer.dims.events.current_step.disconnect(self.update)
        except Exception:  # viewer already closed
            pass


class LayerCombo(QComboBox):
    """Pick a layer of one type (outputs of this plugin excluded); refreshed as layers change."""

    def __init__(self, viewer, layer_type: type, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.viewer, self.layer_type = viewer, layer_type
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)
        self.refresh()

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

    def __init__(self, viewer, layer_type: type, parent: Optional[QWidget] = None):
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


def watch_layers(viewer, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` when layers are added, removed or renamed; returns a disconnect function.

    A bound method is held weakly, so the viewer never keeps a closed widget alive.
    """
    import weakref
    ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else (lambda: callback)

    def on_change(event=None):
        target = ref()
        if target is not None:
            try:
                target()
            except RuntimeError:  # the Qt side is already gone
                pass

    def on_inserted(event=None):
        if event is not None and hasattr(event, "value"):
            event.value.events.name.connect(on_change)
        on_change()

    for layer in viewer.layers:
        layer.events.name.connect(on_change)
    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(on_change)

    def disconnect():
        for signal, slot in ((viewer.layers.events.inserted, on_inserted),
                             (viewer.layers.events.removed, on_change)):
            try:
                signal.disconnect(slot)
            except Exception:
                pass
        for layer in viewer.layers:
            try:
                layer.events.name.disconnect(on_change)
            except Exception:
                pass
    return disconnect


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


class JobWidget(QWidget):
    """Base of the three dock widgets: a scrollable body, one engine job at a time, and clean-up.

    Undocking (closing the dock) asks a running job to stop; destroying the widget also stops
    delivering anything to it. Nothing here keeps a closed widget alive.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.job: Optional[Job] = None
        self._job_ref: list = [None]
        self._docked = False
        self._cleanups: list[Callable[[], None]] = []
        self.body = scroll_layout(self)
        holder, cleanups = self._job_ref, self._cleanups

        def on_destroyed(*_):
            for cleanup in cleanups:
                try:
                    cleanup()
                except Exception:
                    pass
            if holder[0] is not None:
                try:
                    holder[0].detach()
                except RuntimeError:  # Qt objects already gone (interpreter exit)
                    pass
        self.destroyed.connect(on_destroyed)

    def on_close(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` when the widget is destroyed (it must not reference the widget)."""
        self._cleanups.append(cleanup)

    def follow_session(self, session, method_name: str) -> None:
        """Call ``self.<method_name>(what)`` on session changes, without keeping self alive."""
        import weakref
        ref = weakref.ref(self)

        def relay(what: str) -> None:
            widget = ref()
            if widget is not None:
                try:
                    getattr(widget, method_name)(what)
                except RuntimeError:  # the Qt side is already gone
                    pass
        session.changed.connect(relay)
        self.on_close(lambda: session.changed.disconnect(relay))

    def run_job(self, job: Job) -> Job:
        self.job = job
        self._job_ref[0] = job
        return job.start()

    #: shown while a cancelled job finishes its current unit of work
    stopping_text = "stopping after this step…"

    def add_start_cancel(self, layout, start_text: str) -> tuple[QHBoxLayout, QPushButton]:
        """A row with the start button (returned) and ``self.cancel_button``."""
        row = QHBoxLayout()
        start = QPushButton(start_text)
        start.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(start)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        return row, start

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.progress.set_text(self.stopping_text)
            self.cancel_button.setEnabled(False)

    def showEvent(self, event) -> None:  # style and fonts are final now
        fit_width(self)
        super().showEvent(event)

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked and self.job is not None and self.job.running:
                self.cancel()  # the dock was closed
        return super().event(event)
