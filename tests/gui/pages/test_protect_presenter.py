"""The Protect presenter with a mocked view: the settings snapshot, a real protection of a small
MedMNIST subset run through the job it builds, the numbers its progress events become, the result in
the wizard state, failure and cancel."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest

from salm_desktop.core.progress import Progress, ProgressEvent
from salm_desktop.gui.model import WizardState
from salm_desktop.gui.pages.protect_presenter import ProtectPresenter, ProtectView

from presenter_studies import loaded_state, tiny_settings  # tests/gui/pages/presenter_studies.py


_settings = tiny_settings


@pytest.fixture(scope="module")
def loaded(breast_study):
    """The BreastMNIST subset (48 training images of 28x28) loaded, not protected yet: the tests protect it."""
    return loaded_state([breast_study[0]], _settings())


class Clock:
    """Seconds that advance one per reading: elapsed times in the texts are then known."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _ctx(state) -> SimpleNamespace:
    return SimpleNamespace(state=state, settings=_settings(), report_error=mock.Mock(), set_busy=mock.Mock(),
                           protected=mock.Mock(), busy_with=lambda owner: False)


def test_nothing_selected_is_refused_and_the_plan_says_load_first():
    view, ctx = mock.Mock(spec=ProtectView), _ctx(WizardState())
    presenter = ProtectPresenter(view, ctx)
    assert not presenter.start()
    ctx.report_error.assert_called_once_with("Nothing to protect", "Load a study and tick at least one series first.")
    view.start_worker.assert_not_called()
    presenter.reset(running=False)
    view.build_table.assert_called_once_with([])
    view.show_plan.assert_called_once_with("Load a study first.")


def test_reset_lists_the_selected_series_and_the_plan_names_the_device(loaded):
    view = mock.Mock(spec=ProtectView)
    presenter = ProtectPresenter(view, _ctx(loaded))
    presenter.reset(running=True)  # a run is going on: nothing changes
    view.build_table.assert_not_called()
    presenter.reset(running=False)
    (rows,), _ = view.build_table.call_args
    (train,) = loaded.selected_series
    assert rows == [(train.id, [mock.ANY, train.description or train.kind, "48", ""])]
    view.clear_log.assert_called_once()
    assert view.show_plan.call_args.args[0].startswith("Will run on: CPU · ")


@pytest.mark.parametrize("method", ["salm-v1", "salm"])  # min-min rounds; the class texture of 8-bit images
def test_a_real_run_fills_the_state_and_the_view(loaded, method):
    view, ctx = mock.Mock(spec=ProtectView), _ctx(loaded)
    ctx.settings.method = method
    presenter = ProtectPresenter(view, ctx, clock=Clock())
    assert presenter.start()
    ctx.settings.max_rounds = 50  # an edit during the run does not reach it: the run has a snapshot
    assert presenter.settings.max_rounds == 2 and presenter.status.max_rounds == 2
    view.show_running.assert_called_once_with(True)
    ctx.set_busy.assert_called_once_with(True)
    first_log = view.append_log.call_args_list[0].args[0]
    assert first_log.startswith("Protecting 1 series (48 images), method salm") and "device CPU, seed 0" in first_log
    (job, on_success), _ = view.start_worker.call_args

    events = []
    run = job(Progress(events.append))
    for event in events:  # what the view's worker would deliver on the UI thread
        presenter.progressed(event)
    assert presenter.events_seen == len(events) > 0
    overall = [c.args[0] for c in view.show_numbers.call_args_list]
    assert overall == sorted(overall) and overall[-1] == 1000
    if method == "salm-v1":
        view.show_curve.assert_called_with([1, 2], mock.ANY, mock.ANY, 2, presenter.settings.stop_accuracy)
    else:  # no rounds: no curve, but a time estimate from the surrogate's epochs, and the variant in the summary
        assert all(c.args[0] == [] for c in view.show_curve.call_args_list)
        assert any(c.args[0].startswith("about ") for c in view.show_eta.call_args_list)
        assert run.result.summary["variant"] == "class texture" and run.result.summary["mask_ratio"] == 0.3
    on_success(run)
    assert loaded.protect_result is run.result and loaded.protect_settings is presenter.settings
    assert loaded.protected_ids == [loaded.selected_series[0].id]
    view.show_all_done.assert_called_once()
    assert view.append_log.call_args_list[-1].args[0].startswith("Done. ")
    view.show_eta.assert_called_with("0 s")
    ctx.protected.emit.assert_called_once()
    view.emit_finished.assert_called_once_with("done")
    presenter.worker_done()
    view.show_running.assert_called_with(False)
    ctx.set_busy.assert_called_with(False)


def test_progress_numbers_use_the_presenter_clock(loaded):
    view = mock.Mock(spec=ProtectView)
    presenter = ProtectPresenter(view, _ctx(loaded), clock=Clock())
    presenter.start()
    presenter.progressed(ProgressEvent("protect", 1, 4, "round 1", {"round": 1}))
    (overall, round_text, _accuracy, elapsed, _eta, message), _ = view.show_numbers.call_args
    assert (overall, round_text, message) == (250, "1 of at most 2", "round 1")
    assert elapsed == "2 s"  # started at 101 s; the event read 102 s and the text 103 s


def test_failure_and_cancel_reset_the_numbers_and_say_why(loaded):
    view, ctx = mock.Mock(spec=ProtectView), _ctx(loaded)
    presenter = ProtectPresenter(view, ctx)
    presenter.failed("out of memory")
    ctx.report_error.assert_called_once_with("Protection failed", "out of memory")
    view.show_message.assert_called_with("Failed: out of memory")
    presenter.status.fraction = 0.04
    presenter.cancelled()
    assert presenter.stopped_at_fraction == 0.04 and presenter.status.fraction == 0.0
    kept = " The previous result is kept." if loaded.protect_result is not None else ""
    view.show_message.assert_called_with("Cancelled." + kept)
    assert view.reset_numbers.call_count == 2
    assert view.emit_finished.call_args_list == [mock.call("failed"), mock.call("cancelled")]
    presenter.cancelling()
    view.append_log.assert_called_with("Cancelling…")
    view.show_cancelling.assert_called_once()
