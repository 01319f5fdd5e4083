"""Counts the source identifiers found in the bytes of each release of shared/data/dicom, with identity
kept and with the default de-identification (docs/deidentification.md). Uses the test's own scan.

    SALM_DESKTOP_CONFIG_DIR=/tmp/salm-config python benchmarks/deid_leak_scan.py
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
spec = importlib.util.spec_from_file_location("scan", ROOT / "tests" / "core" / "export" / "test_deidentification.py")
scan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scan)

from salm_desktop.core.export.deid import DeidOptions  # noqa: E402
from salm_desktop.core.jobs import run_protect_job  # noqa: E402
from salm_desktop.core.protect import ProtectSettings  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="salm-leak-scan-"))
    secret = scan._secret(work / "secret", "hospital-secret-0123456789abcdef")
    print("| study | identifiers searched | found, identity kept | found, de-identified (default) |")
    print("|---|---|---|---|")
    for study in sorted((ROOT.parent / "shared" / "data" / "dicom").iterdir()):
        identifiers = scan._identifiers(scan._source_dicoms(study))
        row = [study.name, len(identifiers)]
        for keep in (True, False):
            out = work / f"{study.name}-{'kept' if keep else 'deid'}"
            run_protect_job([study], out, ProtectSettings(**scan.FAST), report=False,
                            deid=DeidOptions(keep_identity=keep, secret=secret))
            row.append(len({line.split(": holds ")[-1] for line in scan._leaks(out, identifiers) if ": holds " in line}))
        print("| %s | %d | %d | %d |" % tuple(row), flush=True)


if __name__ == "__main__":
    main()
