"""Send a finished release to a PACS: STOW-RS (DICOMweb) or C-STORE (DIMSE).

Rules: only a complete release is sent (the caller runs this after the job's rename into place);
every DICOM file in the release is sent as it is (whatever de-identification made of it); an
instance whose SOP Instance UID is one of the originals' is refused, so sending can never replace
an original in the PACS; each instance is retried a few times, and its outcome goes to a send
journal (JSON lines, next to the release, never inside it) only once the PACS confirmed it, so a
rerun sends only what is still missing and nothing half-sent is counted as done.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from salm_desktop.core.pacs.endpoints import Credentials, Endpoint, PacsError, credentials_from_env, parse_endpoint
from salm_desktop.core.progress import Progress

RETRIES = 3
RETRY_WAIT_S = 0.5  # doubled after each failed attempt


@dataclass
class InstanceOutcome:
    path: str  # relative to the release folder
    sop_instance_uid: str
    status: str  # "sent" | "already sent" | "failed" | "refused"
    message: str = ""
    attempts: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SendReport:
    destination: str
    journal: Path
    instances: list[InstanceOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for i in self.instances if i.status == status)

    @property
    def complete(self) -> bool:
        return all(i.status in ("sent", "already sent") for i in self.instances)

    def as_dict(self) -> dict:
        return {"destination": self.destination, "journal": str(self.journal), "complete": self.complete,
                "sent": self.count("sent"), "already_sent": self.count("already sent"),
                "failed": self.count("failed"), "refused": self.count("refused"),
                "instances": [i.as_dict() for i in self.instances]}


def journal_path(release: Path) -> Path:
    """The send journal lives next to the release (a sibling dot-file), never inside it."""
    release = Path(release).resolve()
    return release.parent / f".{release.name}.salm-send.jsonl"


def _destination_key(endpoint: Endpoint) -> str:
    return endpoint.display  # carries no credentials (see endpoints.py)


def _read_journal(path: Path, key: str) -> dict[str, str]:
    """SOP Instance UID -> sha256 of the file confirmed sent to ``key``. A torn last line is ignored."""
    done: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return done
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("destination") == key and row.get("status") == "sent":
            done[row["sop_instance_uid"]] = row["sha256"]
    return done


def _append_journal(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def release_instances(release: Path) -> list[tuple[Path, object]]:
    """(path, dataset without pixels) for every DICOM file under ``release``, in path order."""
    import pydicom

    found = []
    for path in sorted(p for p in Path(release).rglob("*") if p.is_file()):
        if path.suffix.lower() in (".json", ".html", ".pdf", ".png", ".csv", ".txt", ".md", ".nii", ".gz", ".npz"):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM: not ours to send
            continue
        if "SOPInstanceUID" in ds and getattr(ds, "file_meta", None) is not None:
            found.append((path, ds))
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- transports -------------------------------------------------------------------------------------
class _Stow:
    def __init__(self, endpoint: Endpoint, creds: Credentials) -> None:
        from salm_desktop.core.pacs.retrieve import dicomweb_client

        self.endpoint = endpoint
        self.client = dicomweb_client(endpoint, creds)

    def send(self, path: Path) -> None:
        import pydicom
        import requests

        from salm_desktop.core.pacs.retrieve import http_message

        ds = pydicom.dcmread(path)
        try:
            response = self.client.store_instances([ds])
        except requests.exceptions.RequestException as exc:
            raise PacsError(http_message(exc, self.endpoint, "store")) from None
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reason = failed[0].get("FailureReason")
            raise PacsError(f"{self.endpoint.display}: store refused the instance (reason {reason})")

    def close(self) -> None:
        pass


class _CStore:
    def __init__(self, endpoint: Endpoint, creds: Credentials) -> None:
        self.endpoint, self.creds = endpoint, creds
        self.assoc = None
        self.stack = None
        self.contexts: list[tuple[str, str]] = []

    def _connect(self, ds) -> None:  # noqa: ANN001
        import contextlib

        from salm_desktop.core.pacs.dimse_retrieve import dimse_association

        needed = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        if self.assoc is not None and self.assoc.is_established and needed in self.contexts:
            return
        self.close()
        if needed not in self.contexts:
            self.contexts.append(needed)
        self.stack = contextlib.ExitStack()
        ctx = [(sop, [ts]) for sop, ts in self.contexts[-100:]]
        self.assoc = self.stack.enter_context(dimse_association(self.endpoint, self.creds, ctx))

    def send(self, path: Path) -> None:
        import pydicom

        ds = pydicom.dcmread(path)
        self._connect(ds)
        try:
            status = self.assoc.send_c_store(ds)
        except ValueError:  # pynetdicom: no accepted presentation context for this SOP class/transfer syntax
            raise PacsError(f"{self.endpoint.display}: C-STORE refused: the server does not accept SOP class "
                            f"{ds.SOPClassUID} in transfer syntax {ds.file_meta.TransferSyntaxUID}") from None
        if status is None or "Status" not in status:
            self.close()
            raise PacsError(f"{self.endpoint.display}: the connection was lost during C-STORE")
        if status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
            raise PacsError(f"{self.endpoint.display}: C-STORE refused the instance (status 0x{status.Status:04X})")

    def close(self) -> None:
        if self.stack is not None:
            try:
                self.stack.close()
            except Exception:  # noqa: BLE001 - a dead association cannot be released politely
                pass
        self.stack = self.assoc = None


def send_release(release: str | Path, destination: Endpoint | str, *, original_uids: Iterable[str] = (),
                 credentials: Credentials | None = None, progress: Progress | None = None,
                 retries: int = RETRIES, retry_wait_s: float = RETRY_WAIT_S) -> SendReport:
    """Send every DICOM instance of the finished release folder ``release`` to ``destination``."""
    release = Path(release)
    if not release.is_dir():
        raise PacsError(f"{release}: not a release folder")
    endpoint = parse_endpoint(destination) if isinstance(destination, str) else destination
    creds = credentials or credentials_from_env()
    progress = progress or Progress()
    key = _destination_key(endpoint)
    journal = journal_path(release)
    done = _read_journal(journal, key)
    originals = set(original_uids)
    report = SendReport(key, journal)
    items = release_instances(release)
    if not items:
        raise PacsError(f"{release}: no DICOM instances to send")
    transport = _Stow(endpoint, creds) if endpoint.kind == "dicomweb" else _CStore(endpoint, creds)
    unreachable = None  # after the server proved unreachable, the rest fail fast with the same message
    try:
        for n, (path, ds) in enumerate(items):
            progress.check()
            rel = str(path.relative_to(release))
            uid = str(ds.SOPInstanceUID)
            outcome = InstanceOutcome(rel, uid, "failed")
            report.instances.append(outcome)
            if uid in originals:
                outcome.status, outcome.message = "refused", "has an original's SOP Instance UID: sending it would replace the original"
                continue
            digest = _sha256(path)
            if done.get(uid) == digest:
                outcome.status = "already sent"
                continue
            if unreachable:
                outcome.message = unreachable
                continue
            wait = retry_wait_s
            for attempt in range(1, retries + 1):
                outcome.attempts = attempt
                try:
                    transport.send(path)
                except (PacsError, OSError, ValueError, RuntimeError) as exc:  # unreadable file, lost socket …
                    outcome.message = str(exc) if isinstance(exc, PacsError) else f"{rel}: {exc.__class__.__name__}: {exc}"
                    if "refused" in outcome.message or "rejected" in outcome.message or "HTTP 4" in outcome.message:
                        break  # the server said no: retrying would not change its mind
                    if attempt < retries:
                        progress.check()
                        time.sleep(wait)
                        wait *= 2
                    continue
                outcome.status, outcome.message = "sent", ""
                _append_journal(journal, {"destination": key, "sop_instance_uid": uid, "sha256": digest,
                                          "path": rel, "status": "sent", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                break
            if outcome.status == "failed" and "cannot reach" in outcome.message:
                unreachable = outcome.message
            progress.update("send", n + 1, len(items), f"{report.count('sent')} sent")
    finally:
        transport.close()
    return report
