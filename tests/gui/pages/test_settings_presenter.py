"""The Settings presenter with a mocked view: fields to settings and back, the budget in both units
on a real CT study, which fields apply, saving, and a label change that asks for a reload."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest

from salm_desktop.gui.model import ADVANCED_OPTIONS, WizardSettings, WizardState
from salm_desktop.gui.pages.settings_presenter import (
    PLAIN_FIELDS,
    SettingsPresenter,
    SettingsView,
    apply_fields,
    fields_of,
    read_budget,
)

from presenter_studies import loaded_state  # tests/gui/pages/presenter_studies.py


@pytest.fixture(scope="module")
def ct(dicom_dir):
    return loaded_state([dicom_dir / "ct_3slice_dcmqi" / "dicom"])


class Fields:
    """The page's fields behind the mocked view: what show_fields puts there, read_fields gives back."""

    def __init__(self, view: mock.Mock, settings: WizardSettings) -> None:
        self.values = fields_of(settings)
        view.read_fields.side_effect = lambda: dict(self.values)
        view.show_fields.side_effect = self.values.update


def _setup(state):
    view = mock.Mock(spec=SettingsView)
    ctx = SimpleNamespace(state=state, settings=WizardSettings(), save_settings=mock.Mock(), store=mock.Mock(),
                          settings_changed=mock.Mock())
    return SettingsPresenter(view, ctx), view, ctx, Fields(view, ctx.settings)


def test_fields_round_trip_through_the_settings():
    s = WizardSettings()
    s.n_clusters, s.seed, s.method, s.surrogate, s.epsilon = 5, 7, "em", "not-a-model", 4 / 255
    fields = fields_of(s)
    assert set(fields) == set(PLAIN_FIELDS) | {"epsilon"} | set(ADVANCED_OPTIONS)  # the schema's rare options too
    assert fields["epsilon"] == "4/255" and fields["surrogate"] == "auto"  # an unknown model shows as auto
    t = WizardSettings()
    fields["csv_path"] = "  labels.csv  "
    assert apply_fields(t, fields) == ""
    assert (t.n_clusters, t.seed, t.method, t.surrogate, t.csv_path) == (5, 7, "em", "auto", "labels.csv")
    assert t.epsilon == pytest.approx(4 / 255)
    fields["robust"], fields["mask_scope"] = "pgd", "nonsense"
    assert "mask-scope" in apply_fields(t, fields)  # refused by the core's parser, and said
    assert (t.robust, t.mask_scope) == ("pgd", "")


def test_a_native_budget_is_read_and_shown_in_the_ct_window(ct):
    presenter, view, ctx, fields = _setup(ct)
    fields.values["epsilon"] = "12HU"
    presenter.edited()
    s = ctx.settings
    assert (s.epsilon_native, s.epsilon_unit) == (12.0, "HU")
    view.show_error.assert_called_with("")
    normalized, native = view.show_budget.call_args.args
    (series,) = ct.selected_series
    assert normalized == "±12 HU on every series"
    assert native == (f"In native units: {12 / series.intensity.width:.4f} of CT {series.id[:6]}'s window "
                      f"{series.intensity.low:.4g}..{series.intensity.high:.4g}")
    ctx.save_settings.assert_called_once()
    ctx.settings_changed.emit.assert_called_once()
    assert fields_of(s)["epsilon"] == "12HU"  # shown again as typed


def test_a_bad_budget_is_said_and_the_last_good_one_kept(ct):
    presenter, view, ctx, fields = _setup(ct)
    before = ctx.settings.epsilon
    fields.values["epsilon"] = "lots"
    presenter.edited()
    assert ctx.settings.epsilon == before
    assert view.show_error.call_args.args[0].startswith("Budget: ")
    with pytest.raises(ValueError):
        read_budget("lots", before)


def test_only_the_fields_that_apply_are_enabled():
    presenter, view, _, fields = _setup(WizardState())
    fields.values.update(label_source="csv", method="salm")
    presenter.update_fields()
    view.enable_fields.assert_called_with(csv=True, clusters=False, mask_ratio=True)
    fields.values.update(label_source="clusters", method="em")
    presenter.update_fields()
    view.enable_fields.assert_called_with(csv=False, clusters=True, mask_ratio=False)


def test_showing_settings_is_not_an_edit():
    presenter, view, ctx, fields = _setup(WizardState())

    def edit_while_shown(values):
        fields.values.update(values)
        presenter.edited()  # what a widget's change signal would do while the page fills its fields

    view.show_fields.side_effect = edit_while_shown
    other = WizardSettings()
    other.seed = 99
    presenter.show_settings(other)
    assert fields.values["seed"] == 99
    ctx.save_settings.assert_not_called()
    view.show_notes.assert_called_once()  # then the notes and the budget are shown for the new settings
    view.show_budget.assert_called_once()


def test_a_label_change_asks_for_a_reload_and_other_edits_do_not(ct, tmp_path):
    presenter, view, ctx, fields = _setup(ct)
    fields.values["seed"] = 3
    presenter.labels_edited()
    view.emit_labels_changed.assert_not_called()
    csv = tmp_path / "labels.csv"
    fields.values.update(label_source="csv", csv_path=str(csv))
    presenter.csv_chosen(str(csv))
    ctx.store.set_last_folder.assert_called_once_with("labels", str(csv))
    presenter.labels_edited()
    assert ctx.settings.study_labels() == f"csv:{csv}"
    view.emit_labels_changed.assert_called_once()


def test_notes_name_the_device_and_the_labels(ct):
    presenter, view, ctx, fields = _setup(ct)
    fields.values["device"] = "cpu"
    presenter.refresh_notes()
    labels, device = view.show_notes.call_args.args
    assert device == "Will run on: CPU" and labels
    presenter.replaced()
    ctx.settings_changed.emit.assert_called_once()
