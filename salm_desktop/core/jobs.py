"""One protect job: load -> protect -> export -> manifest -> report. The CLI, the GUI and batch all
call :func:`run_protect_job`.

Safety rules (DESIGN.md): inputs are only ever opened for reading; the output is written through
the one output transaction (:mod:`salm_desktop.core.transaction`: checks, lock, temporary folder,
atomic rename), so a cancelled or failed job leaves nothing half-written.
"""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from salm_desktop.core.model import LoadResult, Series, Skipped
from salm_desktop.core.pipeline import (  # noqa: F401 - derivation_text and protect_skipping_unreadable: public here too
    derivation_text,
    drop_file_from_plan,
    drop_missing,
    drop_missing_from_plan,
    export_release,
    protect_skipping_unreadable,
    skipped_dict,
    unreadable_input,
)
from salm_desktop.core.progress import Cancelled, Progress
from salm_desktop.core.transaction import (  # noqa: F401 - public names of this module since the first release
    PARTIAL_PREFIX,
    JobError,
    OutputLock,
    OutputTransaction,
    _os_message,
    check_output_location,
    recover_interrupted,
)

if TYPE_CHECKING:
    from salm_desktop.core.protect.engine import ProtectResult
    from salm_desktop.core.protect.settings import ProtectSettings

@dataclass
class JobResult:
    out_dir: Path
    summary: dict[str, Any]
    skipped: list[Skipped] = field(default_factory=list)
    manifest: Path | None = None
    report_html: Path | None = None
    report_pdf: Path | None = None
    files: list[Path] = field(default_factory=list)  # data files written (final paths)
    uid_map: dict[str, str] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    steward_record: Path | None = None  # the private record (UID map, pseudonyms) of a de-identified release
    officer_html: Path | None = None  # issue 15: the release record the data-protection officer signs
    officer_pdf: Path | None = None

    def as_json(self) -> dict[str, Any]:
        out = dict(self.summary)
        out.update({
            "out": str(self.out_dir),
            "manifest": str(self.manifest) if self.manifest else None,
            "report": str(self.report_html) if self.report_html else None,
            "report_pdf": str(self.report_pdf) if self.report_pdf else None,
            "skipped": [s.as_dict() for s in self.skipped],
            "steward_record": str(self.steward_record) if self.steward_record else None,
            "officer_report": str(self.officer_html) if self.officer_html else None,
            "officer_report_pdf": str(self.officer_pdf) if self.officer_pdf else None,
        })
        return out


def _load(inputs: list[Path], labels: str | None, progress: Progress) -> LoadResult:
    from salm_desktop.core.studies import load_paths

    try:
        return load_paths(inputs, labels=labels, progress=progress)
    except (ValueError, FileNotFoundError) as exc:  # LabelsError is a ValueError
        raise JobError(str(exc)) from None


# -- the job -----------------------------------------------------------------------------------------
@dataclass
class ProtectedJob:
    """A job whose protection is computed and whose output is not written yet (see :func:`write_job`).

    Batch runs write one unit while the next one computes; the GUI and the CLI call
    :func:`run_protect_job`, which does both steps in turn.
    """

    inputs: list[Path]
    out: Path
    settings: ProtectSettings
    plan: list[tuple[Series, bool]]  # (series, protect?)
    result: ProtectResult
    skipped: list[Skipped]
    overwrite: bool = False
    owns_result: bool = True
    keys: Path | None = None  # ownership keys: mark the release and write this (private) KEYDIR
    lock: Any = None  # the OutputLock on ``out``, released by close()

    def close(self) -> None:
        try:
            if self.owns_result and self.result is not None:
                self.result.close()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None


def run_protect_job(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    settings: ProtectSettings,
    *,
    report: bool = True,
    progress: Progress | None = None,
    roi: str | Path | None = None,
    efficacy: dict[str, Any] | None = None,
    deid: Any = None,
    steward_record: str | Path | None = None,
    release_info: Any = None,
    **protect_options: Any,
) -> JobResult:
    """Load ``inputs``, protect them with ``settings`` (a ProtectSettings), write the protected copy in
    the inputs' own formats under ``out_dir`` with manifest.json and (``report=True``) report.html/.pdf.

    ``protect_options`` are :func:`protect_job`'s (``labels``, ``splits``, ``formats``, ``overwrite``,
    ``loaded``, ``result``, ``keys``). ``roi`` is an optional label map (e.g. NRRD) whose ROI statistics
    go into the report. Raises :class:`JobError` (one-line message) and :class:`Cancelled`; in both
    cases nothing is left under ``out_dir``.

    ``deid`` (a DeidOptions; default: de-identify) and ``steward_record`` (the private record's folder;
    default ``<out>.steward`` next to the release) are checked before anything is computed.
    ``release_info`` (an officer_report.ReleaseInfo: operator, purpose) goes into the officer report;
    ``efficacy`` may also be a callable ``(release_tmp, progress) -> dict`` (``protect --evaluate``).
    """
    progress = progress or Progress()
    deid = prepare_deid(deid, out_dir, steward_record, inputs)
    job = protect_job(inputs, out_dir, settings, progress=progress, **protect_options)
    return write_job(job, report=report, progress=progress, roi=roi, efficacy=efficacy, deid=deid,
                     release_info=release_info)


def prepare_deid(deid: Any, out_dir: str | Path, steward_record: str | Path | None = None,
                 inputs: Sequence[str | Path] = ()) -> Any:
    """A DeidContext for a job (secret loaded, steward folder checked); JobError with the reason."""
    from salm_desktop.core.export.deid import DeidContext, DeidError, prepare

    if isinstance(deid, DeidContext):
        return deid
    try:
        return prepare(deid, Path(out_dir), Path(steward_record) if steward_record is not None else None,
                       [Path(p) for p in inputs])
    except DeidError as exc:
        raise JobError(str(exc)) from None


def protect_job(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    settings: ProtectSettings,
    *,
    labels: str | None = None,
    splits: Sequence[str] = ("train",),
    formats: str = "auto",
    progress: Progress | None = None,
    overwrite: bool = False,
    loaded: LoadResult | None = None,
    result: ProtectResult | None = None,
    keys: str | Path | None = None,
) -> ProtectedJob:
    """The first half of :func:`run_protect_job`: checks, load and protect; nothing is written.

    npz inputs: only the ``splits`` listed are protected; the others are copied unchanged. ``loaded``
    lets a caller (the GUI) pass an already loaded :class:`LoadResult`; with it, ``result`` (a
    ProtectResult of those series, e.g. the one the user reviewed) is written as it is instead of
    protecting again (the caller keeps ownership and closes it). ``keys``: a new folder outside the
    release for the ownership keys (core/ownership; the release gets their mark).

    The caller must pass the returned job to :func:`write_job` or close it.
    """
    progress = progress or Progress()
    if formats != "auto":
        raise JobError(f"output format {formats!r} is not supported: the output is written in the inputs' own formats ('auto')")
    inputs = [Path(p).expanduser() for p in inputs]
    if not inputs:
        raise JobError("no inputs given")
    for p in inputs:
        if not p.exists():
            raise JobError(f"{p}: input not found")
    out = check_output_location(inputs, Path(out_dir), overwrite)
    if keys is not None:
        from salm_desktop.core.ownership.keydir import KeyDirError, check_keydir_location

        try:
            keys = check_keydir_location(Path(keys), out, inputs)
        except KeyDirError as exc:
            raise JobError(str(exc)) from None
    lock = OutputLock.acquire(out)  # two jobs on one output folder: the second stops here
    try:
        if lock is not None:  # only the lock holder may tell a dead job's leftovers from a live one's
            recover_interrupted(out, progress)
        out = check_output_location(inputs, out, overwrite)  # a restored output counts as existing
        job = _protect_locked(inputs, out, settings, labels, splits, progress, overwrite, loaded, result, keys)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    job.lock = lock
    return job


def _protect_locked(inputs: list[Path], out: Path, settings: ProtectSettings, labels: str | None, splits: Sequence[str],
                    progress: Progress, overwrite: bool, loaded: LoadResult | None, result: ProtectResult | None,
                    keys: Path | None = None) -> ProtectedJob:
    from salm_desktop.core.protect import protect_series

    if result is not None and loaded is None:
        raise JobError("a protection result can only be written together with the LoadResult it was made from")
    loaded = loaded if loaded is not None else _load(inputs, labels, progress)
    skipped: list[Skipped] = list(loaded.skipped)
    if not loaded.series:
        reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in skipped[:3])
        raise JobError(f"nothing to protect in the inputs{f' ({reasons})' if reasons else ''}")

    split_set = {s.strip() for s in splits if s.strip()}
    plan: list[tuple[Series, bool]] = []  # (series, protect?)
    for series in loaded.series:
        protect = series.kind != "npz" or str(series.meta.get("split", "")) in split_set
        if protect and result is not None:
            if not result.covers(series):
                raise JobError(f"series {series.id} is not part of the protection result; protect it first")
        elif protect:  # files that vanished since loading are dropped before protecting
            kept, gone = drop_missing(series)
            skipped.extend(gone)
            if kept is None:
                continue
            series = kept
        plan.append((series, protect))
    to_protect = [s for s, p in plan if p]
    if not to_protect:
        if any(s.kind == "npz" for s, _ in plan):
            raise JobError(f"no split to protect: the npz inputs have splits {sorted({str(s.meta.get('split')) for s, _ in plan})}, "
                           f"asked for {sorted(split_set)}")
        raise JobError("nothing left to protect (all input files disappeared)")

    owns_result = result is None
    try:
        if owns_result:
            unreadable = 0
            for attempt in range(3 + len({p for s, _ in plan for p in s.files})):
                try:
                    result = protect_series(to_protect, settings, progress)
                    gone = [p for s in to_protect for p in s.files if not Path(p).exists()]
                    if gone and attempt < 2 + unreadable:  # read, then deleted: protect the others again
                        result.close()
                        raise FileNotFoundError(errno.ENOENT, "input file disappeared after loading", str(gone[0]))
                    break
                except (ValueError, OSError) as exc:
                    bad = unreadable_input(exc)
                    if bad is not None:  # one file's pixels cannot be read: skip it, protect the others
                        plan, lost = drop_file_from_plan(plan, bad)
                        if not lost:
                            raise
                        skipped.extend(lost)
                        unreadable += 1
                        to_protect = [s for s, p in plan if p]
                        if not to_protect:
                            raise JobError(f"nothing left to protect: every input was skipped (last: {bad.path.name}: "
                                           f"{bad.reason})") from None
                        progress.log(f"skipped {bad.path}: {bad.reason}; protecting the other files again")
                        continue
                    # an input file vanished while the engine read it: skip it and protect the rest
                    if attempt >= 2 + unreadable or not any(not Path(p).exists() for s in to_protect for p in s.files):
                        raise
                    plan, gone = drop_missing_from_plan(plan)
                    skipped.extend(gone)
                    to_protect = [s for s, p in plan if p]
                    if not to_protect:
                        raise JobError("nothing left to protect (all input files disappeared)") from None
        else:
            settings = result.settings
    except Cancelled:
        raise
    except ValueError as exc:
        message = str(exc)
        if "no label" in message:
            message += " (for DICOM/NIfTI series without labels use --labels clusters:K)"
        raise JobError(message) from None
    except OSError as exc:
        raise JobError(f"could not read the inputs: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}") from None

    return ProtectedJob(inputs, out, settings, plan, result, skipped, overwrite, owns_result, keys)


def write_job(job: ProtectedJob, *, report: bool = True, progress: Progress | None = None,
              roi: str | Path | None = None, efficacy: dict[str, Any] | None = None, deid: Any = None,
              steward_record: str | Path | None = None, release_info: Any = None) -> JobResult:
    """The second half of :func:`run_protect_job`: export, manifest, report, rename into place.

    Closes ``job``'s result when it owns it, whatever happens. Raises :class:`JobError` and
    :class:`Cancelled`; in both cases nothing is left under the output folder.
    """
    progress = progress or Progress()
    out, settings, inputs = job.out, job.settings, job.inputs
    try:
        deid = prepare_deid(deid, out, steward_record, inputs)
    except JobError:
        job.close()
        raise
    transaction = OutputTransaction(out, job.overwrite)
    try:
        transaction.__enter__()
    except JobError:
        job.close()
        raise
    tmp = transaction.tmp
    keyset = None
    try:
        release_result = job.result
        if job.keys is not None:  # ownership keys: the mark goes into the written values, inside the same budget
            from salm_desktop.core.ownership.release import MarkedResult, plan_keys

            marked_series = [s for s, p in job.plan if p]
            keyset = plan_keys(marked_series, job.result)
            release_result = MarkedResult(job.result, keyset, marked_series, settings.epsilon)
        written = export_release(job.plan, release_result, tmp, settings, inputs, progress, report, job.skipped, roi, efficacy,
                          deid)
        if report:  # issue 15: after the manifest, whose sha256 it carries
            written["report"].update(_write_officer_report(tmp, out, written, release_info))
        steward_file = None
        if deid.enabled:  # the private record first: a release is never in place without it
            from salm_desktop.core.export.deid import write_steward_record

            steward_file = write_steward_record(deid.steward, release=out, options=deid.options, table=written["steward"],
                                 skipped=[skipped_dict(s, inputs) for s in written["skipped"]])
        if keyset is not None:
            from salm_desktop.core.ownership.release import write_release_keys

            write_release_keys(job.keys, keyset, marked_series, written["manifest"])
        try:
            transaction.commit()
        except BaseException:
            if keyset is not None:
                shutil.rmtree(job.keys, ignore_errors=True)  # keys of a release that was never written
            raise
    except BaseException as exc:
        transaction.abort()
        if isinstance(exc, OSError):
            raise JobError(_os_message(exc)) from None
        if isinstance(exc, ValueError) and not isinstance(exc, JobError):
            raise JobError(str(exc)) from None
        raise
    finally:
        job.close()

    final = transaction.final
    return JobResult(
        out_dir=out,
        summary=written["summary"],
        skipped=written["skipped"],
        manifest=final(written["manifest"]),
        report_html=final(written["report"].get("html")),
        report_pdf=final(written["report"].get("pdf")),
        files=[final(p) for p in written["files"]],
        uid_map=written["uid_map"],
        fidelity=written["fidelity"],
        steward_record=steward_file,
        officer_html=final(written["report"].get("officer_html")),
        officer_pdf=final(written["report"].get("officer_pdf")),
    )


def _write_officer_report(tmp: Path, out: Path, written: dict[str, Any], release_info: Any) -> dict[str, Path]:
    """Issue 15: officer-report.html/.pdf in the release, drawn from its finished manifest."""
    from salm_desktop.core.export.officer_report import write_officer_report

    return write_officer_report(tmp, written["manifest"], info=release_info, release_name=written["scrub"](out.name),
                                pdf="pdf" in written["report"])
