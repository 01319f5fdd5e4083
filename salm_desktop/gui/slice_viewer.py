"""A slice viewer widget: an :class:`~salm_desktop.gui.viewer.ImageView` with its slider, preset menu,
window fields and readouts (split out of viewer.py, which holds the view and the shared state)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from . import imaging
from .frames import SeriesFrames
from .viewer import ImageView, ViewState


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
