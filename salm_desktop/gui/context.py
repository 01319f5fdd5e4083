"""What every page shares: the wizard state, the settings, the store and the error reporter."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal

from .model import WizardSettings, WizardState
from .store import SettingsStore


class Context(QObject):
    loaded = Signal()  # state.load_result changed
    selection_changed = Signal()  # the set of included series changed
    settings_changed = Signal()  # settings edited (not the label source)
    settings_replaced = Signal()  # ctx.settings changed outside the Settings page: show them again
    protected = Signal()  # state.protect_result is new
    busy_changed = Signal(bool)
    error = Signal(str, str)  # title, one-line message (already shown)

    def __init__(self, store: SettingsStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.state = WizardState()
        self.settings: WizardSettings = store.load_settings()
        self.error_handler: Callable[[str, str], None] | None = None
        self._busy: dict[str, int] = {}  # busy marks per owner ("load", "protect", ...)

    def report_error(self, title: str, message: str) -> None:
        """Errors reach the user as a dialog with the file and the reason; tests swap the handler."""
        self.error.emit(title, message)
        if self.error_handler is not None:
            self.error_handler(title, message)

    def save_settings(self) -> None:
        self.store.save_settings(self.settings)

    def set_busy(self, busy: bool, owner: str = "") -> None:
        self._busy[owner] = max(0, self._busy.get(owner, 0) + (1 if busy else -1))
        self.busy_changed.emit(self.busy)

    def busy_except(self, owner: str) -> bool:
        """Whether anything but ``owner`` holds a busy mark: a page's own run that has just ended can
        still hold its mark (the thread's finished signal is queued after the result)."""
        return any(count > 0 for name, count in self._busy.items() if name != owner)

    def busy_with(self, owner: str) -> bool:
        """Whether ``owner`` (e.g. ``"export"``) holds a busy mark now."""
        return self._busy.get(owner, 0) > 0

    @property
    def busy(self) -> bool:
        return any(count > 0 for count in self._busy.values())
