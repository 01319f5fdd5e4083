"""Step 5: original and protected side by side (synchronized), flicker, difference map, fidelity."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget
from PySide6.QtCore import Qt

from .. import services
from ..context import Context
from ..frames import SeriesFrames
from ..model import FIDELITY_COLUMNS, fidelity_rows, series_name
from ..slice_viewer import SliceViewer
from ..viewer import ViewState
from ..widgets import fill_table, heading, hint, make_table
from ..workers import Worker, retire

FLICKER_MS = 500


class ReviewPage(QWidget):
    fidelity_ready = Signal()

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.original: SeriesFrames | None = None
        self.protected: SeriesFrames | None = None
        self.fidelity: dict[str, dict[str, float]] = {}
        self.worker: Worker | None = None
        self.flicker_phase = False

        self.state = ViewState(self)
        self.left = SliceViewer(self.state, title="Original")
        self.right = SliceViewer(self.state, title="Protected")
        # one set of controls drives both; the hidden one keeps its space so that both views have the
        # same size, and "zoom relative to fit" means the same scale in both
        policy = self.right.controls.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.right.controls.setSizePolicy(policy)
        self.right.controls.setVisible(False)
        self.series = QComboBox()
        self.right_mode = QComboBox()
        self.right_mode.addItem("Protected", "image")
        self.right_mode.addItem("Difference map", "difference")
        self.flicker = QCheckBox("Flicker original/protected")
        self.flicker_timer = QTimer(self)
        self.flicker_timer.setInterval(FLICKER_MS)
        self.diff_label = QLabel("")
        self.table = make_table()
        fill_table(self.table, FIDELITY_COLUMNS, [])
        self.fidelity_status = QLabel("")

        top = QHBoxLayout()
        top.addWidget(QLabel("Series"))
        top.addWidget(self.series, 1)
        top.addWidget(QLabel("Right view"))
        top.addWidget(self.right_mode)
        top.addWidget(self.flicker)
        views = QHBoxLayout()
        views.addWidget(self.left, 1)
        views.addWidget(self.right, 1)
        view_box = QWidget()
        view_box.setLayout(views)
        views.setContentsMargins(0, 0, 0, 0)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(QLabel("Fidelity per series (PSNR and SSIM in the normalized scale, changes in native units):"))
        bl.addWidget(self.table)
        bl.addWidget(self.fidelity_status)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(view_box)
        split.addWidget(bottom)
        split.setSizes([520, 160])

        layout = QVBoxLayout(self)
        layout.addWidget(heading("5. Review before and after"))
        layout.addWidget(hint("Both views move together: slice, zoom, pan and window. The difference map shows "
                              "brighter pixels in red and darker ones in blue."))
        layout.addLayout(top)
        layout.addWidget(split, 1)
        layout.addWidget(self.diff_label)

        self.series.currentIndexChanged.connect(self._series_chosen)
        self.right_mode.currentIndexChanged.connect(self._mode_changed)
        self.flicker.toggled.connect(self._flicker_toggled)
        self.flicker_timer.timeout.connect(self._flicker_tick)
        self.right.rendered.connect(self._update_diff_label)
        ctx.protected.connect(self.refresh)
        ctx.loaded.connect(self.clear)

    def clear(self) -> None:
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.worker.wait()
        self.flicker.setChecked(False)
        self.series.clear()
        self.original = self.protected = None
        self.left.set_frames(None)
        self.right.set_frames(None)
        self.fidelity = {}
        fill_table(self.table, FIDELITY_COLUMNS, [])

    def refresh(self) -> None:
        result = self.ctx.state.protect_result
        self.series.blockSignals(True)
        self.series.clear()
        if result is not None:
            for sid in self.ctx.state.protected_ids:
                s = self.ctx.state.series_by_id(sid)
                if s is not None:
                    self.series.addItem(f"{series_name(s)} · {s.description or s.kind}", s.id)
        self.series.blockSignals(False)
        self._series_chosen()
        self.compute_fidelity()

    def _series_chosen(self) -> None:
        sid = self.series.currentData()
        series = self.ctx.state.series_by_id(sid) if sid else None
        result = self.ctx.state.protect_result
        if series is None or result is None:
            self.original = self.protected = None
        else:
            self.original = SeriesFrames(series)
            self.protected = SeriesFrames(series, reader=lambda i, sid=series.id: result.protected(sid, i))
        try:
            window = (series.intensity.low, series.intensity.high) if series is not None else None
        except Exception:
            window = None
        self.state.frame = 0
        self.left.set_frames(self.original, intensity_range=window)
        self.right.reference = self.original
        self.right.set_frames(self.protected, keep_window=True, intensity_range=window)

    def _mode_changed(self) -> None:
        self.right.mode = self.right_mode.currentData()
        self.right.title.setText("Protected" if self.right.mode == "image" else "Difference (protected − original)")
        self.right.render()

    def _update_diff_label(self) -> None:
        if self.right.mode == "difference" and self.original is not None:
            unit = ""
            try:
                unit = self.original.series.intensity.unit
            except Exception:
                pass
            scale = self.right.last_difference_scale
            self.diff_label.setText(f"Difference map: full colour = ±{scale:.4g} {unit}".rstrip()
                                    + _relative_to_noise(self.original.series, scale))
        else:
            self.diff_label.setText("")

    def _flicker_toggled(self, on: bool) -> None:
        if on:
            self.flicker_timer.start()
        else:
            self.flicker_timer.stop()
            self.flicker_phase = False
            self._show_left(original=True)

    def _flicker_tick(self) -> None:
        self.flicker_phase = not self.flicker_phase
        self._show_left(original=not self.flicker_phase)

    def _show_left(self, original: bool) -> None:
        frames = self.original if original else self.protected
        self.left.frames = frames
        self.left.title.setText("Original" if original else "Protected (flicker)")
        self.left.render()

    # -- fidelity --------------------------------------------------------------------------------
    def compute_fidelity(self) -> None:
        result = self.ctx.state.protect_result
        if result is None:
            return
        series = [s for s in (self.ctx.state.series_by_id(i) for i in self.ctx.state.protected_ids) if s is not None]
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.worker.wait()

        def job(progress):
            return {s.id: services.series_fidelity(s, result, progress) for s in series}

        self.fidelity_status.setText("Measuring fidelity…")
        worker = Worker(job, self, name="fidelity")
        worker.succeeded.connect(self._fidelity_done)
        worker.failed.connect(lambda m: self.fidelity_status.setText(f"Fidelity not available: {m}"))
        retire(self.worker)
        self.worker = worker
        worker.start()

    def _fidelity_done(self, numbers: dict) -> None:
        self.fidelity = numbers
        units = {}
        for sid in numbers:
            s = self.ctx.state.series_by_id(sid)
            try:
                units[sid] = s.intensity.unit if s is not None else ""
            except Exception:
                units[sid] = ""
        fill_table(self.table, FIDELITY_COLUMNS, fidelity_rows(numbers, units))
        sampled = [sid for sid, m in numbers.items()
                   if (s := self.ctx.state.series_by_id(sid)) is not None and m.get("samples_measured", 0) < len(s.samples)]
        self.fidelity_status.setText("Measured on an evenly spaced subset of images for: " + ", ".join(sampled)
                                     if sampled else "Measured on every image.")
        self.fidelity_ready.emit()

    def shutdown(self) -> None:
        self.flicker_timer.stop()
        if self.worker is not None:
            self.worker.cancel()
            self.worker.wait()


_NOISE_CACHE: dict[str, float | None] = {}


def _relative_to_noise(series, change: float) -> str:  # noqa: ANN001
    """" = 0.35 × the scan's noise SD (12.1 HU)": the change relative to the series' own noise (issue 13)."""
    try:
        if series.id not in _NOISE_CACHE:
            from salm_desktop.core.protect.engine import series_noise_sd

            _NOISE_CACHE[series.id] = series_noise_sd(series)
        noise = _NOISE_CACHE[series.id]
        unit = series.intensity.unit
    except Exception:  # noqa: BLE001 - the figure is a hint; never break the review for it
        return ""
    if not noise:
        return ""
    noise_text = f"{noise:.3g} {unit}".strip()
    return f" = {change / noise:.2f} × the scan's noise SD ({noise_text})"
