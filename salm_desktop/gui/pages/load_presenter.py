"""The Load step's logic (view + presenter): Qt-free, tested with a mocked view.

:class:`LoadPresenter` keeps the input list, decides whether a load may start, builds the job,
puts its result in the wizard state and says what to show; :class:`~salm_desktop.gui.pages.load.LoadPage`
(the view) owns the widgets, the file dialogs, drag and drop and the worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from .. import services
from ..model import labels_summary, load_summary, series_rows, skipped_rows
from .export_presenter import EXPORT_OWNER

LOAD_OWNER = "load"  # the name of this step's busy marks in the context


class LoadView(Protocol):
    """What the presenter needs of the page."""

    def input_paths(self) -> list[Path]: ...
    def add_input(self, text: str) -> None: ...
    def clear_inputs(self) -> None: ...
    def is_running(self) -> bool: ...
    def stop_worker(self) -> None: ...
    def cancel_worker(self) -> None: ...
    def start_worker(self, job: Callable[[Any], Any], on_success: Callable[[Any], None]) -> None: ...
    def show_running(self, running: bool) -> None: ...
    def show_progress(self, value: int) -> None: ...
    def show_status(self, text: str) -> None: ...
    def show_tables(self, series_rows: list, checked: list[bool], skipped_rows: list) -> None: ...
    def show_label_maps(self, text: str) -> None: ...
    def show_labels(self, text: str, warning: str, offer_study_labels: bool) -> None: ...
    def enable_inputs(self, free: bool, can_load: bool) -> None: ...
    def emit_finished(self, ok: bool) -> None: ...


class LoadPresenter:
    def __init__(self, view: LoadView, ctx: Any) -> None:
        self.view = view
        self.ctx = ctx

    # -- inputs ----------------------------------------------------------------------------------
    def add_paths(self, paths: Sequence[Path | str], load: bool = True) -> None:
        known = {str(p) for p in self.view.input_paths()}
        for p in paths:
            if str(p) not in known:
                self.view.add_input(str(p))
                known.add(str(p))
        if paths:
            first = Path(paths[0])
            self.ctx.store.set_last_folder("input", first if first.is_dir() else first.parent)
        if load:
            self.start_load()

    def clear(self) -> None:
        """Forget the study and everything made from it (the protection result, the review)."""
        self.view.cancel_worker()
        self.view.clear_inputs()
        state = self.ctx.state
        state.inputs = []
        state.load_result = None
        previous = state.protect_result
        state.protect_result, state.protect_settings, state.protected_ids = None, None, []
        state.export_result = None
        self.view.show_progress(0)
        self.show_result()
        self.ctx.loaded.emit()  # pages drop what they show of the old study first
        if previous is not None and not self.ctx.busy_with(EXPORT_OWNER):
            state.close_result(previous)

    # -- loading ---------------------------------------------------------------------------------
    def start_load(self) -> bool:
        """Start loading the inputs; False (with the reason shown) when it cannot start now."""
        paths = self.view.input_paths()
        if not paths:
            self.view.show_status(load_summary(None))
            return False
        if self.ctx.busy_except(LOAD_OWNER):  # protecting or exporting this study right now
            self.view.show_status("Another step is working on the loaded study: wait for it or cancel it, then load.")
            return False
        missing = [p for p in paths if not p.exists()]
        if missing:
            self.ctx.report_error("Cannot load", f"{missing[0]}: no such file or folder")
            return False
        if self.view.is_running():
            self.view.stop_worker()
        settings = self.ctx.settings.copy()  # a snapshot: edits during the run do not leak in
        self.view.show_progress(0)
        self.view.show_status("Loading…")
        self.view.show_running(True)
        self.ctx.set_busy(True, LOAD_OWNER)
        self.view.start_worker(lambda progress: services.load(paths, settings, progress), self.loaded)
        return True

    def progressed(self, event) -> None:  # noqa: ANN001 - a core ProgressEvent
        if event.stage == "log":
            return
        self.view.show_progress(int(1000 * event.fraction))
        if event.stage == "window":
            self.view.show_status(f"Measuring intensity windows… {event.done}/{event.total} series")
        else:
            self.view.show_status(f"Loading… {event.done}/{event.total} files" if event.total else "Loading…")

    def loaded(self, result) -> None:  # noqa: ANN001 - a services.LoadedStudy
        state = self.ctx.state
        state.inputs = self.view.input_paths()
        state.load_result = result
        state.excluded = state.default_excluded()
        previous = state.protect_result
        state.protect_result = None
        state.protect_settings = None
        self.ctx.store.add_recent_inputs([str(p) for p in state.inputs])
        self.view.show_progress(1000)
        self.show_result()
        self.ctx.loaded.emit()  # the review lets go of the previous result first
        if previous is not None and not self.ctx.busy_with(EXPORT_OWNER):
            state.close_result(previous)
        if not result.series:
            reason = result.skipped[0].reason if result.skipped else "no image files found"
            where = result.skipped[0].path if result.skipped else (state.inputs or ["input"])[0]
            self.ctx.report_error("Nothing to protect", f"{where}: {reason}")
        self.view.emit_finished(bool(result.series))

    def failed(self, message: str) -> None:
        self.view.show_status(f"Loading failed: {message}")
        self.ctx.report_error("Loading failed", message)
        self.view.emit_finished(False)

    def cancelled(self) -> None:
        self.view.show_status("Loading cancelled; nothing was changed.")
        self.view.show_progress(0)
        self.view.emit_finished(False)

    def worker_done(self) -> None:
        self.view.show_running(False)
        self.ctx.set_busy(False, LOAD_OWNER)

    # -- what is shown -----------------------------------------------------------------------------
    def show_result(self) -> None:
        state = self.ctx.state
        result = state.load_result
        rows = series_rows(result)
        self.view.show_tables(rows, [r[0] not in state.excluded for r in rows], skipped_rows(result))
        self.view.show_status(load_summary(result))
        maps = getattr(result, "label_maps", None) or []
        self.view.show_label_maps("Label maps found (regions for the report, not protected): "
                                  + ", ".join(m.files[0].name for m in maps) if maps else "")
        self.show_labels()

    def busy_changed(self, busy: bool) -> None:
        """While another step works on this study (protecting, exporting), it cannot be replaced or
        cleared under it; a load of its own is cancelled by Clear or a new Load."""
        self.view.enable_inputs(not busy or self.view.is_running(), not busy)

    def show_labels(self) -> None:
        """What the protection will use as labels, and a warning when the setting does not fit."""
        text, warning = labels_summary(self.ctx.settings, self.ctx.state.selected_series)
        self.view.show_labels(text, warning, bool(warning) and self.ctx.settings.label_source == "clusters")

    def use_study_labels(self) -> None:
        self.ctx.settings.label_source = "auto"
        self.ctx.save_settings()
        self.ctx.settings_replaced.emit()

    def series_ticked(self, series_id: str, included: bool) -> None:
        if included:
            self.ctx.state.excluded.discard(series_id)
        else:
            self.ctx.state.excluded.add(series_id)
        self.ctx.selection_changed.emit()
