"""The Settings step's logic (view + presenter): Qt-free, tested with a mocked view.

:class:`SettingsPresenter` turns the page's fields into :class:`~salm_desktop.gui.model.WizardSettings`
and back (the budget in either unit), decides which fields apply, words the budget and the notes,
saves, and says when the label source changed (the study must then be read again). The view
(:class:`~salm_desktop.gui.pages.settings.SettingsPage`) owns the widgets.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..model import WizardSettings, budget_texts, device_text, epsilon_text, labels_summary, parse_epsilon

SURROGATES = ["auto", "cifar_resnet", "small_cnn", "resnet18", "densenet121"]
# the fields shown as they are in WizardSettings (the budget has a text field of its own: "epsilon")
PLAIN_FIELDS = ("label_source", "csv_path", "n_clusters", "method", "mask_ratio", "device", "seed", "pgd_steps",
                "train_steps", "max_rounds", "stop_accuracy", "foreground", "batch_size", "surrogate", "recompute_mask")


class SettingsView(Protocol):
    """What the presenter needs of the page."""

    def read_fields(self) -> dict[str, Any]: ...
    def show_fields(self, fields: dict[str, Any]) -> None: ...
    def show_error(self, text: str) -> None: ...
    def enable_fields(self, csv: bool, clusters: bool, mask_ratio: bool) -> None: ...
    def show_budget(self, normalized: str, native: str) -> None: ...
    def show_notes(self, labels: str, device: str) -> None: ...
    def emit_labels_changed(self) -> None: ...


def fields_of(s: WizardSettings) -> dict[str, Any]:
    """What the page shows for ``s``."""
    fields = {name: getattr(s, name) for name in PLAIN_FIELDS}
    fields["epsilon"] = budget_input_text(s)
    fields["surrogate"] = s.surrogate if s.surrogate in SURROGATES else "auto"
    return fields


def apply_fields(s: WizardSettings, fields: dict[str, Any]) -> str:
    """Put the page's fields into ``s``; returns why the budget was not taken ("" when it was)."""
    error = ""
    try:
        s.epsilon, s.epsilon_native, s.epsilon_unit = read_budget(fields["epsilon"], s.epsilon)
    except ValueError as exc:
        error = f"Budget: {exc}"
    for name in PLAIN_FIELDS:
        setattr(s, name, fields[name])
    s.csv_path = str(fields["csv_path"]).strip()
    return error


class SettingsPresenter:
    def __init__(self, view: SettingsView, ctx: Any) -> None:
        self.view = view
        self.ctx = ctx
        self.showing = False  # the fields are being filled from settings: their change signals are not edits

    def show_settings(self, s: WizardSettings) -> None:
        self.showing = True
        try:
            self.view.show_fields(fields_of(s))
        finally:
            self.showing = False
        self.update_fields()
        self.refresh_budget()
        self.refresh_notes()

    def replaced(self) -> None:
        """ctx.settings changed outside this page (a profile, "use the study's labels"): show them."""
        self.show_settings(self.ctx.settings)
        self.ctx.settings_changed.emit()

    def read_settings(self) -> WizardSettings:
        s = self.ctx.settings
        self.view.show_error(apply_fields(s, self.view.read_fields()))
        return s

    def update_fields(self) -> None:
        fields = self.view.read_fields()
        source = fields["label_source"]
        self.view.enable_fields(csv=source == "csv", clusters=source == "clusters", mask_ratio=fields["method"] != "em")

    def edited(self) -> None:
        if self.showing:
            return
        self.read_settings()
        self.update_fields()
        self.refresh_budget()
        self.refresh_notes()
        self.ctx.save_settings()
        self.ctx.settings_changed.emit()

    def labels_edited(self) -> None:
        """An edit of the label source: the study is read again when the labels it gives change."""
        if self.showing:
            return
        before = self.ctx.settings.study_labels()
        self.edited()
        if self.ctx.settings.study_labels() != before:
            self.view.emit_labels_changed()

    def csv_chosen(self, path: str) -> None:
        self.ctx.store.set_last_folder("labels", path)

    def refresh_notes(self) -> None:
        """The labels the loaded study will be protected with (and whether they fit), and the device
        that "Automatic" resolves to here."""
        text, warning = labels_summary(self.ctx.settings, self.ctx.state.selected_series)
        device = self.view.read_fields()["device"] or "auto"
        self.view.show_notes("\n".join(t for t in (text, warning) if t), f"Will run on: {device_text(device)}")

    def refresh_budget(self) -> None:
        s, series = self.ctx.settings, self.ctx.state.selected_series
        normalized, native = budget_texts(s.epsilon, series)
        if s.epsilon_native > 0:
            normalized, native = native_budget_texts(s, series)
        self.view.show_budget(normalized, f"In native units: {native}")


# -- budget in native units (issue 13) ---------------------------------------------------------------

def read_budget(text: str, current: float) -> tuple[float, float, str]:
    """The budget field -> (fraction of the window, native budget or 0, native unit); ValueError if unusable.

    "8/255", "0.03" or "8" (= 8/255) as before; "12HU" / "30native" in native units."""
    from salm_desktop.core.options import NATIVE_UNITS, OptionError
    from salm_desktop.core.options import parse_epsilon as parse_budget

    if any(str(text).strip().lower().endswith(suffix) for suffix in NATIVE_UNITS):
        try:
            _, native, unit = parse_budget(text, "the budget")
        except OptionError as exc:
            raise ValueError(str(exc)) from None
        return current, float(native), unit
    return parse_epsilon(text), 0.0, ""


def budget_input_text(s: WizardSettings) -> str:
    if s.epsilon_native > 0:
        return f"{s.epsilon_native:g}{s.epsilon_unit or 'native'}"
    return epsilon_text(s.epsilon)


def native_budget_texts(s: WizardSettings, series) -> tuple[str, str]:  # noqa: ANN001
    """("±12 HU on every series", "= 0.03 of the window (C40/W400) …") for a native budget."""
    unit = f" {s.epsilon_unit}" if s.epsilon_unit else " (native units)"
    parts = []
    for ser in list(series)[:6]:
        try:
            intensity = ser.intensity
        except Exception:  # noqa: BLE001 - a lazy map that cannot be computed
            continue
        if s.epsilon_unit and intensity.unit != s.epsilon_unit:
            parts.append(f"{ser.modality} {ser.id[:6]}: not in {s.epsilon_unit}, the job will refuse it")
            continue
        parts.append(f"{s.epsilon_native / intensity.width:.4f} of {ser.modality} {ser.id[:6]}'s window "
                     f"{intensity.low:.4g}..{intensity.high:.4g}")
    return f"±{s.epsilon_native:g}{unit} on every series", "; ".join(parts) if parts else "(load a study first)"
