"""The live training plot in a dock: loss per step (left axis) and an optional score such as
validation Dice (right axis, 0..1), painted with QPainter.

A paint costs about a millisecond on the GUI thread (a matplotlib canvas cost 50-100 ms, mostly
laying out tick labels), and points only schedule a repaint, at most every ``min_interval_s``.
"""
from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, QSize, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

BACKGROUND, FRAME, TEXT = QColor("#262930"), QColor("#5a5f69"), QColor("#d0d3d8")
LOSS_COLOUR, RIGHT_COLOUR = QColor("#5fb3f9"), QColor("#f9a65f")


def _number(value: float) -> str:
    return f"{value:.3g}"


class LivePlot(QWidget):
    """Loss against step, plus an optional right-axis series; ``redraws`` counts repaints asked for."""

    def __init__(self, right_label: str | None = None, min_interval_s: float = 1.0,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.right_label = right_label
        self.loss: tuple[list, list] = ([], [])
        self.right: tuple[list, list] = ([], [])
        self.redraws = 0
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(1000 * min_interval_s))
        self._timer.timeout.connect(self._redraw)

    def sizeHint(self) -> QSize:
        return QSize(300, 130)

    def minimumSizeHint(self) -> QSize:
        return QSize(160, 110)

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
        if self.isVisible():  # a hidden plot repaints when shown
            self.update()
            self.redraws += 1

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, p: QPainter) -> None:
        p.fillRect(self.rect(), BACKGROUND)
        font = p.font()
        font.setPointSizeF(max(6.5, font.pointSizeF() * 0.8))
        p.setFont(font)
        fm = p.fontMetrics()
        h = fm.height()
        steps, values = self.loss
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        left = max(fm.horizontalAdvance(_number(hi)), fm.horizontalAdvance(_number(lo))) + 8
        right = fm.horizontalAdvance("1.0") + 8 if self.right_label else 6
        box = QRectF(left, h + 2, self.width() - left - right, self.height() - 2 * h - 6)
        if box.width() < 20 or box.height() < 20:
            return
        p.setPen(QPen(FRAME, 1))
        p.drawRect(box)
        first = min([*steps[:1], *self.right[0][:1]], default=0)
        last = max([*steps[-1:], *self.right[0][-1:]], default=1)
        span = max(last - first, 1e-9)

        def x_of(step: float) -> float:
            return box.left() + (step - first) / span * box.width()

        def y_of(value: float, bottom: float, top: float) -> float:
            return box.bottom() - (value - bottom) / (top - bottom) * box.height()

        # axis labels: loss range on the left, steps below, the score's 0..1 on the right
        p.setPen(TEXT)
        p.drawText(QRectF(0, box.top() - h / 2, left - 4, h), Qt.AlignmentFlag.AlignRight, _number(hi))
        p.drawText(QRectF(0, box.bottom() - h / 2, left - 4, h), Qt.AlignmentFlag.AlignRight, _number(lo))
        below = QRectF(box.left(), box.bottom() + 2, box.width(), h)
        if steps:
            p.drawText(below, Qt.AlignmentFlag.AlignLeft, _number(first))
            p.drawText(below, Qt.AlignmentFlag.AlignRight, _number(last))
        p.drawText(below, Qt.AlignmentFlag.AlignHCenter, "step")
        p.setPen(LOSS_COLOUR)
        p.drawText(QRectF(box.left(), 0, box.width(), h), Qt.AlignmentFlag.AlignLeft, "loss")
        if self.right_label:
            p.setPen(RIGHT_COLOUR)
            p.drawText(QRectF(box.left(), 0, box.width(), h), Qt.AlignmentFlag.AlignRight, self.right_label)
            for value in (0.0, 1.0):
                p.drawText(QRectF(box.right() + 4, y_of(value, 0, 1) - h / 2, right, h),
                           Qt.AlignmentFlag.AlignLeft, f"{value:.1f}")
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setClipRect(box.adjusted(-3, -3, 3, 3))
        if steps:
            stride = max(1, len(steps) // max(1, int(box.width())))  # about one point per pixel
            line = QPolygonF([QPointF(x_of(s), y_of(v, lo, hi))
                              for s, v in zip(steps[::stride] + steps[-1:], values[::stride] + values[-1:],
                                              strict=True)])
            p.setPen(QPen(LOSS_COLOUR, 1.3))
            p.drawPolyline(line)
        if self.right[0]:
            points = [QPointF(x_of(s), y_of(min(1.0, max(0.0, v)), 0, 1)) for s, v in zip(*self.right, strict=True)]
            p.setPen(QPen(RIGHT_COLOUR, 1.3))
            p.drawPolyline(QPolygonF(points))
            p.setBrush(RIGHT_COLOUR)
            for point in points:
                p.drawEllipse(point, 2.2, 2.2)
