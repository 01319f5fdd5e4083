"""Step 6: write the protected copy, the manifest and the report; open them afterwards.

The view: widgets and the worker. What to export and what to show is decided by
:class:`~salm_desktop.gui.pages.export_presenter.ExportPresenter`.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QCheckBox, QComboBox, QFileDialog, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QWidget

from ..context import Context
from ..deid_panel import DeidPanel
from ..model import FORMATS
from ..verify_dialog import OwnershipKeysOption
from ..widgets import form_layout, line_edit, page_layout, progress_bar, push_button, row
from ..workers import Worker
from .presented_page import PresentedPage
from .export_presenter import EXPORT_OWNER, ExportPresenter


class ExportPage(QWidget, PresentedPage):
    worker_name = "export"
    busy_owner = EXPORT_OWNER
    finished = Signal(str)  # "done" | "cancelled" | "failed"
    batch_requested = Signal()

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker | None = None
        self.presenter = ExportPresenter(self, ctx)

        self.destination = line_edit(placeholder="An empty or new folder outside the input folders")
        self.browse = QPushButton("Choose…")
        self.format = QComboBox()
        for key, text in FORMATS:
            self.format.addItem(text, key)
        self.report = QCheckBox("Write the clinical-fidelity report (HTML and PDF)")
        self.overwrite = QCheckBox("Replace the destination folder if it already has files in it")
        self.overwrite.setObjectName("overwrite")
        self.overwrite.setToolTip("Off: an existing, non-empty folder is never touched. On: it is replaced once "
                                  "the new copy is complete (the old one is removed only then).")
        self.export_button = push_button("Export", name="export_start")
        self.cancel_button = push_button("Cancel", enabled=False)
        self.batch_button = QPushButton("Batch queue…")
        self.progress = progress_bar()
        self.status = QLabel("")
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.open_report = QPushButton("Open report")
        self.open_folder = QPushButton("Open output folder")
        self.open_report.setEnabled(False)
        self.open_folder.setEnabled(False)
        # where the report is, always visible and copyable (not every system has a program to open it)
        self.report_path = QLineEdit()
        self.report_path.setReadOnly(True)
        self.report_path.setObjectName("report_path")
        self.copy_path = QPushButton("Copy path")
        self.send_button = QPushButton("Send to PACS…")  # wired by gui/pacs_dialog.py
        self.copy_path.setEnabled(False)
        self.open_note = QLabel("")
        self.open_note.setWordWrap(True)

        self.ownership = OwnershipKeysOption(self)  # issue 14: secret ownership keys
        self.deid = DeidPanel(self)  # issue 15: de-identification preview, operator, purpose, private record
        form = form_layout([("Destination", row((self.destination, 1), self.browse)), ("Format", self.format),
                            ("", self.report), ("", self.overwrite), ("Ownership", self.ownership)])
        page_layout(self, "6. Export",
                    "The protected copy is written to a temporary folder and moved into place when it is "
                    "complete; the originals are never changed. The manifest lists every file with its "
                    "checksum, the settings and anything skipped.",
                    form, (self.deid, 2), row(self.export_button, self.cancel_button, 1, self.batch_button),
                    self.progress, self.status, "Summary:", (self.summary, 1),
                    row(self.open_report, self.open_folder, (self.report_path, 1), self.copy_path, self.send_button),
                    self.open_note)
        self.destination.textChanged.connect(self.deid.set_destination)
        ctx.loaded.connect(lambda: self.deid.set_study(f for s in (ctx.state.series or []) for f in s.files))

        self.browse.clicked.connect(self._choose)
        self.export_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.batch_button.clicked.connect(self.batch_requested)
        self.open_report.clicked.connect(lambda: self.presenter.open("report"))
        self.open_folder.clicked.connect(lambda: self.presenter.open("out_dir"))
        self.copy_path.clicked.connect(lambda: self.presenter.copy_path(self.report_path.text()))
        self.format.currentIndexChanged.connect(self._options_changed)
        self.report.toggled.connect(self._options_changed)
        ctx.loaded.connect(self.presenter.suggest_destination)
        ctx.loaded.connect(lambda: self.presenter.forget_export(self.running))
        from ..pacs_dialog import attach_send_to_pacs

        attach_send_to_pacs(self)
        self.presenter.show_options()

    # -- the presenter's results (read by the self-test and the tests) -------------------------------
    @property
    def paths(self) -> dict:
        return self.presenter.paths

    @property
    def opened(self) -> list[str]:
        return self.presenter.opened

    # -- user actions -> presenter ------------------------------------------------------------------
    def _options_changed(self) -> None:
        self.presenter.options_changed(self.format.currentData(), self.report.isChecked())

    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to", self.ctx.store.last_folder("output_parent"))
        if folder:
            self.destination.setText(folder)

    def start(self) -> None:
        if not self.running:
            self.presenter.start(self.format.currentData(), self.report.isChecked())

    # -- ExportView: what the presenter asks of the page ---------------------------------------------
    def destination_text(self) -> str:
        return self.destination.text()

    def set_destination(self, text: str) -> None:
        self.destination.setText(text)

    def show_export_options(self, output_format: str, report: bool) -> None:
        self.format.setCurrentIndex(max(self.format.findData(output_format), 0))
        self.report.setChecked(report)

    def overwrite_chosen(self) -> bool:
        return self.overwrite.isChecked()

    def ownership_keys(self) -> Path | None:
        return self.ownership.keydir()

    def deid_job_kwargs(self) -> dict:
        return self.deid.job_kwargs()

    def show_running(self, running: bool) -> None:
        self.export_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def show_progress(self, value: int, status: str) -> None:
        self.progress.setValue(value)
        self.status.setText(status)

    def append_log(self, line: str) -> None:
        self.summary.appendPlainText(line)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def clear_result(self) -> None:
        self.summary.clear()
        self.report_path.clear()
        self.open_note.setText("")
        for button in (self.open_report, self.open_folder, self.copy_path):
            button.setEnabled(False)

    def show_result(self, summary: str, path: str, can_open_report: bool) -> None:
        self.summary.setPlainText(summary)
        self.open_report.setEnabled(can_open_report)
        self.open_folder.setEnabled(True)
        self.report_path.setText(path)
        self.copy_path.setEnabled(bool(path))

    def show_path(self, path: str) -> None:
        self.report_path.setText(path)
        self.copy_path.setEnabled(True)

    def open_path(self, path: str) -> bool:
        return QDesktopServices.openUrl(QUrl.fromLocalFile(path))

    def set_open_note(self, text: str) -> None:
        self.open_note.setText(text)

    def copy_text(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
