"""Step 4: protect the selected series on a worker thread, with progress, a log and Cancel."""

from __future__ import annotations

import time

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QProgressBar, QPushButton, QTableWidget, QWidget

from ..context import Context
from ..plot import RoundPlot
from ..widgets import fill_table, form_layout, make_table, page_layout, progress_bar, row
from ..workers import Worker
from .presented_page import PresentedPage
from .protect_presenter import ProtectPresenter


class ProtectPage(QWidget, PresentedPage):
    worker_name = "protect"
    finished = Signal(str)  # "done" | "cancelled" | "failed"

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker | None = None
        self.bars: dict[str, QProgressBar] = {}
        self.presenter = ProtectPresenter(self, ctx)

        self.start_button = QPushButton("Protect")
        self.start_button.setObjectName("protect_start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.overall = progress_bar()
        self.round_label = QLabel("–")
        self.accuracy_label = QLabel("–")
        self.elapsed_label = QLabel("–")
        self.eta_label = QLabel("–")
        self.message_label = QLabel("")
        self.plan_label = QLabel("")  # what will run: device, labels (before Protect is pressed)
        self.plan_label.setObjectName("plan_label")
        self.plan_label.setWordWrap(True)
        self.plot = RoundPlot()
        self.table: QTableWidget = make_table()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)

        numbers = form_layout([
            ("Overall", self.overall), ("Round", self.round_label),
            ("Surrogate accuracy on protected data", self.accuracy_label), ("Elapsed", self.elapsed_label),
            ("Time left", self.eta_label), ("", self.message_label),
        ])

        page_layout(self, "4. Protect",
                    "Protection runs in the background; the window stays usable and Cancel stops it "
                    "at the next batch. Nothing is written until you export.",
                    row(self.start_button, self.cancel_button, (self.plan_label, 1)),
                    row((numbers, 1), (self.plot, 1)),
                    "Per series (series of the same image size are protected together, with one "
                    "surrogate model, and advance together):",
                    (self.table, 1), "Log:", (self.log, 1))

        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        ctx.loaded.connect(self.reset)
        ctx.selection_changed.connect(self.reset)
        ctx.settings_changed.connect(self.presenter.show_plan)
        self.reset()

    # -- the presenter's state (read by the tests) ---------------------------------------------------
    @property
    def status(self):  # noqa: ANN201 - a gui.model.ProtectStatus
        return self.presenter.status

    @property
    def events_seen(self) -> int:
        return self.presenter.events_seen

    @property
    def stopped_at_fraction(self) -> float | None:
        return self.presenter.stopped_at_fraction

    @property
    def series_ids(self) -> list[str]:
        return self.presenter.series_ids

    # -- user actions -> presenter -------------------------------------------------------------------
    def reset(self) -> None:
        self.presenter.reset(self.running)


    def start(self) -> None:
        if not self.running:
            self.presenter.start()

    def cancel(self) -> None:
        if self.running:
            self.presenter.cancelling()
            self.worker.cancel()

    # -- ProtectView: what the presenter asks of the page ---------------------------------------------
    def build_table(self, rows) -> None:  # noqa: ANN001 - (series id, cells) pairs
        fill_table(self.table, ["Series", "Description", "Images", "Progress"], [cells for _, cells in rows])
        self.bars = {}
        for r, (sid, _) in enumerate(rows):
            bar = progress_bar()
            self.table.setCellWidget(r, 3, bar)
            self.bars[sid] = bar
        self.table.setColumnWidth(3, 220)

    def reset_numbers(self) -> None:
        self.overall.setValue(0)
        for bar in self.bars.values():
            bar.setValue(0)
        for label in (self.round_label, self.accuracy_label, self.elapsed_label, self.eta_label):
            label.setText("–")
        self.message_label.setText("")
        self.plot.clear()

    def show_numbers(self, overall: int, round_text: str, accuracy: str, elapsed: str, eta: str, message: str) -> None:
        self.overall.setValue(overall)
        self.round_label.setText(round_text)
        self.accuracy_label.setText(accuracy)
        self.elapsed_label.setText(elapsed)
        self.eta_label.setText(eta)
        self.message_label.setText(message)

    def show_series_progress(self, series_id: str, value: int) -> None:
        if series_id in self.bars:
            self.bars[series_id].setValue(value)

    def show_all_done(self) -> None:
        self.overall.setValue(1000)
        for bar in self.bars.values():
            bar.setValue(1000)

    def show_curve(self, rounds, accuracy, loss, max_rounds: int, stop_accuracy: float) -> None:  # noqa: ANN001
        self.plot.set_points(rounds, accuracy, loss, max_rounds, stop_accuracy)

    def show_accuracy(self, text: str) -> None:
        self.accuracy_label.setText(text)

    def show_eta(self, text: str) -> None:
        self.eta_label.setText(text)

    def show_message(self, text: str) -> None:
        self.message_label.setText(text)

    def show_plan(self, text: str) -> None:
        self.plan_label.setText(text)

    def append_log(self, text: str) -> None:
        self.log.appendPlainText(f"[{time.strftime('%H:%M:%S')}] {text}")

    def clear_log(self) -> None:
        self.log.clear()

    def show_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def show_cancelling(self) -> None:
        self.cancel_button.setEnabled(False)
