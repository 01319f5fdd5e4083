"""The Review presenter with a mocked view: the series offered, the window, a real fidelity
measurement of a real protection (MedMNIST subset), the difference map's wording and the flicker."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest

from salm_desktop.core.progress import Progress
from salm_desktop.gui.model import WizardState
from salm_desktop.gui.pages.review_presenter import ReviewPresenter, ReviewView


@pytest.fixture
def protected(protected_breast):
    """The BreastMNIST subset (48 training images of 28x28), loaded and protected once for the presenter tests."""
    return protected_breast[0]


def _view(chosen: str | None = None) -> mock.Mock:
    view = mock.Mock(spec=ReviewView)
    view.chosen_series_id.return_value = chosen
    return view


def test_nothing_protected_offers_nothing_and_measures_nothing():
    view = _view()
    ReviewPresenter(view, SimpleNamespace(state=WizardState())).refresh()
    view.show_series_choices.assert_called_once_with([])
    view.show_series.assert_called_once_with(None, None, None)
    view.start_fidelity.assert_not_called()


def test_the_protected_series_is_shown_with_its_window_and_its_fidelity_measured(protected):
    (train,) = protected.selected_series
    view = _view(train.id)
    presenter = ReviewPresenter(view, SimpleNamespace(state=protected))
    presenter.refresh()
    ((text, sid),) = view.show_series_choices.call_args.args[0]
    assert sid == train.id and text.endswith(f" · {train.description or train.kind}")
    view.show_series.assert_called_once_with(train, protected.protect_result, (train.intensity.low, train.intensity.high))
    view.show_fidelity_status.assert_called_once_with("Measuring fidelity…")
    view.stop_fidelity.assert_called_once()  # a measurement still running for the last result is stopped first
    job, on_done, on_failed = view.start_fidelity.call_args.args
    numbers = job(Progress())
    on_done(numbers)
    assert set(presenter.fidelity) == {train.id} and presenter.fidelity[train.id]["psnr_db"] > 20
    rows, status = view.show_fidelity.call_args.args
    assert len(rows) == 1 and status == "Measured on every image."
    view.emit_fidelity_ready.assert_called_once()
    on_failed("out of memory")
    view.show_fidelity_status.assert_called_with("Fidelity not available: out of memory")


def test_a_subset_measurement_names_the_series(protected):
    (train,) = protected.selected_series
    view = _view()
    presenter = ReviewPresenter(view, SimpleNamespace(state=protected))
    presenter.fidelity_done({train.id: {"psnr_db": 40.0, "samples_measured": 8.0}})
    assert view.show_fidelity.call_args.args[1] == f"Measured on an evenly spaced subset of images for: {train.id}"


def test_the_difference_scale_is_worded_against_the_scans_noise(protected):
    (train,) = protected.selected_series
    calls = []

    def noise(series):
        calls.append(series.id)
        return 4.0

    presenter = ReviewPresenter(_view(), SimpleNamespace(state=protected), noise_sd=noise)
    assert presenter.difference_text(train, 8.0) == "Difference map: full colour = ±8 = 2.00 × the scan's noise SD (4)"
    presenter.difference_text(train, 2.0)
    assert calls == [train.id]  # measured once per series
    quiet = ReviewPresenter(_view(), SimpleNamespace(state=protected), noise_sd=lambda s: None)
    assert quiet.difference_text(train, 8.0) == "Difference map: full colour = ±8"
    broken = ReviewPresenter(_view(), SimpleNamespace(state=protected), noise_sd=lambda s: 1 / 0)
    assert broken.difference_text(train, 8.0) == "Difference map: full colour = ±8"


def test_the_real_noise_estimate_of_the_series_is_used_by_default(protected):
    from salm_desktop.core.protect.engine import series_noise_sd

    (train,) = protected.selected_series
    noise = series_noise_sd(train)
    text = ReviewPresenter(_view(), SimpleNamespace(state=protected)).difference_text(train, 8.0)
    assert text == ("Difference map: full colour = ±8" + (f" = {8.0 / noise:.2f} × the scan's noise SD ({noise:.3g})"
                                                          if noise else ""))


def test_flicker_alternates_and_stopping_shows_the_original():
    view = _view()
    presenter = ReviewPresenter(view, SimpleNamespace(state=WizardState()))
    presenter.flicker_tick()
    presenter.flicker_tick()
    presenter.flicker_tick()
    assert [c.kwargs["original"] for c in view.show_left.call_args_list] == [False, True, False]
    presenter.flicker_toggled(True)
    assert view.show_left.call_count == 3  # starting changes nothing by itself
    presenter.flicker_toggled(False)
    assert not presenter.flicker_phase and view.show_left.call_args.kwargs == {"original": True}


def test_clear_stops_the_measurement_and_forgets_it():
    view = _view()
    presenter = ReviewPresenter(view, SimpleNamespace(state=WizardState()))
    presenter.fidelity = {"x": {"psnr_db": 40.0}}
    presenter.clear()
    view.stop_fidelity.assert_called_once()
    assert presenter.fidelity == {}
