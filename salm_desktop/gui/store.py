"""Settings and last folders remembered between runs (QSettings)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from .model import WizardSettings

ORGANIZATION = "SALM Desktop"
APPLICATION = "salm-desktop"


class SettingsStore:
    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.qs = qsettings if qsettings is not None else QSettings(ORGANIZATION, APPLICATION)

    def load_settings(self) -> WizardSettings:
        self.qs.beginGroup("settings")
        data = {key: self.qs.value(key) for key in self.qs.childKeys()}
        self.qs.endGroup()
        return WizardSettings.from_dict(data)

    def save_settings(self, settings: WizardSettings) -> None:
        self.qs.beginGroup("settings")
        for key, value in settings.to_dict().items():
            self.qs.setValue(key, value)
        self.qs.endGroup()
        self.qs.sync()

    def last_folder(self, kind: str) -> str:
        value = self.qs.value(f"folders/{kind}", "")
        return str(value) if value and Path(str(value)).exists() else ""

    def set_last_folder(self, kind: str, path: str | Path) -> None:
        self.qs.setValue(f"folders/{kind}", str(path))
        self.qs.sync()

    def recent_inputs(self) -> list[str]:
        value = self.qs.value("folders/recent_inputs", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in (value or [])]

    def add_recent_inputs(self, paths: list[str]) -> None:
        recent = [p for p in paths] + [p for p in self.recent_inputs() if p not in paths]
        self.qs.setValue("folders/recent_inputs", recent[:10])
        self.qs.sync()
