"""salm-desktop entry point."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication(sys.argv if argv is None else ["salm-desktop", *argv])
    label = QLabel("SALM Desktop")
    label.show()
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
