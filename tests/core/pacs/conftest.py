"""A real Orthanc on loopback for the PACS tests, holding the real 3-slice CT.

Needs the Debian packages ``orthanc`` and ``orthanc-dicomweb`` (installed by .ci/run); without the
Orthanc binary these tests are skipped with that reason.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orthanc_server import PASSWORD, USER, start_orthanc

pytest.importorskip("dicomweb_client")
pytest.importorskip("pynetdicom")


@pytest.fixture(scope="session")
def ct_files(dicom_dir: Path) -> list[Path]:
    return sorted((dicom_dir / "ct_3slice_dcmqi" / "dicom").glob("*.dcm"))


@pytest.fixture(scope="session")
def ct_uids(ct_files):  # noqa: ANN001
    import pydicom

    ds = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct_files]
    return {"study": str(ds[0].StudyInstanceUID), "series": str(ds[0].SeriesInstanceUID),
            "accession": str(ds[0].AccessionNumber), "sops": {str(d.SOPInstanceUID) for d in ds}}


@pytest.fixture(scope="session")
def original_hashes(ct_files) -> dict[str, str]:  # noqa: ANN001
    return {hashlib.sha256(f.read_bytes()).hexdigest(): f.name for f in ct_files}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, ct_files):  # noqa: ANN001
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"), ct_files)
    yield server
    server.stop()


@pytest.fixture
def credentials():  # noqa: ANN201
    from salm_desktop.core.pacs import Credentials

    return Credentials(user=USER, password=PASSWORD)


@pytest.fixture
def pacs_env(monkeypatch, tmp_path):  # noqa: ANN001
    """The CLI's way: user in the environment, password in a file named by the environment."""
    secret = tmp_path / "pacs-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    monkeypatch.setenv("SALM_PACS_USER", USER)
    monkeypatch.setenv("SALM_PACS_PASSWORD_FILE", str(secret))
    return PASSWORD
