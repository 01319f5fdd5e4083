"""Help → User guide / Troubleshooting: the bundled Markdown pages in a browser window of the app."""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtWidgets import QDialog, QTextBrowser, QVBoxLayout, QWidget

HELP_PAGES = {"user guide": "user-guide.md", "troubleshooting": "troubleshooting.md"}


def help_page(name: str) -> Path | None:
    """Where a help page is: the repository's docs/ (with its screenshots) when running from a
    checkout, else the copy bundled in salm_desktop.resources (or in the frozen app)."""
    filename = HELP_PAGES[name]
    candidates = []
    if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
        candidates.append(Path(sys._MEIPASS) / "salm_desktop" / "resources" / filename)
    candidates.append(Path(__file__).resolve().parents[2] / "docs" / filename)
    try:
        candidates.append(Path(str(files("salm_desktop.resources") / filename)))
    except (ModuleNotFoundError, TypeError):
        pass
    for path in candidates:
        if path.is_file():
            return path.resolve()  # the real docs/ folder when the bundled copy is a link to it
    return None


class HelpWindow(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("SALM Desktop help")
        self.resize(900, 700)
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)

    def show_page(self, name: str) -> bool:
        path = help_page(name)
        if path is None:
            self.browser.setPlainText(f"The {name} page is not installed with this copy of SALM Desktop.")
            return False
        self.browser.setSearchPaths([str(path.parent)])
        self.browser.setSource(QUrl.fromLocalFile(str(path)))
        self.setWindowTitle(f"SALM Desktop help: {name}")
        return True
