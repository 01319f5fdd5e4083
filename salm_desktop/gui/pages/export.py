"""Step 6: write the protected copy, the manifest and the report; open them afterwards."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
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
from ..model import FORMATS, default_output_dir
from ..verify_dialog import OwnershipKeysOption
from ..widgets import heading, hint
from ..workers import Worker, WorkerHost


def summary_lines(job_result, paths: dict) -> list[str]:
    summary = getattr(job_result, "summary", None)
    if summary is None and isinstance(job_result, dict):
        summary = job_result.get("summary", job_result)
    lines = [f"Output folder: {paths.get('out_dir')}"]
    if paths.get("report"):
        lines.append(f"Report: {paths['report']}")
    if paths.get("report_pdf"):
        lines.append(f"Report (PDF): {paths['report_pdf']}")
    if paths.get("manifest"):
        lines.append(f"Manifest: {paths['manifest']}")
    if isinstance(summary, dict):
        for key in ("method", "epsilon", "mask_ratio", "samples", "rounds", "fraction_pixels_changed",
                    "max_abs_change_native", "seconds", "device"):
            if key in summary:
                value = summary[key]
                lines.append(f"{key.replace('_', ' ')}: {value:.4g}" if isinstance(value, float) else f"{key.replace('_', ' ')}: {value}")
    skipped = getattr(job_result, "skipped", None) or []
    if skipped:
        lines.append(f"Skipped {len(skipped)} input(s):")
        for s in skipped[:20]:
            lines.append(f"  {getattr(s, 'path', s)}: {getattr(s, 'reason', '')}")
    return lines


class ExportPage(QWidget, WorkerHost):
    finished = Signal(str)  # "done" | "cancelled" | "failed"
    batch_requested = Signal()

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker | None = None
        self.paths: dict = {}
        self.opened: list[str] = []  # what the open buttons asked the desktop to show

        self.destination = QLineEdit()
        self.destination.setPlaceholderText("An empty or new folder outside the input folders")
        self.browse = QPushButton("Choose…")
        self.format = QComboBox()
        for key, text in FORMATS:
            self.format.addItem(text, key)
        self.report = QCheckBox("Write the clinical-fidelity report (HTML and PDF)")
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

        dest = QHBoxLayout()
        dest.addWidget(self.destination, 1)
        dest.addWidget(self.browse)
        form = QFormLayout()
        form.addRow("Destination", dest)
        form.addRow("Format", self.format)
        form.addRow("", self.report)
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
        opens.addStretch(1)

        layout = QVBoxLayout(self)
        layout.addWidget(heading("6. Export"))
        layout.addWidget(hint("The protected copy is written to a temporary folder and moved into place when it is "
                              "complete; the originals are never changed. The manifest lists every file with its "
                              "checksum, the settings and anything skipped."))
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("Summary:"))
        layout.addWidget(self.summary, 1)
        layout.addLayout(opens)

        self.browse.clicked.connect(self._choose)
        self.export_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.batch_button.clicked.connect(self.batch_requested)
        self.open_report.clicked.connect(lambda: self._open(self.paths.get("report")))
        self.open_folder.clicked.connect(lambda: self._open(self.paths.get("out_dir")))
        self.format.currentIndexChanged.connect(self._options_changed)
        self.report.toggled.connect(self._options_changed)
        ctx.loaded.connect(self._suggest_destination)
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
        last = self.ctx.store.last_folder("output_parent")
        suggestion = default_output_dir(self.ctx.state.inputs)
        if suggestion is not None and last:
            suggestion = Path(last) / suggestion.name
        if suggestion is not None:
            self.destination.setText(str(suggestion))

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
        if not self.ctx.state.selected_series:
            self.ctx.report_error("Nothing to export", "Load a study first.")
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
        keys = self.ownership.keydir()

        def job(progress):
            extra = {"keys": keys} if keys is not None else {}
            return services.export(series, result, inputs, out_dir, settings, splits, progress, loaded=loaded, **extra)

        worker = Worker(job, self, name="export")
        self._adopt(worker, lambda r: self._done(r, out_dir))
        self.progress.setValue(0)
        self.summary.clear()
        self.paths = {}
        self.open_report.setEnabled(False)
        self.open_folder.setEnabled(False)
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
        self.summary.setPlainText("\n".join(summary_lines(job_result, self.paths)))
        self.open_report.setEnabled(bool(self.paths.get("report")))
        self.open_folder.setEnabled(True)
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

    def _open(self, path) -> None:
        if not path:
            return
        self.opened.append(str(path))
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def manifest_summary(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
