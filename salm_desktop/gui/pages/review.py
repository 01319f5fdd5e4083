"""Step 5: original and protected side by side (synchronized), flicker, difference map, fidelity.

The view: the two viewers and the table. What to show is decided by
:class:`~salm_desktop.gui.pages.review_presenter.ReviewPresenter`.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..context import Context
from ..frames import SeriesFrames
from ..model import FIDELITY_COLUMNS
from ..slice_viewer import SliceViewer
from ..viewer import ViewState
from ..widgets import fill_table, make_table, page_layout, vertical_split
from ..workers import Worker, retire
from .review_presenter import ReviewPresenter

FLICKER_MS = 500


class ReviewPage(QWidget):
    fidelity_ready = Signal()

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.original: SeriesFrames | None = None
        self.protected: SeriesFrames | None = None
        self.worker: Worker | None = None
        self.presenter = ReviewPresenter(self, ctx)

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
        split = vertical_split(view_box, bottom, [520, 160])

        layout = page_layout(self, "5. Review before and after",
                             "Both views move together: slice, zoom, pan and window. The difference map shows "
                             "brighter pixels in red and darker ones in blue.")
        layout.addLayout(top)
        layout.addWidget(split, 1)
        layout.addWidget(self.diff_label)

        self.series.currentIndexChanged.connect(self.presenter.series_chosen)
        self.right_mode.currentIndexChanged.connect(self._mode_changed)
        self.flicker.toggled.connect(self._flicker_toggled)
        self.flicker_timer.timeout.connect(self._flicker_tick)
        self.right.rendered.connect(self._update_diff_label)
        ctx.protected.connect(self.presenter.refresh)
        ctx.loaded.connect(self.clear)

    # -- the presenter's results (read by the self-test and the tests) -------------------------------
    @property
    def fidelity(self) -> dict[str, dict[str, float]]:
        return self.presenter.fidelity

    @property
    def flicker_phase(self) -> bool:
        return self.presenter.flicker_phase

    # -- user actions -> presenter ------------------------------------------------------------------
    def clear(self) -> None:
        self.presenter.clear()
        self.flicker.setChecked(False)
        self.series.clear()
        self.original = self.protected = None
        self.left.set_frames(None)
        self.right.set_frames(None)
        fill_table(self.table, FIDELITY_COLUMNS, [])

    def refresh(self) -> None:
        self.presenter.refresh()

    def compute_fidelity(self) -> None:
        self.presenter.compute_fidelity()

    def _mode_changed(self) -> None:
        self.right.mode = self.right_mode.currentData()
        self.right.title.setText("Protected" if self.right.mode == "image" else "Difference (protected − original)")
        self.right.render()

    def _update_diff_label(self) -> None:
        if self.right.mode == "difference" and self.original is not None:
            self.diff_label.setText(self.presenter.difference_text(self.original.series, self.right.last_difference_scale))
        else:
            self.diff_label.setText("")

    def _flicker_toggled(self, on: bool) -> None:
        if on:
            self.flicker_timer.start()
        else:
            self.flicker_timer.stop()
        self.presenter.flicker_toggled(on)

    def _flicker_tick(self) -> None:
        self.presenter.flicker_tick()

    def shutdown(self) -> None:
        self.flicker_timer.stop()
        if self.worker is not None:
            self.worker.cancel()
            self.worker.wait()

    # -- ReviewView: what the presenter asks of the page ---------------------------------------------
    def show_series_choices(self, choices) -> None:  # noqa: ANN001 - (text, series id) pairs
        self.series.blockSignals(True)
        self.series.clear()
        for text, sid in choices:
            self.series.addItem(text, sid)
        self.series.blockSignals(False)

    def chosen_series_id(self) -> str | None:
        return self.series.currentData()

    def show_series(self, series, result, window) -> None:  # noqa: ANN001
        if series is None:
            self.original = self.protected = None
        else:
            self.original = SeriesFrames(series)
            self.protected = SeriesFrames(series, reader=lambda i, sid=series.id: result.protected(sid, i))
        self.state.frame = 0
        self.left.set_frames(self.original, intensity_range=window)
        self.right.reference = self.original
        self.right.set_frames(self.protected, keep_window=True, intensity_range=window)

    def _show_left(self, original: bool) -> None:
        frames = self.original if original else self.protected
        self.left.frames = frames
        self.left.title.setText("Original" if original else "Protected (flicker)")
        self.left.render()

    show_left = _show_left

    def show_fidelity(self, rows: list, status: str) -> None:
        fill_table(self.table, FIDELITY_COLUMNS, rows)
        self.fidelity_status.setText(status)

    def show_fidelity_status(self, text: str) -> None:
        self.fidelity_status.setText(text)

    def start_fidelity(self, job, on_done, on_failed) -> None:  # noqa: ANN001
        worker = Worker(job, self, name="fidelity")
        worker.succeeded.connect(on_done)
        worker.failed.connect(on_failed)
        retire(self.worker)
        self.worker = worker
        worker.start()

    def stop_fidelity(self) -> None:
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.worker.wait()

    def emit_fidelity_ready(self) -> None:
        self.fidelity_ready.emit()
