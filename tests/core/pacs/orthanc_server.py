"""A real Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) on loopback, with a
temporary config and storage. Used by the PACS tests and by benchmarks/pacs_transfer.py."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

ORTHANC_BINARY = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
DICOMWEB_PLUGIN_CANDIDATES = [
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    Path("/usr/lib/orthanc/libOrthancDicomWeb.so"),
]
AET = "ORTHANC"
USER, PASSWORD = "steward", "s3cret-pacs-password-do-not-log"


def dicomweb_plugin() -> Path | None:
    return next((p for p in DICOMWEB_PLUGIN_CANDIDATES if p.exists()), None)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(a PEM with key and certificate for the server, the certificate alone for the client), for 127.0.0.1."""
    import subprocess as sp

    key, cert = folder / "key.pem", folder / "ca.pem"
    sp.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
           check=True, capture_output=True)
    both = folder / "orthanc-tls.pem"
    both.write_bytes(key.read_bytes() + cert.read_bytes())
    return both, cert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """``start()`` blocks until Orthanc says it has started; ``kill()`` is a crash (SIGKILL)."""

    def __init__(self, workdir: Path, *, auth: bool = True, dicom_tls: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.auth = auth
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []
        config = {
            "Name": "SALM-TEST", "StorageDirectory": str(self.workdir / "db"), "IndexDirectory": str(self.workdir / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AET, "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": auth, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [str(dicomweb_plugin())], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "StorageCompression": False, "OverwriteInstances": False, "HttpThreadsCount": 8,
            "MaximumPduLength": 131072,  # Orthanc's default 16 kB PDUs cost DIMSE 2-3x in per-PDU overhead
            "StableAge": 3600,  # no stable-study jobs while a test runs
        }
        if dicom_tls:  # DicomTlsEnabled, DicomTlsCertificate, …: the DICOM port then speaks TLS only
            config.update(dicom_tls)
        self.config = self.workdir / "orthanc.json"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(json.dumps(config), encoding="utf-8")

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.rest}/dicom-web"

    @property
    def dimse(self) -> str:
        return f"dimse:{AET}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout_s: float = 60) -> "Orthanc":
        self.proc = subprocess.Popen([ORTHANC_BINARY, str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=self.workdir)
        started = threading.Event()

        def drain() -> None:  # read Orthanc's log so that its pipe never fills up
            for line in self.proc.stderr:
                self.log.append(line)
                if "Orthanc has started" in line:
                    started.set()
            started.set()  # it exited

        threading.Thread(target=drain, daemon=True).start()
        if not started.wait(timeout_s) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("Orthanc did not start:\n" + "".join(self.log[-20:]))
        return self

    def session(self):  # noqa: ANN201
        import requests

        s = requests.Session()
        if self.auth:
            s.auth = (USER, PASSWORD)
        return s

    def upload(self, files) -> list[str]:  # noqa: ANN001
        s = self.session()
        ids = []
        for f in files:
            r = s.post(f"{self.rest}/instances", data=Path(f).read_bytes(), timeout=30)
            r.raise_for_status()
            ids.append(r.json()["ID"])
        return ids

    def register_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """Tell Orthanc where ``aet`` listens (a C-MOVE destination), at run time through its REST API."""
        r = self.session().put(f"{self.rest}/modalities/{name}", json={"AET": aet, "Host": host, "Port": port}, timeout=30)
        r.raise_for_status()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        # Its storage is thrown away with the temporary folder, so no graceful shutdown (3 s each).
        self.kill()

def require_orthanc() -> None:
    import pytest

    if ORTHANC_BINARY is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    if dicomweb_plugin() is None:
        pytest.skip("the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")


def start_orthanc(workdir: Path, files, auth: bool = True, dicom_tls: dict[str, str] | None = None) -> Orthanc:  # noqa: ANN001
    """A started Orthanc holding ``files``; skips the calling test when Orthanc is not installed."""
    require_orthanc()
    server = Orthanc(workdir, auth=auth, dicom_tls=dicom_tls).start()
    try:
        server.upload(files)
    except BaseException:
        server.stop()
        raise
    return server
