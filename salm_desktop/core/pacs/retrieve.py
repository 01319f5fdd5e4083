"""Pull a study (or some of its series) from a PACS into a local folder.

DICOMweb: QIDO-RS to find the study and series, WADO-RS to retrieve (``dicomweb-client``).
DIMSE: C-FIND to find them, C-GET to retrieve over the same association (``pynetdicom``), so the
PACS does not need to know our address; or, with ``Credentials.move_port`` (``SALM_PACS_MOVE_PORT``),
C-MOVE to a storage SCP of ours listening on that port only while the retrieval runs (the PACS must
know our AE title, host and port as a destination). Files land as ``DEST/<series UID>/<SOP instance UID>.dcm``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from salm_desktop.core.pacs.endpoints import Credentials, Endpoint, PacsError, credentials_from_env
from salm_desktop.core.progress import Progress

HTTP_TIMEOUT_S = 30
# The export marks protected series so; a study pulled back after a send holds them next to the
# originals, and protecting a protected copy again is never what a study-level pull means.
PROTECTED_MARK = "(protected)"


def _is_protected_series(description: str | None) -> bool:
    return PROTECTED_MARK in str(description or "")


@dataclass
class Selection:
    study: str | None = None
    series: list[str] = field(default_factory=list)
    accession: str | None = None


@dataclass
class RetrieveResult:
    folder: Path
    studies: list[str]
    series: list[str]
    instances: int
    bytes: int
    sop_uids: set[str] = field(default_factory=set)
    folders: dict[str, Path] = field(default_factory=dict)  # series UID -> local folder


def _series_folder(dest: Path, result: "RetrieveResult", series_uid: str) -> Path:
    # Neutral names (series001/00001.dcm): the original UIDs must not reappear as file names in a
    # de-identified release built from these folders.
    if series_uid not in result.folders:
        result.folders[series_uid] = dest / f"series{len(result.folders) + 1:03d}"
        result.folders[series_uid].mkdir(parents=True, exist_ok=True)
    return result.folders[series_uid]


def http_message(exc: Exception, endpoint: Endpoint, what: str) -> str:
    import requests

    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        hint = {401: "authentication failed: check the credentials (docs/pacs.md)",
                403: "access refused by the server", 404: "not found on the server"}.get(
            code, "server error" if code >= 500 else "request refused")
        return f"{endpoint.display}: {what}: HTTP {code} ({hint})"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"{endpoint.display}: {what}: TLS error (certificate not trusted? set SALM_PACS_CA_BUNDLE)"
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return f"{endpoint.display}: {what}: cannot reach the server (is it running, is the address right?)"
    return f"{endpoint.display}: {what}: {exc.__class__.__name__}"


def dicomweb_client(endpoint: Endpoint, credentials: Credentials):  # noqa: ANN201
    from dicomweb_client import DICOMwebClient

    client = DICOMwebClient(endpoint.url, session=credentials.http_session(), timeout=HTTP_TIMEOUT_S)
    client.set_http_retry_params(retry=False)  # retries are ours (send), with per-instance accounting
    return client


def _attr(obj: dict, tag: str) -> str | None:
    value = (obj.get(tag) or {}).get("Value")
    return str(value[0]) if value else None


def _dicomweb_find(client, endpoint: Endpoint, sel: Selection) -> list[tuple[str, str]]:
    study = sel.study or endpoint.study
    series = list(sel.series) or ([endpoint.series] if endpoint.series else [])
    studies = [study] if study else []
    if sel.accession:
        found = client.search_for_studies(search_filters={"AccessionNumber": sel.accession}, get_remaining=True)
        acc_studies = [u for u in (_attr(s, "0020000D") for s in found) if u]
        if not acc_studies:
            raise PacsError(f"{endpoint.display}: no study with accession number {sel.accession}")
        studies = [s for s in acc_studies if not study or s == study] or studies
    if not studies:
        raise PacsError(f"{endpoint.display}: give a study (…/studies/UID or --study) or --accession")
    pairs: list[tuple[str, str]] = []
    for st in studies:
        rows = client.search_for_series(study_instance_uid=st, fields=["0008103E"], get_remaining=True)
        uids = [(u, _attr(r, "0008103E")) for r in rows if (u := _attr(r, "0020000E"))]
        if not uids:
            raise PacsError(f"{endpoint.display}: study {st} not found")
        pairs += [(st, u) for u, desc in uids if ((u in series) if series else not _is_protected_series(desc))]
    missing = [s for s in series if s not in {p[1] for p in pairs}]
    if missing:
        raise PacsError(f"{endpoint.display}: series {missing[0]} not found in study {studies[0]}")
    return pairs


def _retrieve_dicomweb(endpoint: Endpoint, sel: Selection, dest: Path, creds: Credentials,
                       progress: Progress) -> RetrieveResult:
    import requests

    client = dicomweb_client(endpoint, creds)
    session = creds.http_session()
    what = "query"
    try:
        pairs = _dicomweb_find(client, endpoint, sel)
        result = RetrieveResult(dest, sorted({p[0] for p in pairs}), [p[1] for p in pairs], 0, 0)
        what = "retrieve"
        for i, (study, series) in enumerate(pairs):
            progress.check()
            folder = _series_folder(dest, result, series)
            for body in _wado_series(session, endpoint, study, series, progress):
                _save_bytes(body, folder, result)
                progress.update("retrieve", i, len(pairs), f"{result.instances} instances")
        progress.update("retrieve", len(pairs), len(pairs), f"{result.instances} instances")
        return result
    except requests.exceptions.RequestException as exc:
        raise PacsError(http_message(exc, endpoint, what)) from None


WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'  # as stored, no transcoding
CHUNK = 1 << 20


def _wado_series(session, endpoint: Endpoint, study: str, series: str, progress: Progress) -> Iterator[bytes]:
    """WADO-RS retrieve of one series, yielding each instance's Part-10 bytes as they stream in.

    Parsed here rather than through dicomweb-client so that instances are written as the server sent
    them (no decode/re-encode, which is 3-5x slower) and a large series never sits in memory whole.
    """
    import re

    url = f"{endpoint.url}/studies/{study}/series/{series}"
    with session.get(url, headers={"Accept": WADO_ACCEPT}, stream=True, timeout=HTTP_TIMEOUT_S) as response:
        response.raise_for_status()
        m = re.search(r'boundary="?([^";]+)"?', response.headers.get("Content-Type", ""))
        if not m:
            raise PacsError(f"{endpoint.display}: retrieve: the server's answer is not multipart")
        delimiter = b"--" + m.group(1).encode()
        buf = bytearray()
        for chunk in response.iter_content(CHUNK):
            progress.check()
            buf += chunk
            while True:
                start = buf.find(delimiter)
                end = buf.find(b"\r\n" + delimiter, start + len(delimiter)) if start >= 0 else -1
                if end < 0:
                    break
                part = bytes(buf[start + len(delimiter):end])
                del buf[:end + 2]
                head, sep, body = part.partition(b"\r\n\r\n")
                if sep and body:
                    yield body
        if buf.strip() and not buf.strip().startswith(delimiter + b"--"):
            raise PacsError(f"{endpoint.display}: retrieve: the transfer ended in the middle of an instance")


def _save_bytes(body: bytes, folder: Path, result: RetrieveResult) -> None:
    import io

    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        uid = str(ds.SOPInstanceUID)
    except Exception as exc:  # noqa: BLE001
        raise PacsError(f"the server sent something that is not a DICOM instance ({exc.__class__.__name__})") from None
    path = folder / f"{result.instances + 1:05d}.dcm"
    path.write_bytes(body)
    result.instances += 1
    result.bytes += len(body)
    result.sop_uids.add(uid)


def _save_raw(event, folder: Path, result: RetrieveResult) -> None:  # noqa: ANN001
    """A received C-STORE dataset written as it came (no decode/re-encode), behind its file meta."""
    from pydicom.filewriter import write_file_meta_info

    path = folder / f"{result.instances + 1:05d}.dcm"
    with open(path, "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, event.file_meta, enforce_standard=True)
        fh.write(event.request.DataSet.getvalue())
    result.instances += 1
    result.bytes += path.stat().st_size
    result.sop_uids.add(str(event.file_meta.MediaStorageSOPInstanceUID))




def retrieve(endpoint: Endpoint | str, dest: str | Path, selection: Selection | None = None, *,
             credentials: Credentials | None = None, progress: Progress | None = None) -> RetrieveResult:
    """Retrieve the selected study/series into ``dest`` (created). Raises :class:`PacsError`."""
    from salm_desktop.core.pacs.endpoints import parse_endpoint

    endpoint = parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
    selection = selection or Selection()
    creds = credentials or credentials_from_env()
    progress = progress or Progress()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if endpoint.kind == "dicomweb":
        result = _retrieve_dicomweb(endpoint, selection, dest, creds, progress)
    else:
        from salm_desktop.core.pacs.dimse_retrieve import retrieve_dimse

        result = retrieve_dimse(endpoint, selection, dest, creds, progress)
    if result.instances == 0:
        raise PacsError(f"{endpoint.display}: the selection has no instances")
    return result


@contextlib.contextmanager
def private_retrieval(sources: list[tuple[Endpoint, Selection]], *, credentials: Credentials | None = None,
                      progress: Progress | None = None) -> Iterator[tuple[list[Path], list[RetrieveResult]]]:
    """Retrieve each source into its own folder under a private (0700) temporary folder; yield the
    folders; remove everything afterwards, also after a failure or cancel."""
    root = Path(tempfile.mkdtemp(prefix="salm-pacs-"))  # mkdtemp creates it with mode 0700
    os.chmod(root, 0o700)
    try:
        folders, results = [], []
        for i, (endpoint, selection) in enumerate(sources):
            folder = root / f"source{i + 1}"
            results.append(retrieve(endpoint, folder, selection, credentials=credentials, progress=progress))
            folders.append(folder)
        yield folders, results
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- study search (for the "Load from PACS" dialog and scripts) ------------------------------------
@dataclass
class StudyQuery:
    patient_id: str = ""
    accession: str = ""
    date_from: str = ""  # YYYYMMDD
    date_to: str = ""  # YYYYMMDD
    modality: str = ""

    def filters(self) -> dict[str, str]:
        out = {}
        if self.patient_id:
            out["PatientID"] = self.patient_id
        if self.accession:
            out["AccessionNumber"] = self.accession
        if self.date_from or self.date_to:
            for d in (self.date_from, self.date_to):
                if d and not (len(d) == 8 and d.isdigit()):
                    raise PacsError(f"date {d!r}: expected YYYYMMDD")
            out["StudyDate"] = f"{self.date_from}-{self.date_to}"
        if self.modality:
            out["ModalitiesInStudy"] = self.modality
        return out


STUDY_FIELDS = {"StudyInstanceUID": "0020000D", "PatientID": "00100020", "PatientName": "00100010",
                "StudyDate": "00080020", "AccessionNumber": "00080050", "ModalitiesInStudy": "00080061",
                "StudyDescription": "00081030", "NumberOfStudyRelatedInstances": "00201208"}


def _person_name(value) -> str:  # noqa: ANN001
    if isinstance(value, dict):
        return str(value.get("Alphabetic", ""))
    return str(value or "")


def find_studies(endpoint: Endpoint | str, query: StudyQuery, *, credentials: Credentials | None = None,
                 limit: int = 500) -> list[dict[str, str]]:
    """Studies matching ``query`` (QIDO-RS or C-FIND at STUDY level), one dict per study with the
    keys of :data:`STUDY_FIELDS`. Raises :class:`PacsError`."""
    import requests

    from salm_desktop.core.pacs.endpoints import parse_endpoint

    endpoint = parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
    creds = credentials or credentials_from_env()
    filters = query.filters()
    rows: list[dict[str, str]] = []
    if endpoint.kind == "dicomweb":
        try:
            found = dicomweb_client(endpoint, creds).search_for_studies(
                search_filters=filters, fields=list(STUDY_FIELDS.values()), limit=limit)
        except requests.exceptions.RequestException as exc:
            raise PacsError(http_message(exc, endpoint, "query")) from None
        for item in found:
            row = {}
            for name, tag in STUDY_FIELDS.items():
                values = (item.get(tag) or {}).get("Value") or []
                row[name] = "\\".join(_person_name(v) if name == "PatientName" else str(v) for v in values)
            rows.append(row)
    else:
        from pydicom.multival import MultiValue
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        from salm_desktop.core.pacs.dimse_retrieve import dimse_association, dimse_find

        keys = {name: "" for name in STUDY_FIELDS}
        keys.update(filters)
        with dimse_association(endpoint, creds, [StudyRootQueryRetrieveInformationModelFind]) as assoc:
            for ds in dimse_find(assoc, endpoint, "STUDY", **keys)[:limit]:
                values = {name: ds.get(name, "") for name in STUDY_FIELDS}
                rows.append({name: "\\".join(map(str, v)) if isinstance(v, MultiValue) else str(v)
                             for name, v in values.items()})
    return sorted(rows, key=lambda r: (r["StudyDate"], r["StudyInstanceUID"]), reverse=True)
