"""The core must never import Qt (DESIGN.md layers): checked statically and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "salm_desktop" / "core"
FORBIDDEN = ("PySide6", "PyQt5", "PyQt6", "PySide2", "shiboken6", "salm_desktop.gui")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.append(str(node.args[0].value))
    return names


def test_no_core_module_imports_qt_statically():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 10, "the core package was not found"
    offenders = [f"{f.relative_to(CORE.parent.parent)}: {name}" for f in files for name in _imports(f)
                 if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)]
    assert offenders == []


def test_static_check_catches_a_qt_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom PySide6.QtCore import QObject\n")
    assert "PySide6.QtCore" in _imports(bad)


def test_importing_every_core_module_loads_no_qt():
    modules = sorted(
        ".".join(p.relative_to(CORE.parent.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in CORE.rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"mods = {modules!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'shiboken6'))\n"
        "print('QT:' + ','.join(bad))\n"
        "print('N:%d' % len(mods))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=CORE.parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    assert int(lines["N"]) == len(modules) > 10
    assert lines["QT"] == "", f"PySide6 loaded by the core: {lines['QT']}"
