"""Data safety and privacy (issue 7): a full protect job on real DICOM with an audit hook watching
every file open and socket, then a look for patient identifiers in what the job wrote besides the data.

Python audit hooks (PEP 578) see every ``open``/``os.open`` and every socket, whichever library
makes the call, so these tests cannot be fooled by a code path that bypasses a monkeypatched name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from salm_desktop.core.jobs import JobError, run_protect_job
from salm_desktop.core.progress import Progress
from salm_desktop.core.protect import ProtectSettings

_WATCH: dict[str, object] = {"active": False, "roots": [], "writes": [], "sockets": []}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    if not _WATCH["active"]:
        return
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS
        if writing:
            resolved = os.path.realpath(os.fsdecode(path))
            if any(resolved.startswith(root) for root in _WATCH["roots"]):
                _WATCH["writes"].append(resolved)
    elif event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo"):
        _WATCH["sockets"].append(event)
        raise PermissionError(f"network access attempted ({event}) during a protect job")


sys.addaudithook(_audit)  # hooks cannot be removed; the "active" flag scopes it to each test


@pytest.fixture
def watched_inputs(data_dir: Path, tmp_path: Path):
    """A copy of real DICOM studies (with patient names in their headers) under watch."""
    src = tmp_path / "inputs"
    shutil.copytree(data_dir / "dicom" / "pydicom_small" / "MR700_series_16x16", src / "mr700")
    (src / "ct").mkdir()
    shutil.copy(data_dir / "dicom" / "pydicom_small" / "CT_small.dcm", src / "ct" / "CT_small.dcm")
    shutil.copytree(data_dir / "dicom" / "hitachi_shoulder_mr" / "dicom", src / "shoulder")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*") if p.is_file()}
    _WATCH.update(active=True, roots=[os.path.realpath(src)], writes=[], sockets=[])
    try:
        yield src, before
    finally:
        _WATCH["active"] = False


def _tiny_settings(**overrides) -> ProtectSettings:
    values = dict(method="salm", mask_ratio=0.2, max_rounds=2, pgd_steps=2, train_steps=2, batch_size=8,
                  labels="clusters", n_clusters=2, device="cpu", seed=3)
    values.update(overrides)
    return ProtectSettings(**values)


def _identifiers(folder: Path) -> set[str]:
    found: set[str] = set()
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "AccessionNumber"):
            value = str(ds.get(keyword, "") or "").strip()
            if len(value) >= 3:
                found.add(value)
                found.update(part for part in value.split("^") if len(part) >= 3)
    return found


def test_full_protect_never_writes_inputs_and_opens_no_socket(watched_inputs, tmp_path: Path) -> None:
    src, before = watched_inputs
    messages: list[str] = []
    progress = Progress(lambda event: messages.append(event.message))
    result = run_protect_job([src], tmp_path / "out", _tiny_settings(), progress=progress)

    assert _WATCH["sockets"] == [], "the app opened a network socket"
    assert _WATCH["writes"] == [], f"input files opened for writing: {_WATCH['writes']}"
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*") if p.is_file()}
    assert after == before, "an input file changed"
    assert result.manifest is not None and result.manifest.is_file()
    assert any(f.suffix == ".dcm" or f.parent.name == "mr700" for f in result.files)

    # No patient names or IDs in the manifest, the report, or the log lines the user sees.
    identifiers = _identifiers(src)
    assert identifiers, "the test inputs should carry patient identifiers"
    texts = {"log": "\n".join(messages), "manifest": result.manifest.read_text(encoding="utf-8")}
    # Embedded figures are base64: drop them, they cannot carry readable text.
    html = result.report_html.read_text(encoding="utf-8")
    texts["report.html"] = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "", html)
    assert result.report_pdf is not None
    texts["report.pdf"] = subprocess.run(["pdftotext", str(result.report_pdf), "-"], capture_output=True,
                                         text=True, check=True).stdout
    assert "PSNR" in texts["report.pdf"]  # the text extraction itself works
    for name, text in texts.items():
        for ident in identifiers:
            assert not re.search(rf"\b{re.escape(ident)}\b", text), f"{name} contains a patient identifier"


def test_export_into_the_input_tree_is_refused(watched_inputs) -> None:
    src, before = watched_inputs
    with pytest.raises(JobError, match="inside the input"):
        run_protect_job([src], src / "protected", _tiny_settings(method="random"))
    assert not (src / "protected").exists()
    assert {p for p in src.rglob("*") if p.is_file()} == set(before)


def test_cancelled_job_leaves_no_partial_output(watched_inputs, tmp_path: Path) -> None:
    src, _ = watched_inputs
    progress = Progress()

    def cancel_during_export(event) -> None:
        if event.stage == "export" and event.done >= 1:
            progress.cancel()

    progress.add_listener(cancel_during_export)
    from salm_desktop.core.progress import Cancelled

    with pytest.raises(Cancelled):
        run_protect_job([src], tmp_path / "out", _tiny_settings(method="random"), progress=progress)
    assert not (tmp_path / "out").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "inputs"]
    assert leftovers == [], f"partial output left behind: {leftovers}"
