"""The hospital's de-identification secret and the keyed (HMAC-SHA256) pseudonyms made with it.

The same secret gives the same pseudonyms in every run and batch; the secret itself never goes into
a release (see deid.py for the whole scheme).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
import uuid
from pathlib import Path

SECRET_NAME = "deid-secret"


class DeidError(Exception):
    """De-identification cannot be done as asked (one line for the user)."""


# -- the secret --------------------------------------------------------------------------------------
def config_dir() -> Path:
    """The user's configuration folder for SALM Desktop (XDG on Linux; AppData / Application Support elsewhere)."""
    override = os.environ.get("SALM_DESKTOP_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "salm-desktop"


def default_secret_path() -> Path:
    return config_dir() / SECRET_NAME


def load_secret(path: Path | None = None) -> bytes:
    """The hospital's de-identification secret. The default one is created on first use (mode 0600);
    a given file must exist and hold at least 16 bytes. Raises :class:`DeidError` with the reason."""
    if path is None:
        path = default_secret_path()
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write(secrets.token_hex(32) + "\n")
            except FileExistsError:
                pass  # created by a parallel job: use it
            except OSError as exc:
                raise DeidError(f"cannot create the de-identification secret {path}: {exc.strerror or exc}") from None
    path = Path(path).expanduser()
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        raise DeidError(f"de-identification secret {path}: file not found") from None
    except IsADirectoryError:
        raise DeidError(f"de-identification secret {path}: is a folder, not a file") from None
    except OSError as exc:
        raise DeidError(f"de-identification secret {path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) < 16:
        raise DeidError(f"de-identification secret {path}: too short ({len(data)} bytes; at least 16 are needed)")
    return data


# -- keyed pseudonyms ----------------------------------------------------------------------------------
class Pseudonyms:
    """HMAC-SHA256 pseudonyms keyed by the secret; remembers every mapping for the steward record."""

    def __init__(self, secret: bytes, instance_salt: str) -> None:
        self._secret = bytes(secret)
        self._instance_salt = str(instance_salt)
        self.uid_map: dict[str, str] = {}
        self.patients: dict[str, str] = {}

    def digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{kind}\x1f{value}".encode("utf-8"), hashlib.sha256).digest()

    def uid(self, original: str, instance: bool) -> str:
        """A new UID under 2.25: instance UIDs (SOP, Series) fold in the settings, the others only the secret."""
        original = str(original).strip()
        kind = f"instance-uid\x1f{self._instance_salt}" if instance else "uid"
        # PS3.5 B.2: 2.25 followed by the integer of a UUID; the UUID's bits come from the HMAC, so the
        # same original and secret give the same UID (pydicom's generate_uid(prefix=None) is random).
        new = "2.25." + str(uuid.UUID(bytes=self.digest(kind, original)[:16], version=4).int)
        self.uid_map[original] = new
        return new

    def code(self, kind: str, value: str, length: int = 12) -> str:
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        number = int.from_bytes(self.digest(kind, value), "big")
        out = []
        for _ in range(length):
            number, r = divmod(number, len(alphabet))
            out.append(alphabet[r])
        return "".join(out)

    def patient(self, key: str) -> str:
        pseudonym = "SALM" + self.code("patient", key, 10)
        self.patients[key] = pseudonym
        return pseudonym

    def date_offset_days(self, patient_key: str) -> int:
        """Per-patient shift into the past, 62 to 730 days (intervals within a patient are kept)."""
        return 62 + int.from_bytes(self.digest("date-offset", patient_key)[:8], "big") % (730 - 62)

    def release_id(self, internal_id: str) -> str:
        """A series or unit id for the release: the internal ids are plain hashes of UIDs (linkable)."""
        return hashlib.sha256(self.digest("release-id", internal_id)).hexdigest()[:10]


def dicognito_randomizer(pseudonyms: Pseudonyms):
    from dicognito.randomizer import Randomizer

    class KeyedRandomizer(Randomizer):
        """dicognito's randomizer with HMAC-SHA256 keyed by the hospital's secret instead of md5(seed + value)."""

        def __init__(self) -> None:
            super().__init__("keyed")

        def to_int(self, original_value: str) -> int:
            return int.from_bytes(pseudonyms.digest("dicognito", str(original_value))[:16], "big")

    return KeyedRandomizer()
