"""The wizard window: six steps in a side list, Back/Next, a menu and a status bar."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from salm_desktop import __version__

from .batch import BatchDialog
from .context import Context
from .pages.export import ExportPage
from .pages.load import LoadPage
from .pages.preview import PreviewPage
from .pages.protect import ProtectPage
from .pages.review import ReviewPage
from .pages.settings import SettingsPage
from .store import SettingsStore
from .verify_dialog import VerifyDialog
from .widgets import error_dialog

STEPS = ["1  Load", "2  Labels & settings", "3  Preview", "4  Protect", "5  Review", "6  Export"]


class MainWindow(QMainWindow):
    def __init__(self, qsettings: QSettings | None = None, show_dialogs: bool = True) -> None:
        super().__init__()
        self.setWindowTitle(f"SALM Desktop {__version__}")
        self.resize(1280, 820)
        self.ctx = Context(SettingsStore(qsettings), self)
        self.errors: list[tuple[str, str]] = []
        self.show_dialogs = show_dialogs
        self.ctx.error_handler = self._show_error

        self.load_page = LoadPage(self.ctx)
        self.settings_page = SettingsPage(self.ctx)
        self.preview_page = PreviewPage(self.ctx)
        self.protect_page = ProtectPage(self.ctx)
        self.review_page = ReviewPage(self.ctx)
        self.export_page = ExportPage(self.ctx)
        self.pages = [self.load_page, self.settings_page, self.preview_page, self.protect_page,
                      self.review_page, self.export_page]
        self.batch_dialog: BatchDialog | None = None
        self.help_window = None

        self.steps = QListWidget()
        self.steps.addItems(STEPS)
        self.steps.setFixedWidth(190)
        self.steps.setStyleSheet("QListWidget { font-size: 14px } QListWidget::item { padding: 8px }")
        self.stack = QStackedWidget()
        for page in self.pages:
            self.stack.addWidget(page)
        self.back_button = QPushButton("< Back")
        self.next_button = QPushButton("Next >")
        self.next_button.setDefault(True)

        nav = QHBoxLayout()
        nav.addStretch(1)
        nav.addWidget(self.back_button)
        nav.addWidget(self.next_button)
        right = QVBoxLayout()
        right.addWidget(self.stack, 1)
        right.addLayout(nav)
        body = QHBoxLayout()
        body.addWidget(self.steps)
        body.addLayout(right, 1)
        central = QWidget()
        central.setLayout(body)
        self.setCentralWidget(central)
        self.busy_label = QLabel("")
        self.statusBar().addPermanentWidget(self.busy_label)

        self._build_menu()
        self.steps.currentRowChanged.connect(self._step_chosen)
        self.back_button.clicked.connect(lambda: self.go_to(self.stack.currentIndex() - 1))
        self.next_button.clicked.connect(lambda: self.go_to(self.stack.currentIndex() + 1))
        self.settings_page.labels_changed.connect(self._labels_changed)
        self.preview_page.mask_ratio_changed.connect(self.settings_page.set_mask_ratio)
        self.export_page.batch_requested.connect(self.open_batch)
        for signal in (self.ctx.loaded, self.ctx.protected, self.ctx.selection_changed):
            signal.connect(self._update_nav)
        # a step whose input vanished (Clear, a new study) cannot stay on screen
        self.ctx.loaded.connect(self._leave_invalid_step)
        self.ctx.busy_changed.connect(lambda busy: self.busy_label.setText("Working…" if busy else ""))
        self.load_page.finished.connect(lambda ok: self.statusBar().showMessage(
            "Study loaded." if ok else "Nothing loaded.", 5000))
        self.protect_page.finished.connect(self._protect_finished)
        self.go_to(0)

        geometry = self.ctx.store.qs.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)

    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        add_folder = QAction("Add folder (DICOM folder, image folder)…", self)
        add_folder.triggered.connect(self.load_page._choose_folder)
        add_files = QAction("Add files…", self)
        add_files.triggered.connect(self.load_page._choose_files)
        batch = QAction("Batch queue…", self)
        batch.triggered.connect(self.open_batch)
        quit_action = QAction("Quit", self)
        quit_action.triggered.connect(self.close)
        for action in (add_folder, add_files):
            file_menu.addAction(action)
        self.recent_menu = file_menu.addMenu("Recent inputs")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file_menu.addAction(batch)
        verify = QAction("Verify a suspect model…", self)  # ownership keys (issue 14)
        verify.triggered.connect(self.open_verify)
        file_menu.addAction(verify)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)
        help_menu = self.menuBar().addMenu("&Help")
        guide = QAction("User guide", self)
        guide.setShortcut("F1")
        guide.triggered.connect(lambda: self.open_help("user guide"))
        trouble = QAction("Troubleshooting", self)
        trouble.triggered.connect(lambda: self.open_help("troubleshooting"))
        help_menu.addAction(guide)
        help_menu.addAction(trouble)
        help_menu.addSeparator()
        about = QAction("About SALM Desktop", self)
        about.triggered.connect(lambda: QMessageBox.about(
            self, "About SALM Desktop",
            f"SALM Desktop {__version__}\nProtects medical imaging datasets with sparsity-aware local "
            "masking (SALM) before they are shared. Works offline; nothing leaves this computer."))
        help_menu.addAction(about)

    def open_help(self, name: str):
        from .help import HelpWindow

        if self.help_window is None:
            self.help_window = HelpWindow(self)
        self.help_window.show_page(name)
        self.help_window.show()
        self.help_window.raise_()
        return self.help_window

    def _fill_recent(self) -> None:
        from pathlib import Path

        self.recent_menu.clear()
        recent = [p for p in self.ctx.store.recent_inputs() if Path(p).exists()]
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)
        for path in recent:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self.load_page.add_paths([Path(p)]))

    # -- navigation ------------------------------------------------------------------------------
    def can_enter(self, index: int) -> bool:
        state = self.ctx.state
        if index <= 0:
            return True
        if index <= 3:
            return bool(state.selected_series)
        # Review and Export need a protection result: nothing can be exported before Protect
        return state.protect_result is not None

    def go_to(self, index: int) -> None:
        index = max(0, min(index, len(self.pages) - 1))
        if not self.can_enter(index):
            index = self.stack.currentIndex()
        self.stack.setCurrentIndex(index)
        self.steps.blockSignals(True)
        self.steps.setCurrentRow(index)
        self.steps.blockSignals(False)
        if self.pages[index] is self.preview_page:
            self.preview_page.request_mask()
        self._update_nav()

    def _leave_invalid_step(self) -> None:
        current = self.stack.currentIndex()
        if not self.can_enter(current):
            self.go_to(max(i for i in range(current + 1) if self.can_enter(i)))

    def _step_chosen(self, row: int) -> None:
        self.go_to(row)
        if self.stack.currentIndex() != row:
            self.steps.blockSignals(True)
            self.steps.setCurrentRow(self.stack.currentIndex())
            self.steps.blockSignals(False)

    def _update_nav(self) -> None:
        current = self.stack.currentIndex()
        self.back_button.setEnabled(current > 0)
        self.next_button.setEnabled(current < len(self.pages) - 1 and self.can_enter(current + 1))
        for i in range(self.steps.count()):
            item = self.steps.item(i)
            flags = item.flags()
            if self.can_enter(i):
                item.setFlags(flags | Qt.ItemFlag.ItemIsEnabled)
            else:
                item.setFlags(flags & ~Qt.ItemFlag.ItemIsEnabled)

    def _labels_changed(self) -> None:
        if self.load_page.input_paths():
            self.load_page.start_load()

    def _protect_finished(self, outcome: str) -> None:
        messages = {"done": "Protection finished: review it in step 5.", "cancelled": "Protection cancelled.",
                    "failed": "Protection failed."}
        self.statusBar().showMessage(messages.get(outcome, outcome), 8000)
        self._update_nav()

    def open_verify(self) -> VerifyDialog:
        self.verify_dialog = getattr(self, "verify_dialog", None) or VerifyDialog(self)
        self.verify_dialog.show()
        return self.verify_dialog

    def open_batch(self) -> BatchDialog:
        if self.batch_dialog is None:
            self.batch_dialog = BatchDialog(self.ctx, self)
        self.batch_dialog.show()
        self.batch_dialog.raise_()
        return self.batch_dialog

    # -- errors and closing ----------------------------------------------------------------------
    def _show_error(self, title: str, message: str) -> None:
        self.errors.append((title, message))
        self.statusBar().showMessage(f"{title}: {message}", 10000)
        if self.show_dialogs:
            error_dialog(self, title, message)

    def shutdown(self) -> None:
        """Stop every worker (cancel, then wait) so that no thread outlives the window."""
        for page in (self.load_page, self.protect_page, self.export_page):
            if page.worker is not None and page.worker.isRunning():
                page.worker.cancel()
                page.worker.wait()
        self.preview_page.shutdown()
        self.review_page.shutdown()
        if self.batch_dialog is not None and self.batch_dialog.running:
            self.batch_dialog.worker.cancel()
            self.batch_dialog.worker.wait()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.ctx.store.qs.setValue("window/geometry", self.saveGeometry())
        self.ctx.save_settings()
        self.shutdown()
        if self.ctx.state.protect_result is not None:
            self.ctx.state.close_result(self.ctx.state.protect_result)
            self.ctx.state.protect_result = None
        super().closeEvent(event)
