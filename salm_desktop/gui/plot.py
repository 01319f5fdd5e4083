"""A small live plot of the surrogate's accuracy and loss per round (drawn with QPainter)."""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

ACCURACY_COLOR = QColor(30, 110, 200)
LOSS_COLOR = QColor(210, 110, 20)


class RoundPlot(QWidget):
    """Accuracy (left axis, 0–100 %) and loss (right axis, 0..largest loss) against the round.

    The stop accuracy is drawn as a dashed line: protection has worked when the accuracy curve
    reaches it (the surrogate learned the noise instead of the anatomy).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rounds: list[int] = []
        self.accuracy: list[float] = []
        self.loss: list[float] = []
        self.max_rounds = 1
        self.stop_accuracy: float | None = None
        self.setMinimumSize(260, 140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Surrogate accuracy on the protected images (blue, left axis) and its loss "
                        "(orange, right axis) after each round")

    def set_points(self, rounds: Sequence[int], accuracy: Sequence[float], loss: Sequence[float],
                   max_rounds: int, stop_accuracy: float | None = None) -> None:
        self.rounds, self.accuracy, self.loss = list(rounds), list(accuracy), list(loss)
        self.max_rounds = max(1, int(max_rounds), max(self.rounds, default=1))
        self.stop_accuracy = stop_accuracy
        self.update()

    def clear(self) -> None:
        self.set_points([], [], [], self.max_rounds, self.stop_accuracy)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.base())
        metrics = painter.fontMetrics()
        left, right = metrics.horizontalAdvance("100 %") + 10, metrics.horizontalAdvance("0.000") + 12
        top, bottom = metrics.height(), metrics.height() + 8
        area = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        text_pen = QPen(palette.text().color())
        painter.setPen(QPen(palette.mid().color()))
        painter.drawRect(area)
        max_loss = max(self.loss, default=0.0) or 1.0

        def x_of(rnd: float) -> float:
            return area.left() + area.width() * (rnd / self.max_rounds if self.max_rounds else 0)

        def y_of(fraction: float) -> float:
            return area.bottom() - area.height() * min(max(fraction, 0.0), 1.0)

        painter.setPen(text_pen)
        for frac, label in ((0.0, "0 %"), (0.5, "50 %"), (1.0, "100 %")):
            painter.drawText(QRectF(0, y_of(frac) - 8, left - 4, 16),
                             int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), label)
        for frac in (0.0, 1.0):
            painter.drawText(QRectF(area.right() + 4, y_of(frac) - 8, right, 16),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), f"{frac * max_loss:.3g}")
        step = max(1, -(-self.max_rounds // 10))  # at most about ten round ticks
        for rnd in range(step, self.max_rounds + 1, step):
            painter.drawText(QRectF(x_of(rnd) - 15, area.bottom() + 1, 30, metrics.height()),
                             int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop), str(rnd))
        painter.drawText(QRectF(area.left(), area.bottom() + 2, area.width() / 2 - 20, bottom),
                         int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop), "round")
        legend_y = area.top() + 2
        for label, color, offset in (("accuracy", ACCURACY_COLOR, 6), ("loss", LOSS_COLOR, 90)):
            painter.setPen(QPen(color, 2))
            painter.drawLine(QPointF(area.left() + offset, legend_y + 8), QPointF(area.left() + offset + 14, legend_y + 8))
            painter.drawText(QRectF(area.left() + offset + 18, legend_y, 80, 16),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), label)
        painter.setPen(text_pen)
        if self.stop_accuracy is not None:
            painter.setPen(QPen(ACCURACY_COLOR, 1, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(area.left(), y_of(self.stop_accuracy)), QPointF(area.right(), y_of(self.stop_accuracy)))
        for values, scale, color in ((self.accuracy, 1.0, ACCURACY_COLOR), (self.loss, max_loss, LOSS_COLOR)):
            points = [QPointF(x_of(r), y_of(v / scale)) for r, v in zip(self.rounds, values)]
            painter.setPen(QPen(color, 2))
            for a, b in zip(points, points[1:]):
                painter.drawLine(a, b)
            painter.setBrush(color)
            for p in points:
                painter.drawEllipse(p, 3, 3)
            painter.setBrush(Qt.BrushStyle.NoBrush)
        if not self.rounds:
            painter.setPen(text_pen)
            painter.drawText(area, int(Qt.AlignmentFlag.AlignCenter), "accuracy and loss appear after each round")
        painter.end()
