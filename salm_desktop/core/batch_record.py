"""The record of a batch job: its finished units merged into one release folder with one manifest
(a :class:`~salm_desktop.core.export.manifest.Manifest` with units) and one report linking each
unit's own, renamed into place through the same output transaction as a single job.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from salm_desktop import __version__

if TYPE_CHECKING:
    from salm_desktop.core.batch import BatchJob, Unit
    from salm_desktop.core.export.manifest import Manifest


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
                               "report": f"reports/{unit_name(unit.id)}/report.html" if (unit_dir / "report.html").exists() else None})

    summary = _job_summary(unit_manifests)
    document = Manifest(settings=job.settings.as_dict(), summary=summary, files=files, skipped=skipped,
                        series=[s for u in unit_manifests for s in u["series"]], uid_map=uid_map,
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
    if job.report:
        _write_job_report(assembled, job, document)
        files.extend(file_entries(assembled, [assembled / "report.html", assembled / "report.pdf"]))
    document.write(assembled)
    if private:
        write_steward_record(deid.steward, release=final, options=deid.options, table=steward_table, skipped=skipped)
    return summary


def _job_summary(unit_manifests: list[dict[str, Any]]) -> dict[str, Any]:
    summaries = [u["summary"] for u in unit_manifests]
    if not summaries:
        return {"samples": 0}

    def total(key):
        return sum(float(s.get(key) or 0) for s in summaries)

    samples = total("samples")
    return {
        "method": summaries[0].get("method"),
        "epsilon": summaries[0].get("epsilon"),
        "mask_ratio": summaries[0].get("mask_ratio"),
        "device": summaries[0].get("device"),
        "series": sum(len(u["series"]) for u in unit_manifests),
        "samples": int(samples),
        "seconds": round(total("seconds"), 2),
        "fraction_pixels_changed": (sum(float(s.get("fraction_pixels_changed") or 0) * float(s.get("samples") or 0)
                                        for s in summaries) / samples) if samples else 0.0,
        "max_abs_change_native": max(float(s.get("max_abs_change_native") or 0) for s in summaries),
        "psnr_db_min": min((float(s["psnr_db"]) for s in summaries if s.get("psnr_db") is not None), default=None),
    }


def _write_job_report(folder: Path, job: BatchJob, document: Manifest) -> None:
    """The job's report: one row per series with its numbers and a link to the series' full report."""
    import html

    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    rows = []
    for unit in document.units or []:
        s = unit["summary"]
        rows.append([unit["unit"], str(s.get("samples", "")), f"{float(s.get('psnr_db') or 0):.1f}",
                     f"{float(s.get('ssim') or 0):.4f}", f"{100 * float(s.get('fraction_pixels_changed') or 0):.1f} %",
                     f"{float(s.get('max_abs_change_native') or 0):.4g}", unit.get("report") or ""])
    head = ["series", "samples", "PSNR dB", "SSIM", "pixels changed", "max change (native)", "full report"]
    summary = document.summary
    lines = [
        f"Job {job.name}: {summary.get('samples')} samples in {summary.get('series')} series, method {summary.get('method')}, "
        f"epsilon {float(summary.get('epsilon') or 0):.4f}, device {summary.get('device')}, {summary.get('seconds')} s.",
        f"Skipped or failed inputs: {len(document.skipped)}.",
    ]
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r[:-1])
        + (f"<td><a href=\"{html.escape(r[-1])}\">report</a></td>" if r[-1] else "<td></td>") + "</tr>" for r in rows)
    skipped = "".join(f"<li>{html.escape(Path(s['path']).name)}: {html.escape(s['reason'])}</li>" for s in document.skipped)
    (folder / "report.html").write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SALM Desktop batch job report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse}</style></head><body>"
        f"<h1>Clinical-fidelity report: job {html.escape(job.name)}</h1>"
        + "".join(f"<p>{html.escape(line)}</p>" for line in lines)
        + "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{body}</table>"
        + (f"<h2>Skipped</h2><ul>{skipped}</ul>" if skipped else "")
        + f"<p>SALM Desktop {__version__}. Each series' report has its histograms, slices and difference maps.</p>"
        "</body></html>", encoding="utf-8")
    with PdfPages(folder / "report.pdf") as pdf:
        per_page = 25
        for start in range(0, max(len(rows), 1), per_page):
            fig = Figure(figsize=(11.69, 8.27))
            fig.text(0.05, 0.95, f"Clinical-fidelity report: job {job.name}", fontsize=14, weight="bold")
            for i, line in enumerate(lines):
                fig.text(0.05, 0.91 - 0.03 * i, line, fontsize=9)
            chunk = [r[:-1] for r in rows[start:start + per_page]] or [["-"] * (len(head) - 1)]
            ax = fig.add_axes((0.05, 0.05, 0.9, 0.78))
            ax.axis("off")
            ax.table(cellText=chunk, colLabels=head[:-1], loc="upper left").auto_set_font_size(True)
            pdf.savefig(fig)
