"""Step 2: labels and protection settings (budget in normalized and native units, device, seed)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..context import Context
from ..model import (
    ADVANCED_OPTIONS,
    LABEL_SOURCES,
    METHODS,
    WizardSettings,
    budget_texts,
    device_choices,
    device_text,
    epsilon_text,
    labels_summary,
    option_error,
    option_help,
    parse_epsilon,
)
from ..widgets import heading, hint

SURROGATES = ["auto", "cifar_resnet", "small_cnn", "resnet18", "densenet121"]
MASK_MODES = [("never", "Fixed after the first step"), ("round", "Recomputed every round"), ("step", "Recomputed every step")]


class SettingsPage(QWidget):
    labels_changed = Signal()  # the label source changed: the study must be re-read

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self._loading = False

        self.label_source = QComboBox()
        for key, text in LABEL_SOURCES:
            self.label_source.addItem(text, key)
        self.csv_path = QLineEdit()
        self.csv_path.setPlaceholderText("CSV with columns path (or SeriesInstanceUID), label")
        self.csv_button = QPushButton("Choose CSV…")
        self.n_clusters = QSpinBox()
        self.n_clusters.setRange(2, 20)
        self.method = QComboBox()
        for key, text in METHODS:
            self.method.addItem(text, key)
        self.epsilon = QLineEdit()
        self.epsilon.setToolTip("Largest change per pixel: a fraction of the reader's window (the file's own "
                                "window; CT without one: W400; 8-bit: 0..255), e.g. 8/255, or native units, e.g. 12HU")
        self.budget_normalized = QLabel()
        self.budget_native = QLabel()
        self.budget_native.setWordWrap(True)
        self.mask_ratio = QDoubleSpinBox()
        self.mask_ratio.setRange(0.01, 1.0)
        self.mask_ratio.setSingleStep(0.01)
        self.mask_ratio.setDecimals(2)
        self.mask_ratio.setToolTip("Fraction of each image's pixels SALM may change (1.0 = plain EM)")
        self.device = QComboBox()
        for key, text in device_choices():
            self.device.addItem(text, key)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.labels_note = QLabel("")  # what the labels will be for the loaded study
        self.labels_note.setWordWrap(True)
        self.device_note = QLabel("")  # the device that will really run
        self.device_note.setObjectName("device_note")

        self.advanced = QGroupBox("Advanced")
        self.advanced.setCheckable(True)
        self.advanced.setChecked(False)
        self.pgd_steps = QSpinBox()
        self.pgd_steps.setRange(1, 1000)
        self.train_steps = QSpinBox()
        self.train_steps.setRange(0, 10000)
        self.max_rounds = QSpinBox()
        self.max_rounds.setRange(1, 1000)
        self.stop_accuracy = QDoubleSpinBox()
        self.stop_accuracy.setRange(0.5, 1.0)
        self.stop_accuracy.setSingleStep(0.01)
        self.foreground = QCheckBox("Only inside the body (foreground) mask")
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 4096)
        self.surrogate = QComboBox()
        self.surrogate.addItems(SURROGATES)
        self.recompute_mask = QComboBox()
        for key, text in MASK_MODES:
            self.recompute_mask.addItem(text, key)
        adv = QFormLayout()
        adv.addRow("Perturbation steps per round", self.pgd_steps)
        adv.addRow("Surrogate training steps per round", self.train_steps)
        adv.addRow("Most rounds", self.max_rounds)
        adv.addRow("Stop at surrogate accuracy", self.stop_accuracy)
        adv.addRow("SALM mask", self.recompute_mask)
        adv.addRow("", self.foreground)
        adv.addRow("Batch size", self.batch_size)
        adv.addRow("Surrogate model", self.surrogate)
        self.option_edits: dict[str, QLineEdit] = {}  # the schema's rare options, typed as on the command line
        for key in ADVANCED_OPTIONS:
            edit = self.option_edits[key] = QLineEdit()
            edit.setPlaceholderText("engine default")
            edit.setToolTip(option_help(key))
            adv.addRow(key.replace("_", " ").capitalize(), edit)
        self.advanced_body = QWidget()
        self.advanced_body.setLayout(adv)
        box_layout = QVBoxLayout(self.advanced)
        box_layout.addWidget(self.advanced_body)
        self.advanced.toggled.connect(self.advanced_body.setVisible)
        self.advanced_body.setVisible(False)

        csv_row = QHBoxLayout()
        csv_row.addWidget(self.csv_path, 1)
        csv_row.addWidget(self.csv_button)
        self.csv_widget = QWidget()
        self.csv_widget.setLayout(csv_row)
        csv_row.setContentsMargins(0, 0, 0, 0)
        budget = QVBoxLayout()
        budget.addWidget(self.epsilon)
        budget.addWidget(self.budget_normalized)
        budget.addWidget(self.budget_native)

        form = QFormLayout()
        form.addRow("Labels", self.label_source)
        form.addRow("", self.labels_note)
        form.addRow("Labels file", self.csv_widget)
        form.addRow("Pseudo-label clusters", self.n_clusters)
        form.addRow("Method", self.method)
        form.addRow("Budget (L∞)", budget)
        form.addRow("Mask ratio", self.mask_ratio)
        form.addRow("Device", self.device)
        form.addRow("", self.device_note)
        form.addRow("Seed", self.seed)
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #b00020")

        layout = QVBoxLayout(self)
        layout.addWidget(heading("2. Labels and settings"))
        layout.addWidget(hint("The defaults are a good start. The budget is the largest change any pixel may get, "
                              "shown in the normalized scale and in the study's own units."))
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.advanced)
        layout.addStretch(1)

        self.show_settings(ctx.settings)
        for w in (self.method, self.device, self.surrogate, self.recompute_mask):
            w.currentIndexChanged.connect(self._edited)
        self.label_source.currentIndexChanged.connect(self._labels_edited)
        self.csv_path.editingFinished.connect(self._labels_edited)
        self.csv_button.clicked.connect(self._choose_csv)
        self.epsilon.editingFinished.connect(self._edited)
        for edit in self.option_edits.values():
            edit.editingFinished.connect(self._edited)
        for w in (self.mask_ratio, self.stop_accuracy):
            w.valueChanged.connect(self._edited)
        for w in (self.n_clusters, self.seed, self.pgd_steps, self.train_steps, self.max_rounds, self.batch_size):
            w.valueChanged.connect(self._edited)
        self.foreground.toggled.connect(self._edited)
        ctx.loaded.connect(self.refresh_budget)
        ctx.selection_changed.connect(self.refresh_budget)
        ctx.loaded.connect(self.refresh_notes)
        ctx.selection_changed.connect(self.refresh_notes)
        ctx.settings_replaced.connect(self._replaced)

    # -- settings <-> widgets -------------------------------------------------------------------
    @staticmethod
    def _select(combo: QComboBox, key: str) -> None:
        index = combo.findData(key)
        if index < 0 and combo.count() and key.startswith("cuda"):
            index = combo.findData("auto")
        combo.setCurrentIndex(max(index, 0))

    def show_settings(self, s: WizardSettings) -> None:
        self._loading = True
        try:
            self._select(self.label_source, s.label_source)
            self.csv_path.setText(s.csv_path)
            self.n_clusters.setValue(s.n_clusters)
            self._select(self.method, s.method)
            self.epsilon.setText(budget_input_text(s))
            self.mask_ratio.setValue(s.mask_ratio)
            self._select(self.device, s.device)
            self.seed.setValue(s.seed)
            self.pgd_steps.setValue(s.pgd_steps)
            self.train_steps.setValue(s.train_steps)
            self.max_rounds.setValue(s.max_rounds)
            self.stop_accuracy.setValue(s.stop_accuracy)
            self.foreground.setChecked(s.foreground)
            self.batch_size.setValue(s.batch_size)
            self.surrogate.setCurrentText(s.surrogate if s.surrogate in SURROGATES else "auto")
            self._select(self.recompute_mask, s.recompute_mask)
            for key, edit in self.option_edits.items():
                edit.setText(getattr(s, key))
        finally:
            self._loading = False
        self._update_visibility()
        self.refresh_budget()
        self.refresh_notes()

    def _replaced(self) -> None:
        self.show_settings(self.ctx.settings)
        self.ctx.settings_changed.emit()

    def refresh_notes(self) -> None:
        """The labels the loaded study will be protected with (and whether they fit), and the device
        that "Automatic" resolves to here."""
        text, warning = labels_summary(self.ctx.settings, self.ctx.state.selected_series)
        self.labels_note.setText("\n".join(t for t in (text, warning) if t))
        self.device_note.setText(f"Will run on: {device_text(self.device.currentData() or 'auto')}")

    def read_settings(self) -> WizardSettings:
        s = self.ctx.settings
        try:
            s.epsilon, s.epsilon_native, s.epsilon_unit = read_budget(self.epsilon.text(), s.epsilon)
            self.error_label.setText("")
        except ValueError as exc:
            self.error_label.setText(f"Budget: {exc}")
        s.label_source = self.label_source.currentData()
        s.csv_path = self.csv_path.text().strip()
        s.n_clusters = self.n_clusters.value()
        s.method = self.method.currentData()
        s.mask_ratio = self.mask_ratio.value()
        s.device = self.device.currentData()
        s.seed = self.seed.value()
        s.pgd_steps = self.pgd_steps.value()
        s.train_steps = self.train_steps.value()
        s.max_rounds = self.max_rounds.value()
        s.stop_accuracy = self.stop_accuracy.value()
        s.foreground = self.foreground.isChecked()
        s.batch_size = self.batch_size.value()
        s.surrogate = self.surrogate.currentText()
        s.recompute_mask = self.recompute_mask.currentData()
        for key, edit in self.option_edits.items():
            error = option_error(key, edit.text())
            if error:
                self.error_label.setText(error)
            else:
                setattr(s, key, edit.text().strip())
        return s

    def _update_visibility(self) -> None:
        source = self.label_source.currentData()
        self.csv_widget.setEnabled(source == "csv")
        self.n_clusters.setEnabled(source == "clusters")
        self.mask_ratio.setEnabled(self.method.currentData() != "em")

    def _edited(self) -> None:
        if self._loading:
            return
        self.read_settings()
        self._update_visibility()
        self.refresh_budget()
        self.refresh_notes()
        self.ctx.save_settings()
        self.ctx.settings_changed.emit()

    def _labels_edited(self) -> None:
        if self._loading:
            return
        before = self.ctx.settings.study_labels()
        self._edited()
        if self.ctx.settings.study_labels() != before:
            self.labels_changed.emit()

    def _choose_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Labels CSV", self.ctx.store.last_folder("labels"),
                                              "CSV (*.csv);;All files (*)")
        if path:
            self.ctx.store.set_last_folder("labels", path)
            self.csv_path.setText(path)
            self._select(self.label_source, "csv")
            self._labels_edited()

    def set_mask_ratio(self, value: float) -> None:
        """Mirror of the Preview page's mask ratio control."""
        if abs(self.mask_ratio.value() - value) > 1e-9:
            self.mask_ratio.setValue(value)

    def refresh_budget(self) -> None:
        normalized, native = budget_texts(self.ctx.settings.epsilon, self.ctx.state.selected_series)
        if self.ctx.settings.epsilon_native > 0:
            normalized, native = native_budget_texts(self.ctx.settings, self.ctx.state.selected_series)
        self.budget_normalized.setText(normalized)
        self.budget_native.setText(f"In native units: {native}")


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
