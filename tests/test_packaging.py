"""The install metadata ships every package and the bundled resources."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "salm_desktop").rglob("__init__.py")}
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert "salm_desktop.resources" in listed


def test_wheel_contains_the_code_and_the_sample_data(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("salm_desktop-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "salm_desktop/resources/breastmnist_sample16.npz" in names
    # the Help menu's pages (resources/ links to docs/; the wheel holds copies)
    assert {"salm_desktop/resources/user-guide.md", "salm_desktop/resources/troubleshooting.md"} <= names
    assert "salm_desktop/core/protect/engine.py" in names and "salm_desktop/gui/pages/load.py" in names
    assert not any(n.startswith("tests/") for n in names)
