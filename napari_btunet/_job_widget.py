"""The base of the three dock widgets: the action row and progress in a fixed header over a
scrolling body, one engine job at a time, one status line per outcome, and clean-up."""
from __future__ import annotations

import contextlib
from collections.abc import Callable

from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QDockWidget, QHBoxLayout, QPushButton, QWidget

from btunet import BTUnetError

from . import _messages
from ._controls import ProgressPanel, header_and_body
from ._jobs import Job, leave_a_core_to_the_gui, warm_up_imports

#: a dock is never squeezed below its header plus this much of its body
MIN_BODY_HEIGHT = 120


class JobWidget(QWidget):
    """Base of the three dock widgets.

    The header holds the action row (``add_start_cancel``) and ``self.progress``, so Start,
    Cancel and the status line stay visible however short the dock gets; the body
    (``self.body``) scrolls vertically, never sideways. Opened next to another BT-Unet dock, a
    dock joins it as a tab instead of splitting the column in two. Undocking (closing the dock)
    asks a running job to stop; destroying the widget also stops delivering anything to it.
    Nothing here keeps a closed widget alive.
    """

    #: what the widget does, for notifications: "Fine-tuning", "Prediction", ...
    activity = "The job"
    #: the dock's tab title: short, so three tabs side by side keep their words whole
    tab_title = "BT-Unet"

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.job: Job | None = None
        self._job_ref: list = [None]
        self._docked = False
        self._cleanups: list[Callable[[], None]] = []
        self.header, self.body = header_and_body(self)
        self.actions = QHBoxLayout()
        self.actions.setSpacing(4)
        self.header.addLayout(self.actions)
        self.progress = ProgressPanel()
        self.header.addWidget(self.progress)
        leave_a_core_to_the_gui()
        warm_up_imports()
        holder, cleanups = self._job_ref, self._cleanups

        def on_destroyed(*_):
            for cleanup in cleanups:
                with contextlib.suppress(Exception):  # best effort: one failing clean-up must not stop the rest
                    cleanup()
            if holder[0] is not None:
                with contextlib.suppress(RuntimeError):  # Qt objects already gone (interpreter exit)
                    holder[0].detach()
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
                with contextlib.suppress(RuntimeError):  # the Qt side is already gone
                    getattr(widget, method_name)(what)
        session.changed.connect(relay)
        self.on_close(lambda: session.changed.disconnect(relay))

    # ------------------------------------------------------------------ jobs
    def run_job(self, job: Job) -> Job:
        self.job = job
        self._job_ref[0] = job
        self.show_dock()  # the dock whose job runs is the one in front
        return job.start()

    #: shown while a cancelled job finishes its current unit of work
    stopping_text = "stopping after this step…"

    def add_start_cancel(self, start_text: str) -> QPushButton:
        """The start button (returned) and ``self.cancel_button``, in the header's action row."""
        start = QPushButton(start_text)
        start.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.actions.addWidget(start)
        self.actions.addWidget(self.cancel_button)
        return start

    def take_request(self):
        """What Start asks for (the widget's ``_request()``), or None when a job still runs or nothing
        may start: a problem found before starting is refused, a question answered no is declined."""
        if self.job is not None and self.job.running:
            return None
        try:
            return self._request()
        except BTUnetError as exc:
            self.refuse(exc)
        except _messages.Declined as exc:
            self.declined(exc)
        return None

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.progress.set_text(self.stopping_text)
            self.cancel_button.setEnabled(False)

    # ------------------------------------------------------------------ outcomes
    # Each outcome replaces the status line (never an old "failed: ..." beside a new result)
    # and, where the user must act, also shows a notification.
    def refuse(self, exc: BaseException) -> None:
        """Start was pressed but nothing started (a problem found before starting)."""
        self.progress.set_text(f"not started: {_messages.sentence(exc)}")
        _messages.show_error(f"{self.activity} cannot start: {_messages.sentence(exc)}")

    def declined(self, exc: BaseException) -> None:
        """Start was pressed, and the user said no to a question."""
        self.progress.set_text(f"not started: {_messages.sentence(exc)}")
        _messages.show_warning(f"{self.activity} not started: {_messages.sentence(exc)}")

    def failed(self, exc: BaseException) -> None:
        self.progress.set_text(f"failed: {_messages.sentence(exc)}")
        _messages.report_failure(self.activity, exc)

    # ------------------------------------------------------------------ docking
    def dock(self) -> QDockWidget | None:
        parent = self.parent()
        while parent is not None and not isinstance(parent, QDockWidget):
            parent = parent.parent()
        return parent

    def show_dock(self) -> None:
        dock = self.dock()
        if dock is not None and not dock.isFloating():
            dock.raise_()

    def _settle_dock(self) -> None:
        """Just docked: join the other BT-Unet docks of this side as a tab (so no dock is squeezed
        to a sliver), or, beside other docks, take a usable share of the column."""
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QMainWindow
        dock = self.dock()
        if dock is not None:
            dock.setWindowTitle(self.tab_title)  # napari's "Fine-tune (BT-Unet)" stays in the title bar
        main = dock.parentWidget() if dock is not None else None
        if not isinstance(main, QMainWindow) or dock.isFloating():
            return
        area = main.dockWidgetArea(dock)
        others = [d for d in main.findChildren(QDockWidget) if d is not dock and d.isVisible()
                  and not d.isFloating() and main.dockWidgetArea(d) == area]
        ours = [d for d in others if d.findChild(JobWidget) is not None]
        if ours and not main.tabifiedDockWidgets(dock):
            main.tabifyDockWidget(ours[0], dock)
            dock.show()
            dock.raise_()
        elif others and not ours:
            orientation = (Qt.Orientation.Vertical if area in (Qt.DockWidgetArea.LeftDockWidgetArea,
                                                                Qt.DockWidgetArea.RightDockWidgetArea)
                           else Qt.Orientation.Horizontal)
            size = main.height() if orientation == Qt.Orientation.Vertical else main.width()
            main.resizeDocks([dock], [int(0.65 * size)], orientation)

    def minimumSizeHint(self):
        hint = super().minimumSizeHint()
        hint.setHeight(self.header.sizeHint().height() + MIN_BODY_HEIGHT)
        return hint

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
                QTimer.singleShot(0, self._settle_when_alive)
            elif self._docked and self.job is not None and self.job.running:
                self.cancel()  # the dock was closed
        return super().event(event)

    def _settle_when_alive(self) -> None:
        with contextlib.suppress(RuntimeError):  # closed before the event loop came round
            self._settle_dock()
