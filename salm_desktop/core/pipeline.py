"""The two steps of a job between the checks and the rename: protect (skipping unreadable files) and
export (writers, fidelity, manifest, report) into the output transaction's temporary folder.

:mod:`salm_desktop.core.jobs` orders them; this module does not know about locks or output folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from salm_desktop import __version__
from salm_desktop.core.model import Series, Skipped
from salm_desktop.core.options import settings_fingerprint
from salm_desktop.core.progress import Progress
from salm_desktop.core.transaction import JobError

if TYPE_CHECKING:
    from salm_desktop.core.protect.engine import ProtectResult
    from salm_desktop.core.protect.settings import ProtectSettings


def derivation_text(settings: ProtectSettings, series: Series, epsilon: float | None = None,
                    mask_ratio: float | None = None) -> str:
    eps = float(settings.epsilon) if epsilon is None else float(epsilon)  # the series' own budget when known
    native = series.intensity.delta_to_native(eps)
    unit = f" {series.intensity.unit}" if series.intensity.unit else ""
    ratio = settings.effective_mask_ratio if mask_ratio is None else float(mask_ratio)  # the series' own when known
    return (
        f"Protected with SALM Desktop {__version__} (unlearnable-example perturbation): method={settings.method}, "
        f"epsilon={eps:.5g} of the intensity window [{series.intensity.low:g}, {series.intensity.high:g}] "
        f"(+/-{native:.4g}{unit}), mask_ratio={ratio:g}, seed={settings.seed}; written losslessly"
    )


def drop_missing(series: Series) -> tuple[Series | None, list[Skipped]]:
    """Samples whose source file vanished since loading are skipped with a reason."""
    missing = {p for p in series.files if not Path(p).exists()}
    if not missing:
        return series, []
    skipped = [Skipped(p, "input file disappeared after loading") for p in sorted(missing)]
    kept = [s for s in series.samples if Path(s.source.path) not in missing]
    if not kept:
        return None, skipped
    from salm_desktop.core.studies.lazy import with_samples

    return with_samples(series, kept), skipped


def unreadable_input(exc: BaseException):
    """The PixelReadError (file + reason) behind a failed protection, if one input file caused it."""
    from salm_desktop.core.studies.limits import PixelReadError

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, PixelReadError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def drop_file_from_plan(plan: list[tuple[Series, bool]], bad) -> tuple[list[tuple[Series, bool]], list[Skipped]]:
    """Every sample read from ``bad.paths`` leaves the plan (also unprotected npz splits of those files)."""
    from salm_desktop.core.studies.lazy import with_samples

    targets = {Path(p).absolute() for p in getattr(bad, "paths", [bad.path])}
    kept: list[tuple[Series, bool]] = []
    found: list[Path] = []
    for series, protect in plan:
        samples = [s for s in series.samples if Path(s.source.path).absolute() not in targets]
        found.extend(Path(s.source.path) for s in series.samples if Path(s.source.path).absolute() in targets)
        if len(samples) != len(series.samples):
            if not samples:
                continue
            series = with_samples(series, samples)
        kept.append((series, protect))
    skipped = [Skipped(path, bad.reason if path.exists() else "input file disappeared after loading")
               for path in dict.fromkeys(found)]
    return kept, skipped


def protect_skipping_unreadable(series: Sequence[Series], settings: ProtectSettings, progress: Progress | None = None
                                ) -> tuple[ProtectResult, list[Series], list[Skipped]]:
    """``protect_series`` for a caller that holds its own series (the wizard): a file whose pixels
    cannot be read is dropped with its reason and the others are protected again, as a job does.

    Returns ``(result, kept_series, skipped)``; ``kept_series`` are the series actually protected
    (a series that lost a file is a copy without it; one that lost every file is gone). Raises
    :class:`JobError` when nothing readable is left.
    """
    from salm_desktop.core.protect import protect_series

    progress = progress or Progress()
    plan: list[tuple[Series, bool]] = [(s, True) for s in series]
    skipped: list[Skipped] = []
    for _ in range(1 + len({p for s, _ in plan for p in s.files})):
        try:
            kept = [s for s, _ in plan]
            return protect_series(kept, settings, progress), kept, skipped
        except (ValueError, OSError) as exc:
            bad = unreadable_input(exc)
            if bad is None:
                raise
            plan, lost = drop_file_from_plan(plan, bad)
            if not lost:
                raise
            skipped.extend(lost)
            if not plan:
                raise JobError(f"nothing left to protect: every input was skipped (last: {bad.path.name}: "
                               f"{bad.reason})") from None
            progress.log(f"skipped {bad.path}: {bad.reason}; protecting the other files again")
    raise JobError("too many unreadable files")


def drop_missing_from_plan(plan: list[tuple[Series, bool]]) -> tuple[list[tuple[Series, bool]], list[Skipped]]:
    kept: list[tuple[Series, bool]] = []
    gone: list[Skipped] = []
    for series, protect in plan:
        if protect:
            series, lost = drop_missing(series)
            gone.extend(lost)
            if series is None:
                continue
        kept.append((series, protect))
    return kept, gone


def export_release(plan, result, tmp: Path, settings, inputs, progress: Progress, report: bool,
            skipped: list[Skipped], roi, efficacy, deid=None) -> dict[str, Any]:
    from salm_desktop.core.export.common import ExportError, OutputLayout, WriteContext, WriteResult
    from salm_desktop.core.export.manifest import write_manifest
    from salm_desktop.core.export.npz import write_npz_file
    from salm_desktop.core.export.writers import resolve_writer
    from salm_desktop.core.fidelity.metrics import JobFidelity, SeriesFidelity

    settings_dict = settings.as_dict()
    salt = settings_fingerprint(settings_dict)
    deidentifier = None
    if deid is not None and deid.enabled:
        from salm_desktop.core.export.deid import DicomDeidentifier

        # the options change the files, so they are part of what makes derived UIDs distinct
        deidentifier = DicomDeidentifier(deid.options, deid.secret, settings_fingerprint(
            {"settings": settings_dict, "deid": deid.options.fingerprint_dict()}))

    def release_id(series_id: str) -> str:  # internal series ids are plain hashes of UIDs: not in a release
        return deidentifier.pseudonyms.release_id(series_id) if deidentifier is not None else series_id

    layout = OutputLayout(inputs)
    written = WriteResult()
    fidelity = JobFidelity()
    roi_fns: dict[str, Any] = {}
    if roi is not None:
        from salm_desktop.core.fidelity.roi import RoiError, roi_for_series

        for series, protect in plan:
            if protect:
                try:
                    fn = roi_for_series(Path(roi), series)
                except RoiError as exc:
                    raise JobError(str(exc)) from None
                if fn is not None:
                    roi_fns[series.id] = fn
        if not roi_fns:  # a label map that fits nothing must not silently drop the ROI figures
            shapes = sorted({str(s.sample_shape) for s, p in plan if p})
            raise JobError(f"{roi}: the label map does not fit any protected series (no slice at their positions "
                           f"with their size; series sample shapes {', '.join(shapes)})")

    def protected_fn(series: Series):  # the writer's decoded original: each sample is decoded once
        return lambda i, original: result.protected_from(series.id, i, original)

    context = WriteContext(tmp, layout, progress, salt,
                           lambda series: derivation_text(settings, series, result.budget(series.id),
                                                          result.mask_ratio(series.id)),
                           deidentifier)
    total_files = sum(len(s.files) for s, _ in plan)
    done = 0
    progress.update("export", 0, total_files, "writing the protected copy")
    try:
        # npz files hold several series (splits): write each file once.
        npz_files: dict[Path, list[tuple[Series, Any]]] = {}
        for series, protect in plan:
            if series.kind == "npz":
                path = Path(series.samples[0].source.path) if series.samples else Path(series.root)
                npz_files.setdefault(path, []).append((series, protected_fn(series) if protect else None))
                continue
            fid = fidelity.add_series(SeriesFidelity.for_series(series, result.budget(series.id), roi_fns.get(series.id)))
            fid.series_id = release_id(series.id)
            part = resolve_writer(series.kind)(series, protected_fn(series), context, observer=fid.add, done_offset=done,
                                               total=total_files)
            written.extend(part)
            done += len(series.files)
        for path, parts in npz_files.items():
            progress.update("export", done, total_files, f"writing {path.name}")
            fids = {s.id: fidelity.add_series(SeriesFidelity.for_series(s, result.budget(s.id))) for s, fn in parts if fn is not None}
            for sid, fid in fids.items():
                fid.series_id = release_id(sid)
            part = write_npz_file(path, parts, tmp, layout, observer=lambda s, i, o, w: fids[s.id].add(i, o, w), progress=progress)
            written.extend(part)
            done += 1
    except ExportError as exc:
        raise JobError(str(exc)) from None
    progress.update("export", total_files, total_files, "data written")
    if callable(efficacy):  # protect --evaluate: thieves train on the protected files just written
        efficacy = efficacy(tmp, progress)
    if deidentifier is not None:  # no output path may carry a name or ID the job's DICOM files held
        from salm_desktop.core.export.deid import scrub_release_paths

        written.files = scrub_release_paths(tmp, written.files, deidentifier)
        if deidentifier.private_dropped:
            progress.log(f"de-identification: {deidentifier.private_dropped} private attributes removed "
                         "(PS3.15 Basic Profile; the retain-safe-private option keeps those PS3.15 lists as safe)")
    if not written.files and written.skipped:  # e.g. every file refused by the burned-in guard
        reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in written.skipped[:3])
        raise JobError(f"nothing was written: {reasons}")

    skipped = skipped + written.skipped
    fid_dict = fidelity.as_dict()
    result.record_changes(fidelity.change_figures())  # measured once, on the values written
    summary = dict(result.summary)
    summary.update({
        "psnr_db": fid_dict["job"]["psnr_db"],
        "ssim": fid_dict["job"]["ssim"],
        "mean_abs_change_native": fid_dict["job"]["mean_abs_change_native"],
        "files_written": len(written.files),
        "skipped_count": len(skipped),
        "software_version": __version__,
    })
    if deid is not None:
        summary["deidentification"] = deid.options.summary_line()
    if deidentifier is not None:  # every per-series table is keyed by the internal id: re-key it
        for key, table in list(summary.items()):
            if key.endswith("_per_series") and isinstance(table, dict):
                summary[key] = {release_id(k): v for k, v in table.items()}
    skipped_dicts = [skipped_dict(s, inputs) for s in skipped]
    if deidentifier is not None:  # source names may carry identifiers the DICOM files held
        skipped_dicts = [{"path": deidentifier.scrub(d["path"]), "reason": deidentifier.scrub(d["reason"])} for d in skipped_dicts]
        # a labels CSV path or a description in the settings or summary may hold a name as well
        settings_dict = deidentifier.scrub_strings(settings_dict)
        summary = deidentifier.scrub_strings(summary)
    series_info = [{"series": release_id(s.id), "kind": s.kind, "modality": s.modality, "samples": len(s.samples),
                    "protected": p, "split": s.meta.get("split"), "labels_used": labels_used(result, s) if p else None}
                   for s, p in plan]
    report_paths: dict[str, Path] = {}
    if report:
        from salm_desktop.core.fidelity.report import write_report

        progress.update("report", 0, 1, "writing the clinical-fidelity report")
        report_paths = write_report(tmp, fidelity, settings=settings_dict, summary=summary, efficacy=efficacy,
                                    skipped=skipped_dicts)
        progress.update("report", 1, 1, "report written")
    steward: dict[str, Any] = {}
    if deidentifier is not None:
        steward = deidentifier.steward_table()
        steward["series_ids"] = {release_id(s.id): s.id for s, _ in plan}
    manifest = write_manifest(
        tmp, files=written.files, settings=settings_dict, summary=summary,
        uid_map=written.uid_map if deidentifier is None else None,
        skipped=skipped_dicts, series=series_info, fidelity=fid_dict, efficacy=efficacy,
        extra_files=list(report_paths.values()),
        deidentification=deid.options.release_facts() if deid is not None else None,
    )
    return {"summary": summary, "skipped": skipped, "manifest": manifest, "report": report_paths,
            "files": written.files, "uid_map": written.uid_map, "fidelity": fid_dict, "steward": steward,
            "scrub": deidentifier.scrub if deidentifier is not None else str}


def labels_used(result, series: Series) -> dict[str, int] | None:
    try:
        labels = result.labels_used(series.id)
    except Exception:  # noqa: BLE001
        return None
    counts: dict[str, int] = {}
    for label in labels:
        counts[str(label)] = counts.get(str(label), 0) + 1
    return counts


def skipped_dict(item: Skipped, inputs: Sequence[Path]) -> dict[str, str]:
    """Skipped inputs are named relative to the input they were found under."""
    path = Path(item.path)
    for root in inputs:
        root = Path(root).expanduser()
        base = root if root.is_dir() else root.parent
        try:  # a skipped symlink loop cannot be resolved: try the plain path first
            return {"path": path.absolute().relative_to(base.absolute()).as_posix(), "reason": item.reason}
        except ValueError:
            pass
        try:
            return {"path": path.resolve().relative_to(base.resolve()).as_posix(), "reason": item.reason}
        except (ValueError, OSError, RuntimeError):
            continue
    return {"path": path.name, "reason": item.reason}


