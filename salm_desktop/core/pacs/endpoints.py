"""PACS endpoints (``dicomweb:URL`` and ``dimse:AET@HOST:PORT``) and their credentials.

Credentials never travel in the endpoint text (a URL with ``user:password@`` is refused, so they do
not end up in shell history, logs, the manifest or the report); they come from environment
variables or files named by them (see docs/pacs.md). ``Endpoint.display`` is what messages show.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_LOCAL_AET = "SALM"

# Environment variables read for credentials and TLS; values are never printed.
ENV_TOKEN, ENV_TOKEN_FILE = "SALM_PACS_TOKEN", "SALM_PACS_TOKEN_FILE"
ENV_USER, ENV_PASSWORD, ENV_PASSWORD_FILE = "SALM_PACS_USER", "SALM_PACS_PASSWORD", "SALM_PACS_PASSWORD_FILE"
ENV_CA_BUNDLE = "SALM_PACS_CA_BUNDLE"  # DICOMweb over https and DIMSE over TLS: the CA to trust
ENV_TLS_CERT, ENV_TLS_KEY = "SALM_PACS_TLS_CERT", "SALM_PACS_TLS_KEY"  # DIMSE TLS client certificate
ENV_LOCAL_AET = "SALM_PACS_AET"  # our calling AE title for DIMSE
ENV_DIMSE_TLS = "SALM_PACS_DIMSE_TLS"  # "1": DIMSE over TLS
ENV_MOVE_PORT = "SALM_PACS_MOVE_PORT"  # DIMSE retrieval by C-MOVE to our storage SCP on this port (0: any free one)


class PacsError(Exception):
    """A PACS problem, as one line for the user (never containing credentials)."""


@dataclass(frozen=True)
class Credentials:
    token: str | None = field(default=None, repr=False)
    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    dimse_tls: bool = False
    local_aet: str = DEFAULT_LOCAL_AET
    move_port: int | None = None  # None: C-GET; a port: C-MOVE to a storage SCP listening there

    def __repr__(self) -> str:  # keep secrets out of tracebacks and debug logs
        return (f"Credentials(token={'set' if self.token else None}, user={'set' if self.user else None}, "
                f"ca_bundle={self.ca_bundle!r}, dimse_tls={self.dimse_tls}, local_aet={self.local_aet!r}, "
                f"move_port={self.move_port!r})")

    def http_session(self):  # noqa: ANN201 - a requests.Session
        import requests

        session = requests.Session()
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        elif self.user:
            session.auth = (self.user, self.password or "")
        if self.ca_bundle:
            # Not session.verify: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the
            # environment override it (psf/requests#3829), so the hospital CA would be ignored.
            session.mount("https://", _TrustOnly(self.ca_bundle))
        return session

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.dimse_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_bundle)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


def _trust_only_adapter():  # noqa: ANN202
    from requests.adapters import HTTPAdapter

    class TrustOnly(HTTPAdapter):
        """Verifies the server against this CA bundle, whatever the environment says."""

        def __init__(self, ca_bundle: str) -> None:
            super().__init__()
            self.ca_bundle = ca_bundle

        def send(self, request, **kwargs):  # noqa: ANN001, ANN003, ANN201
            kwargs["verify"] = self.ca_bundle
            return super().send(request, **kwargs)

    return TrustOnly


def _TrustOnly(ca_bundle: str):  # noqa: ANN202, N802
    return _trust_only_adapter()(ca_bundle)


def _read_secret_file(path: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise PacsError(f"cannot read the {what} file {path}: {exc.strerror or exc.__class__.__name__}") from None


def credentials_from_env(env: dict[str, str] | None = None) -> Credentials:
    env = os.environ if env is None else env
    token = env.get(ENV_TOKEN) or None
    if not token and env.get(ENV_TOKEN_FILE):
        token = _read_secret_file(env[ENV_TOKEN_FILE], "token")
    password = env.get(ENV_PASSWORD) or None
    if password is None and env.get(ENV_PASSWORD_FILE):
        password = _read_secret_file(env[ENV_PASSWORD_FILE], "password")
    move_port = env.get(ENV_MOVE_PORT, "").strip()
    if move_port and not (move_port.isdigit() and int(move_port) < 65536):
        raise PacsError(f"{ENV_MOVE_PORT}={move_port!r}: expected a port number (0: any free port)")
    return Credentials(token=token, user=env.get(ENV_USER) or None, password=password,
                       move_port=int(move_port) if move_port else None,
                       ca_bundle=env.get(ENV_CA_BUNDLE) or None, tls_cert=env.get(ENV_TLS_CERT) or None,
                       tls_key=env.get(ENV_TLS_KEY) or None, dimse_tls=env.get(ENV_DIMSE_TLS, "") in ("1", "true", "yes"),
                       local_aet=env.get(ENV_LOCAL_AET) or DEFAULT_LOCAL_AET)


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "dicomweb" | "dimse"
    url: str = ""  # dicomweb: the service root (…/dicom-web), without /studies/…
    study: str | None = None  # dicomweb: a study UID given in the URL
    series: str | None = None  # dicomweb: a series UID given in the URL
    aet: str = ""
    host: str = ""
    port: int = 0

    @property
    def display(self) -> str:
        if self.kind == "dicomweb":
            return f"dicomweb:{self.url}"
        return f"dimse:{self.aet}@{self.host}:{self.port}"


_DIMSE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})$")


def is_pacs_spec(text: str) -> bool:
    return str(text).startswith(("dicomweb:", "dimse:"))


def parse_endpoint(text: str) -> Endpoint:
    """``dicomweb:http(s)://HOST:PORT/ROOT[/studies/UID[/series/UID]]`` or ``dimse:AET@HOST:PORT``."""
    text = str(text).strip()
    if text.startswith("dicomweb:"):
        url = text[len("dicomweb:"):]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError(f"{text}: expected dicomweb:http://HOST:PORT/PATH or dicomweb:https://…")
        if parts.username or parts.password:
            raise PacsError(f"dicomweb:{parts.scheme}://{parts.hostname}…: credentials in the URL are refused; "
                            f"set {ENV_USER}/{ENV_PASSWORD_FILE} or {ENV_TOKEN_FILE} instead (docs/pacs.md)")
        if parts.query or parts.fragment:
            raise PacsError(f"{text}: a query string is not supported; use --study/--series/--accession")
        segments = [s for s in parts.path.split("/") if s]
        study = series = None
        if "studies" in segments:
            i = segments.index("studies")
            rest = segments[i + 1:]
            segments = segments[:i]
            if rest:
                study = rest[0]
            if len(rest) >= 3 and rest[1] == "series":
                series = rest[2]
            elif len(rest) not in (0, 1):
                raise PacsError(f"{text}: expected …/studies/UID or …/studies/UID/series/UID")
        root = f"{parts.scheme}://{parts.netloc}" + ("/" + "/".join(segments) if segments else "")
        return Endpoint("dicomweb", url=root, study=study, series=series)
    if text.startswith("dimse:"):
        m = _DIMSE.match(text[len("dimse:"):])
        if not m or not 0 < int(m["port"]) < 65536:
            raise PacsError(f"{text}: expected dimse:AET@HOST:PORT (AE title up to 16 characters)")
        return Endpoint("dimse", aet=m["aet"], host=m["host"], port=int(m["port"]))
    raise PacsError(f"{text}: expected dicomweb:URL or dimse:AET@HOST:PORT")
