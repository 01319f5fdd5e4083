"""The export step's de-identification panel (issue 15 item 5).

Shows the profile and the steward's options (CID 7050), a preview of the attributes that change in one
file of the loaded study (before -> after, from the same core de-identifier the export runs), asks
for the operator and the purpose (they go into the officer report), and says where the private
steward record goes. The panel only gathers choices; the export page passes ``job_kwargs()`` to the
job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from salm_desktop.core.export.deid import DeidError, DeidOptions, default_steward_dir
from salm_desktop.core.export.deid_preview import first_dicom_file, preview_file
from salm_desktop.core.export.officer_report import ReleaseInfo

from .widgets import fill_table, hint, make_table

# (DeidOptions field, check-box text); the codes are PS3.16 CID 7050
OPTION_BOXES = (
    ("retain_dates", "Keep dates, shifted per patient (113107)"),
    ("retain_patient_characteristics", "Keep sex, age, size, weight (113108)"),
    ("retain_device_identity", "Keep device serial numbers and station name (113109)"),
    ("clean_descriptors", "Keep descriptions, cleaned of identifiers (113105)"),
    ("retain_safe_private", "Keep private attributes PS3.15 lists as safe (113111)"),
    ("allow_burned_in", "Also write files that may show burned-in text (I checked their pixels)"),
)
KEEP_IDENTITY_WARNING = ("IDENTITY KEPT: not for release outside the hospital. Names, IDs, dates and links to the "
                         "original images stay in the copy.")
PREVIEW_COLUMNS = ("attribute", "change", "before", "after", "tag")
# shown first: what identifies the patient and links the copy to the originals
FIRST = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName", "ReferringPhysicianName",
         "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


class DeidPanel(QGroupBox):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("De-identification and release record", parent)
        self.setObjectName("deid_panel")
        self._files: list[Path] = []
        self._destination: Path | None = None
        self.preview_source: Path | None = None

        self.profile = QLabel("")
        self.profile.setObjectName("deid_profile")
        self.profile.setWordWrap(True)
        self.boxes: dict[str, QCheckBox] = {}
        options = QHBoxLayout()  # two columns: the page must still fit a laptop screen
        columns = (QVBoxLayout(), QVBoxLayout())
        for i, (name, text) in enumerate(OPTION_BOXES):
            box = QCheckBox(text)
            box.setObjectName(f"deid_{name}")
            self.boxes[name] = box
            columns[i % 2].addWidget(box)
            box.toggled.connect(self._options_changed)
        self.keep_identity = QCheckBox("Do NOT de-identify (internal use only)")
        self.keep_identity.setObjectName("deid_keep_identity")
        self.keep_identity.toggled.connect(self._options_changed)
        columns[0].addWidget(self.keep_identity)
        columns[1].addStretch(1)
        for column in columns:
            options.addLayout(column)
        self.warning = QLabel("")
        self.warning.setObjectName("deid_warning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #b00000; font-weight: bold")

        self.operator = QLineEdit()
        self.operator.setObjectName("release_operator")
        self.operator.setPlaceholderText("Your name (printed in the officer report)")
        self.purpose = QLineEdit()
        self.purpose.setObjectName("release_purpose")
        self.purpose.setPlaceholderText("What the release is for, and for whom")
        self.steward = QLineEdit()
        self.steward.setObjectName("steward_record")
        self.steward_note = QLabel("")
        self.steward_note.setObjectName("steward_note")
        self.steward_note.setWordWrap(True)
        self.steward.textChanged.connect(self._show_steward)

        self.preview_label = QLabel("")
        self.preview_label.setObjectName("deid_preview_label")
        self.preview_label.setWordWrap(True)
        self.preview = make_table()
        self.preview.setObjectName("deid_preview")
        self.preview.setMinimumHeight(120)

        form = QFormLayout()
        form.addRow("Profile", self.profile)
        form.addRow("Options", options)
        form.addRow("", self.warning)
        who = QHBoxLayout()  # one row: the export page must fit a laptop screen
        who.addWidget(self.operator, 1)
        who.addWidget(QLabel("Purpose"))
        who.addWidget(self.purpose, 2)
        form.addRow("Operator", who)
        steward = QHBoxLayout()
        steward.addWidget(self.steward, 1)
        form.addRow("Private record", steward)
        form.addRow("", self.steward_note)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.preview_label)
        layout.addWidget(self.preview, 1)
        layout.addWidget(hint("The officer report (officer-report.pdf in the release) lists all of this on its first "
                              "page for the data-protection officer to sign."))
        self._options_changed()

    # -- what the export needs ---------------------------------------------------------------------------
    def options(self) -> DeidOptions:
        return DeidOptions(keep_identity=self.keep_identity.isChecked(),
                           **{name: box.isChecked() for name, box in self.boxes.items()})

    def release_info(self) -> ReleaseInfo:
        return ReleaseInfo(self.operator.text(), self.purpose.text())

    def steward_record(self) -> Path | None:
        text = self.steward.text().strip()
        return Path(text).expanduser() if text else None

    def job_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``run_protect_job`` for the choices made here."""
        kwargs: dict[str, Any] = {"deid": self.options(), "release_info": self.release_info()}
        if self.steward_record() is not None and not self.keep_identity.isChecked():
            kwargs["steward_record"] = self.steward_record()
        return kwargs

    # -- the study and the destination -------------------------------------------------------------------
    def set_study(self, files: Iterable[Path]) -> None:
        self._files = [Path(f) for f in files]
        self.preview_source = first_dicom_file(self._files)
        self.refresh_preview()

    def set_destination(self, out: Path | str | None) -> None:
        self._destination = Path(out).expanduser() if out else None
        self._show_steward()

    def _show_steward(self) -> None:
        if self.keep_identity.isChecked():
            self.steward_note.setText("No private record: identity is kept, the UID map stays in the copy's manifest.")
            return
        chosen = self.steward_record()
        where = chosen or (default_steward_dir(self._destination) if self._destination is not None else None)
        self.steward.setPlaceholderText(f"Default: {where}" if where else "Default: next to the destination, <destination>.steward")
        self.steward_note.setText(
            f"The UID map and the pseudonym table go to {where / 'steward-record.json' if where else '<destination>.steward'}"
            ", outside the release. Keep it inside the hospital; never share it.")

    def _options_changed(self) -> None:
        options = self.options()
        keep = options.keep_identity
        for box in self.boxes.values():
            box.setEnabled(not keep)
        self.warning.setText(KEEP_IDENTITY_WARNING if keep else "")
        self.warning.setVisible(keep)
        codes = "; ".join(f"{c} {m}" for c, m in options.codes()) if not keep else ""
        self.profile.setText(options.summary_line() + (f" (codes: {codes})" if codes else ""))
        self.steward.setEnabled(not keep)
        self._show_steward()
        self.refresh_preview()
        self.changed.emit()

    def refresh_preview(self) -> None:
        if self.preview_source is None:
            fill_table(self.preview, PREVIEW_COLUMNS, [])
            self.preview_label.setText("Preview: the study has no DICOM file; NIfTI, NRRD, image and npz outputs keep no "
                                       "header text, side files or identifying file names." if self._files else
                                       "Preview: load a study to see which attributes change.")
            return
        try:
            preview = preview_file(self.preview_source, self.options())
        except DeidError as exc:
            fill_table(self.preview, PREVIEW_COLUMNS, [])
            self.preview_label.setText(f"No preview: {exc}")
            return
        order = sorted(preview.changes, key=lambda c: (FIRST.index(c.keyword) if c.keyword in FIRST else len(FIRST), c.tag))
        rows = [(c.keyword, c.action, c.before, c.after, c.tag) for c in order]
        fill_table(self.preview, PREVIEW_COLUMNS, rows)
        text = (f"Preview of {self.preview_source.name}: {len(rows)} attributes change, {preview.kept} are kept"
                + (f", {preview.private_removed} private attributes are removed" if preview.private_removed else "")
                + ". New instance UIDs in the release also depend on the protection settings.")
        if preview.note:
            text = f"{preview.note}\n{text}"
        self.preview_label.setText(text if not self.options().keep_identity else preview.note)
