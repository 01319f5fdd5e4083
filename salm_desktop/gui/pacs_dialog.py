"""Load from PACS: pick a server, query studies, retrieve one into a private temporary folder.

The servers typed here are remembered in QSettings (``pacs/servers``; endpoint text only, never
credentials, which come from the environment: docs/pacs.md). The retrieved study lives in a private
(0700) temporary folder that the caller loads like any folder and removes with :meth:`discard` when
the job is over; a cancelled or failed retrieval removes it at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from salm_desktop.core.pacs import Selection, StudyQuery, find_studies, retrieve

from .widgets import fill_table, hint, make_table
from .workers import Worker, WorkerHost

COLUMNS = ["Date", "Patient ID", "Patient", "Accession", "Modalities", "Description", "Instances", "Study UID"]
FIELDS = ["StudyDate", "PatientID", "PatientName", "AccessionNumber", "ModalitiesInStudy", "StudyDescription",
          "NumberOfStudyRelatedInstances", "StudyInstanceUID"]
SETTINGS_KEY = "pacs/servers"
MAX_SERVERS = 10


class PacsDialog(QDialog, WorkerHost):
    retrieved = Signal(str)  # the private folder holding the retrieved study

    def __init__(self, qsettings: QSettings, parent=None) -> None:  # noqa: ANN001
        super().__init__(parent)
        self.setWindowTitle("Load from PACS")
        self.resize(1000, 520)
        self.qs = qsettings
        self.worker: Worker | None = None
        self.studies: list[dict[str, str]] = []
        self.folder: Path | None = None

        self.server = QComboBox()
        self.server.setEditable(True)
        self.server.addItems(self.saved_servers())
        self.server.setPlaceholderText("dicomweb:https://HOST/dicom-web  or  dimse:AET@HOST:PORT")
        self.patient_id, self.accession = QLineEdit(), QLineEdit()
        self.date_from, self.date_to, self.modality = QLineEdit(), QLineEdit(), QLineEdit()
        for box in (self.date_from, self.date_to):
            box.setPlaceholderText("YYYYMMDD")
        self.search_button = QPushButton("Search")
        self.retrieve_button = QPushButton("Retrieve selected study")
        self.retrieve_button.setEnabled(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.table = make_table()
        self.status = QLabel("")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)

        form = QFormLayout()
        form.addRow("Server", self.server)
        form.addRow("Patient ID", self.patient_id)
        form.addRow("Accession number", self.accession)
        dates = QHBoxLayout()
        dates.addWidget(self.date_from)
        dates.addWidget(QLabel("to"))
        dates.addWidget(self.date_to)
        form.addRow("Study date", dates)
        form.addRow("Modality", self.modality)
        buttons = QHBoxLayout()
        buttons.addWidget(self.search_button)
        buttons.addWidget(self.retrieve_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(hint("Credentials are read from the environment (SALM_PACS_USER, SALM_PACS_PASSWORD_FILE, "
                              "SALM_PACS_TOKEN_FILE; see docs/pacs.md), never stored here. The study is retrieved "
                              "into a private temporary folder that is removed when you are done."))
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)

        self.search_button.clicked.connect(self.search)
        self.retrieve_button.clicked.connect(self.retrieve_selected)
        self.cancel_button.clicked.connect(self.cancel)
        self.table.itemSelectionChanged.connect(
            lambda: self.retrieve_button.setEnabled(bool(self.table.selectedItems()) and not self.running))

    # -- servers remembered ---------------------------------------------------------------------------
    def saved_servers(self) -> list[str]:
        value = self.qs.value(SETTINGS_KEY, [])
        return [str(v) for v in ([value] if isinstance(value, str) else (value or []))]

    def _remember(self, spec: str) -> None:
        servers = [spec] + [s for s in self.saved_servers() if s != spec]
        self.qs.setValue(SETTINGS_KEY, servers[:MAX_SERVERS])
        self.qs.sync()

    # -- actions --------------------------------------------------------------------------------------
    def search(self) -> None:
        spec = self.server.currentText().strip()
        query = StudyQuery(self.patient_id.text().strip(), self.accession.text().strip(), self.date_from.text().strip(),
                           self.date_to.text().strip(), self.modality.text().strip().upper())
        self._start(Worker(lambda progress: find_studies(spec, query), self, name="pacs query"), self._found)
        self._remember(spec)
        self.status.setText(f"searching {spec} …")

    def retrieve_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedItems()})
        if not rows:
            return
        study = self.table.item(rows[0], COLUMNS.index("Study UID")).text()
        spec = self.server.currentText().strip()
        self.discard()
        folder = Path(tempfile.mkdtemp(prefix="salm-pacs-"))
        os.chmod(folder, 0o700)
        self.folder = folder

        def job(progress):  # noqa: ANN001, ANN202
            return retrieve(spec, folder / "study", Selection(study=study), progress=progress)

        self._start(Worker(job, self, name="pacs retrieve"), self._retrieved)
        self.status.setText(f"retrieving {study} …")

    def discard(self) -> None:
        """Remove the retrieved study's private folder (call when the job that used it is over)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _start(self, worker: Worker, on_success) -> None:  # noqa: ANN001
        self._adopt(worker, on_success)
        for button in (self.search_button, self.retrieve_button):
            button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        worker.start()

    # -- worker slots ---------------------------------------------------------------------------------
    def _found(self, studies) -> None:  # noqa: ANN001
        self.studies = list(studies)
        fill_table(self.table, COLUMNS, [[s.get(f, "") for f in FIELDS] for s in self.studies])
        self.status.setText(f"{len(self.studies)} studies found")

    def _retrieved(self, result) -> None:  # noqa: ANN001
        self.status.setText(f"retrieved {result.instances} instances ({result.bytes / 1e6:.1f} MB)")
        self.retrieved.emit(str(result.folder))

    def _progressed(self, event) -> None:  # noqa: ANN001
        self.progress.setValue(int(1000 * event.fraction))

    def _failed(self, message: str) -> None:
        if self.worker is not None and self.worker.name == "pacs retrieve":
            self.discard()
        self.status.setText(message)

    def _cancelled(self) -> None:
        self.discard()
        self.status.setText("cancelled")

    def _worker_done(self) -> None:
        self.search_button.setEnabled(True)
        self.retrieve_button.setEnabled(bool(self.table.selectedItems()))
        self.cancel_button.setEnabled(False)

    def done(self, code: int) -> None:  # closing the dialog while retrieving cancels it
        self.cancel()
        if self.worker is not None:
            self.worker.wait()
        super().done(code)
