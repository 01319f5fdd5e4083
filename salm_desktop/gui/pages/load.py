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
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..context import Context
from ..model import SERIES_COLUMNS, load_summary
from ..widgets import fill_table, make_table, page_layout, progress_bar, vertical_split
from ..workers import Worker
from .presented_page import PresentedPage
from .load_presenter import LOAD_OWNER, LoadPresenter

# Every format the loader reads; DICOM files often have no extension, hence "DICOM folder…" too.
FILE_FILTERS = ";;".join([
    "All supported images (*.dcm *.dicom *.ima *.nii *.nii.gz *.npz *.nrrd *.nhdr *.mha *.mhd *.png *.jpg *.jpeg "
    "*.tif *.tiff *.bmp)",
    "DICOM (*.dcm *.dicom *.ima)", "NIfTI (*.nii *.nii.gz)", "MedMNIST-style npz (*.npz)",
    "NRRD / MetaImage (*.nrrd *.nhdr *.mha *.mhd)", "PNG / JPEG / TIFF (*.png *.jpg *.jpeg *.tif *.tiff *.bmp)",
    "All files, e.g. DICOM without an extension (*)",
])


class LoadPage(QWidget, PresentedPage):
    worker_name = "load"
    busy_owner = LOAD_OWNER
    finished = Signal(bool)  # a load ended (True: something loaded)

    def __init__(self, ctx: Context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker | None = None
        self.presenter = LoadPresenter(self, ctx)
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
        self.progress = progress_bar()
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
        split = vertical_split(series_box, skipped_box, [300, 120])

        layout = page_layout(self, "1. Load a study",
                             "Drag and drop DICOM folders, NIfTI files, MedMNIST-style .npz files or folders of "
                             "PNG/JPEG images here, or use the buttons. Originals are only read, never changed.")
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
        self.use_study_labels.clicked.connect(self.presenter.use_study_labels)
        ctx.busy_changed.connect(self.presenter.busy_changed)
        from ..pacs_dialog import attach_open_from_pacs

        attach_open_from_pacs(self)
        ctx.settings_changed.connect(self.presenter.show_labels)
        ctx.selection_changed.connect(self.presenter.show_labels)

    # -- user actions -> presenter ------------------------------------------------------------------
    def add_paths(self, paths: Sequence[Path | str], load: bool = True) -> None:
        self.presenter.add_paths(paths, load)

    def clear(self) -> None:
        """Forget the study and everything made from it (the protection result, the review)."""
        self.presenter.clear()

    def start_load(self) -> None:
        self.presenter.start_load()

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

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 0:
            self.presenter.series_ticked(item.text(), item.checkState() == Qt.CheckState.Checked)

    # -- LoadView: what the presenter asks of the page -----------------------------------------------
    def input_paths(self) -> list[Path]:
        return [Path(self.inputs.item(i).text()) for i in range(self.inputs.count())]

    def add_input(self, text: str) -> None:
        self.inputs.addItem(text)

    def clear_inputs(self) -> None:
        self.inputs.clear()

    def is_running(self) -> bool:
        return self.running

    def stop_worker(self) -> None:
        self.worker.cancel()
        self.worker.wait()

    def cancel_worker(self) -> None:
        self.cancel()

    def show_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.load_button.setEnabled(not running)

    def show_progress(self, value: int) -> None:
        self.progress.setValue(value)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def show_tables(self, series_rows: list, checked: list[bool], skipped_rows: list) -> None:
        self.series_table.blockSignals(True)
        fill_table(self.series_table, SERIES_COLUMNS, series_rows, checkable=lambda r: checked[r])
        self.series_table.blockSignals(False)
        fill_table(self.skipped_table, ["Skipped file", "Reason"], skipped_rows)

    def show_label_maps(self, text: str) -> None:
        self.label_maps_label.setText(text)

    def show_labels(self, text: str, warning: str, offer_study_labels: bool) -> None:
        self.labels_label.setText(text)
        self.labels_warning.setText(warning)
        self.use_study_labels.setVisible(offer_study_labels)

    def enable_inputs(self, free: bool, can_load: bool) -> None:
        for button in (self.clear_button, self.add_files_button, self.add_folder_button):
            button.setEnabled(free)
        self.load_button.setEnabled(can_load)
        self.setAcceptDrops(free)
