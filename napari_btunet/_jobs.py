"""Engine calls off the GUI thread: one ``Job`` per engine call, cancelled by a flag.

Engine calls run in a napari ``thread_worker``; the engine's callbacks (training thread) emit
Qt signals of a small bridge object that lives on the GUI thread, so every widget update
happens on the GUI thread, and ``Cancel`` only sets a flag that the engine's ``should_stop`` reads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal


class _Bridge(QObject):
    """Lives on the GUI thread; signals emitted from the worker thread arrive queued."""
    progress = Signal(object)
    item = Signal(object)


@dataclasses.dataclass
class Outcome:
    result: Any = None
    error: BaseException | None = None
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

    def __init__(self, task: Callable[[Job], Any], on_done: Callable[[Outcome], None],
                 on_progress: Callable[[Any], None] | None = None,
                 on_item: Callable[[Any], None] | None = None):
        self.task, self.on_done = task, on_done
        self._stop = threading.Event()
        self._bridge = _Bridge()
        if on_progress is not None:
            self._bridge.progress.connect(on_progress)
        if on_item is not None:
            self._bridge.item.connect(on_item)
        self.worker = None
        self.running = False
        self.outcome: Outcome | None = None
        self.stop_requested_at: float | None = None
        self.finished_at: float | None = None

    # worker-thread side
    def should_stop(self) -> bool:
        return self._stop.is_set()

    def progress(self, value: Any) -> None:
        self._bridge.progress.emit(value)

    def item(self, value: Any) -> None:
        self._bridge.item.emit(value)

    def _run(self) -> Outcome:
        from btunet import Cancelled
        yield_to_the_gui()
        try:
            return Outcome(result=self.task(self), cancelled=self.should_stop())
        except Cancelled as exc:
            return Outcome(error=exc, cancelled=True)
        except Exception as exc:  # noqa: BLE001 - any failure is reported on the GUI thread as a notification
            return Outcome(error=exc)

    # GUI-thread side
    def start(self) -> Job:
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
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect()

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


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: how much lower than the GUI thread a worker thread runs (Linux "nice" steps)
WORKER_NICE = 5
#: seconds a thread may hold the interpreter lock before another waiting thread gets it (Python's
#: default: 0.005). Napari's GUI thread needs the lock for every Qt callback into Python; while the
#: worker ran pure Python (copying a model, collecting its weights) each of those waited up to 5 ms,
#: and on 2 cores at load 6-8 a GUI stall of 0.9-1.2 s followed in 1 run of 10 (0.45 s at 0.5 ms)
GIL_SWITCH_S = 0.0005


def yield_to_the_gui() -> None:
    """Run this (worker) thread below the GUI thread, so painting the window never waits for a
    core behind training, and let the GUI thread take the interpreter lock sooner
    (``GIL_SWITCH_S``, for the whole process from the first job on). The priority is Linux only
    (there a thread can be given its own); with the kernel's autogroups, the default on desktops,
    it reorders this process's threads only. The thread stays lowered (it is a pool thread that
    only runs background work)."""
    if sys.getswitchinterval() > GIL_SWITCH_S:
        sys.setswitchinterval(GIL_SWITCH_S)
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < WORKER_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, WORKER_NICE)
    except OSError:
        pass


def warm_up_imports() -> None:
    """Import now what training imports lazily on first use: ``torch._dynamo`` (first optimiser,
    ~1.5 s), and the scikit-image / SciPy / scikit-learn modules of the stroke teacher (C
    extensions whose loading holds the interpreter lock for up to ~0.7 s at a time). Opening a
    dock waits for them once, instead of the GUI stalling in the first seconds of a training run."""
    import torch._dynamo  # noqa: F401

    from btunet.train.teacher import import_feature_modules
    import_feature_modules()


def leave_a_core_to_the_gui() -> int:
    """Let torch use one core fewer than the machine has (and at least one), so the GUI thread
    finds a free core to paint on while training runs; a lower thread count set by the user is
    kept. Returns torch's thread count."""
    import torch
    wanted = max(1, available_cores() - 1)
    if torch.get_num_threads() > wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


def snapshot(progress) -> Any:
    """A copy of an engine ``Progress`` that is safe to hand to the GUI thread (no model)."""
    history = {k: list(v) for k, v in (progress.history or {}).items()}
    return dataclasses.replace(progress, model=None, history=history)
