"""The Preview presenter with a mocked view: the series on screen, real SALM masks of a real MR study
computed through the job it builds, the mask cache, one job at a time, the ratio kept in the settings."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest

from salm_desktop.core.progress import Progress
from salm_desktop.gui.model import WizardSettings, WizardState
from salm_desktop.gui.pages.preview_presenter import MASK_CACHE_SIZE, PreviewPresenter, PreviewView, mask_status_text

from presenter_studies import loaded_state  # tests/gui/pages/presenter_studies.py


@pytest.fixture(scope="module")
def shoulder(dicom_dir):
    return loaded_state([dicom_dir / "hitachi_shoulder_mr" / "dicom"])


def _setup(state, ratio: float = 0.2):
    view = mock.Mock(spec=PreviewView)
    view.chosen_series_id.return_value = state.selected_series[0].id if state.selected_series else None
    view.current_frame.return_value = 0
    view.mask_ratio_value.return_value = ratio
    view.mask_job_running.return_value = False
    settings = WizardSettings()
    settings.device, settings.mask_ratio = "cpu", ratio
    ctx = SimpleNamespace(state=state, settings=settings, save_settings=mock.Mock())
    return PreviewPresenter(view, ctx), view, ctx


def _compute(presenter, view):
    presenter.start_mask()
    job, on_ready, _on_failed, on_finished = view.start_mask_job.call_args.args
    on_ready(job(Progress()))
    on_finished()


def test_the_chosen_series_is_shown_and_its_mask_asked_for(shoulder):
    presenter, view, _ = _setup(shoulder)
    presenter.refresh_series()
    (series,) = shoulder.selected_series
    (choices, current), _ = view.show_series_choices.call_args
    assert choices == [(mock.ANY, series.id)] and choices[0][0].endswith(" · 4 images") and current == series.id
    frames, window = view.show_frames.call_args.args
    assert frames.series is series and window == (series.intensity.low, series.intensity.high)
    view.show_mask_status.assert_called_with("Computing the mask…")
    view.start_debounce.assert_called_once()
    assert presenter.current_mask() is None


def test_a_real_mask_is_computed_cached_and_described(shoulder):
    presenter, view, _ = _setup(shoulder, ratio=0.2)
    presenter.series_chosen()
    _compute(presenter, view)
    mask = presenter.current_mask()
    sample = shoulder.selected_series[0].samples[presenter.frames.sample_index(0)]
    assert mask is not None and mask.dtype == bool and mask.shape == sample.shape
    assert abs(mask.mean() - 0.2) < 0.01  # the top 20 % of the pixels
    view.show_mask_status.assert_called_with(mask_status_text(mask, 0.2, "salm"))
    assert view.show_mask_status.call_args.args[0].startswith(f"Mask: {100 * mask.mean():.1f} % of this image's")
    view.emit_mask_updated.assert_called_once()
    assert presenter.mask_for_frame(0).shape == mask.shape
    # asked again: from the cache at once, no new job
    view.reset_mock()
    presenter.request_mask()
    view.start_debounce.assert_not_called()
    view.render.assert_called_once()
    presenter.start_mask()
    view.start_mask_job.assert_not_called()


def test_a_request_during_a_job_waits_for_it_and_then_runs(shoulder):
    presenter, view, _ = _setup(shoulder)
    presenter.series_chosen()
    view.mask_job_running.return_value = True
    presenter.start_mask()
    view.start_mask_job.assert_not_called()
    assert presenter.pending == presenter.key()
    view.mask_job_running.return_value = False
    presenter.mask_job_done()  # the running job ended without this mask: the waiting one starts
    view.start_mask_job.assert_called_once()
    assert presenter.pending is None


def test_the_ratio_is_kept_in_the_settings_and_mirrored(shoulder):
    presenter, view, ctx = _setup(shoulder, ratio=0.2)
    presenter.ratio_changed(0.35)
    assert ctx.settings.mask_ratio == 0.35
    ctx.save_settings.assert_called_once()
    view.emit_mask_ratio_changed.assert_called_once_with(0.35)
    presenter.ratio_changed(0.35)  # the same value again: nothing to save
    ctx.save_settings.assert_called_once()
    presenter.settings_changed()  # the Settings page changed it: the control follows
    view.set_mask_ratio.assert_called_once_with(0.35)


def test_a_failed_mask_is_counted_and_said():
    presenter, view, _ = _setup(WizardState())
    presenter.mask_failed("CUDA out of memory")
    assert presenter.mask_errors == 1
    view.show_mask_status.assert_called_once_with("The mask preview is not available: CUDA out of memory")
    assert presenter.key() is None and presenter.mask_for_frame(0) is None


def test_the_cache_keeps_the_newest_masks(shoulder):
    presenter, view, _ = _setup(shoulder)
    for n in range(MASK_CACHE_SIZE + 1):
        presenter.mask_ready((("other", n), np.zeros((2, 2))))
    assert len(presenter.masks) == MASK_CACHE_SIZE and ("other", 0) not in presenter.masks
    view.emit_mask_updated.assert_not_called()  # none of them is the mask on screen


def test_the_status_words_for_em_and_random():
    mask = np.zeros((10, 10), bool)
    mask[:3] = True
    assert mask_status_text(mask, 0.3, "salm") == "Mask: 30.0 % of this image's pixels may change (mask ratio 0.30)."
    assert mask_status_text(mask, 0.3, "em").startswith("EM changes every pixel (30.0 % shown)")
    assert mask_status_text(mask, 0.3, "random").endswith("at random places instead of these.")
