"""The Export step's logic (Mantid Imaging's view + presenter): Qt-free, tested with a mocked view.

:class:`ExportPresenter` decides what to export, builds the job, reads its result and tells the view
what to show; :class:`~salm_desktop.gui.pages.export.ExportPage` (the view) owns the widgets, runs
the worker and forwards the user's actions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .. import services
from ..model import default_output_dir, run_summary_lines
from .presenting import common_unit

if TYPE_CHECKING:
    from salm_desktop.core.jobs import JobResult

EXPORT_OWNER = "export"  # the name of this step's busy marks in the context (load and protect ask for it)


class ExportView(Protocol):
    """What the presenter needs of the page."""

    def destination_text(self) -> str: ...
    def set_destination(self, text: str) -> None: ...
    def show_export_options(self, output_format: str, report: bool) -> None: ...
    def overwrite_chosen(self) -> bool: ...
    def ownership_keys(self) -> Path | None: ...
    def deid_job_kwargs(self) -> dict[str, Any]: ...
    def start_worker(self, job: Callable[[Any], Any], on_success: Callable[[Any], None]) -> None: ...
    def show_running(self, running: bool) -> None: ...
    def show_progress(self, value: int, status: str) -> None: ...
    def append_log(self, line: str) -> None: ...
    def show_status(self, text: str) -> None: ...
    def clear_result(self) -> None: ...
    def show_result(self, summary: str, path: str, can_open_report: bool) -> None: ...
    def show_path(self, path: str) -> None: ...
    def open_path(self, path: str) -> bool: ...
    def set_open_note(self, text: str) -> None: ...
    def copy_text(self, text: str) -> None: ...
    def emit_finished(self, outcome: str) -> None: ...


def summary_lines(job_result: JobResult, paths: dict, unit: str = "") -> list[str]:
    """The export summary in words and units: where things went, what was done, what was skipped."""
    lines = [f"Output folder: {paths.get('out_dir')}"]
    if paths.get("report"):
        lines.append(f"Report: {paths['report']}")
    if paths.get("report_pdf"):
        lines.append(f"Report (PDF): {paths['report_pdf']}")
    if paths.get("manifest"):
        lines.append(f"Manifest (every file with its checksum, the settings): {paths['manifest']}")
    if job_result.officer_pdf:  # issue 15: the record the data-protection officer signs
        lines.append(f"Officer report (page 1 to sign): {job_result.officer_pdf}")
    lines += run_summary_lines(job_result.summary, unit)
    if job_result.skipped:
        lines.append(f"Skipped {len(job_result.skipped)} input(s):")
        for s in job_result.skipped[:20]:
            lines.append(f"  {s.path}: {s.reason}")
    return lines


class ExportPresenter:
    def __init__(self, view: ExportView, ctx: Any) -> None:
        self.view = view
        self.ctx = ctx
        self.paths: dict = {}
        self.opened: list[str] = []  # what the open buttons asked the desktop to show
        self.unit = ""

    # -- options and destination ------------------------------------------------------------------
    def show_options(self) -> None:
        self.view.show_export_options(self.ctx.settings.output_format, bool(self.ctx.settings.report))

    def options_changed(self, output_format: str, report: bool) -> None:
        self.ctx.settings.output_format = output_format
        self.ctx.settings.report = report
        self.ctx.save_settings()

    def suggest_destination(self) -> None:
        suggestion = default_output_dir(self.ctx.state.inputs, self.ctx.store.last_folder("output_parent") or None)
        self.view.set_destination(str(suggestion) if suggestion is not None else "")

    def forget_export(self, running: bool) -> None:
        """A new study (or Clear): the last export's summary and paths belong to the old one."""
        if running:
            return
        self.paths = {}
        self.view.clear_result()
        self.view.show_progress(0, "")

    # -- the run ------------------------------------------------------------------------------------
    def start(self, output_format: str, report: bool) -> bool:
        """Check what is needed, then start the export; False (and a dialog) when something is missing."""
        text = self.view.destination_text().strip()
        if not text:
            self.ctx.report_error("No destination", "Choose a folder to export to.")
            return False
        state = self.ctx.state
        if not state.selected_series or state.protect_result is None:
            self.ctx.report_error("Nothing to export", "Protect the study (step 4) first.")
            return False
        out_dir = Path(text).expanduser()
        self.ctx.store.set_last_folder("output_parent", out_dir.parent)
        self.options_changed(output_format, report)
        # the engine settings of the run that was reviewed (the export must write those pixels),
        # with the export options chosen here
        settings = (state.protect_settings or self.ctx.settings).copy()
        settings.output_format, settings.report = self.ctx.settings.output_format, self.ctx.settings.report
        series, result, inputs, splits = state.selected_series, state.protect_result, list(state.inputs), state.selected_splits()
        loaded = state.export_load_result()
        overwrite = self.view.overwrite_chosen()
        keys = self.view.ownership_keys()
        deid_kwargs = self.view.deid_job_kwargs()  # the de-identification panel's choices (issue 15)
        self.unit = common_unit(series)

        def job(progress):  # noqa: ANN001 - runs on the worker thread
            return services.export(result, inputs, out_dir, settings, splits, progress, loaded=loaded,
                                   overwrite=overwrite, keys=keys, **deid_kwargs)

        self.paths = {}
        self.view.clear_result()
        self.view.show_progress(0, "Exporting…")
        self.view.show_running(True)
        self.ctx.set_busy(True, EXPORT_OWNER)
        self.view.start_worker(job, lambda job_result: self.done(job_result, out_dir))
        return True

    def progressed(self, event) -> None:  # noqa: ANN001 - a core ProgressEvent
        if event.stage == "log":
            self.view.append_log(event.message)
            return
        self.view.show_progress(int(1000 * event.fraction), f"{event.stage}: {event.message}" if event.message else event.stage)

    def done(self, job_result: JobResult, out_dir: Path) -> None:
        self.ctx.state.export_result = job_result
        self.paths = services.job_paths(job_result, out_dir)
        self.view.show_progress(1000, "Export finished.")
        path = str(self.paths.get("report") or self.paths.get("out_dir") or "")
        self.view.show_result("\n".join(summary_lines(job_result, self.paths, self.unit)), path,
                              bool(self.paths.get("report")))
        skipped = self.new_skipped(job_result)
        if skipped:
            first = skipped[0]
            self.ctx.report_error("Some inputs were skipped",
                                  f"{first.path}: {first.reason}"
                                  + (f" (and {len(skipped) - 1} more, listed in the summary)" if len(skipped) > 1 else ""))
        self.view.emit_finished("done")

    def new_skipped(self, job_result: JobResult) -> list:
        """Inputs the export skipped that loading had not already reported."""
        load_result = self.ctx.state.load_result
        known = {str(k.path) for k in (load_result.skipped if load_result else [])}
        return [k for k in job_result.skipped if str(k.path) not in known]

    def failed(self, message: str) -> None:
        self.view.show_status(f"Export failed: {message}")
        self.ctx.report_error("Export failed", message)
        self.view.emit_finished("failed")

    def cancelled(self) -> None:
        self.view.show_status("Export cancelled: nothing was written.")
        self.view.emit_finished("cancelled")

    def worker_done(self) -> None:
        self.view.show_running(False)
        self.ctx.set_busy(False, EXPORT_OWNER)

    # -- after the run ----------------------------------------------------------------------------
    def open(self, what: str) -> bool:
        """Show the report or the output folder with the system's viewer; where there is none, say so."""
        path = self.paths.get(what)
        if not path:
            return False
        self.opened.append(str(path))
        self.view.show_path(str(path))
        if self.view.open_path(str(path)):
            self.view.set_open_note("")
            return True
        self.view.set_open_note(f"No program to open {Path(path).name} was found on this computer. Its path is "
                                "shown above: Copy path puts it on the clipboard for a browser or file manager.")
        return False

    def copy_path(self, text: str) -> None:
        self.view.copy_text(text)
        self.view.set_open_note(f"Copied: {text}")
