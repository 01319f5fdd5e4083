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

from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeyEvent, QPainter, QPen, QPixmap, QWheelEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from . import imaging
from .frames import SeriesFrames


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


class SliceViewer(QWidget):
    """A viewer of :class:`SeriesFrames` with its controls, bound to a (possibly shared) ViewState.

    ``mode`` decides what is drawn: "image" (windowed native values) or "difference" (the signed
    difference between this viewer's frames and ``reference`` frames).
    """

    rendered = Signal()

    def __init__(self, state: ViewState | None = None, parent: QWidget | None = None,
                 title: str = "", show_controls: bool = True) -> None:
        super().__init__(parent)
        self.state = state or ViewState(self)
        self.frames: SeriesFrames | None = None
        self.reference: SeriesFrames | None = None  # for the difference map
        self.mode = "image"
        self.mask_provider: Callable[[int], np.ndarray | None] | None = None  # frame -> 2D bool mask
        self.overlay_opacity = 0.45
        self.overlay_visible = True
        self.difference_scale: float | None = None
        self.last_difference_scale = 0.0
        self._updating_controls = False
        self._hover: tuple[int, int] | None = None

        self.view = ImageView(self)
        self.title = QLabel(title)
        self.title.setStyleSheet("font-weight: bold")
        self.info = QLabel("")
        self.cursor_label = QLabel("")  # the value under the mouse, in native units
        self.cursor_label.setObjectName("cursor_value")
        self.cursor_label.setMinimumWidth(190)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setPageStep(1)  # Page Up/Down move one slice, as in the image view
        self.slider.setMinimum(0)
        self.preset = QComboBox()
        self.preset.setToolTip("Window presets: the file's own window, standard CT windows, automatic")
        self.center_box = QDoubleSpinBox()
        self.width_box = QDoubleSpinBox()
        for box, label in ((self.center_box, "C"), (self.width_box, "W")):
            box.setRange(-1e6, 1e6)
            box.setDecimals(1)
            box.setKeyboardTracking(False)
            box.setPrefix(f"{label} ")
        self.width_box.setMinimum(1e-3)

        top = QHBoxLayout()
        top.addWidget(self.title)
        top.addStretch(1)
        top.addWidget(self.cursor_label)
        top.addWidget(self.info)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Slice"))
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.preset)
        controls.addWidget(self.center_box)
        controls.addWidget(self.width_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        self.controls = QWidget()
        self.controls.setLayout(controls)
        controls.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.controls)
        self.controls.setVisible(show_controls)

        self.slider.valueChanged.connect(self.state.set_frame)
        self.preset.currentTextChanged.connect(self._preset_chosen)
        self.center_box.valueChanged.connect(self._window_typed)
        self.width_box.valueChanged.connect(self._window_typed)
        self.view.wheel_steps.connect(lambda step: self.state.set_frame(self._clamp(self.state.frame + step)))
        self.view.jump_requested.connect(lambda end: self.state.set_frame(0 if end < 0 else self._clamp(10**9)))
        self.view.hovered.connect(self.state.hover_changed)  # the other viewers show the same pixel's value
        self.state.hover_changed.connect(self.show_value_at)
        self.view.window_drag.connect(self._window_dragged)
        self.view.user_view_changed.connect(self.state.set_view)
        self.view.fit_requested.connect(lambda: self.state.set_view(1.0, None))
        self.state.frame_changed.connect(self._frame_changed)
        self.state.view_changed.connect(self._view_changed)
        self.state.window_changed.connect(self._window_changed)

    # -- data ------------------------------------------------------------------------------------
    def set_frames(self, frames: SeriesFrames | None, keep_window: bool = False,
                   intensity_range: tuple[float, float] | None = None) -> None:
        self.frames = frames
        self.intensity_range = intensity_range
        self._updating_controls = True
        try:
            count = len(frames) if frames is not None else 0
            self.slider.setMaximum(max(count - 1, 0))
            self.slider.setEnabled(count > 1)
            if frames is not None:
                meta = frames.meta(self.state.frame)
                names = imaging.presets_for(frames.modality, imaging.file_window(meta) is not None)
                current = self.state.preset
                self.preset.clear()
                self.preset.addItems(names)
                if keep_window and current in names:
                    self.preset.setCurrentText(current)
        finally:
            self._updating_controls = False
        if self.state.frame >= max(len(frames) if frames else 0, 1):
            self.state.set_frame(0)
        self.slider.setValue(self.state.frame)
        if frames is not None and not keep_window:
            self.choose_preset(self.preset.itemText(0))
        self.render()

    def choose_preset(self, name: str) -> None:
        if self.frames is None or not name:
            return
        image = self.frames.frame(self.state.frame)
        window = imaging.resolve_preset(name, image, self.frames.meta(self.state.frame), self.intensity_range)
        self.state.set_window(window, name)
        if self.preset.currentText() != name:
            self._updating_controls = True
            self.preset.setCurrentText(name)
            self._updating_controls = False
        self._window_changed()

    def _clamp(self, frame: int) -> int:
        return self.frames.clamp(frame) if self.frames is not None else 0

    # -- reactions ---------------------------------------------------------------------------------
    def _preset_chosen(self, name: str) -> None:
        if not self._updating_controls:
            self.choose_preset(name)

    def _window_typed(self) -> None:
        if not self._updating_controls:
            self.state.set_window(imaging.Window(self.center_box.value(), self.width_box.value()))

    def _window_dragged(self, dx: float, dy: float) -> None:
        window = self.state.window
        step = max(window.width, 1e-3) / 256.0
        self.state.set_window(imaging.Window(window.center + dy * step, max(window.width + dx * step, 1e-3)))

    def _frame_changed(self, frame: int) -> None:
        if self.slider.value() != frame:
            self.slider.blockSignals(True)
            self.slider.setValue(frame)
            self.slider.blockSignals(False)
        self.render()

    def _view_changed(self) -> None:
        self.view.apply_view(self.state.zoom, self.state.center)

    def _window_changed(self) -> None:
        self._updating_controls = True
        try:
            self.center_box.setValue(self.state.window.center)
            self.width_box.setValue(self.state.window.width)
        finally:
            self._updating_controls = False
        self.render()

    # -- drawing ---------------------------------------------------------------------------------
    def render(self) -> None:
        if self.frames is None or len(self.frames) == 0:
            self.view.set_image(np.zeros((8, 8), np.uint8))
            self.view.set_overlay(None)
            self.view.set_geometry_marks(None, None)
            self.info.setText("")
            self.cursor_label.setText("")
            return
        frame = self.frames.clamp(self.state.frame)
        image = self.frames.frame(frame)
        if self.mode == "difference" and self.reference is not None:
            rgb, scale = imaging.difference_rgb(self.reference.frame(frame), image, self.difference_scale)
            self.last_difference_scale = scale
            self.view.set_image(rgb)
            self.view.set_overlay(None)
        else:
            invert = imaging.is_monochrome1(self.frames.meta(frame))
            self.view.set_image(imaging.apply_window(image, self.state.window, invert))
            mask = self.mask_provider(frame) if (self.mask_provider and self.overlay_visible) else None
            if mask is not None and mask.shape == image.shape:
                self.view.set_overlay(imaging.mask_overlay(mask, opacity=self.overlay_opacity))
            else:
                self.view.set_overlay(None)
        self.info.setText(self.frames.describe(frame))
        spacing = self.frames.pixel_spacing(frame)
        self.view.set_geometry_marks(self.frames.orientation_letters(frame), spacing[1] if spacing else None)
        if self._hover is not None:
            self.show_value_at(*self._hover)
        self.rendered.emit()

    def value_at(self, row: int, col: int) -> float | None:
        """The native value shown at (row, col): the image, or in difference mode the change."""
        if self.frames is None or len(self.frames) == 0:
            return None
        frame = self.frames.clamp(self.state.frame)
        image = self.frames.frame(frame)
        if not (0 <= row < image.shape[0] and 0 <= col < image.shape[1]):
            return None
        if self.mode == "difference" and self.reference is not None:
            return float(image[row, col]) - float(self.reference.frame(frame)[row, col])
        return float(image[row, col])

    def show_value_at(self, row: int, col: int) -> None:
        value = self.value_at(row, col) if row >= 0 else None
        self._hover = (row, col) if value is not None else None
        if value is None:
            self.cursor_label.setText("")
            return
        unit = self.frames.unit
        prefix = "change " if self.mode == "difference" else ""
        sign = "+" if self.mode == "difference" and value > 0 else ""
        self.cursor_label.setText(f"x {col}, y {row}: {prefix}{sign}{imaging.value_text(value, unit)}")
