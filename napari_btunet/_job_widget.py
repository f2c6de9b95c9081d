"""The base of the three dock widgets: a scrollable body, one engine job at a time, clean-up."""
from __future__ import annotations

from typing import Callable, Optional

from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QWidget

from ._controls import fit_width, scroll_layout
from ._jobs import Job


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
