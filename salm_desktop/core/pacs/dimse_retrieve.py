"""DIMSE retrieval: C-FIND, then C-GET over the same association or C-MOVE to a storage SCP of ours.

Split from ``retrieve.py`` (which keeps the public ``retrieve`` and DICOMweb); the association helper
is shared with ``send.py``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from salm_desktop.core.pacs.endpoints import Credentials, Endpoint, PacsError
from salm_desktop.core.pacs.retrieve import (HTTP_TIMEOUT_S, RetrieveResult, Selection, _is_protected_series, _save_raw,
                                             _series_folder)
from salm_desktop.core.progress import Cancelled, Progress

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


def dimse_find(assoc, endpoint: Endpoint, level: str, **keys: str) -> list:
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


def retrieve_dimse(endpoint: Endpoint, sel: Selection, dest: Path, creds: Credentials,
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
        studies = [str(d.StudyInstanceUID) for d in dimse_find(assoc, endpoint, "STUDY", AccessionNumber=sel.accession,
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
        rows = dimse_find(assoc, endpoint, "SERIES", StudyInstanceUID=st, SeriesInstanceUID="",
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
