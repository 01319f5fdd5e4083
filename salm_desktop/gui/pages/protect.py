"""Step 4: protect the selected series on a worker thread, with progress, a log and Cancel."""

from __future__ import annotations

import time

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from .. import services
from ..context import Context
from ..model import ProtectStatus, device_text, duration_text, for_run, labels_summary, run_summary_lines, series_name
from ..plot import RoundPlot
from ..widgets import fill_table, heading, hint, make_table
from ..workers import Worker, WorkerHost


def _common_unit(series) -> str:
    """The native unit shared by all these series ("HU" for CT), or "" when they differ or have none."""
    units = set()
    for s in series:
        try:
            units.add(s.intensity.unit or "")
        except Exception:
            units.add("")
    return units.pop() if len(units) == 1 else ""


class ProtectPage(QWidget, WorkerHost):
    finished = Signal(str)  # "done" | "cancelled" | "failed"

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker | None = None
        self.status = ProtectStatus()
        self.series_ids: list[str] = []
        self.bars: dict[str, QProgressBar] = {}
        self.started_at = 0.0
        self.events_seen = 0
        self.unit = ""
        self._settings = None
        self.stopped_at_fraction: float | None = None  # where the last cancelled run stopped

        self.start_button = QPushButton("Protect")
        self.start_button.setObjectName("protect_start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.overall = QProgressBar()
        self.overall.setRange(0, 1000)
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

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.plan_label, 1)
        numbers = QFormLayout()
        numbers.addRow("Overall", self.overall)
        numbers.addRow("Round", self.round_label)
        numbers.addRow("Surrogate accuracy on protected data", self.accuracy_label)
        numbers.addRow("Elapsed", self.elapsed_label)
        numbers.addRow("Time left", self.eta_label)
        numbers.addRow("", self.message_label)

        layout = QVBoxLayout(self)
        layout.addWidget(heading("4. Protect"))
        layout.addWidget(hint("Protection runs in the background; the window stays usable and Cancel stops it "
                              "at the next batch. Nothing is written until you export."))
        layout.addLayout(buttons)
        numbers_and_plot = QHBoxLayout()
        numbers_and_plot.addLayout(numbers, 1)
        numbers_and_plot.addWidget(self.plot, 1)
        layout.addLayout(numbers_and_plot)
        layout.addWidget(QLabel("Per series (series of the same image size are protected together, with one "
                                "surrogate model, and advance together):"))
        layout.addWidget(self.table, 1)
        layout.addWidget(QLabel("Log:"))
        layout.addWidget(self.log, 1)

        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        ctx.loaded.connect(self.reset)
        ctx.selection_changed.connect(self.reset)
        ctx.settings_changed.connect(self.show_plan)
        self.reset()

    def reset(self) -> None:
        """Back to "nothing run yet" for the current selection (a new study, Clear, another selection)."""
        if self.running:
            return
        self.series_ids = [s.id for s in self.ctx.state.selected_series]
        self._build_table()
        self._reset_numbers()
        self.log.clear()
        self.show_plan()

    def _reset_numbers(self) -> None:
        self.status = ProtectStatus()
        self.overall.setValue(0)
        for bar in self.bars.values():
            bar.setValue(0)
        for label in (self.round_label, self.accuracy_label, self.elapsed_label, self.eta_label):
            label.setText("–")
        self.message_label.setText("")
        self.plot.clear()

    def show_plan(self) -> None:
        """The device that will really run and the labels, before anything starts."""
        series = self.ctx.state.selected_series
        if not series:
            self.plan_label.setText("Load a study first.")
            return
        labels, warning = labels_summary(self.ctx.settings, series)
        self.plan_label.setText(f"Will run on: {device_text(self.ctx.settings.device)} · {labels}"
                                + (f"\n{warning}" if warning else ""))

    def _build_table(self) -> None:
        series = [s for s in self.ctx.state.selected_series if s.id in self.series_ids]
        rows = [[series_name(s), s.description or s.kind, str(len(s.samples)), ""] for s in series]
        fill_table(self.table, ["Series", "Description", "Images", "Progress"], rows)
        self.bars = {}
        for r, s in enumerate(series):
            bar = QProgressBar()
            bar.setRange(0, 1000)
            self.table.setCellWidget(r, 3, bar)
            self.bars[s.id] = bar
        self.table.setColumnWidth(3, 220)

    def start(self) -> None:
        if self.running:
            return
        series = self.ctx.state.selected_series
        if not series:
            self.ctx.report_error("Nothing to protect", "Load a study and tick at least one series first.")
            return
        # a snapshot (edits during the run do not leak in), with "auto" resolved to what will run
        settings = for_run(self.ctx.settings, series)
        self.series_ids = [s.id for s in series]
        self._build_table()
        self._reset_numbers()
        self.status.max_rounds = int(settings.max_rounds)
        self.plot.set_points([], [], [], settings.max_rounds, settings.stop_accuracy)
        self.events_seen = 0
        self.log.clear()
        self.unit = _common_unit(series)
        labels = "pseudo-labels" if settings.label_source == "clusters" else "the study's labels"
        self._log(f"Protecting {len(series)} series ({sum(len(s.samples) for s in series)} images), "
                  f"method {settings.method}, mask ratio {100 * settings.mask_ratio:.0f} % of the pixels, "
                  f"budget ±{settings.epsilon * 255:.3g}/255 of the intensity window, labels: {labels}, "
                  f"device {device_text(settings.device)}, seed {settings.seed}.")
        self._settings = settings
        worker = Worker(lambda progress: services.protect(series, settings, progress), self, name="protect")
        self._adopt(worker, self._done)
        self.started_at = time.monotonic()
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.ctx.set_busy(True)
        worker.start()

    def cancel(self) -> None:
        if self.running:
            self._log("Cancelling…")
            self.cancel_button.setEnabled(False)
            self.worker.cancel()

    def _log(self, text: str) -> None:
        self.log.appendPlainText(f"[{time.strftime('%H:%M:%S')}] {text}")

    def _progressed(self, event) -> None:
        self.events_seen += 1
        self.status.update(event, self.series_ids, now_s=time.monotonic() - self.started_at)
        if event.stage == "log":
            self._log(event.message)
            history = self.status.history
            self.plot.set_points([p.round for p in history], [p.accuracy for p in history],
                                 [p.loss for p in history], self.status.max_rounds or 1, self._settings.stop_accuracy)
            self.eta_label.setText(self.status.eta_text())
            return
        self.overall.setValue(int(1000 * self.status.fraction))
        self.round_label.setText("–" if self.status.round is None else
                                 f"{self.status.round} of at most {self.status.max_rounds}")
        self.accuracy_label.setText(self.status.accuracy_text())
        self.elapsed_label.setText(duration_text(time.monotonic() - self.started_at))
        self.eta_label.setText(self.status.eta_text())
        self.message_label.setText(self.status.message)
        for sid, fraction in self.status.per_series.items():
            if sid in self.bars:
                self.bars[sid].setValue(int(1000 * fraction))

    def _done(self, run) -> None:
        result = run.result
        if run.skipped:  # unreadable files were left out; the others are protected
            self.ctx.state.drop_unreadable(run.series, self.series_ids, run.skipped)
            kept_ids = {s.id for s in run.series}
            self.series_ids = [sid for sid in self.series_ids if sid in kept_ids]
            for item in run.skipped:
                self._log(f"Skipped {item.path}: {item.reason}")
            self.message_label.setText(f"{len(run.skipped)} file(s) could not be read and were left out; "
                                       "the others are protected (see the log).")
        previous = self.ctx.state.protect_result
        self.ctx.state.protect_result = result
        self.ctx.state.protect_settings = self._settings
        self.ctx.state.protected_ids = list(self.series_ids)
        self.overall.setValue(1000)
        for bar in self.bars.values():
            bar.setValue(1000)
        summary = getattr(result, "summary", {}) or {}
        lines = run_summary_lines(summary, self.unit)
        self._log("Done. " + ("; ".join(lines) if lines else "Protection finished") + ".")
        if summary.get("surrogate_accuracy") is not None:
            self.accuracy_label.setText(f"{100 * float(summary['surrogate_accuracy']):.1f} %")
        self.eta_label.setText("0 s")
        self.ctx.protected.emit()  # the review switches to the new result first
        if previous is not None and previous is not result and not self.ctx.busy_exporting():
            self.ctx.state.close_result(previous)
        self.finished.emit("done")

    def _failed(self, message: str) -> None:
        self._log(f"Failed: {message}")
        self._reset_numbers()
        self.message_label.setText(f"Failed: {message}")
        self.ctx.report_error("Protection failed", message)
        self.finished.emit("failed")

    def _cancelled(self) -> None:
        kept = " The previous result is kept." if self.ctx.state.protect_result is not None else ""
        self._log("Cancelled: nothing from this run was kept." + kept)
        self.stopped_at_fraction = self.status.fraction
        self._reset_numbers()  # the stopped run's progress, time left and curve no longer mean anything
        self.message_label.setText("Cancelled." + kept)
        self.finished.emit("cancelled")

    def _worker_done(self) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.ctx.set_busy(False)
