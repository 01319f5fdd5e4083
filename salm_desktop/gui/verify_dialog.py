"""Ownership keys in the wizard: the export-step option and the verify dialog (core/ownership does the work)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .widgets import hint


def _picker(edit: QLineEdit, parent: QWidget, title: str, folder: bool, pattern: str = "") -> QWidget:
    row = QWidget(parent)
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    button = QPushButton("Choose…", row)
    layout.addWidget(edit, 1)
    layout.addWidget(button)

    def choose() -> None:
        if folder:
            path = QFileDialog.getExistingDirectory(parent, title)
        else:
            path, _ = QFileDialog.getOpenFileName(parent, title, "", pattern)
        if path:
            edit.setText(path)

    button.clicked.connect(choose)
    return row


class OwnershipKeysOption(QWidget):
    """Export-step option: mark the release with secret ownership keys and write them to a private folder."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.enabled = QCheckBox("Add secret ownership keys (experimental; weakens the protection)")
        from salm_desktop.core.ownership.release import KEYS_COST

        self.enabled.setToolTip(f"Keys let you test later whether a model was trained on this release. Measured "
                                f"(docs/ownership.md): the keys weaken the protection; {KEYS_COST}.")
        self.folder = QLineEdit()
        self.folder.setObjectName("ownership_keydir")
        self.folder.setPlaceholderText("A new private folder OUTSIDE the destination, e.g. on an encrypted drive")
        self.picker = _picker(self.folder, self, "Key folder (keep private)", folder=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.enabled)
        layout.addWidget(self.picker)
        self.enabled.toggled.connect(self.picker.setEnabled)
        self.picker.setEnabled(False)

    def keydir(self) -> Path | None:
        """The chosen key folder, or None when the option is off (an empty folder field also means off)."""
        text = self.folder.text().strip()
        return Path(text).expanduser() if self.enabled.isChecked() and text else None


class VerifyDialog(QDialog):
    """Test a suspect model: its answers (CSV) or a TorchScript model against a key folder."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Verify a suspect model")
        self.keys = QLineEdit()
        self.predictions = QLineEdit()
        self.predictions.setPlaceholderText("CSV with columns query,label (optional p0,p1,…)")
        self.model = QLineEdit()
        self.model.setPlaceholderText("or a TorchScript model file you hold")
        self.release = QLineEdit()
        self.release.setPlaceholderText("optional: the release folder, to check the keys belong to it")
        self.result = QPlainTextEdit()
        self.result.setReadOnly(True)
        self.last: dict | None = None
        form = QFormLayout()
        form.addRow("Key folder", _picker(self.keys, self, "Key folder", folder=True))
        form.addRow("Answers", _picker(self.predictions, self, "Answers of the suspect model", False, "CSV (*.csv)"))
        form.addRow("Model", _picker(self.model, self, "TorchScript model", False, "Models (*.pt *.pth *.ts);;All files (*)"))
        form.addRow("Release", _picker(self.release, self, "Release folder", folder=True))
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.verify_button = buttons.addButton("Verify", QDialogButtonBox.ActionRole)
        layout = QVBoxLayout(self)
        layout.addWidget(hint("Show the suspect model every query of the key folder (queries.npz or queries/*.png) and "
                              "save its answers, or give a model file. The test is exact: under the hypothesis that the "
                              "model never saw the release, each secret label is matched only by chance."))
        layout.addLayout(form)
        layout.addWidget(self.result, 1)
        layout.addWidget(buttons)
        self.verify_button.clicked.connect(self.run)
        buttons.rejected.connect(self.reject)
        self.resize(640, 480)

    def run(self) -> dict | None:
        from salm_desktop.core.ownership.verify import verify

        def path(edit: QLineEdit) -> Path | None:
            text = edit.text().strip()
            return Path(text).expanduser() if text else None

        self.last = None
        if path(self.keys) is None:
            self.result.setPlainText("Choose the key folder first.")
            return None
        if (path(self.predictions) is None) == (path(self.model) is None):
            self.result.setPlainText("Give either the answers (CSV) or a model file, not both.")
            return None
        try:
            out = verify(path(self.keys), predictions=path(self.predictions), model=path(self.model),
                         release=path(self.release))
        except ValueError as exc:  # VerifyError / KeyDirError: one line naming the file and the reason
            self.result.setPlainText(f"Cannot verify: {exc}")
            return None
        lines = [out["verdict"], "", f"p-value {out['p_value']:.3g} ({out['test']})",
                 f"{out['hits']} hits of {out['keys']} informative keys ({out['keys_total']} keys, chance {out['chance_per_key']})"]
        if not out["release_checked"]:
            lines.append("The release fingerprint was not checked (choose the release folder to check it).")
        lines += ["", "Cautions:"] + [f"• {c}" for c in out["cautions"]]
        self.result.setPlainText("\n".join(lines))
        self.last = out
        return out
