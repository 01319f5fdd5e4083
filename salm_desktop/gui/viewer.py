"""Slice viewers: scroll, zoom, pan, window/level, a mask overlay, and synchronized pairs.

:class:`ViewState` holds what two viewers share (frame, zoom, pan centre, window); the review page
gives the same state to the original and the protected viewer so that they move together.
Mouse: wheel = next/previous slice, Ctrl+wheel = zoom, left drag = pan, right drag = window/level
(horizontal: width, vertical: centre), double click = fit. Keys: Page Up/Down and Up/Down arrows =
previous/next slice, Home/End = first/last slice. The value under the cursor is shown in native
units (HU for CT); orientation letters (from DICOM ImageOrientationPatient) and a scale bar in mm
(from the pixel spacing) are drawn over the image when the file gives that geometry.
"""

from __future__ import annotations


import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeyEvent, QPainter, QPen, QPixmap, QWheelEvent
from PySide6.QtWidgets import (
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QWidget,
)

from . import imaging


def numpy_to_qimage(array: np.ndarray) -> QImage:
    """uint8 grey (H, W), RGB (H, W, 3) or RGBA (H, W, 4) -> a QImage that owns its pixels."""
    array = np.ascontiguousarray(array)
    if array.ndim == 2:
        h, w = array.shape
        image = QImage(array.data, w, h, array.strides[0], QImage.Format.Format_Grayscale8)
    elif array.shape[2] == 3:
        h, w, _ = array.shape
        image = QImage(array.data, w, h, array.strides[0], QImage.Format.Format_RGB888)
    else:
        h, w, _ = array.shape
        image = QImage(array.data, w, h, array.strides[0], QImage.Format.Format_RGBA8888)
    return image.copy()  # detach from the numpy buffer


class ViewState(QObject):
    """Frame, zoom, pan and window shared by one or more viewers."""

    frame_changed = Signal(int)
    hover_changed = Signal(int, int)  # image row, column under the mouse in any of the viewers
    view_changed = Signal()  # zoom or pan
    window_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.frame = 0
        self.zoom = 1.0  # relative to "fit"
        self.center: QPointF | None = None  # scene point at the viewport centre; None = image centre
        self.window = imaging.Window(0.5, 1.0)
        self.preset = ""

    def set_frame(self, frame: int) -> None:
        if frame != self.frame:
            self.frame = frame
            self.frame_changed.emit(frame)

    def set_view(self, zoom: float, center: QPointF | None) -> None:
        zoom = float(min(max(zoom, 0.1), 64.0))
        same_center = (center is None and self.center is None) or (
            center is not None and self.center is not None
            and abs(center.x() - self.center.x()) < 1e-3 and abs(center.y() - self.center.y()) < 1e-3)
        if abs(zoom - self.zoom) < 1e-6 and same_center:
            return
        self.zoom, self.center = zoom, center
        self.view_changed.emit()

    def set_window(self, window: imaging.Window, preset: str | None = None) -> None:
        if preset is not None:
            self.preset = preset
        if window != self.window:
            self.window = window
            self.window_changed.emit()


class ImageView(QGraphicsView):
    """One image plus an optional RGBA overlay; reports wheel and drags to its owner."""

    wheel_steps = Signal(int)
    jump_requested = Signal(int)  # -1: first slice, +1: last slice (Home / End)
    hovered = Signal(int, int)  # image row, column under the cursor; (-1, -1) when outside
    window_drag = Signal(float, float)  # dx, dy in pixels
    user_view_changed = Signal(float, QPointF)  # zoom (relative to fit), scene centre
    fit_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.base = QGraphicsPixmapItem()
        self.base.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.overlay = QGraphicsPixmapItem()
        self.overlay.setZValue(1)
        self.scene().addItem(self.base)
        self.scene().addItem(self.overlay)
        self.setBackgroundBrush(Qt.GlobalColor.black)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        self.setMinimumSize(200, 200)
        self._zoom = 1.0
        self._applying = False
        self._right_drag: QPointF | None = None
        self.letters: dict[str, str] | None = None  # orientation letters at the four edges
        self.column_spacing_mm: float | None = None  # for the scale bar
        self.viewport().setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.horizontalScrollBar().valueChanged.connect(self._scrolled)
        self.verticalScrollBar().valueChanged.connect(self._scrolled)

    # -- content ---------------------------------------------------------------------------------
    def set_image(self, array: np.ndarray) -> None:
        pixmap = QPixmap.fromImage(numpy_to_qimage(array))
        size_changed = self.base.pixmap().size() != pixmap.size()
        self.base.setPixmap(pixmap)
        if size_changed:
            self.scene().setSceneRect(QRectF(pixmap.rect()))
            self.apply_view(self._zoom, None)

    def set_overlay(self, rgba: np.ndarray | None) -> None:
        if rgba is None:
            self.overlay.setPixmap(QPixmap())
        else:
            self.overlay.setPixmap(QPixmap.fromImage(numpy_to_qimage(rgba)))

    def image_array(self) -> np.ndarray:
        """What is on screen (for tests): the rendered scene as RGB uint8."""
        image = self.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
        ptr = image.constBits()
        arr = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
        return arr[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()

    # -- zoom and pan ----------------------------------------------------------------------------
    def fit_scale(self) -> float:
        rect = self.scene().sceneRect()
        if rect.width() <= 0 or rect.height() <= 0:
            return 1.0
        view = self.viewport().rect()
        return max(1e-3, min(view.width() / rect.width(), view.height() / rect.height()))

    def apply_view(self, zoom: float, center: QPointF | None) -> None:
        self._applying = True
        try:
            self._zoom = zoom
            scale = self.fit_scale() * zoom
            self.resetTransform()
            self.scale(scale, scale)
            self.centerOn(center if center is not None else self.scene().sceneRect().center())
        finally:
            self._applying = False

    def current_center(self) -> QPointF:
        return self.mapToScene(self.viewport().rect().center())

    def _scrolled(self) -> None:
        if not self._applying:
            self.user_view_changed.emit(self._zoom, self.current_center())

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self.apply_view(self._zoom, None if self._zoom <= 1.0 else self.current_center())

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            zoom = self._zoom * (1.25 ** steps)
            self.user_view_changed.emit(zoom, self.current_center())
        elif steps:
            self.wheel_steps.emit(-1 if steps > 0 else 1)
        event.accept()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.RightButton:
            self._right_drag = event.position()
            event.accept()
            return
        super().mousePressEvent(event)

    def set_geometry_marks(self, letters: dict[str, str] | None, column_spacing_mm: float | None) -> None:
        if letters != self.letters or column_spacing_mm != self.column_spacing_mm:
            self.letters, self.column_spacing_mm = letters, column_spacing_mm
            self.viewport().update()

    def scale_bar(self) -> tuple[float, float] | None:
        """(length in mm, length in screen pixels) of the scale bar drawn now, or None."""
        if not self.column_spacing_mm:
            return None
        screen_per_image_pixel = abs(self.transform().m11())
        if screen_per_image_pixel <= 0:
            return None
        mm_per_screen_pixel = self.column_spacing_mm / screen_per_image_pixel
        length = imaging.scale_bar_mm(mm_per_screen_pixel, target_pixels=max(40.0, self.viewport().width() / 5))
        return None if length is None else (length, length / mm_per_screen_pixel)

    def drawForeground(self, painter: QPainter, rect) -> None:  # noqa: N802 (Qt name)
        """Orientation letters at the edges and the mm scale bar, in screen coordinates."""
        super().drawForeground(painter, rect)
        if not self.letters and not self.column_spacing_mm:
            return
        painter.save()
        painter.resetTransform()
        view = self.viewport().rect()
        font = QFont(painter.font())
        font.setBold(True)
        font.setPixelSize(15)
        painter.setFont(font)
        painter.setPen(QColor(255, 210, 60))
        align = Qt.AlignmentFlag
        if self.letters:
            inner = view.adjusted(6, 4, -6, -4)
            for edge, flags in (("left", align.AlignLeft | align.AlignVCenter), ("right", align.AlignRight | align.AlignVCenter),
                                ("top", align.AlignTop | align.AlignHCenter), ("bottom", align.AlignBottom | align.AlignHCenter)):
                if self.letters.get(edge):
                    painter.drawText(inner, int(flags), self.letters[edge])
        bar = self.scale_bar()
        if bar is not None:
            length_mm, length_px = bar
            x1 = view.right() - 12
            x0 = x1 - length_px
            y = view.bottom() - 22
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.drawLine(QPointF(x0, y), QPointF(x1, y))
            painter.drawLine(QPointF(x0, y - 4), QPointF(x0, y + 4))
            painter.drawLine(QPointF(x1, y - 4), QPointF(x1, y + 4))
            font.setBold(False)
            font.setPixelSize(12)
            painter.setFont(font)
            painter.drawText(QRectF(x0 - 40, y + 3, length_px + 40, 16), int(align.AlignRight | align.AlignTop),
                             f"{length_mm:g} mm")
        painter.restore()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        if key in (Qt.Key.Key_PageUp, Qt.Key.Key_Up):
            self.wheel_steps.emit(-1)
        elif key in (Qt.Key.Key_PageDown, Qt.Key.Key_Down):
            self.wheel_steps.emit(1)
        elif key == Qt.Key.Key_Home:
            self.jump_requested.emit(-1)
        elif key == Qt.Key.Key_End:
            self.jump_requested.emit(1)
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.hovered.emit(-1, -1)
        super().leaveEvent(event)

    def _report_hover(self, position) -> None:
        point = self.mapToScene(position.toPoint())
        rect = self.scene().sceneRect()
        col, row = int(np.floor(point.x())), int(np.floor(point.y()))
        if 0 <= col < rect.width() and 0 <= row < rect.height():
            self.hovered.emit(row, col)
        else:
            self.hovered.emit(-1, -1)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        self._report_hover(event.position())
        if self._right_drag is not None:
            delta = event.position() - self._right_drag
            self._right_drag = event.position()
            self.window_drag.emit(delta.x(), delta.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.RightButton:
            self._right_drag = None
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        self.fit_requested.emit()
        event.accept()
