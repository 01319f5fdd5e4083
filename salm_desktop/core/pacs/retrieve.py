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
from salm_desktop.core.progress import Cancelled, Progress

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


def _save(ds, folder: Path, result: RetrieveResult) -> None:  # noqa: ANN001
    uid = str(ds.SOPInstanceUID)
    path = folder / f"{result.instances + 1:05d}.dcm"
    ds.save_as(path, enforce_file_format=True)
    result.instances += 1
    result.bytes += path.stat().st_size
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


# -- DIMSE ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def dimse_association(endpoint: Endpoint, creds: Credentials, contexts: list, *, roles: list | None = None,
                      handlers: list | None = None) -> Iterator:
    from pynetdicom import AE

    ae = AE(ae_title=creds.local_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = HTTP_TIMEOUT_S
    ae.maximum_pdu_size = 0  # accept PDUs of any size: the 16 kB default makes C-GET 2-3x slower
    for ctx in contexts:
        ae.add_requested_context(*ctx) if isinstance(ctx, tuple) else ae.add_requested_context(ctx)
    context = creds.ssl_context()
    tls = (context, endpoint.host) if context else None
    assoc = ae.associate(endpoint.host, endpoint.port, ae_title=endpoint.aet, ext_neg=roles or [],
                         evt_handlers=handlers or [], tls_args=tls)
    if assoc.is_rejected:
        raise PacsError(f"{endpoint.display}: association rejected by the server "
                        f"(is the called AE title {endpoint.aet!r} right, and is {creds.local_aet!r} allowed?)")
    if not assoc.is_established:
        raise PacsError(f"{endpoint.display}: {_why_no_association(endpoint, creds)}")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _why_no_association(endpoint: Endpoint, creds: Credentials) -> str:
    """pynetdicom reports every failed connection alike; a second, plain look tells the user which it was."""
    import socket
    import ssl

    unreachable = "cannot reach the server (is it running, is the address right?)"
    try:
        raw = socket.create_connection((endpoint.host, endpoint.port), timeout=5)
    except OSError:
        return unreachable
    with raw:
        context = creds.ssl_context()
        if context is None:
            return ("the server accepted the connection but ended it before the association (does it require "
                    "DICOM TLS? then set SALM_PACS_DIMSE_TLS=1, docs/pacs.md)")
        try:
            with context.wrap_socket(raw, server_hostname=endpoint.host) as tls:
                tls.settimeout(2)
                tls.recv(1)  # TLS 1.3: a refused client certificate shows as an alert after the handshake
        except ssl.SSLCertVerificationError as exc:
            return f"TLS error: the server's certificate is not trusted ({exc.verify_message}; set SALM_PACS_CA_BUNDLE)"
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc)
            if "CERTIFICATE" in reason.upper() or "HANDSHAKE" in reason.upper():
                return (f"TLS error: the server refused our client certificate ({reason}; "
                        "set SALM_PACS_TLS_CERT and SALM_PACS_TLS_KEY to one it trusts)")
            return f"TLS error ({reason})"
        except OSError:
            pass
    return unreachable


def _dimse_find(assoc, endpoint: Endpoint, level: str, **keys: str) -> list:
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    query = Dataset()
    query.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(query, key, value)
    found = []
    for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if status is None or "Status" not in status:  # an empty status: the association was aborted
            raise PacsError(f"{endpoint.display}: the connection was lost during C-FIND")
        if status.Status in (0xFF00, 0xFF01) and ident is not None:
            found.append(ident)
        elif status.Status not in (0x0000, 0xFF00, 0xFF01):
            raise PacsError(f"{endpoint.display}: C-FIND failed (status 0x{status.Status:04X})")
    return found


def _retrieve_dimse(endpoint: Endpoint, sel: Selection, dest: Path, creds: Credentials,
                    progress: Progress) -> RetrieveResult:
    from pynetdicom import build_role, evt
    from pynetdicom.presentation import StoragePresentationContexts
    from pynetdicom.sop_class import (StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet,
                                      StudyRootQueryRetrieveInformationModelMove)

    result = RetrieveResult(dest, [], [], 0, 0)
    failures: list[str] = []

    def on_store(event) -> int:  # noqa: ANN001
        if progress.cancelled:  # the rest is refused unsaved; the retrieval then ends with Cancelled
            return 0xA700
        try:
            folder = _series_folder(dest, result, str(event.dataset.SeriesInstanceUID))
            _save_raw(event, folder, result)
        except Exception as exc:  # noqa: BLE001 - reported to the PACS as a failed sub-operation
            failures.append(exc.__class__.__name__)
            return 0xA700
        with contextlib.suppress(Cancelled):  # raised on the SCP's thread: the main thread sees progress.cancelled
            progress.update("retrieve", result.instances, max(result.instances, expected["n"]),
                            f"{result.instances} instances")
        return 0x0000

    expected = {"n": 0}
    wanted: set[str] = set()  # the series asked for: a C-MOVE SCP stores nothing else
    storage = [c.abstract_syntax for c in StoragePresentationContexts][:120]  # 128 contexts at most
    move = None
    if creds.move_port is not None:
        move, verb = _storage_scp(endpoint, creds, storage, on_store, wanted), "C-MOVE"
        contexts, roles, handlers = [StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelMove], [], []
    else:
        verb = "C-GET"
        contexts = [StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet] + storage
        roles, handlers = [build_role(uid, scp_role=True) for uid in storage], [(evt.EVT_C_STORE, on_store)]
    with contextlib.ExitStack() as stack:
        if move is not None:
            stack.callback(move.shutdown)
        assoc = stack.enter_context(dimse_association(endpoint, creds, contexts, roles=roles, handlers=handlers))
        _find_and_fetch(assoc, endpoint, sel, creds, progress, result, expected, wanted, move, verb)
    progress.check()  # a cancel during the last series ends here, not as "could not be written"
    if failures:
        raise PacsError(f"{endpoint.display}: {len(failures)} instance(s) could not be written locally ({failures[0]})")
    progress.update("retrieve", result.instances, result.instances, f"{result.instances} instances")
    return result


def _storage_scp(endpoint: Endpoint, creds: Credentials, storage: list[str], on_store, wanted: set[str]):  # noqa: ANN001, ANN202
    """Our storage SCP for C-MOVE: on ``creds.move_port`` (0: a free one), only for the duration of the
    retrieval, accepting only the called PACS's AE title and only instances of the series asked for."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

    def on_move_store(event) -> int:  # noqa: ANN001
        if str(event.dataset.SeriesInstanceUID) not in wanted:
            return 0xA700  # not asked for: refused, never stored
        return on_store(event)

    ae = AE(ae_title=creds.local_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = HTTP_TIMEOUT_S
    ae.maximum_pdu_size = 0
    ae.require_calling_aet = [endpoint.aet]
    for uid in storage:
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)  # stored as the PACS has it, no transcoding
    context = creds.ssl_context()
    if context is not None:  # the PACS connects to us: our side is the TLS server
        import ssl

        if not creds.tls_cert:
            raise PacsError("C-MOVE over TLS needs our storage SCP's certificate: set SALM_PACS_TLS_CERT and SALM_PACS_TLS_KEY")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=creds.ca_bundle)
        context.load_cert_chain(creds.tls_cert, creds.tls_key)
    try:
        return ae.start_server(("", creds.move_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_move_store)],
                               ssl_context=context)
    except OSError as exc:
        raise PacsError(f"cannot listen on port {creds.move_port} for C-MOVE ({exc.strerror or exc}); "
                        "choose another SALM_PACS_MOVE_PORT") from None


def _find_and_fetch(assoc, endpoint: Endpoint, sel: Selection, creds: Credentials, progress: Progress,  # noqa: ANN001
                    result: RetrieveResult, expected: dict, wanted: set[str], move, verb: str) -> None:  # noqa: ANN001
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove

    if sel.accession:
        studies = [str(d.StudyInstanceUID) for d in _dimse_find(assoc, endpoint, "STUDY", AccessionNumber=sel.accession,
                                                                 StudyInstanceUID="")]
        if sel.study:
            studies = [s for s in studies if s == sel.study]
        if not studies:
            raise PacsError(f"{endpoint.display}: no study with accession number {sel.accession}")
    elif sel.study:
        studies = [sel.study]
    else:
        raise PacsError(f"{endpoint.display}: give --study UID or --accession N")
    pairs = []
    for st in studies:
        rows = _dimse_find(assoc, endpoint, "SERIES", StudyInstanceUID=st, SeriesInstanceUID="",
                           NumberOfSeriesRelatedInstances="", SeriesDescription="")
        if not rows:
            raise PacsError(f"{endpoint.display}: study {st} not found")
        for r in rows:
            take = (str(r.SeriesInstanceUID) in sel.series if sel.series
                    else not _is_protected_series(r.get("SeriesDescription")))
            if take:
                pairs.append((st, str(r.SeriesInstanceUID)))
                expected["n"] += int(r.get("NumberOfSeriesRelatedInstances") or 0)
    missing = [s for s in sel.series if s not in {p[1] for p in pairs}]
    if missing:
        raise PacsError(f"{endpoint.display}: series {missing[0]} not found in study {studies[0]}")
    result.studies, result.series = sorted(set(studies)), [p[1] for p in pairs]
    wanted.update(p[1] for p in pairs)
    for st, se in pairs:
        progress.check()
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID, query.SeriesInstanceUID = st, se
        if move is not None:
            answers = assoc.send_c_move(query, creds.local_aet, StudyRootQueryRetrieveInformationModelMove)
        else:
            answers = assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        for status, _ in answers:
            if status is None or "Status" not in status or status.Status not in (0x0000, 0xFF00, 0xFF01, 0xB000):
                progress.check()  # what we refused after a cancel makes the PACS report a failure: it is a cancel
            if status is None or "Status" not in status:
                raise PacsError(f"{endpoint.display}: the connection was lost during {verb}")
            if move is not None and status.Status == 0xA801:
                raise PacsError(f"{endpoint.display}: C-MOVE refused: the server does not know {creds.local_aet!r} as a "
                                f"destination (register it with this computer's address and port {move.server_address[1]})")
            if status.Status not in (0x0000, 0xFF00, 0xFF01, 0xB000):
                # Orthanc answers an unknown destination with the generic 0xC000, hence the hint
                hint = (f"; is {creds.local_aet!r} registered in the PACS as a destination with this computer's address "
                        f"and port {move.server_address[1]}?" if move is not None and not result.instances else "")
                raise PacsError(f"{endpoint.display}: {verb} of series {se} failed (status 0x{status.Status:04X}){hint}")


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
        result = _retrieve_dimse(endpoint, selection, dest, creds, progress)
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

        keys = {name: "" for name in STUDY_FIELDS}
        keys.update(filters)
        with dimse_association(endpoint, creds, [StudyRootQueryRetrieveInformationModelFind]) as assoc:
            for ds in _dimse_find(assoc, endpoint, "STUDY", **keys)[:limit]:
                values = {name: ds.get(name, "") for name in STUDY_FIELDS}
                rows.append({name: "\\".join(map(str, v)) if isinstance(v, MultiValue) else str(v)
                             for name, v in values.items()})
    return sorted(rows, key=lambda r: (r["StudyDate"], r["StudyInstanceUID"]), reverse=True)
