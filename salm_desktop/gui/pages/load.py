"""Step 1: choose or drop files and folders; the series found and the skipped files."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import services
from ..context import Context
from ..model import SERIES_COLUMNS, labels_summary, load_summary, series_rows, skipped_rows

# Every format the loader reads; DICOM files often have no extension, hence "DICOM folder…" too.
FILE_FILTERS = ";;".join([
    "All supported images (*.dcm *.dicom *.ima *.nii *.nii.gz *.npz *.nrrd *.nhdr *.mha *.mhd *.png *.jpg *.jpeg "
    "*.tif *.tiff *.bmp)",
    "DICOM (*.dcm *.dicom *.ima)", "NIfTI (*.nii *.nii.gz)", "MedMNIST-style npz (*.npz)",
    "NRRD / MetaImage (*.nrrd *.nhdr *.mha *.mhd)", "PNG / JPEG / TIFF (*.png *.jpg *.jpeg *.tif *.tiff *.bmp)",
    "All files, e.g. DICOM without an extension (*)",
])
from ..widgets import fill_table, heading, hint, make_table
from ..workers import Worker, WorkerHost


class LoadPage(QWidget, WorkerHost):
    busy_owner = "load"
    finished = Signal(bool)  # a load ended (True: something loaded)

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker | None = None
        self.setAcceptDrops(True)

        self.inputs = QListWidget()
        self.inputs.setMaximumHeight(90)
        self.inputs.setToolTip("Files and folders to load; drop more here")
        self.add_files_button = QPushButton("Add files…")
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.setToolTip("A folder of any supported files, e.g. a DICOM folder whose files have no extension")
        self.clear_button = QPushButton("Clear")
        self.pacs_button = QPushButton("Open from PACS…")  # wired by gui/pacs_dialog.py
        self.load_button = QPushButton("Load")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status = QLabel(load_summary(None))
        self.labels_label = QLabel("")  # the labels the protection will use, per the settings
        self.labels_label.setObjectName("labels_label")
        self.labels_warning = QLabel("")
        self.labels_warning.setObjectName("labels_warning")
        self.labels_warning.setWordWrap(True)
        self.labels_warning.setStyleSheet("color: #9a5b00")
        self.use_study_labels = QPushButton("Use the study's labels")
        self.use_study_labels.setVisible(False)
        self.label_maps_label = QLabel("")
        self.label_maps_label.setWordWrap(True)
        self.series_table = make_table()
        self.series_table.setObjectName("series_table")
        self.skipped_table = make_table()
        self.skipped_table.setObjectName("skipped_table")
        fill_table(self.series_table, SERIES_COLUMNS, [])
        fill_table(self.skipped_table, ["Skipped file", "Reason"], [])

        buttons = QHBoxLayout()
        for b in (self.add_files_button, self.add_folder_button, self.pacs_button, self.clear_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.cancel_button)
        prog = QHBoxLayout()
        prog.addWidget(self.progress, 1)
        series_box = QWidget()
        sl = QVBoxLayout(series_box)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(QLabel("Series found (untick a series to leave it out of the protection):"))
        sl.addWidget(self.series_table)
        skipped_box = QWidget()
        kl = QVBoxLayout(skipped_box)
        kl.setContentsMargins(0, 0, 0, 0)
        kl.addWidget(QLabel("Skipped files and reasons:"))
        kl.addWidget(self.skipped_table)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(series_box)
        split.addWidget(skipped_box)
        split.setSizes([300, 120])

        layout = QVBoxLayout(self)
        layout.addWidget(heading("1. Load a study"))
        layout.addWidget(hint("Drag and drop DICOM folders, NIfTI files, MedMNIST-style .npz files or folders of "
                              "PNG/JPEG images here, or use the buttons. Originals are only read, never changed."))
        layout.addWidget(self.inputs)
        layout.addLayout(buttons)
        layout.addLayout(prog)
        layout.addWidget(self.status)
        labels_row = QHBoxLayout()
        labels_row.addWidget(self.labels_label)
        labels_row.addWidget(self.use_study_labels)
        labels_row.addStretch(1)
        layout.addLayout(labels_row)
        layout.addWidget(self.labels_warning)
        layout.addWidget(self.label_maps_label)
        layout.addWidget(split, 1)

        self.add_files_button.clicked.connect(self._choose_files)
        self.add_folder_button.clicked.connect(self._choose_folder)
        self.clear_button.clicked.connect(self.clear)
        self.load_button.clicked.connect(self.start_load)
        self.cancel_button.clicked.connect(self.cancel)
        self.series_table.itemChanged.connect(self._item_changed)
        self.use_study_labels.clicked.connect(self._use_study_labels)
        ctx.busy_changed.connect(self._busy_changed)
        from ..pacs_dialog import attach_open_from_pacs

        attach_open_from_pacs(self)
        ctx.settings_changed.connect(self.show_labels)
        ctx.selection_changed.connect(self.show_labels)

    # -- inputs ----------------------------------------------------------------------------------
    def input_paths(self) -> list[Path]:
        return [Path(self.inputs.item(i).text()) for i in range(self.inputs.count())]

    def add_paths(self, paths: Sequence[Path | str], load: bool = True) -> None:
        known = {str(p) for p in self.input_paths()}
        for p in paths:
            if str(p) not in known:
                self.inputs.addItem(str(p))
                known.add(str(p))
        if paths:
            first = Path(paths[0])
            self.ctx.store.set_last_folder("input", first if first.is_dir() else first.parent)
        if load:
            self.start_load()

    def clear(self) -> None:
        """Forget the study and everything made from it (the protection result, the review)."""
        self.cancel()
        self.inputs.clear()
        state = self.ctx.state
        state.inputs = []
        state.load_result = None
        previous = state.protect_result
        state.protect_result, state.protect_settings, state.protected_ids = None, None, []
        state.export_result = None
        self.progress.setValue(0)
        self._show_result()
        self.ctx.loaded.emit()  # pages drop what they show of the old study first
        if previous is not None and not self.ctx.busy_exporting():
            state.close_result(previous)

    def _choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add files", self.ctx.store.last_folder("input"),
                                                FILE_FILTERS)
        if files:
            self.add_paths(files)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder (DICOM folder, image folder…)",
                                                  self.ctx.store.last_folder("input"))
        if folder:
            self.add_paths([folder])

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)

    # -- loading ---------------------------------------------------------------------------------
    def start_load(self) -> None:
        paths = self.input_paths()
        if not paths:
            self.status.setText(load_summary(None))
            return
        if self.ctx.busy_except(self.busy_owner):  # protecting or exporting this study right now
            self.status.setText("Another step is working on the loaded study: wait for it or cancel it, then load.")
            return
        missing = [p for p in paths if not p.exists()]
        if missing:
            self.ctx.report_error("Cannot load", f"{missing[0]}: no such file or folder")
            return
        if self.running:
            self.worker.cancel()
            self.worker.wait()
        settings = self.ctx.settings.copy()  # a snapshot: edits during the run do not leak in
        worker = Worker(lambda progress: services.load(paths, settings, progress), self, name="load")
        self._adopt(worker, self._loaded)
        self.progress.setValue(0)
        self.status.setText("Loading…")
        self.cancel_button.setEnabled(True)
        self.load_button.setEnabled(False)
        self.ctx.set_busy(True, self.busy_owner)
        worker.start()

    def _progressed(self, event) -> None:
        if event.stage == "log":
            return
        self.progress.setValue(int(1000 * event.fraction))
        if event.stage == "window":
            self.status.setText(f"Measuring intensity windows… {event.done}/{event.total} series")
        else:
            self.status.setText(f"Loading… {event.done}/{event.total} files" if event.total else "Loading…")

    def _loaded(self, result) -> None:
        self.ctx.state.inputs = self.input_paths()
        self.ctx.state.load_result = result
        self.ctx.state.excluded = self.ctx.state.default_excluded()
        previous = self.ctx.state.protect_result
        self.ctx.state.protect_result = None
        self.ctx.state.protect_settings = None
        self.ctx.store.add_recent_inputs([str(p) for p in self.ctx.state.inputs])
        self.progress.setValue(1000)
        self._show_result()
        self.ctx.loaded.emit()  # the review lets go of the previous result first
        if previous is not None and not self.ctx.busy_exporting():
            self.ctx.state.close_result(previous)
        if not result.series:
            reason = result.skipped[0].reason if result.skipped else "no image files found"
            where = result.skipped[0].path if result.skipped else (self.ctx.state.inputs or ["input"])[0]
            self.ctx.report_error("Nothing to protect", f"{where}: {reason}")
        self.finished.emit(bool(result.series))

    def _failed(self, message: str) -> None:
        self.status.setText(f"Loading failed: {message}")
        self.ctx.report_error("Loading failed", message)
        self.finished.emit(False)

    def _cancelled(self) -> None:
        self.status.setText("Loading cancelled; nothing was changed.")
        self.progress.setValue(0)
        self.finished.emit(False)

    def _worker_done(self) -> None:
        self.cancel_button.setEnabled(False)
        self.load_button.setEnabled(True)
        self.ctx.set_busy(False, self.busy_owner)

    def _show_result(self) -> None:
        result = self.ctx.state.load_result
        rows = series_rows(result)
        self.series_table.blockSignals(True)
        ids = [r[0] for r in rows]
        fill_table(self.series_table, SERIES_COLUMNS, rows, checkable=lambda r: ids[r] not in self.ctx.state.excluded)
        self.series_table.blockSignals(False)
        fill_table(self.skipped_table, ["Skipped file", "Reason"], skipped_rows(result))
        self.status.setText(load_summary(result))
        maps = getattr(result, "label_maps", None) or []
        self.label_maps_label.setText(
            "Label maps found (regions for the report, not protected): " + ", ".join(m.files[0].name for m in maps)
            if maps else "")
        self.show_labels()

    def _busy_changed(self, busy: bool) -> None:
        """While another step works on this study (protecting, exporting), it cannot be replaced or
        cleared under it; a load of its own is cancelled by Clear or a new Load."""
        free = not busy or self.running
        for button in (self.clear_button, self.add_files_button, self.add_folder_button):
            button.setEnabled(free)
        self.load_button.setEnabled(not busy)
        self.setAcceptDrops(free)

    def show_labels(self) -> None:
        """What the protection will use as labels, and a warning when the setting does not fit."""
        text, warning = labels_summary(self.ctx.settings, self.ctx.state.selected_series)
        self.labels_label.setText(text)
        self.labels_warning.setText(warning)
        self.use_study_labels.setVisible(bool(warning) and self.ctx.settings.label_source == "clusters")

    def _use_study_labels(self) -> None:
        self.ctx.settings.label_source = "auto"
        self.ctx.save_settings()
        self.ctx.settings_replaced.emit()
    def _item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        sid = item.text()
        if item.checkState() == Qt.CheckState.Checked:
            self.ctx.state.excluded.discard(sid)
        else:
            self.ctx.state.excluded.add(sid)
        self.ctx.selection_changed.emit()
