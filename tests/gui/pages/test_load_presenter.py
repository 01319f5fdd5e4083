"""The Load presenter with a mocked view: inputs, when a load may start, a real load of studies in
../shared/data run through the job it builds, what it shows, busy marks, ticking series, Clear."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

from salm_desktop.core.progress import Progress, ProgressEvent
from salm_desktop.gui.model import WizardSettings, WizardState
from salm_desktop.gui.pages.load_presenter import LOAD_OWNER, LoadPresenter, LoadView


class Inputs:
    """The view's input list: a real list behind the mocked view, so that add/clear are seen."""

    def __init__(self, view: mock.Mock) -> None:
        self.paths: list = []
        view.input_paths.side_effect = lambda: [Path(p) for p in self.paths]
        view.add_input.side_effect = self.paths.append
        view.clear_inputs.side_effect = self.paths.clear


def _setup(busy_others: bool = False):
    view = mock.Mock(spec=LoadView)
    view.is_running.return_value = False
    inputs = Inputs(view)
    ctx = SimpleNamespace(state=WizardState(), settings=WizardSettings(), store=mock.Mock(), report_error=mock.Mock(),
                          set_busy=mock.Mock(), busy_except=mock.Mock(return_value=busy_others), loaded=mock.Mock(),
                          selection_changed=mock.Mock(), settings_replaced=mock.Mock(), save_settings=mock.Mock(),
                          busy_with=lambda owner: False)
    return LoadPresenter(view, ctx), view, ctx, inputs


def _run_job(view):
    (job, on_success), _ = view.start_worker.call_args
    events: list = []
    on_success(job(Progress(events.append)))
    return events


def test_paths_are_added_once_and_remembered(dicom_dir):
    presenter, view, ctx, inputs = _setup()
    shoulder = dicom_dir / "hitachi_shoulder_mr" / "dicom"
    presenter.add_paths([shoulder, shoulder, dicom_dir / "pydicom_small" / "CT_small.dcm"], load=False)
    assert inputs.paths == [str(shoulder), str(dicom_dir / "pydicom_small" / "CT_small.dcm")]
    ctx.store.set_last_folder.assert_called_once_with("input", shoulder)
    view.start_worker.assert_not_called()


def test_a_real_load_fills_the_state_and_the_tables(dicom_dir):
    presenter, view, ctx, inputs = _setup()
    shoulder = dicom_dir / "hitachi_shoulder_mr" / "dicom"
    presenter.add_paths([shoulder])
    view.show_running.assert_called_once_with(True)
    ctx.set_busy.assert_called_once_with(True, LOAD_OWNER)
    view.show_status.assert_called_with("Loading…")
    events = _run_job(view)
    assert [len(s.samples) for s in ctx.state.series] == [4] and ctx.state.inputs == [shoulder]
    ctx.store.add_recent_inputs.assert_called_once_with([str(shoulder)])
    (rows, checked, skipped), _ = view.show_tables.call_args
    assert rows[0][0] == ctx.state.series[0].id and checked == [True] and skipped == []
    view.show_status.assert_called_with("1 series, 4 images")
    ctx.loaded.emit.assert_called_once()
    view.emit_finished.assert_called_once_with(True)
    ctx.report_error.assert_not_called()
    presenter.progressed(next(e for e in events if e.stage == "load" and e.done == 2))
    view.show_status.assert_called_with("Loading… 2/4 files")
    presenter.progressed(ProgressEvent("window", 1, 1))
    view.show_progress.assert_called_with(1000)
    view.show_status.assert_called_with("Measuring intensity windows… 1/1 series")
    presenter.worker_done()
    view.show_running.assert_called_with(False)
    ctx.set_busy.assert_called_with(False, LOAD_OWNER)


def test_a_folder_with_nothing_loadable_says_which_file_and_why(tmp_path, data_dir):
    presenter, view, ctx, _ = _setup()
    shutil.copy(data_dir / "dicom" / "ct_3slice_dcmqi" / "seg" / next(
        p.name for p in (data_dir / "dicom" / "ct_3slice_dcmqi" / "seg").iterdir() if p.is_file()), tmp_path / "seg.dcm")
    presenter.add_paths([tmp_path])
    _run_job(view)
    title, message = ctx.report_error.call_args.args
    assert title == "Nothing to protect" and message.startswith(f"{tmp_path / 'seg.dcm'}: DICOM SEG")
    view.emit_finished.assert_called_once_with(False)


@pytest.mark.parametrize("case", ["nothing", "busy", "missing"])
def test_a_load_that_cannot_start_says_why(case, tmp_path):
    presenter, view, ctx, inputs = _setup(busy_others=case == "busy")
    if case != "nothing":
        inputs.paths.append(str(tmp_path if case == "busy" else tmp_path / "gone"))
    assert not presenter.start_load()
    view.start_worker.assert_not_called()
    ctx.set_busy.assert_not_called()
    if case == "nothing":
        view.show_status.assert_called_once_with("Nothing loaded yet. Drop files or folders here, or use Add files / Add folder.")
    elif case == "busy":
        ctx.busy_except.assert_called_once_with(LOAD_OWNER)
        assert view.show_status.call_args.args[0].startswith("Another step is working on the loaded study")
    else:
        ctx.report_error.assert_called_once_with("Cannot load", f"{tmp_path / 'gone'}: no such file or folder")


def test_a_new_load_stops_the_running_one_first(dicom_dir):
    presenter, view, ctx, inputs = _setup()
    inputs.paths.append(str(dicom_dir / "hitachi_shoulder_mr" / "dicom"))
    view.is_running.return_value = True
    assert presenter.start_load()
    assert view.method_calls.index(mock.call.stop_worker()) < [c[0] for c in view.method_calls].index("start_worker")


def test_failure_and_cancel_say_so_and_end_the_load():
    presenter, view, ctx, _ = _setup()
    presenter.failed("/data/x.dcm: unreadable")
    view.show_status.assert_called_with("Loading failed: /data/x.dcm: unreadable")
    ctx.report_error.assert_called_once_with("Loading failed", "/data/x.dcm: unreadable")
    presenter.cancelled()
    view.show_status.assert_called_with("Loading cancelled; nothing was changed.")
    view.show_progress.assert_called_with(0)
    assert view.emit_finished.call_args_list == [mock.call(False), mock.call(False)]


def test_busy_marks_lock_the_inputs_unless_the_load_is_its_own():
    presenter, view, _, _ = _setup()
    presenter.busy_changed(True)
    view.enable_inputs.assert_called_with(False, False)
    view.is_running.return_value = True  # our own load: Clear and new inputs stay possible
    presenter.busy_changed(True)
    view.enable_inputs.assert_called_with(True, False)
    presenter.busy_changed(False)
    view.enable_inputs.assert_called_with(True, True)


def test_unticking_a_series_excludes_it_and_clear_forgets_everything(dicom_dir):
    presenter, view, ctx, inputs = _setup()
    presenter.add_paths([dicom_dir / "hitachi_shoulder_mr" / "dicom"])
    _run_job(view)
    sid = ctx.state.series[0].id
    presenter.series_ticked(sid, False)
    assert ctx.state.excluded == {sid} and ctx.state.selected_series == []
    presenter.series_ticked(sid, True)
    assert ctx.state.excluded == set() and ctx.selection_changed.emit.call_count == 2
    ctx.state.protect_result = None
    presenter.clear()
    view.cancel_worker.assert_called_once()
    assert inputs.paths == [] and ctx.state.load_result is None and ctx.state.inputs == []
    view.show_tables.assert_called_with([], [], [])
    assert ctx.loaded.emit.call_count == 2


def test_pseudo_labels_on_a_labelled_study_offer_the_study_labels(medmnist_dir, tmp_path):
    import numpy as np

    with np.load(medmnist_dir / "breastmnist.npz") as d:
        np.savez_compressed(tmp_path / "breast.npz", **{k: d[k][:20] for k in d.files})
    presenter, view, ctx, _ = _setup()
    ctx.settings.label_source = "clusters"
    presenter.add_paths([tmp_path / "breast.npz"])
    _run_job(view)
    text, warning, offer = view.show_labels.call_args.args
    assert "pseudo-labels" in text and warning and offer
    presenter.use_study_labels()
    assert ctx.settings.label_source == "auto"
    ctx.save_settings.assert_called_once()
    ctx.settings_replaced.emit.assert_called_once()


def test_clear_keeps_the_result_an_export_is_writing_and_frees_it_otherwise():
    from salm_desktop.gui.context import Context
    from salm_desktop.gui.pages.export_presenter import EXPORT_OWNER

    presenter, _, ctx, _ = _setup()
    marks = {}
    ctx.busy_with = lambda owner: Context.busy_with(SimpleNamespace(_busy=marks), owner)  # the context's own rule
    for exporting, closed in ((True, 0), (False, 1)):
        marks[EXPORT_OWNER] = int(exporting)
        result = mock.Mock()
        ctx.state.protect_result = result
        presenter.clear()
        assert result.close.call_count == closed and ctx.state.protect_result is None
