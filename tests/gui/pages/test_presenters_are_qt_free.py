"""The page presenters hold the wizard's logic without Qt: importing them loads no PySide6."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PRESENTERS = ["load", "settings", "preview", "protect", "review", "export"]


def test_every_presenter_imports_without_qt():
    modules = ", ".join(f"salm_desktop.gui.pages.{name}_presenter" for name in PRESENTERS)
    code = (f"import importlib, sys\nfor m in '{modules}'.split(', '): importlib.import_module(m)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('PySide6', 'shiboken6'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
