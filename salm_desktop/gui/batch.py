"""The batch queue window: several folders, the same settings, one after another."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QFileDialog, QPlainTextEdit, QPushButton

from .context import Context
from .batch_queue import BatchQueue
from .widgets import column, fill_table, hint, line_edit, make_table, progress_bar, push_button, row
from .workers import Worker, WorkerHost

COLUMNS = ["Input", "Status", "Output", "Message"]


class BatchDialog(QDialog, WorkerHost):
    finished_queue = Signal(str)  # "done" | "cancelled" | "failed"

    def __init__(self, ctx: Context, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Batch queue")
        self.resize(900, 500)
        self.ctx = ctx
        self.queue = BatchQueue()
        self.worker: Worker | None = None

        self.table = make_table()
        self.add_button = QPushButton("Add folder…")
        self.remove_button = QPushButton("Remove")
        self.out_root = line_edit(ctx.store.last_folder("batch_output"),
                                  "Folder that receives one <name>_protected folder per input")
        self.out_browse = QPushButton("Choose…")
        self.cluster = line_edit("", "optional: local:2 (worker processes here) or tcp://scheduler:8786; see docs/cluster.md",
                                 "Run the queue's units on a Dask cluster (pip install \"salm-desktop[cluster]\"). "
                                 "Empty: in this process.")
        self.run_button = QPushButton("Run queue")
        self.cancel_button = push_button("Cancel", enabled=False)
        self.progress = progress_bar()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)

        column(self,
               hint("Each folder is loaded, protected with the current settings (step 2) and exported to "
                    "<output root>/<folder name> with its own manifest and report. A folder that fails is "
                    "reported and the queue goes on. After a cancel, running the queue again with the same "
                    "settings resumes: finished series are not redone."),
               row(self.add_button, self.remove_button, 1),
               (self.table, 1),
               row("Output root", (self.out_root, 1), self.out_browse),
               row("Cluster", (self.cluster, 1)),
               row(self.run_button, self.cancel_button, (self.progress, 1)),
               (self.log, 1))

        self.add_button.clicked.connect(self._choose_folder)
        self.remove_button.clicked.connect(self._remove)
        self.out_browse.clicked.connect(self._choose_out)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.refresh()

    def refresh(self) -> None:
        fill_table(self.table, COLUMNS, self.queue.rows())

    def add_folder(self, path: str | Path) -> None:
        if self.queue.add(path):
            self.refresh()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add folder to the queue", self.ctx.store.last_folder("input"))
        if folder:
            self.add_folder(folder)

    def _choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output root", self.ctx.store.last_folder("batch_output"))
        if folder:
            self.out_root.setText(folder)

    def _remove(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for r in rows:
            self.queue.remove(r)
        self.refresh()

    def start(self) -> None:
        if self.running:
            return
        if not self.queue.items:
            self.ctx.report_error("Empty queue", "Add at least one folder to the queue.")
            return
        text = self.out_root.text().strip()
        if not text:
            self.ctx.report_error("No output root", "Choose a folder for the protected copies.")
            return
        out_root = Path(text).expanduser()
        self.ctx.store.set_last_folder("batch_output", out_root)
        settings = self.ctx.settings.copy()  # a snapshot: edits during the run do not leak in
        queue = self.queue
        for item in queue.items:
            if item.status != "done":
                item.status, item.message = "queued", ""

        cluster = self.cluster.text().strip()

        def job(progress):
            return queue.run(out_root, settings, progress, cluster=cluster)

        worker = Worker(job, self, name="batch")
        self._adopt(worker, self._done)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.ctx.set_busy(True)
        worker.start()

    def _progressed(self, event) -> None:
        if event.stage == "log":
            self.log.appendPlainText(event.message)
            self.refresh()
            return
        self.progress.setValue(int(1000 * event.fraction))

    def _done(self, _items) -> None:
        self.refresh()
        failed = [i for i in self.queue.items if i.status == "failed"]
        self.log.appendPlainText(f"Queue finished: {len(self.queue.items) - len(failed)} done, {len(failed)} failed.")
        if failed:
            self.ctx.report_error("Some folders failed", f"{failed[0].path}: {failed[0].message}")
        self.finished_queue.emit("done")

    def _failed(self, message: str) -> None:
        self.refresh()
        self.ctx.report_error("Batch failed", message)
        self.finished_queue.emit("failed")

    def _cancelled(self) -> None:
        self.refresh()
        self.log.appendPlainText("Queue cancelled.")
        self.finished_queue.emit("cancelled")

    def _worker_done(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.ctx.set_busy(False)

    def closeEvent(self, event) -> None:  # noqa: N802
        if self.running:
            self.worker.cancel()
            self.worker.wait()
        super().closeEvent(event)
