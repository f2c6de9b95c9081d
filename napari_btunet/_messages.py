"""What the plugin tells the user: notifications, failures in one sentence, overwrite questions.

Widgets call these through the module (``_messages.show_error(...)``) so tests can patch them.
Messages keep the engine's wording and case (file names are case-sensitive), in the widgets' own
words where the engine names a setting differently (``in_plugin_words``); long paths are
shortened in the middle so a notification shows the whole sentence, file name included.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from napari.utils import notifications
from qtpy.QtWidgets import QMessageBox, QWidget

log = logging.getLogger("napari_btunet")

#: a path longer than this is shortened in the middle (a notification line holds about 45 characters)
PATH_CHARS = 40
_PATH = re.compile(r"(?:[A-Za-z]:)?[\\/~.]*[\w.~-]*[\\/][^\s'\"()]+")


def show_error(message: str) -> None:
    notifications.show_error(shorten_paths(message))


def show_warning(message: str) -> None:
    notifications.show_warning(shorten_paths(message))


def show_info(message: str) -> None:
    notifications.show_info(shorten_paths(message))


def shorten_path(path: str, limit: int = PATH_CHARS) -> str:
    """'/home/me/projects/a/b/c/model.safetensors' -> '/home/…/c/model.safetensors' (the file
    name is always kept whole)."""
    if len(path) <= limit:
        return path
    sep = "\\" if "\\" in path and "/" not in path else "/"
    parts = path.split(sep)
    head, tail = parts[:2] if parts[0] == "" else parts[:1], [parts[-1]]
    for part in reversed(parts[len(head):-1]):  # keep as many folders next to the file as fit
        if len(sep.join(head + ["…", part] + tail)) > limit:
            break
        tail.insert(0, part)
    if len(head) + len(tail) >= len(parts):
        return path
    return sep.join(head + ["…"] + tail)


def shorten_paths(text: str, limit: int = PATH_CHARS) -> str:
    """Every long path in ``text`` shortened in the middle; the rest of the text unchanged."""
    return _PATH.sub(lambda m: shorten_path(m.group(0), limit), str(text))


def _ends_with_path(text: str) -> bool:
    last = text.split()[-1] if text.split() else ""
    return "/" in last or "\\" in last or bool(re.search(r"\w\.\w+$", last))


#: export formats as the Export… dialog names them
FORMAT_NAMES = {"bioimageio": "bioimage.io", "onnx": "ONNX", "torchscript": "TorchScript"}
_MISSING_EXTRA = re.compile(r"exporting to (\w+) needs (.+?), which (is|are) not installed; install with: (.+)")


def _missing_extra(match: re.Match) -> str:
    fmt, packages, verb, command = match.groups()
    return (f"{packages} {verb} not installed, and the {FORMAT_NAMES.get(fmt, fmt)} export needs "
            f"{'it' if verb == 'is' else 'them'} ({command})")


def in_plugin_words(text: str) -> str:
    """The engine's message with the widgets' words: the Fine-tune control the engine calls
    "mask mode" is labelled *annotation*; a missing package is named first."""
    text = re.sub(r"\bmask mode\b", "annotation", text)
    return _MISSING_EXTRA.sub(_missing_extra, text)


def sentence(text) -> str:
    """The engine's message as one sentence in the widgets' words: its own case (a message may
    start with a file name), a full stop added unless it ends with punctuation or a path (which a
    full stop would seem to extend)."""
    text = in_plugin_words(str(text).strip()) or "unknown error"
    if text.endswith((".", "!", "?", ")")) or _ends_with_path(text):
        return text
    return text + "."


def report_failure(what: str, exc: BaseException) -> None:
    """One clear notification for a failed job; tracebacks only go to the log."""
    show_error(failure_text(what, exc))
    from btunet import BTUnetError
    if not isinstance(exc, BTUnetError):
        log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))


def failure_text(what: str, exc: BaseException) -> str:
    from btunet import BTUnetError
    if isinstance(exc, BTUnetError):
        return f"{what} failed: {sentence(exc)}"
    return f"{what} failed with an unexpected {type(exc).__name__}: {sentence(exc)}"


def ask_overwrite(parent: QWidget | None, path: Path) -> bool:
    """Ask before replacing an existing file (tests patch this)."""
    answer = QMessageBox.question(
        parent, "Overwrite file?", f"{path} already exists.\nReplace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def may_write(parent: QWidget | None, path: str | Path) -> bool:
    path = Path(path)
    return not path.exists() or ask_overwrite(parent, path)


class Declined(Exception):
    """The user answered "no" to a question; nothing was started."""
