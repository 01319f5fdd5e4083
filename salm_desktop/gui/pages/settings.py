"""Step 2: labels and protection settings (budget in normalized and native units, device, seed).

The view: the fields. What they mean is :class:`~salm_desktop.gui.pages.settings_presenter.SettingsPresenter`.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
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
from ..model import ADVANCED_OPTIONS, LABEL_SOURCES, METHODS, WizardSettings, device_choices, option_help
from ..widgets import form_layout, page_layout
from .settings_presenter import SURROGATES, SettingsPresenter
MASK_MODES = [("never", "Fixed after the first step"), ("round", "Recomputed every round"), ("step", "Recomputed every step")]


class SettingsPage(QWidget):
    labels_changed = Signal()  # the label source changed: the study must be re-read

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.presenter = SettingsPresenter(self, ctx)

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
        self.mask_ratio.setRange(0.0, 1.0)  # 0 = auto (the variant's own ratio)
        self.mask_ratio.setSpecialValueText("auto")
        self.mask_ratio.setSingleStep(0.01)
        self.mask_ratio.setDecimals(2)
        self.mask_ratio.setToolTip("Fraction of each image's pixels SALM may change; auto: 0.3 for the class "
                                   "texture on 2D 8-bit images, 0.2 for CT, MR and 3D (1.0 = plain EM)")
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
        adv = form_layout([
            ("Perturbation steps per round", self.pgd_steps), ("Surrogate training steps per round", self.train_steps),
            ("Most rounds", self.max_rounds), ("Stop at surrogate accuracy", self.stop_accuracy),
            ("SALM mask", self.recompute_mask), ("", self.foreground), ("Batch size", self.batch_size),
            ("Surrogate model", self.surrogate),
        ])
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

        form = form_layout([
            ("Labels", self.label_source), ("", self.labels_note), ("Labels file", self.csv_widget),
            ("Pseudo-label clusters", self.n_clusters), ("Method", self.method), ("Budget (L∞)", budget),
            ("Mask ratio", self.mask_ratio), ("Device", self.device), ("", self.device_note), ("Seed", self.seed),
        ])
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #b00020")

        layout = page_layout(self, "2. Labels and settings",
                             "The defaults are a good start. The budget is the largest change any pixel may get, "
                             "shown in the normalized scale and in the study's own units.")
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.advanced)
        layout.addStretch(1)

        # field name in WizardSettings -> (widget, how to read it, how to show a value)
        self._fields = {
            "label_source": (self.label_source, self.label_source.currentData, lambda v: self._select(self.label_source, v)),
            "csv_path": (self.csv_path, self.csv_path.text, self.csv_path.setText),
            "method": (self.method, self.method.currentData, lambda v: self._select(self.method, v)),
            "epsilon": (self.epsilon, self.epsilon.text, self.epsilon.setText),
            "device": (self.device, self.device.currentData, lambda v: self._select(self.device, v)),
            "foreground": (self.foreground, self.foreground.isChecked, self.foreground.setChecked),
            "surrogate": (self.surrogate, self.surrogate.currentText, self.surrogate.setCurrentText),
            "recompute_mask": (self.recompute_mask, self.recompute_mask.currentData,
                               lambda v: self._select(self.recompute_mask, v)),
        }
        for name in ("n_clusters", "mask_ratio", "seed", "pgd_steps", "train_steps", "max_rounds", "stop_accuracy",
                     "batch_size"):
            box = getattr(self, name)
            self._fields[name] = (box, box.value, box.setValue)
        for key, edit in self.option_edits.items():
            self._fields[key] = (edit, edit.text, edit.setText)

        self.show_settings(ctx.settings)
        for w in (self.method, self.device, self.surrogate, self.recompute_mask):
            w.currentIndexChanged.connect(self.presenter.edited)
        self.label_source.currentIndexChanged.connect(self.presenter.labels_edited)
        self.csv_path.editingFinished.connect(self.presenter.labels_edited)
        self.csv_button.clicked.connect(self._choose_csv)
        self.epsilon.editingFinished.connect(self.presenter.edited)
        for edit in self.option_edits.values():
            edit.editingFinished.connect(self.presenter.edited)
        for w in (self.mask_ratio, self.stop_accuracy, self.n_clusters, self.seed, self.pgd_steps, self.train_steps,
                  self.max_rounds, self.batch_size):
            w.valueChanged.connect(self.presenter.edited)
        self.foreground.toggled.connect(self.presenter.edited)
        ctx.loaded.connect(self.presenter.refresh_budget)
        ctx.selection_changed.connect(self.presenter.refresh_budget)
        ctx.loaded.connect(self.presenter.refresh_notes)
        ctx.selection_changed.connect(self.presenter.refresh_notes)
        ctx.settings_replaced.connect(self.presenter.replaced)

    # -- settings <-> widgets -------------------------------------------------------------------
    @staticmethod
    def _select(combo: QComboBox, key: str) -> None:
        index = combo.findData(key)
        if index < 0 and combo.count() and key.startswith("cuda"):
            index = combo.findData("auto")
        combo.setCurrentIndex(max(index, 0))

    def show_settings(self, s: WizardSettings) -> None:
        self.presenter.show_settings(s)

    def read_settings(self) -> WizardSettings:
        return self.presenter.read_settings()

    def refresh_budget(self) -> None:
        self.presenter.refresh_budget()

    def refresh_notes(self) -> None:
        self.presenter.refresh_notes()

    def _choose_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Labels CSV", self.ctx.store.last_folder("labels"),
                                              "CSV (*.csv);;All files (*)")
        if path:
            self.presenter.csv_chosen(path)
            self.csv_path.setText(path)
            self._select(self.label_source, "csv")
            self.presenter.labels_edited()

    def set_mask_ratio(self, value: float) -> None:
        """Mirror of the Preview page's mask ratio control."""
        if abs(self.mask_ratio.value() - value) > 1e-9:
            self.mask_ratio.setValue(value)

    # -- SettingsView: what the presenter asks of the page -------------------------------------------
    def read_fields(self) -> dict:
        return {name: read() for name, (_, read, _show) in self._fields.items()}

    def show_fields(self, fields: dict) -> None:
        for name, value in fields.items():
            self._fields[name][2](value)

    def show_error(self, text: str) -> None:
        self.error_label.setText(text)

    def enable_fields(self, csv: bool, clusters: bool, mask_ratio: bool) -> None:
        self.csv_widget.setEnabled(csv)
        self.n_clusters.setEnabled(clusters)
        self.mask_ratio.setEnabled(mask_ratio)

    def show_budget(self, normalized: str, native: str) -> None:
        self.budget_normalized.setText(normalized)
        self.budget_native.setText(native)

    def show_notes(self, labels: str, device: str) -> None:
        self.labels_note.setText(labels)
        self.device_note.setText(device)

    def emit_labels_changed(self) -> None:
        self.labels_changed.emit()
