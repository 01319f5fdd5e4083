"""Small shared widgets and helpers."""

from __future__ import annotations

from typing import Callable, Sequence, Union

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QBoxLayout, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLayout, QLineEdit, QMessageBox,
                               QProgressBar, QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

#: what :func:`row` and :func:`column` lay out: a widget or layout, optionally with its stretch factor;
#: a string (a plain label); an int (a stretchable space of that factor)
Item = Union[QWidget, QLayout, str, int, tuple]


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


def _lay_out(layout: QBoxLayout, items: Sequence[Item]) -> QBoxLayout:
    for item in items:
        stretch = 0
        if isinstance(item, tuple):
            item, stretch = item
        if isinstance(item, int):
            layout.addStretch(item)
        elif isinstance(item, str):
            layout.addWidget(QLabel(item), stretch)
        elif isinstance(item, QLayout):
            layout.addLayout(item, stretch)
        else:
            layout.addWidget(item, stretch)
    return layout


def row(*items: Item) -> QHBoxLayout:
    """A horizontal layout of ``items`` (see :data:`Item`): ``row(start, cancel, (progress, 1))``."""
    return _lay_out(QHBoxLayout(), items)


def column(parent: QWidget | None, *items: Item) -> QVBoxLayout:
    """A vertical layout of ``items`` (see :data:`Item`), the layout of ``parent`` when one is given."""
    return _lay_out(QVBoxLayout(parent), items)


def page_layout(page: QWidget, title: str, text: str, *items: Item) -> QVBoxLayout:
    """A wizard page's layout: its heading, its hint, then ``items`` (see :func:`column`)."""
    return column(page, heading(title), hint(text), *items)


def line_edit(text: str = "", placeholder: str = "", tip: str = "") -> QLineEdit:
    edit = QLineEdit(text)
    edit.setPlaceholderText(placeholder)
    if tip:
        edit.setToolTip(tip)
    return edit


def push_button(text: str, *, enabled: bool = True, name: str = "") -> QPushButton:
    """A button, disabled until its action can run (``enabled=False``, e.g. Cancel), ``name`` for the tests."""
    button = QPushButton(text)
    button.setEnabled(enabled)
    if name:
        button.setObjectName(name)
    return button


def progress_bar() -> QProgressBar:
    """A progress bar in thousandths (``ProgressEvent.fraction`` times 1000)."""
    bar = QProgressBar()
    bar.setRange(0, 1000)
    return bar


def vertical_split(top: QWidget, bottom: QWidget, sizes: Sequence[int]) -> QSplitter:
    split = QSplitter(Qt.Orientation.Vertical)
    split.addWidget(top)
    split.addWidget(bottom)
    split.setSizes(list(sizes))
    return split
