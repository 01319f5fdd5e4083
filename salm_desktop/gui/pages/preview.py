"""Step 3: look through the study with the SALM mask as a coloured overlay.

Changing the mask ratio restarts a short timer (debounce); when it fires, the mask of the sample on
screen is computed on a worker thread (``preview_mask`` of the core) and the overlay is redrawn.
One mask job runs at a time; a newer request waits for it and then replaces it. This is the view;
the logic is :class:`~salm_desktop.gui.pages.preview_presenter.PreviewPresenter`.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QSlider,
    QWidget,
)

from ..context import Context
from ..frames import SeriesFrames
from ..slice_viewer import SliceViewer
from ..widgets import page_layout, row
from ..workers import Worker, retire
from .preview_presenter import PreviewPresenter

DEBOUNCE_MS = 300


class PreviewPage(QWidget):
    mask_ratio_changed = Signal(float)
    mask_updated = Signal()  # a new mask is on screen

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker | None = None
        self.presenter = PreviewPresenter(self, ctx)

        self.series = QComboBox()
        self.viewer = SliceViewer(title="Original with SALM mask")
        self.viewer.mask_provider = self.presenter.mask_for_frame
        self.mask_ratio = QDoubleSpinBox()
        self.mask_ratio.setRange(0.0, 1.0)  # 0 = auto (the variant's own ratio)
        self.mask_ratio.setSpecialValueText("auto")
        self.mask_ratio.setSingleStep(0.05)
        self.mask_ratio.setDecimals(2)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.show_mask = QCheckBox("Show mask")
        self.show_mask.setChecked(True)
        self.mask_status = QLabel("")
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(DEBOUNCE_MS)

        page_layout(self, "3. Preview the protection mask",
                    "Red marks the pixels SALM may change in this image (the most salient ones for a "
                    "briefly trained surrogate). Wheel: slices · Ctrl+wheel: zoom · drag: pan · "
                    "right drag: window/level · double click: fit · Page Up/Down: slices.",
                    row("Series", (self.series, 1), "Mask ratio", self.mask_ratio, "Opacity", self.opacity, self.show_mask),
                    (self.viewer, 1), self.mask_status)

        self.series.currentIndexChanged.connect(self.presenter.series_chosen)
        self.mask_ratio.valueChanged.connect(self.presenter.ratio_changed)
        self.opacity.valueChanged.connect(self._opacity_changed)
        self.show_mask.toggled.connect(self._show_mask_toggled)
        self.viewer.state.frame_changed.connect(lambda _f: self.presenter.request_mask())
        self.debounce.timeout.connect(self.presenter.start_mask)
        ctx.loaded.connect(self.presenter.refresh_series)
        ctx.selection_changed.connect(self.presenter.refresh_series)
        ctx.settings_changed.connect(self.presenter.settings_changed)
        self.mask_ratio.setValue(ctx.settings.mask_ratio)

    # -- the presenter's state (read by the self-test and the tests) ---------------------------------
    @property
    def frames(self) -> SeriesFrames | None:
        return self.presenter.frames

    @property
    def masks(self) -> dict[tuple, np.ndarray]:
        return self.presenter.masks

    @property
    def mask_errors(self) -> int:
        return self.presenter.mask_errors

    def current_mask(self) -> np.ndarray | None:
        return self.presenter.current_mask()

    def request_mask(self) -> None:
        self.presenter.request_mask()

    def refresh_series(self) -> None:
        self.presenter.refresh_series()

    # -- PreviewView: what the presenter asks of the page --------------------------------------------
    def show_series_choices(self, choices, current: str | None) -> None:  # noqa: ANN001 - (text, id) pairs
        self.series.blockSignals(True)
        self.series.clear()
        for text, sid in choices:
            self.series.addItem(text, sid)
        self.series.setCurrentIndex(max(self.series.findData(current), 0))
        self.series.blockSignals(False)

    def chosen_series_id(self) -> str | None:
        return self.series.currentData()

    def current_frame(self) -> int:
        return self.viewer.state.frame

    def mask_ratio_value(self) -> float:
        return self.mask_ratio.value()

    def set_mask_ratio(self, value: float) -> None:
        self.mask_ratio.setValue(value)

    def show_frames(self, frames: SeriesFrames | None, window) -> None:  # noqa: ANN001
        self.viewer.state.frame = 0
        self.viewer.set_frames(frames, intensity_range=window)

    def render(self) -> None:
        self.viewer.render()

    def show_mask_status(self, text: str) -> None:
        self.mask_status.setText(text)

    def start_debounce(self) -> None:
        self.debounce.start()

    def mask_job_running(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def start_mask_job(self, job, on_ready, on_failed, on_finished) -> None:  # noqa: ANN001
        worker = Worker(job, self, name="preview mask")
        worker.succeeded.connect(on_ready)
        worker.failed.connect(on_failed)
        worker.finished.connect(on_finished)
        retire(self.worker)
        self.worker = worker
        worker.start()

    def emit_mask_ratio_changed(self, value: float) -> None:
        self.mask_ratio_changed.emit(value)

    def emit_mask_updated(self) -> None:
        self.mask_updated.emit()

    # -- controls that only change the view -----------------------------------------------------------
    def _opacity_changed(self, value: int) -> None:
        self.viewer.overlay_opacity = value / 100.0
        self.viewer.render()

    def _show_mask_toggled(self, on: bool) -> None:
        self.viewer.overlay_visible = on
        self.viewer.title.setText(self.title_text())
        self.viewer.render()

    def title_text(self) -> str:
        return "Original with SALM mask" if self.show_mask.isChecked() else "Original (mask hidden)"

    def shutdown(self) -> None:
        self.debounce.stop()
        if self.worker is not None:
            self.worker.cancel()
            self.worker.wait()
