"""Small shared widgets and helpers."""

from __future__ import annotations

from typing import Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QFormLayout, QHeaderView, QLabel, QLayout, QMessageBox, QSplitter, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)


def fill_table(table: QTableWidget, columns: Sequence[str], rows: Sequence[Sequence[str]],
               checkable: Callable[[int], bool | None] | None = None) -> None:
    """Fill a read-only table; ``checkable(row)`` -> True/False puts a check box in column 0."""
    table.setSortingEnabled(False)
    table.clear()
    table.setColumnCount(len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(str(text))
            flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
            if c == 0 and checkable is not None:
                state = checkable(r)
                if state is not None:
                    flags |= Qt.ItemFlag.ItemIsUserCheckable
                    item.setCheckState(Qt.CheckState.Checked if state else Qt.CheckState.Unchecked)
            item.setFlags(flags)
            item.setToolTip(str(text))
            table.setItem(r, c, item)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    table.verticalHeader().setVisible(False)


def make_table() -> QTableWidget:
    table = QTableWidget()
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    table.setAlternatingRowColors(True)
    table.setWordWrap(False)
    return table


def heading(text: str) -> QLabel:
    label = QLabel(text)
    label.setStyleSheet("font-size: 15px; font-weight: bold; margin-bottom: 4px")
    return label


def hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet("color: #555")
    return label


def error_dialog(parent: QWidget | None, title: str, message: str) -> None:
    """A one-line error (file and reason) in a dialog; never a traceback."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    box.exec()


def form_layout(rows: Sequence[tuple[str, QWidget | QLayout]]) -> QFormLayout:
    """A form of (label, widget or layout) rows; an empty label puts the field under the one above."""
    form = QFormLayout()
    for label, field in rows:
        form.addRow(label, field)
    return form


def page_layout(page: QWidget, title: str, text: str) -> QVBoxLayout:
    """A wizard page's layout, started with its heading and its hint."""
    layout = QVBoxLayout(page)
    layout.addWidget(heading(title))
    layout.addWidget(hint(text))
    return layout


def vertical_split(top: QWidget, bottom: QWidget, sizes: Sequence[int]) -> QSplitter:
    split = QSplitter(Qt.Orientation.Vertical)
    split.addWidget(top)
    split.addWidget(bottom)
    split.setSizes(list(sizes))
    return split
