"""The steward record: the private map from the release's pseudonyms back to the originals.

It is written outside the release (by default next to it, ``<release>.steward``), with modes
0700/0600, and never overwrites the record of another release.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from salm_desktop import __version__
from salm_desktop.core.export.deid_secret import DeidError, default_secret_path

if TYPE_CHECKING:
    from salm_desktop.core.export.deid import DeidOptions

STEWARD_SUFFIX = ".steward"
STEWARD_FILE = "steward-record.json"


# -- the steward record ---------------------------------------------------------------------------------
def default_steward_dir(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + STEWARD_SUFFIX)


def check_steward_location(steward: Path, out: Path, inputs: Iterable[Path] = ()) -> Path:
    """The private record must live outside the release (and outside the inputs)."""
    steward = Path(steward).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if steward == out or out in steward.parents:
        raise DeidError(f"the steward record {steward} would be inside the release {out}: "
                        "choose a folder outside the release (by default it is written next to it)")
    for raw in inputs:
        src = Path(raw).expanduser().resolve()
        # a file input: a new folder beside it is fine (as for the release itself); a folder input: not inside it
        if steward == src or (src.is_dir() and src in steward.parents):
            raise DeidError(f"the steward record {steward} would be inside the input {src}: choose a folder outside the inputs")
    if steward.exists() and not steward.is_dir():
        raise DeidError(f"the steward record {steward} exists and is not a folder")
    try:  # one record per release: never overwrite the map of another one
        other = json.loads((steward / STEWARD_FILE).read_text(encoding="utf-8")).get("release")
    except (OSError, ValueError, AttributeError):
        other = None
    if other and Path(other) != out:
        raise DeidError(f"the steward folder {steward} already holds the private record of another release ({other}): "
                        "choose another folder")
    return steward


def _write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(document, indent=2, default=str))
    os.replace(tmp, path)



def write_steward_record(steward: Path, *, release: Path, options: DeidOptions, table: dict[str, Any],
                         files: dict[str, str] | None = None, skipped: list[dict[str, str]] | None = None) -> Path:
    """Write the private record (UID map, pseudonym table, source -> release file names) for ``release``.

    The folder is created with mode 0700; the file with 0600. It holds original identifiers: it must
    stay with the hospital's data steward.
    """
    steward = Path(steward)
    steward.mkdir(parents=True, exist_ok=True, mode=0o700)
    document = {
        "warning": "PRIVATE: links the release to the original patients; keep it inside the hospital, never share it",
        "software": {"name": "SALM Desktop", "version": __version__},
        "release": str(release),
        "deidentification": options.release_facts(),
        "secret": str(options.secret) if options.secret else str(default_secret_path()),
        "uid_map": table.get("uid_map", {}),
        "patients": table.get("patients", {}),
        "series_ids": table.get("series_ids", {}),
        "units": table.get("units", {}),
        "files": files or {},
        "skipped": skipped or [],
        "private_attributes_dropped": table.get("private_attributes_dropped", 0),
    }
    path = steward / STEWARD_FILE
    _write_json_atomic(path, document)
    return path
