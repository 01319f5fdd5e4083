"""The Protect step's logic (view + presenter): Qt-free, tested with a mocked view.

:class:`ProtectPresenter` takes the settings snapshot, starts the run, turns progress events into
numbers and texts (through :class:`~salm_desktop.gui.model.ProtectStatus`) and keeps the result in
the wizard state; :class:`~salm_desktop.gui.pages.protect.ProtectPage` (the view) shows them.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol, Sequence

from .. import services
from ..model import ProtectStatus, device_text, duration_text, for_run, labels_summary, run_summary_lines, series_name
from .export_presenter import EXPORT_OWNER
from .presenting import common_unit


class ProtectView(Protocol):
    """What the presenter needs of the page."""

    def build_table(self, rows: Sequence[tuple[str, list[str]]]) -> None: ...
    def reset_numbers(self) -> None: ...
    def show_numbers(self, overall: int, round_text: str, accuracy: str, elapsed: str, eta: str, message: str) -> None: ...
    def show_series_progress(self, series_id: str, value: int) -> None: ...
    def show_all_done(self) -> None: ...
    def show_curve(self, rounds: list, accuracy: list, loss: list, max_rounds: int, stop_accuracy: float) -> None: ...
    def show_accuracy(self, text: str) -> None: ...
    def show_eta(self, text: str) -> None: ...
    def show_message(self, text: str) -> None: ...
    def show_plan(self, text: str) -> None: ...
    def append_log(self, text: str) -> None: ...
    def clear_log(self) -> None: ...
    def show_running(self, running: bool) -> None: ...
    def show_cancelling(self) -> None: ...
    def start_worker(self, job: Callable[[Any], Any], on_success: Callable[[Any], None]) -> None: ...
    def emit_finished(self, outcome: str) -> None: ...


class ProtectPresenter:
    def __init__(self, view: ProtectView, ctx: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.view = view
        self.ctx = ctx
        self.clock = clock
        self.status = ProtectStatus()
        self.series_ids: list[str] = []
        self.started_at = 0.0
        self.events_seen = 0
        self.unit = ""
        self.settings = None  # the snapshot the running (or last) protection uses
        self.stopped_at_fraction: float | None = None  # where the last cancelled run stopped

    # -- before a run -----------------------------------------------------------------------------
    def reset(self, running: bool) -> None:
        """Back to "nothing run yet" for the current selection (a new study, Clear, another selection)."""
        if running:
            return
        self.series_ids = [s.id for s in self.ctx.state.selected_series]
        self._build_table()
        self._reset_numbers()
        self.view.clear_log()
        self.show_plan()

    def _reset_numbers(self) -> None:
        self.status = ProtectStatus()
        self.view.reset_numbers()

    def _build_table(self) -> None:
        series = [s for s in self.ctx.state.selected_series if s.id in self.series_ids]
        self.view.build_table([(s.id, [series_name(s), s.description or s.kind, str(len(s.samples)), ""]) for s in series])

    def show_plan(self) -> None:
        """The device that will really run and the labels, before anything starts."""
        series = self.ctx.state.selected_series
        if not series:
            self.view.show_plan("Load a study first.")
            return
        labels, warning = labels_summary(self.ctx.settings, series)
        self.view.show_plan(f"Will run on: {device_text(self.ctx.settings.device)} · {labels}"
                            + (f"\n{warning}" if warning else ""))

    # -- the run ------------------------------------------------------------------------------------
    def start(self) -> bool:
        series = self.ctx.state.selected_series
        if not series:
            self.ctx.report_error("Nothing to protect", "Load a study and tick at least one series first.")
            return False
        # a snapshot (edits during the run do not leak in), with "auto" resolved to what will run
        settings = for_run(self.ctx.settings, series)
        self.series_ids = [s.id for s in series]
        self._build_table()
        self._reset_numbers()
        self.status.max_rounds = int(settings.max_rounds)
        self.view.show_curve([], [], [], settings.max_rounds, settings.stop_accuracy)
        self.events_seen = 0
        self.view.clear_log()
        self.unit = common_unit(series)
        labels = "pseudo-labels" if settings.label_source == "clusters" else "the study's labels"
        self.view.append_log(
            f"Protecting {len(series)} series ({sum(len(s.samples) for s in series)} images), "
            f"method {settings.method}, mask ratio "
            + (f"{100 * settings.mask_ratio:.0f} % of the pixels, " if settings.mask_ratio > 0 else "auto, ")
            + f"budget ±{settings.epsilon * 255:.3g}/255 of the intensity window, labels: {labels}, "
            f"device {device_text(settings.device)}, seed {settings.seed}.")
        self.settings = settings
        self.started_at = self.clock()
        self.view.show_running(True)
        self.ctx.set_busy(True)
        self.view.start_worker(lambda progress: services.protect(series, settings, progress), self.done)
        return True

    def cancelling(self) -> None:
        self.view.append_log("Cancelling…")
        self.view.show_cancelling()

    def progressed(self, event) -> None:  # noqa: ANN001 - a core ProgressEvent
        self.events_seen += 1
        self.status.update(event, self.series_ids, now_s=self.clock() - self.started_at)
        if event.stage == "log":
            self.view.append_log(event.message)
            history = self.status.history
            self.view.show_curve([p.round for p in history], [p.accuracy for p in history], [p.loss for p in history],
                                 self.status.max_rounds or 1, self.settings.stop_accuracy)
            self.view.show_eta(self.status.eta_text())
            return
        round_text = "–" if self.status.round is None else f"{self.status.round} of at most {self.status.max_rounds}"
        self.view.show_numbers(int(1000 * self.status.fraction), round_text, self.status.accuracy_text(),
                               duration_text(self.clock() - self.started_at), self.status.eta_text(), self.status.message)
        for sid, fraction in self.status.per_series.items():
            self.view.show_series_progress(sid, int(1000 * fraction))

    def done(self, run: services.ProtectRun) -> None:
        state = self.ctx.state
        result = run.result
        if run.skipped:  # unreadable files were left out; the others are protected
            state.drop_unreadable(run.series, self.series_ids, run.skipped)
            kept_ids = {s.id for s in run.series}
            self.series_ids = [sid for sid in self.series_ids if sid in kept_ids]
            for item in run.skipped:
                self.view.append_log(f"Skipped {item.path}: {item.reason}")
            self.view.show_message(f"{len(run.skipped)} file(s) could not be read and were left out; "
                                   "the others are protected (see the log).")
        previous = state.protect_result
        state.protect_result = result
        state.protect_settings = self.settings
        state.protected_ids = list(self.series_ids)
        self.view.show_all_done()
        summary = result.summary  # asked before any export: its change figures are measured here, once
        lines = run_summary_lines(summary, self.unit)
        self.view.append_log("Done. " + ("; ".join(lines) if lines else "Protection finished") + ".")
        if summary.get("surrogate_accuracy") is not None:
            self.view.show_accuracy(f"{100 * float(summary['surrogate_accuracy']):.1f} %")
        self.view.show_eta("0 s")
        self.ctx.protected.emit()  # the review switches to the new result first
        if previous is not None and previous is not result and not self.ctx.busy_with(EXPORT_OWNER):
            state.close_result(previous)
        self.view.emit_finished("done")

    def failed(self, message: str) -> None:
        self.view.append_log(f"Failed: {message}")
        self._reset_numbers()
        self.view.show_message(f"Failed: {message}")
        self.ctx.report_error("Protection failed", message)
        self.view.emit_finished("failed")

    def cancelled(self) -> None:
        kept = " The previous result is kept." if self.ctx.state.protect_result is not None else ""
        self.view.append_log("Cancelled: nothing from this run was kept." + kept)
        self.stopped_at_fraction = self.status.fraction
        self._reset_numbers()  # the stopped run's progress, time left and curve no longer mean anything
        self.view.show_message("Cancelled." + kept)
        self.view.emit_finished("cancelled")

    def worker_done(self) -> None:
        self.view.show_running(False)
        self.ctx.set_busy(False)
