"""What the plugin tells the user: notifications, failures in one sentence, overwrite questions.

Widgets call these through the module (``_messages.show_error(...)``) so tests can patch them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from napari.utils import notifications
from qtpy.QtWidgets import QMessageBox, QWidget

log = logging.getLogger("napari_btunet")


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
