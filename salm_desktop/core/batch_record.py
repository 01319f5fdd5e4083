"""The record of a batch job: its finished units merged into one release folder with one manifest
(a :class:`~salm_desktop.core.export.manifest.Manifest` with units) and one report linking each
unit's own, renamed into place through the same output transaction as a single job.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable


if TYPE_CHECKING:
    from salm_desktop.core.batch import BatchJob, Unit


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None



def assemble(job: BatchJob, units: list[Unit], units_dir: Path, partial: Path, final: Path, fingerprint: str,
              skipped: list[dict[str, str]], deid: Any = None) -> dict[str, Any]:
    """Merge finished units into one job folder with one manifest and report; rename it into place.

    De-identified (the default): the unit names in the release are keyed pseudonyms (internal unit ids
    are hashes of UIDs), skipped inputs are named by file name only, no UID map is in the manifest, and
    the units' private records are merged into ``<job>.steward`` next to the job folder.
    """
    from salm_desktop.core.export.deid import Pseudonyms
    from salm_desktop.core.transaction import OutputTransaction

    private = deid is not None and deid.enabled
    pseudonyms = Pseudonyms(deid.secret, "") if private else None

    def unit_name(unit_id: str) -> str:
        return "unit-" + pseudonyms.release_id(unit_id) if pseudonyms is not None else unit_id

    transaction = OutputTransaction(final).__enter__()  # the same temporary folder and rename as a single job
    try:
        summary = _assemble_into(transaction.tmp, job, units, units_dir, partial, final, fingerprint, skipped, deid,
                                 unit_name)
        transaction.commit()
    finally:
        transaction.abort()  # no-op once committed
    shutil.rmtree(partial, ignore_errors=True)
    return summary


def _assemble_into(assembled: Path, job: BatchJob, units: list[Unit], units_dir: Path, partial: Path, final: Path,
                   fingerprint: str, skipped: list[dict[str, str]], deid: Any, unit_name: Callable[[str], str]
                   ) -> dict[str, Any]:
    from salm_desktop.core.export.deid import STEWARD_FILE, write_steward_record
    from salm_desktop.core.export.manifest import Manifest, file_entries
    from salm_desktop.core.fidelity.metrics import JobFidelity, pooled_fidelity

    private = deid is not None and deid.enabled
    unit_manifests: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    uid_map: dict[str, str] = {}
    for unit in units:
        unit_dir = units_dir / unit.id
        manifest = read_json(unit_dir / "manifest.json")
        if manifest is None:
            continue  # a failed unit: listed in skipped
        for path in sorted(p for p in unit_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(unit_dir)
            if rel.parts[0] in ("manifest.json", "report.html", "report.pdf", "officer-report.html", "officer-report.pdf"):
                target = assembled / "reports" / unit_name(unit.id) / rel
            else:
                target = assembled / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)  # copy, not move: the unit stays valid until the job is renamed
            files.extend(file_entries(assembled, [target]))
        uid_map.update(manifest.get("uid_map", {}))
        skipped.extend(manifest.get("skipped", []))
        unit_manifests.append({"unit": unit_name(unit.id), "summary": manifest.get("summary", {}),
                               "series": manifest.get("series", []),
                               "fidelity": (manifest.get("fidelity") or {}).get("series", []),
                               "report": f"reports/{unit_name(unit.id)}/report.html" if (unit_dir / "report.html").exists() else None})

    fidelity = pooled_fidelity([s for u in unit_manifests for s in u.pop("fidelity")])
    summary = _job_summary(unit_manifests, fidelity["job"])
    document = Manifest(settings=job.settings.as_dict(), summary=summary, files=files, skipped=skipped,
                        series=[s for u in unit_manifests for s in u["series"]], uid_map=uid_map, fidelity=fidelity,
                        batch={"job": job.name, "fingerprint": fingerprint, "units": len(units)}, units=unit_manifests)
    steward_table: dict[str, Any] = {"uid_map": {}, "patients": {}, "series_ids": {}, "private_attributes_dropped": 0}
    if private:
        document.uid_map = None  # the map back to the originals never goes into a release
        document.deidentification = deid.options.release_facts()
        unit_ids = {u.id for u in units}
        document.skipped = [{"path": unit_name(s["path"]) if s["path"] in unit_ids else Path(s["path"]).name,
                             "reason": s["reason"]} for s in skipped]
        for unit in units:
            record = read_json(partial / "steward" / unit.id / STEWARD_FILE) or {}
            for key in ("uid_map", "patients", "series_ids"):
                steward_table[key].update(record.get(key, {}))
            steward_table["private_attributes_dropped"] += int(record.get("private_attributes_dropped") or 0)
        steward_table["units"] = {unit_name(u.id): u.id for u in units}
    if job.report:  # the one report writer, for a record with units
        from salm_desktop.core.fidelity.report import write_report

        written = write_report(assembled, JobFidelity(), settings=document.settings, summary=summary,
                               skipped=document.skipped, units=unit_manifests, numbers=fidelity)
        files.extend(file_entries(assembled, [written["pdf"], written["html"]]))
    document.write(assembled)
    if private:
        write_steward_record(deid.steward, release=final, options=deid.options, table=steward_table, skipped=skipped)
    return summary


def _job_summary(unit_manifests: list[dict[str, Any]], pooled: dict[str, Any]) -> dict[str, Any]:
    """The batch job's summary: settings from the units, the change figures from the pooled fidelity
    (``pooled_fidelity``'s job figures, so the summary and the report state the same numbers)."""
    summaries = [u["summary"] for u in unit_manifests]
    if not summaries:
        return {"samples": 0}
    first = summaries[0]
    return {
        "method": first.get("method"),
        "epsilon": first.get("epsilon"),
        "mask_ratio": first.get("mask_ratio"),
        "device": first.get("device"),
        "series": sum(len(u["series"]) for u in unit_manifests),
        "samples": int(sum(float(s.get("samples") or 0) for s in summaries)),
        "seconds": round(sum(float(s.get("seconds") or 0) for s in summaries), 2),
        "fraction_pixels_changed": pooled.get("fraction_changed", 0.0),
        "max_abs_change_native": pooled.get("max_abs_change_native", 0.0),
        "psnr_db": pooled.get("psnr_db"),
        "psnr_db_min": min((float(s["psnr_db"]) for s in summaries if s.get("psnr_db") is not None), default=None),
    }
