"""Load from PACS: pick a server, query studies, retrieve one into a private temporary folder;
Send to PACS: send a finished export to a PACS, with each instance's outcome shown.

The servers typed here are remembered in QSettings (``pacs/servers``; endpoint text only, never
credentials, which come from the environment: docs/pacs.md). The retrieved study lives in a private
(0700) temporary folder that the caller loads like any folder and removes with :meth:`discard` when
the job is over; a cancelled or failed retrieval removes it at once. In the wizard the load page's
"Open from PACS…" (:func:`open_from_pacs`) hands the folder to a :class:`PacsSession`, which removes it
when the study is replaced or cleared and when the application quits; the export page's "Send to
PACS…" (:func:`open_send_dialog`) runs :func:`~salm_desktop.core.pacs.send_release` on the finished
release (never on the originals: their UIDs, remembered from the retrieval, are refused).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QObject, QSettings, Signal
from PySide6.QtWidgets import QComboBox, QDialog, QLabel, QLineEdit, QPushButton

from salm_desktop.core.pacs import Selection, StudyQuery, find_studies, retrieve, send_release

from .widgets import column, fill_table, form_layout, hint, make_table, progress_bar, row
from .workers import Worker, WorkerHost

COLUMNS = ["Date", "Patient ID", "Patient", "Accession", "Modalities", "Description", "Instances", "Study UID"]
FIELDS = ["StudyDate", "PatientID", "PatientName", "AccessionNumber", "ModalitiesInStudy", "StudyDescription",
          "NumberOfStudyRelatedInstances", "StudyInstanceUID"]
SETTINGS_KEY = "pacs/servers"
MAX_SERVERS = 10


def saved_servers(qs: QSettings) -> list[str]:
    value = qs.value(SETTINGS_KEY, [])
    return [str(v) for v in ([value] if isinstance(value, str) else (value or []))]


def remember_server(qs: QSettings, spec: str) -> None:
    servers = [spec] + [s for s in saved_servers(qs) if s != spec]
    qs.setValue(SETTINGS_KEY, servers[:MAX_SERVERS])
    qs.sync()


def server_box(qs: QSettings) -> QComboBox:
    """An editable server field offering the servers used before."""
    box = QComboBox()
    box.setEditable(True)
    box.addItems(saved_servers(qs))
    box.setPlaceholderText("dicomweb:https://HOST/dicom-web  or  dimse:AET@HOST:PORT")
    return box


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
        self.result = None  # the last RetrieveResult

        self.server = server_box(qsettings)
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
        self.progress = progress_bar()

        form = form_layout([("Server", self.server), ("Patient ID", self.patient_id), ("Accession number", self.accession),
                            ("Study date", row(self.date_from, "to", self.date_to)), ("Modality", self.modality)])
        column(self,
               hint("Credentials are read from the environment (SALM_PACS_USER, SALM_PACS_PASSWORD_FILE, "
                    "SALM_PACS_TOKEN_FILE; see docs/pacs.md), never stored here. The study is retrieved "
                    "into a private temporary folder that is removed when you are done."),
               form, row(self.search_button, self.retrieve_button, self.cancel_button, (self.progress, 1)),
               (self.table, 1), self.status)

        self.search_button.clicked.connect(self.search)
        self.retrieve_button.clicked.connect(self.retrieve_selected)
        self.cancel_button.clicked.connect(self.cancel)
        self.table.itemSelectionChanged.connect(
            lambda: self.retrieve_button.setEnabled(bool(self.table.selectedItems()) and not self.running))

    # -- servers remembered ---------------------------------------------------------------------------
    def saved_servers(self) -> list[str]:
        return saved_servers(self.qs)

    def _remember(self, spec: str) -> None:
        remember_server(self.qs, spec)

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
        self.result = result
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


# -- the wizard's hooks -------------------------------------------------------------------------------
class PacsSession(QObject):
    """The private folders of studies retrieved in this session of the wizard (a child of the Context).

    A folder is removed as soon as the loaded study no longer reads from it (Clear, another study
    loaded instead) and when the application quits. The originals' SOP Instance UIDs are kept so that
    "Send to PACS" refuses to send any of them back.
    """

    def __init__(self, ctx) -> None:  # noqa: ANN001
        super().__init__(ctx)
        self.ctx = ctx
        self.folders: dict[Path, set[str]] = {}  # private root -> SOP Instance UIDs retrieved into it
        ctx.loaded.connect(self._study_changed)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.discard_all)

    @classmethod
    def of(cls, ctx) -> "PacsSession":  # noqa: ANN001
        return ctx.findChild(cls) or cls(ctx)

    def adopt(self, root: Path, sop_uids: set[str]) -> None:
        self.folders[Path(root)] = set(sop_uids)

    def original_uids(self) -> set[str]:
        return set().union(*self.folders.values()) if self.folders else set()

    def _study_changed(self) -> None:
        inputs = [Path(p) for p in (self.ctx.state.inputs or [])]
        for root in list(self.folders):
            if not any(p == root or root in p.parents for p in inputs):
                self.discard(root)

    def discard(self, root: Path) -> None:
        shutil.rmtree(root, ignore_errors=True)
        self.folders.pop(root, None)

    def discard_all(self) -> None:
        for root in list(self.folders):
            self.discard(root)


def attach_open_from_pacs(page) -> None:  # noqa: ANN001 - the load page and its pacs_button
    """Wire the load page's "Open from PACS…": usable when the page could add a folder."""
    page.pacs_button.clicked.connect(lambda: open_from_pacs(page))
    page.ctx.busy_changed.connect(lambda busy: page.pacs_button.setEnabled(not busy or page.running))


def open_from_pacs(page) -> PacsDialog:  # noqa: ANN001 - the load page
    """The load page's "Open from PACS…": a retrieved study is added to the inputs and loaded."""
    dialog = PacsDialog(page.ctx.store.qs, page)
    session = PacsSession.of(page.ctx)

    def take(folder: str) -> None:
        session.adopt(dialog.folder, dialog.result.sop_uids if dialog.result else set())
        dialog.folder = None  # the session removes it now, not the dialog
        dialog.accept()
        page.add_paths([Path(folder)])

    dialog.retrieved.connect(take)
    page.pacs_dialog = dialog
    dialog.open()
    return dialog


SEND_COLUMNS = ["File", "Status", "Attempts", "Message"]


class SendDialog(QDialog, WorkerHost):
    """Send a finished release to a PACS; the table shows each instance's outcome. A second send to
    the same server sends only what it has not confirmed yet (the send journal, docs/pacs.md)."""

    sent = Signal(object)  # the SendReport

    def __init__(self, release: Path, original_uids: set[str], qsettings: QSettings, parent=None) -> None:  # noqa: ANN001
        super().__init__(parent)
        self.setWindowTitle("Send to PACS")
        self.resize(900, 420)
        self.release, self.original_uids, self.qs = Path(release), set(original_uids), qsettings
        self.worker: Worker | None = None
        self.report = None
        self.server = server_box(qsettings)
        self.send_button, self.cancel_button = QPushButton("Send"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = progress_bar()
        self.status = QLabel("")
        self.table = make_table()
        fill_table(self.table, SEND_COLUMNS, [])
        column(self,
               hint(f"Sends every DICOM file of {self.release} as it is (the protected, de-identified "
                    "copy). Originals are never sent back. Credentials come from the environment "
                    "(docs/pacs.md)."),
               form_layout([("Server", self.server)]), row(self.send_button, self.cancel_button, (self.progress, 1)),
               (self.table, 1), self.status)
        self.send_button.clicked.connect(self.send)
        self.cancel_button.clicked.connect(self.cancel)

    def send(self) -> None:
        spec = self.server.currentText().strip()
        release, originals = self.release, set(self.original_uids)
        worker = Worker(lambda progress: send_release(release, spec, original_uids=originals, progress=progress),
                        self, name="pacs send")
        self._adopt(worker, self._sent)
        remember_server(self.qs, spec)
        self.send_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText(f"sending to {spec} …")
        worker.start()

    def _sent(self, report) -> None:  # noqa: ANN001
        import json

        self.report = report
        data = report.as_dict()
        report.journal.with_name(report.journal.name.replace(".jsonl", "-report.json")).write_text(
            json.dumps(data, indent=2), encoding="utf-8")
        fill_table(self.table, SEND_COLUMNS, [[i.path, i.status, str(i.attempts), i.message] for i in report.instances])
        self.status.setText(f"{report.destination}: {data['sent']} sent, {data['already_sent']} already sent earlier, "
                            f"{data['failed']} failed, {data['refused']} refused"
                            + ("" if report.complete else " — press Send again to send the rest"))
        self.sent.emit(report)

    def _progressed(self, event) -> None:  # noqa: ANN001
        if event.stage != "log":
            self.progress.setValue(int(1000 * event.fraction))

    def _failed(self, message: str) -> None:
        self.status.setText(message)

    def _cancelled(self) -> None:
        self.status.setText("cancelled: what the server confirmed is in the journal; Send again sends the rest")

    def _worker_done(self) -> None:
        self.send_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def done(self, code: int) -> None:
        self.cancel()
        if self.worker is not None:
            self.worker.wait()
        super().done(code)


def attach_send_to_pacs(page) -> None:  # noqa: ANN001 - the export page and its send_button
    """Wire the export page's "Send to PACS…": enabled only while a finished release is shown and no
    step is running (``page.paths`` holds the release only after the export succeeded)."""
    def refresh(*_) -> None:  # noqa: ANN002
        page.send_button.setEnabled(bool(page.paths.get("out_dir")) and not page.ctx.busy)

    page.send_button.clicked.connect(lambda: open_send_dialog(page))
    page.ctx.busy_changed.connect(refresh)
    page.ctx.loaded.connect(refresh)
    page.finished.connect(refresh)
    refresh()


def open_send_dialog(page) -> SendDialog | None:  # noqa: ANN001 - the export page
    """The export page's "Send to PACS…", for the release the last export finished."""
    release = page.paths.get("out_dir")
    if not release:
        return None
    dialog = SendDialog(Path(release), PacsSession.of(page.ctx).original_uids(), page.ctx.store.qs, page)
    page.send_dialog = dialog
    dialog.open()
    return dialog
