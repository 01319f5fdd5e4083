"""Step 6: write the protected copy, the manifest and the report; open them afterwards."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import services
from ..context import Context
from ..deid_panel import DeidPanel
from ..model import FORMATS, default_output_dir, run_summary_lines
from ..verify_dialog import OwnershipKeysOption
from ..widgets import heading, hint
from ..workers import Worker, WorkerHost


def summary_lines(job_result, paths: dict, unit: str = "") -> list[str]:
    """The export summary in words and units: where things went, what was done, what was skipped."""
    summary = getattr(job_result, "summary", None)
    if summary is None and isinstance(job_result, dict):
        summary = job_result.get("summary", job_result)
    lines = [f"Output folder: {paths.get('out_dir')}"]
    if paths.get("report"):
        lines.append(f"Report: {paths['report']}")
    if paths.get("report_pdf"):
        lines.append(f"Report (PDF): {paths['report_pdf']}")
    if paths.get("manifest"):
        lines.append(f"Manifest (every file with its checksum, the settings): {paths['manifest']}")
    if getattr(job_result, "officer_pdf", None):  # issue 15: the record the data-protection officer signs
        lines.append(f"Officer report (page 1 to sign): {job_result.officer_pdf}")
    if isinstance(summary, dict):
        lines += run_summary_lines(summary, unit)
    skipped = getattr(job_result, "skipped", None) or []
    if skipped:
        lines.append(f"Skipped {len(skipped)} input(s):")
        for s in skipped[:20]:
            lines.append(f"  {getattr(s, 'path', s)}: {getattr(s, 'reason', '')}")
    return lines


def _common_unit(series) -> str:
    units = set()
    for s in series:
        try:
            units.add(s.intensity.unit or "")
        except Exception:
            units.add("")
    return units.pop() if len(units) == 1 else ""


class ExportPage(QWidget, WorkerHost):
    finished = Signal(str)  # "done" | "cancelled" | "failed"
    batch_requested = Signal()

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker | None = None
        self.paths: dict = {}
        self.opened: list[str] = []  # what the open buttons asked the desktop to show
        self.unit = ""

        self.destination = QLineEdit()
        self.destination.setPlaceholderText("An empty or new folder outside the input folders")
        self.browse = QPushButton("Choose…")
        self.format = QComboBox()
        for key, text in FORMATS:
            self.format.addItem(text, key)
        self.report = QCheckBox("Write the clinical-fidelity report (HTML and PDF)")
        self.overwrite = QCheckBox("Replace the destination folder if it already has files in it")
        self.overwrite.setObjectName("overwrite")
        self.overwrite.setToolTip("Off: an existing, non-empty folder is never touched. On: it is replaced once "
                                  "the new copy is complete (the old one is removed only then).")
        self.export_button = QPushButton("Export")
        self.export_button.setObjectName("export_start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.batch_button = QPushButton("Batch queue…")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
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

        dest = QHBoxLayout()
        dest.addWidget(self.destination, 1)
        dest.addWidget(self.browse)
        form = QFormLayout()
        form.addRow("Destination", dest)
        form.addRow("Format", self.format)
        form.addRow("", self.report)
        form.addRow("", self.overwrite)
        self.ownership = OwnershipKeysOption(self)  # issue 14: secret ownership keys
        form.addRow("Ownership", self.ownership)
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.batch_button)
        opens = QHBoxLayout()
        opens.addWidget(self.open_report)
        opens.addWidget(self.open_folder)
        opens.addWidget(self.report_path, 1)
        opens.addWidget(self.copy_path)
        opens.addWidget(self.send_button)

        layout = QVBoxLayout(self)
        layout.addWidget(heading("6. Export"))
        layout.addWidget(hint("The protected copy is written to a temporary folder and moved into place when it is "
                              "complete; the originals are never changed. The manifest lists every file with its "
                              "checksum, the settings and anything skipped."))
        layout.addLayout(form)
        self.deid = DeidPanel(self)  # issue 15: de-identification preview, operator, purpose, private record
        layout.addWidget(self.deid, 2)
        self.destination.textChanged.connect(self.deid.set_destination)
        ctx.loaded.connect(lambda: self.deid.set_study(f for s in (ctx.state.series or []) for f in s.files))
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("Summary:"))
        layout.addWidget(self.summary, 1)
        layout.addLayout(opens)
        layout.addWidget(self.open_note)

        self.browse.clicked.connect(self._choose)
        self.export_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.batch_button.clicked.connect(self.batch_requested)
        self.open_report.clicked.connect(lambda: self._open(self.paths.get("report")))
        self.open_folder.clicked.connect(lambda: self._open(self.paths.get("out_dir")))
        self.copy_path.clicked.connect(self._copy_path)
        self.format.currentIndexChanged.connect(self._options_changed)
        self.report.toggled.connect(self._options_changed)
        ctx.loaded.connect(self._suggest_destination)
        ctx.loaded.connect(self._forget_export)
        from ..pacs_dialog import attach_send_to_pacs

        attach_send_to_pacs(self)
        self._show_options()

    def _show_options(self) -> None:
        index = self.format.findData(self.ctx.settings.output_format)
        self.format.setCurrentIndex(max(index, 0))
        self.report.setChecked(bool(self.ctx.settings.report))

    def _options_changed(self) -> None:
        self.ctx.settings.output_format = self.format.currentData()
        self.ctx.settings.report = self.report.isChecked()
        self.ctx.save_settings()

    def _suggest_destination(self) -> None:
        suggestion = default_output_dir(self.ctx.state.inputs, self.ctx.store.last_folder("output_parent") or None)
        self.destination.setText(str(suggestion) if suggestion is not None else "")

    def _forget_export(self) -> None:
        """A new study (or Clear): the last export's summary and paths belong to the old one."""
        if self.running:
            return
        self.paths = {}
        self.summary.clear()
        self.progress.setValue(0)
        self.status.setText("")
        self.open_note.setText("")
        self.report_path.clear()
        for button in (self.open_report, self.open_folder, self.copy_path):
            button.setEnabled(False)

    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to", self.ctx.store.last_folder("output_parent"))
        if folder:
            self.destination.setText(folder)

    def start(self) -> None:
        if self.running:
            return
        text = self.destination.text().strip()
        if not text:
            self.ctx.report_error("No destination", "Choose a folder to export to.")
            return
        if not self.ctx.state.selected_series or self.ctx.state.protect_result is None:
            self.ctx.report_error("Nothing to export", "Protect the study (step 4) first.")
            return
        out_dir = Path(text).expanduser()
        self.ctx.store.set_last_folder("output_parent", out_dir.parent)
        self._options_changed()
        state = self.ctx.state
        # the engine settings of the run that was reviewed (the export must write those pixels),
        # with the export options chosen here
        settings = (state.protect_settings or self.ctx.settings).copy()
        settings.output_format, settings.report = self.ctx.settings.output_format, self.ctx.settings.report
        series, result, inputs, splits = state.selected_series, state.protect_result, list(state.inputs), state.selected_splits()
        loaded = state.export_load_result()
        overwrite = self.overwrite.isChecked()
        keys = self.ownership.keydir()
        deid_kwargs = self.deid.job_kwargs()
        self.unit = _common_unit(series)

        def job(progress):
            return services.export(series, result, inputs, out_dir, settings, splits, progress, loaded=loaded,
                                   overwrite=overwrite, keys=keys, **deid_kwargs)

        worker = Worker(job, self, name="export")
        self._adopt(worker, lambda r: self._done(r, out_dir))
        self.progress.setValue(0)
        self.summary.clear()
        self.paths = {}
        self.open_report.setEnabled(False)
        self.open_folder.setEnabled(False)
        self.copy_path.setEnabled(False)
        self.report_path.clear()
        self.open_note.setText("")
        self.status.setText("Exporting…")
        self.export_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.ctx.set_busy(True)
        self.ctx.exporting = True
        worker.start()

    def _progressed(self, event) -> None:
        if event.stage == "log":
            self.summary.appendPlainText(event.message)
            return
        self.progress.setValue(int(1000 * event.fraction))
        self.status.setText(f"{event.stage}: {event.message}" if event.message else event.stage)

    def _done(self, job_result, out_dir: Path) -> None:
        self.ctx.state.export_result = job_result
        self.paths = services.job_paths(job_result, out_dir)
        self.progress.setValue(1000)
        self.status.setText("Export finished.")
        self.summary.setPlainText("\n".join(summary_lines(job_result, self.paths, self.unit)))
        self.open_report.setEnabled(bool(self.paths.get("report")))
        self.open_folder.setEnabled(True)
        self.report_path.setText(str(self.paths.get("report") or self.paths.get("out_dir") or ""))
        self.copy_path.setEnabled(bool(self.report_path.text()))
        skipped = getattr(job_result, "skipped", None) or []
        known = {str(k.path) for k in (self.ctx.state.load_result.skipped if self.ctx.state.load_result else [])}
        skipped = [k for k in skipped if str(getattr(k, "path", k)) not in known]  # new since loading
        if skipped:
            first = skipped[0]
            self.ctx.report_error("Some inputs were skipped",
                                  f"{getattr(first, 'path', first)}: {getattr(first, 'reason', '')}"
                                  + (f" (and {len(skipped) - 1} more, listed in the summary)" if len(skipped) > 1 else ""))
        self.finished.emit("done")

    def _failed(self, message: str) -> None:
        self.status.setText(f"Export failed: {message}")
        self.ctx.report_error("Export failed", message)
        self.finished.emit("failed")

    def _cancelled(self) -> None:
        self.status.setText("Export cancelled: nothing was written.")
        self.finished.emit("cancelled")

    def _worker_done(self) -> None:
        self.ctx.exporting = False
        self.export_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.ctx.set_busy(False)

    def _open(self, path) -> bool:
        """Show ``path`` with the system's viewer; where there is none, say so and show the path."""
        if not path:
            return False
        self.opened.append(str(path))
        self.report_path.setText(str(path))
        self.copy_path.setEnabled(True)
        if QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self.open_note.setText("")
            return True
        self.open_note.setText(f"No program to open {Path(path).name} was found on this computer. Its path is "
                               "shown above: Copy path puts it on the clipboard for a browser or file manager.")
        return False

    def _copy_path(self) -> None:
        QGuiApplication.clipboard().setText(self.report_path.text())
        self.open_note.setText(f"Copied: {self.report_path.text()}")


def manifest_summary(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
