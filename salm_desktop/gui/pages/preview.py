"""Step 3: look through the study with the SALM mask as a coloured overlay.

Changing the mask ratio restarts a short timer (debounce); when it fires, the mask of the sample on
screen is computed on a worker thread (``preview_mask`` of the core) and the overlay is redrawn.
One mask job runs at a time; a newer request waits for it and then replaces it.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from .. import services
from ..context import Context
from ..frames import SeriesFrames
from ..model import series_name
from ..slice_viewer import SliceViewer
from ..widgets import heading, hint
from ..workers import Worker, retire

DEBOUNCE_MS = 300


class PreviewPage(QWidget):
    mask_ratio_changed = Signal(float)
    mask_updated = Signal()  # a new mask is on screen

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.frames: SeriesFrames | None = None
        self.masks: dict[tuple, np.ndarray] = {}
        self.worker: Worker | None = None
        self._pending: tuple | None = None
        self.mask_errors = 0

        self.series = QComboBox()
        self.viewer = SliceViewer(title="Original with SALM mask")
        self.viewer.mask_provider = self._mask_for_frame
        self.mask_ratio = QDoubleSpinBox()
        self.mask_ratio.setRange(0.01, 1.0)
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

        top = QHBoxLayout()
        top.addWidget(QLabel("Series"))
        top.addWidget(self.series, 1)
        top.addWidget(QLabel("Mask ratio"))
        top.addWidget(self.mask_ratio)
        top.addWidget(QLabel("Opacity"))
        top.addWidget(self.opacity)
        top.addWidget(self.show_mask)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("3. Preview the protection mask"))
        layout.addWidget(hint("Red marks the pixels SALM may change in this image (the most salient ones for a "
                              "briefly trained surrogate). Wheel: slices · Ctrl+wheel: zoom · drag: pan · "
                              "right drag: window/level · double click: fit · Page Up/Down: slices."))
        layout.addLayout(top)
        layout.addWidget(self.viewer, 1)
        layout.addWidget(self.mask_status)

        self.series.currentIndexChanged.connect(self._series_chosen)
        self.mask_ratio.valueChanged.connect(self._ratio_changed)
        self.opacity.valueChanged.connect(self._opacity_changed)
        self.show_mask.toggled.connect(self._show_mask_toggled)
        self.viewer.state.frame_changed.connect(lambda _f: self.request_mask())
        self.debounce.timeout.connect(self._start_mask)
        ctx.loaded.connect(self.refresh_series)
        ctx.selection_changed.connect(self.refresh_series)
        ctx.settings_changed.connect(self._settings_changed)
        self.mask_ratio.setValue(ctx.settings.mask_ratio)

    # -- series --------------------------------------------------------------------------------
    def refresh_series(self) -> None:
        current = self.series.currentData()
        self.series.blockSignals(True)
        self.series.clear()
        for s in self.ctx.state.selected_series:
            self.series.addItem(f"{series_name(s)} · {s.description or s.kind} · {len(s.samples)} images", s.id)
        index = self.series.findData(current)
        self.series.setCurrentIndex(max(index, 0))
        self.series.blockSignals(False)
        self._series_chosen()

    def _series_chosen(self) -> None:
        sid = self.series.currentData()
        series = self.ctx.state.series_by_id(sid) if sid else None
        self.frames = SeriesFrames(series) if series is not None else None
        window = None
        if series is not None:
            try:
                window = (series.intensity.low, series.intensity.high)
            except Exception:
                window = None
        self.viewer.state.frame = 0
        self.viewer.set_frames(self.frames, intensity_range=window)
        self.request_mask()

    # -- mask ----------------------------------------------------------------------------------
    def _key(self) -> tuple | None:
        if self.frames is None or len(self.frames) == 0:
            return None
        s = self.ctx.settings
        index = self.frames.sample_index(self.viewer.state.frame)
        return (self.frames.series.id, index, round(self.mask_ratio.value(), 4), s.method, bool(s.foreground), int(s.seed))

    def _mask_for_frame(self, frame: int) -> np.ndarray | None:
        if self.frames is None:
            return None
        key = self._key()
        if key is None:
            return None
        mask = self.masks.get(key)
        return self.frames.frame_mask(frame, mask) if mask is not None else None

    def current_mask(self) -> np.ndarray | None:
        key = self._key()
        return self.masks.get(key) if key is not None else None

    def request_mask(self) -> None:
        """Ask for the current sample's mask: from the cache now, or computed after the debounce."""
        key = self._key()
        if key is None:
            return
        if key in self.masks:
            self._show_mask_status(key)
            self.viewer.render()
            return
        self.mask_status.setText("Computing the mask…")
        self.debounce.start()

    def _start_mask(self) -> None:
        key = self._key()
        if key is None or key in self.masks:
            self.viewer.render()
            return
        if self.worker is not None and self.worker.isRunning():
            self._pending = key  # picked up when the running job ends
            return
        series = self.frames.series
        sample = series.samples[key[1]]
        ratio = key[2]
        settings = self.ctx.settings.copy()  # a snapshot: edits during the run do not leak in

        def job(progress):
            progress.check()
            return key, services.preview_mask(sample, series.intensity, settings, ratio)

        worker = Worker(job, self, name="preview mask")
        worker.succeeded.connect(self._mask_ready)
        worker.failed.connect(self._mask_failed)
        worker.finished.connect(self._mask_worker_done)
        retire(self.worker)
        self.worker = worker
        self._pending = None
        worker.start()

    def _mask_ready(self, result) -> None:
        key, mask = result
        self.masks[key] = np.asarray(mask, dtype=bool)
        if len(self.masks) > 64:
            self.masks.pop(next(iter(self.masks)))
        if key == self._key():
            self._show_mask_status(key)
            self.viewer.render()
            self.mask_updated.emit()

    def _mask_failed(self, message: str) -> None:
        self.mask_errors += 1
        self.mask_status.setText(f"The mask preview is not available: {message}")

    def _mask_worker_done(self) -> None:
        key = self._key()
        if key is not None and key not in self.masks and (self._pending is not None):
            self._pending = None
            self._start_mask()

    def _show_mask_status(self, key: tuple) -> None:
        mask = self.masks[key]
        text = f"Mask: {100 * mask.mean():.1f} % of this image's pixels may change (mask ratio {key[2]:.2f})."
        if key[3] == "em":
            text = f"EM changes every pixel ({100 * mask.mean():.1f} % shown); the mask ratio applies to SALM only."
        elif key[3] == "random":
            text += " The random baseline changes as many pixels, at random places instead of these."
        self.mask_status.setText(text)

    # -- controls ------------------------------------------------------------------------------
    def _ratio_changed(self, value: float) -> None:
        if abs(self.ctx.settings.mask_ratio - value) > 1e-9:
            self.ctx.settings.mask_ratio = value
            self.ctx.save_settings()
            self.mask_ratio_changed.emit(value)
        self.request_mask()

    def _settings_changed(self) -> None:
        if abs(self.mask_ratio.value() - self.ctx.settings.mask_ratio) > 1e-9:
            self.mask_ratio.setValue(self.ctx.settings.mask_ratio)
        else:
            self.request_mask()

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
