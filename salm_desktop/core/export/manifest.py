"""manifest.json: what was written, how, and from what (no patient names or IDs; no UID map in a de-identified release)."""

from __future__ import annotations

import datetime as _dt
import json
import math
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
    """Write ``out_dir/manifest.json``. Output paths are relative to ``out_dir``.

    A de-identified release (``uid_map=None``) holds release-side facts only: no map back to the
    original UIDs (that goes to the private steward record). ``deidentification`` says how it was
    de-identified, or that identity was kept.
    """
    out_dir = Path(out_dir)
    entries = []
    for path in list(files) + list(extra_files):
        path = Path(path)
        entries.append({"path": path.relative_to(out_dir).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    document = {
        "manifest_version": MANIFEST_VERSION,
        "software": {"name": "SALM Desktop", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings,
        "seed": settings.get("seed"),
        "device": summary.get("device", settings.get("device")),
        "summary": summary,
        "series": series,
        "files": entries,
        "skipped": skipped,
    }
    if uid_map is not None:  # identity kept (internal use): today's map, in the release itself
        document["uid_map"] = uid_map
    if deidentification is not None:
        document["deidentification"] = deidentification
    if fidelity is not None:
        document["fidelity"] = fidelity
    if efficacy is not None:
        document["efficacy"] = efficacy
    path = out_dir / MANIFEST_NAME
    path.write_text(json.dumps(_clean(document), indent=2), encoding="utf-8")
    return path
