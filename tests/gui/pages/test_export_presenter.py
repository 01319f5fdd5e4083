"""The Export presenter with a mocked view: checks, the job it builds (run here, for real, on a small
MedMNIST subset protected with tiny settings), what it shows afterwards, opening and copying."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest

from salm_desktop.core.model import Skipped
from salm_desktop.core.progress import Progress, ProgressEvent
from salm_desktop.gui import services
from salm_desktop.core.jobs import JobResult
from salm_desktop.gui.model import WizardSettings, WizardState
from salm_desktop.gui.pages.export_presenter import EXPORT_OWNER, ExportPresenter, ExportView, summary_lines

from presenter_studies import tiny_settings  # tests/gui/pages/presenter_studies.py


def _settings() -> WizardSettings:
    s = tiny_settings()
    s.output_format, s.report = "auto", False
    return s


@pytest.fixture
def protected(protected_breast):
    """The BreastMNIST subset (48 training images of 28x28), loaded and protected as the wizard does it."""
    return protected_breast


def _ctx(state) -> SimpleNamespace:
    store = mock.Mock()
    store.last_folder.return_value = ""
    return SimpleNamespace(state=state, settings=_settings(), store=store, report_error=mock.Mock(),
                           save_settings=mock.Mock(), set_busy=mock.Mock())


def _view(destination: str = "") -> mock.Mock:
    view = mock.Mock(spec=ExportView)
    view.destination_text.return_value = destination
    view.overwrite_chosen.return_value = False
    view.ownership_keys.return_value = None
    view.deid_job_kwargs.return_value = {}  # the panel's defaults: de-identify with the default options
    return view


def test_start_without_destination_or_protection_says_why_and_starts_nothing(protected):
    state, _ = protected
    view, ctx = _view(""), _ctx(state)
    assert not ExportPresenter(view, ctx).start("auto", False)
    ctx.report_error.assert_called_once_with("No destination", "Choose a folder to export to.")
    empty = WizardState()
    view, ctx = _view("/tmp/somewhere"), _ctx(empty)
    assert not ExportPresenter(view, ctx).start("auto", False)
    ctx.report_error.assert_called_once_with("Nothing to export", "Protect the study (step 4) first.")
    view.start_worker.assert_not_called()
    ctx.set_busy.assert_not_called()


def test_the_job_writes_the_reviewed_pixels_and_the_view_shows_the_result(protected, tmp_path):
    state, arrays = protected
    out = tmp_path / "release"
    view, ctx = _view(f"  {out}  "), _ctx(state)
    presenter = ExportPresenter(view, ctx)
    assert presenter.start("auto", False)  # no report: it is the report's tests' business, and slow here
    assert (ctx.settings.output_format, ctx.settings.report) == ("auto", False)  # the choices are kept
    ctx.save_settings.assert_called_once()
    ctx.store.set_last_folder.assert_called_once_with("output_parent", tmp_path)
    view.show_running.assert_called_once_with(True)
    ctx.set_busy.assert_called_once_with(True, EXPORT_OWNER)  # the one busy mark load and protect ask for
    view.show_progress.assert_called_with(0, "Exporting…")
    (job, on_success), _ = view.start_worker.call_args

    job_result = job(Progress())  # what the worker thread runs
    on_success(job_result)
    assert state.export_result is job_result
    with np.load(out / "breast.npz") as written:
        series = state.selected_series[0]
        expected = np.stack([state.protect_result.protected(series.id, i) for i in range(48)]).astype(np.uint8)
        assert np.array_equal(written["train_images"].reshape(expected.shape), expected)
        assert np.array_equal(written["val_images"], arrays["val_images"])
    (summary, path, can_open), _ = view.show_result.call_args
    assert summary.startswith(f"Output folder: {out}\nManifest (every file with its checksum, the settings): "
                              f"{out / 'manifest.json'}")
    assert path == str(out) and not can_open  # no report: the folder is the path shown
    assert presenter.paths["manifest"] == out / "manifest.json"
    view.show_progress.assert_called_with(1000, "Export finished.")
    view.emit_finished.assert_called_once_with("done")
    ctx.report_error.assert_not_called()

    presenter.worker_done()
    view.show_running.assert_called_with(False)
    ctx.set_busy.assert_called_with(False, EXPORT_OWNER)


def test_progress_goes_to_the_bar_and_log_lines_to_the_summary(protected):
    view = _view()
    presenter = ExportPresenter(view, _ctx(protected[0]))
    presenter.progressed(ProgressEvent("log", 0, 0, "wrote breast.npz"))
    view.append_log.assert_called_once_with("wrote breast.npz")
    presenter.progressed(ProgressEvent("export", 1, 4, "writing"))
    presenter.progressed(ProgressEvent("report", 3, 4))
    assert view.show_progress.call_args_list == [mock.call(250, "export: writing"), mock.call(750, "report")]


def test_only_inputs_skipped_after_loading_are_reported(protected, tmp_path):
    state, _ = protected
    ctx = _ctx(state)
    known = Skipped(tmp_path / "old.dcm", "not a DICOM file")
    state_with_known = SimpleNamespace(load_result=SimpleNamespace(skipped=[known]))
    ctx.state = state_with_known
    presenter = ExportPresenter(_view(), ctx)
    fresh = [Skipped(tmp_path / "a.dcm", "cannot decode pixel data"), Skipped(tmp_path / "b.dcm", "truncated")]
    result = JobResult(tmp_path, {}, skipped=[known, *fresh])
    assert presenter.new_skipped(result) == fresh
    state_with_known.export_result = None
    with mock.patch.object(services, "job_paths", return_value={"out_dir": tmp_path}):
        presenter.done(result, tmp_path)
    ctx.report_error.assert_called_once_with(
        "Some inputs were skipped", f"{tmp_path / 'a.dcm'}: cannot decode pixel data (and 1 more, listed in the summary)")
    (summary, _, can_open), _ = presenter.view.show_result.call_args
    assert "Skipped 3 input(s):" in summary and not can_open


def test_failed_and_cancelled_runs_say_so(protected):
    view, ctx = _view(), _ctx(protected[0])
    presenter = ExportPresenter(view, ctx)
    presenter.failed("/out: already exists and is not empty")
    view.show_status.assert_called_with("Export failed: /out: already exists and is not empty")
    ctx.report_error.assert_called_once_with("Export failed", "/out: already exists and is not empty")
    presenter.cancelled()
    view.show_status.assert_called_with("Export cancelled: nothing was written.")
    assert view.emit_finished.call_args_list == [mock.call("failed"), mock.call("cancelled")]


def test_opening_without_a_program_shows_the_path_and_copying_says_so(protected, tmp_path):
    view = _view()
    presenter = ExportPresenter(view, _ctx(protected[0]))
    assert not presenter.open("report")  # nothing exported yet
    view.show_path.assert_not_called()
    presenter.paths = {"report": tmp_path / "report.html", "out_dir": tmp_path}
    view.open_path.return_value = False
    assert not presenter.open("report")
    view.show_path.assert_called_with(str(tmp_path / "report.html"))
    assert "No program to open report.html" in view.set_open_note.call_args.args[0]
    view.open_path.return_value = True
    assert presenter.open("out_dir")
    view.set_open_note.assert_called_with("")
    assert presenter.opened == [str(tmp_path / "report.html"), str(tmp_path)]
    presenter.copy_path(str(tmp_path / "report.html"))
    view.copy_text.assert_called_once_with(str(tmp_path / "report.html"))
    view.set_open_note.assert_called_with(f"Copied: {tmp_path / 'report.html'}")


def test_a_new_study_forgets_the_last_export_unless_one_is_running(protected, tmp_path):
    view = _view()
    presenter = ExportPresenter(view, _ctx(protected[0]))
    presenter.paths = {"out_dir": tmp_path}
    presenter.forget_export(running=True)
    view.clear_result.assert_not_called()
    presenter.forget_export(running=False)
    assert presenter.paths == {}
    view.clear_result.assert_called_once()
    view.show_progress.assert_called_once_with(0, "")


def test_the_destination_suggested_is_in_the_last_output_folder_never_in_an_input(protected, tmp_path):
    state, _ = protected
    view, ctx = _view(), _ctx(state)
    ctx.store.last_folder.return_value = str(tmp_path / "exports")
    presenter = ExportPresenter(view, ctx)
    presenter.suggest_destination()
    ctx.store.last_folder.assert_called_with("output_parent")
    view.set_destination.assert_called_with(str(tmp_path / "exports" / "breast_protected"))
    ctx.state = WizardState()  # nothing loaded: no suggestion
    presenter.suggest_destination()
    view.set_destination.assert_called_with("")


def test_the_summary_names_the_officer_report_when_there_is_one(tmp_path):
    result = JobResult(tmp_path, {}, officer_pdf=tmp_path / "officer-report.pdf")
    lines = summary_lines(result, {"out_dir": tmp_path, "manifest": tmp_path / "manifest.json"})
    assert lines[:3] == [f"Output folder: {tmp_path}",
                         f"Manifest (every file with its checksum, the settings): {tmp_path / 'manifest.json'}",
                         f"Officer report (page 1 to sign): {tmp_path / 'officer-report.pdf'}"]
    assert not any("Officer" in line for line in summary_lines(JobResult(tmp_path, {}), {"out_dir": tmp_path}))
