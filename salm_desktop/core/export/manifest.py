"""manifest.json: what was written, how, and from what (no patient names or IDs; no UID map in a de-identified release)."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from salm_desktop import __version__
from salm_desktop.core.export.common import sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars -> Python, NaN/inf -> None, paths -> str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def file_entries(out_dir: Path, paths: list[Path]) -> list[dict[str, Any]]:
    """{path (relative to ``out_dir``), bytes, sha256} of each written file."""
    return [{"path": Path(p).relative_to(out_dir).as_posix(), "bytes": Path(p).stat().st_size,
             "sha256": sha256_file(Path(p))} for p in paths]


@dataclass
class Manifest:
    """The one record of a release: a single job's, or a batch job's with its ``units`` (each a job's
    summary, series and report link) and ``batch`` facts (job name, fingerprint, unit count).

    A de-identified release (``uid_map=None``) holds release-side facts only: no map back to the
    original UIDs (that goes to the private steward record). ``deidentification`` says how it was
    de-identified, or that identity was kept.
    """

    settings: dict[str, Any]
    summary: dict[str, Any]
    files: list[dict[str, Any]]  # see file_entries
    skipped: list[dict[str, str]]
    series: list[dict[str, Any]] = field(default_factory=list)
    uid_map: dict[str, str] | None = None
    fidelity: dict[str, Any] | None = None
    efficacy: dict[str, Any] | None = None
    deidentification: dict[str, Any] | None = None
    batch: dict[str, Any] | None = None
    units: list[dict[str, Any]] | None = None

    def document(self) -> dict[str, Any]:
        document = {
            "manifest_version": MANIFEST_VERSION,
            "software": {"name": "SALM Desktop", "version": __version__},
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "settings": self.settings,
            "seed": self.settings.get("seed"),
            "device": self.summary.get("device", self.settings.get("device")),
            "summary": self.summary,
            "series": self.series,
            "files": self.files,
            "skipped": self.skipped,
        }
        optional = {"uid_map": self.uid_map, "deidentification": self.deidentification, "fidelity": self.fidelity,
                    "efficacy": self.efficacy, "batch": self.batch, "units": self.units}
        document.update({k: v for k, v in optional.items() if v is not None})
        return _clean(document)

    def write(self, out_dir: Path) -> Path:
        """``out_dir/manifest.json``, written atomically (a crash leaves the old one or none)."""
        path = Path(out_dir) / MANIFEST_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.document(), indent=2), encoding="utf-8")
        os.replace(tmp, path)
        return path


def write_manifest(
    out_dir: Path,
    *,
    files: list[Path],
    settings: dict[str, Any],
    summary: dict[str, Any],
    uid_map: dict[str, str] | None,
    skipped: list[dict[str, str]],
    series: list[dict[str, Any]],
    fidelity: dict[str, Any] | None = None,
    efficacy: dict[str, Any] | None = None,
    extra_files: list[Path] = (),
    deidentification: dict[str, Any] | None = None,
) -> Path:
    """Write a single job's ``out_dir/manifest.json`` (see :class:`Manifest`); output paths are relative to ``out_dir``."""
    out_dir = Path(out_dir)
    return Manifest(settings=settings, summary=summary, files=file_entries(out_dir, list(files) + list(extra_files)),
                    skipped=skipped, series=series, uid_map=uid_map, fidelity=fidelity, efficacy=efficacy,
                    deidentification=deidentification).write(out_dir)
