"""One protect job: load -> protect -> export -> manifest -> report. The CLI, the GUI and batch all
call :func:`run_protect_job`.

Safety rules (DESIGN.md): inputs are only ever opened for reading; the output is written to a
temporary folder next to ``out_dir`` and renamed into place (``os.replace``) when complete, so a
cancelled or failed job leaves nothing half-written; an existing non-empty output folder is refused
unless ``overwrite=True``; an output folder inside an input tree (or around one) is refused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from salm_desktop import __version__
from salm_desktop.core.model import LoadResult, Series, Skipped
from salm_desktop.core.progress import Cancelled, Progress

PARTIAL_PREFIX = ".salm-partial-"


class JobError(Exception):
    """A job that cannot run or could not finish; the message is one line for the user."""


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


# -- checks before anything runs --------------------------------------------------------------------
def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


def check_output_location(inputs: Sequence[Path], out_dir: Path, overwrite: bool = False) -> Path:
    """Validate the output folder; returns it resolved. Raises :class:`JobError` with a clear reason."""
    out = Path(out_dir).expanduser().resolve()
    for raw in inputs:
        src = Path(raw).expanduser().resolve()
        root = src if src.is_dir() else src.parent
        if out == src or (src.is_dir() and _is_within(out, root)):
            raise JobError(f"output folder {out} is inside the input {src}: choose a folder outside the input tree")
        if _is_within(src, out):
            raise JobError(f"output folder {out} contains the input {src}: choose a separate, new folder")
    if out.exists() and not out.is_dir():
        raise JobError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise JobError(f"output folder {out} already exists and is not empty; choose a new folder or allow overwriting")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise JobError(f"cannot create output folder {out}: {parent} is a file")
    return out


def _settings_fingerprint(settings_dict: dict[str, Any]) -> str:
    text = json.dumps(settings_dict, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def derivation_text(settings: Any, series: Series, epsilon: float | None = None) -> str:
    eps = float(settings.epsilon) if epsilon is None else float(epsilon)  # the series' own budget when known
    native = series.intensity.delta_to_native(eps)
    unit = f" {series.intensity.unit}" if series.intensity.unit else ""
    ratio = 1.0 if settings.method == "em" else float(settings.mask_ratio)
    return (
        f"Protected with SALM Desktop {__version__} (unlearnable-example perturbation): method={settings.method}, "
        f"epsilon={eps:.5g} of the intensity window [{series.intensity.low:g}, {series.intensity.high:g}] "
        f"(+/-{native:.4g}{unit}), mask_ratio={ratio:g}, seed={settings.seed}; written losslessly"
    )


def _series_budget(result: Any, settings: Any, series: Series) -> float:
    """The budget the engine used for ``series`` (its window, a native budget, a noise cap)."""
    per_series = (getattr(result, "summary", None) or {}).get("epsilon_per_series") or {}
    return float(per_series.get(series.id, settings.epsilon))


def _drop_missing(series: Series) -> tuple[Series | None, list[Skipped]]:
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


def _unreadable_input(exc: BaseException):
    """The PixelReadError (file + reason) behind a failed protection, if one input file caused it."""
    from salm_desktop.core.studies.limits import PixelReadError

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, PixelReadError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _drop_file_from_plan(plan: list[tuple[Series, bool]], bad) -> tuple[list[tuple[Series, bool]], list[Skipped]]:
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


def protect_skipping_unreadable(series: Sequence[Series], settings: Any, progress: Progress | None = None):
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
            bad = _unreadable_input(exc)
            if bad is None:
                raise
            plan, lost = _drop_file_from_plan(plan, bad)
            if not lost:
                raise
            skipped.extend(lost)
            if not plan:
                raise JobError(f"nothing left to protect: every input was skipped (last: {bad.path.name}: "
                               f"{bad.reason})") from None
            progress.log(f"skipped {bad.path}: {bad.reason}; protecting the other files again")
    raise JobError("too many unreadable files")


def _drop_missing_from_plan(plan: list[tuple[Series, bool]]) -> tuple[list[tuple[Series, bool]], list[Skipped]]:
    kept: list[tuple[Series, bool]] = []
    gone: list[Skipped] = []
    for series, protect in plan:
        if protect:
            series, lost = _drop_missing(series)
            gone.extend(lost)
            if series is None:
                continue
        kept.append((series, protect))
    return kept, gone


def _os_message(exc: OSError) -> str:
    where = exc.filename or ""
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the output location is not writable"
    else:
        reason = exc.strerror or str(exc)
    return f"could not write the output{f' ({where})' if where else ''}: {reason}"


def _load(inputs: list[Path], labels: str | None, progress: Progress) -> LoadResult:
    from salm_desktop.core.studies import load_paths

    try:
        return load_paths(inputs, labels=labels, progress=progress)
    except (ValueError, FileNotFoundError) as exc:  # LabelsError is a ValueError
        raise JobError(str(exc)) from None


# -- one job per output folder ------------------------------------------------------------------------
class OutputLock:
    """An exclusive ``flock`` on a lock file for one output folder, held from the checks to the rename.

    The kernel drops the lock when the process dies (kill -9 included), so a crash never leaves a
    stale lock. The lock files live in the temporary folder, keyed by the resolved output path, so a
    read-only or not yet existing output parent can still be locked.
    """

    def __init__(self, out: Path, fd: int, path: Path) -> None:
        self.out, self._fd, self.path = out, fd, path

    @classmethod
    def acquire(cls, out: Path) -> "OutputLock | None":
        import fcntl

        folder = Path(tempfile.gettempdir()) / f"salm-locks-{os.getuid() if hasattr(os, 'getuid') else 0}"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError:
            return None  # no lock possible: the rename-time check still refuses a folder that appeared
        path = folder / (hashlib.sha256(str(out).encode("utf-8", "surrogateescape")).hexdigest()[:24] + ".lock")
        for _attempt in range(5):
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            except OSError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise JobError(f"another SALM job is writing to {out}; wait for it to finish or choose another output folder") from None
            except OSError:
                os.close(fd)
                return None
            try:  # the holder before us may have unlinked the file after we opened it: lock the live one
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {out}\n".encode("utf-8", "surrogateescape"))
                    return cls(out, fd, path)
            except OSError:
                pass
            os.close(fd)
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def recover_interrupted(out: Path, progress: Progress | None = None) -> None:
    """Clean up after a job on ``out`` that was killed (call with the output lock held).

    A temporary folder of a killed job is removed. A kill during an overwrite, between moving the old
    output aside and moving the new one in, leaves the old output in a backup folder: it is put back.
    """
    import re

    parent = out.parent
    if not parent.is_dir():
        return
    partial = re.compile(rf"^{re.escape(PARTIAL_PREFIX)}{re.escape(out.name)}-[a-z0-9_]{{8}}$")
    backup = re.compile(rf"^{re.escape(PARTIAL_PREFIX)}old-{re.escape(out.name)}-[a-z0-9_]{{8}}$")
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if backup.match(entry.name) and entry.is_dir():
                old = entry / "old"
                if old.is_dir() and not out.exists():
                    os.replace(old, out)
                    if progress is not None:
                        progress.log(f"restored the previous output {out} (an overwrite was interrupted)")
                shutil.rmtree(entry, ignore_errors=True)
            elif partial.match(entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                if progress is not None:
                    progress.log(f"removed {entry.name}, left by an interrupted job")
        except OSError:
            continue


# -- the job -----------------------------------------------------------------------------------------
@dataclass
class ProtectedJob:
    """A job whose protection is computed and whose output is not written yet (see :func:`write_job`).

    Batch runs write one unit while the next one computes; the GUI and the CLI call
    :func:`run_protect_job`, which does both steps in turn.
    """

    inputs: list[Path]
    out: Path
    settings: Any
    plan: list[tuple[Series, bool]]  # (series, protect?)
    result: Any  # a ProtectResult
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
    settings: Any,
    *,
    labels: str | None = None,
    splits: Sequence[str] = ("train",),
    formats: str = "auto",
    report: bool = True,
    progress: Progress | None = None,
    overwrite: bool = False,
    roi: str | Path | None = None,
    efficacy: dict[str, Any] | None = None,
    loaded: LoadResult | None = None,
    result: Any = None,
    deid: Any = None,
    steward_record: str | Path | None = None,
    keys: str | Path | None = None,
    release_info: Any = None,
) -> JobResult:
    """Load ``inputs``, protect them with ``settings`` (a ProtectSettings), write the protected copy in
    the inputs' own formats under ``out_dir`` with manifest.json and (``report=True``) report.html/.pdf.

    npz inputs: only the ``splits`` listed are protected; the others are copied unchanged. ``roi`` is
    an optional label map (e.g. NRRD) whose ROI statistics go into the report. ``loaded`` lets a caller
    (the GUI) pass an already loaded :class:`LoadResult`; with it, ``result`` (a ProtectResult of those
    series, e.g. the one the user reviewed) is written as it is instead of protecting again (the caller
    keeps ownership and closes it). ``keys``: a new folder outside the release for the ownership keys
    (core/ownership; the release gets their mark). Raises :class:`JobError` (one-line message) and :class:`Cancelled`;
    in both cases nothing is left under ``out_dir``.

    ``deid`` (a DeidOptions; default: de-identify) and ``steward_record`` (the private record's folder;
    default ``<out>.steward`` next to the release) are checked before anything is computed.
    ``release_info`` (an officer_report.ReleaseInfo: operator, purpose) goes into the officer report;
    ``efficacy`` may also be a callable ``(release_tmp, progress) -> dict`` (``protect --evaluate``).
    """
    progress = progress or Progress()
    deid = prepare_deid(deid, out_dir, steward_record, inputs)
    job = protect_job(inputs, out_dir, settings, labels=labels, splits=splits, formats=formats, progress=progress,
                      overwrite=overwrite, loaded=loaded, result=result, keys=keys)
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
    settings: Any,
    *,
    labels: str | None = None,
    splits: Sequence[str] = ("train",),
    formats: str = "auto",
    progress: Progress | None = None,
    overwrite: bool = False,
    loaded: LoadResult | None = None,
    result: Any = None,
    keys: str | Path | None = None,
) -> ProtectedJob:
    """The first half of :func:`run_protect_job`: checks, load and protect; nothing is written.

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


def _protect_locked(inputs: list[Path], out: Path, settings: Any, labels: str | None, splits: Sequence[str],
                    progress: Progress, overwrite: bool, loaded: LoadResult | None, result: Any,
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
            if not _result_covers(result, series):
                raise JobError(f"series {series.id} is not part of the protection result; protect it first")
        elif protect:  # files that vanished since loading are dropped before protecting
            kept, gone = _drop_missing(series)
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
                    break
                except (ValueError, OSError) as exc:
                    bad = _unreadable_input(exc)
                    if bad is not None:  # one file's pixels cannot be read: skip it, protect the others
                        plan, lost = _drop_file_from_plan(plan, bad)
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
                    plan, gone = _drop_missing_from_plan(plan)
                    skipped.extend(gone)
                    to_protect = [s for s, p in plan if p]
                    if not to_protect:
                        raise JobError("nothing left to protect (all input files disappeared)") from None
        else:
            settings = getattr(result, "settings", settings)
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
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # made by us, removed on failure
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{out.name}-", dir=out.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the output folder is an ordinary one
    except OSError as exc:
        job.close()
        _remove_empty(created)
        raise JobError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None

    keyset = None
    try:
        release_result = job.result
        if job.keys is not None:  # ownership keys: the mark goes into the written values, inside the same budget
            from salm_desktop.core.ownership.release import MarkedResult, plan_keys

            marked_series = [s for s, p in job.plan if p]
            keyset = plan_keys(marked_series, job.result)
            release_result = MarkedResult(job.result, keyset, marked_series, settings.epsilon)
        written = _export(job.plan, release_result, tmp, settings, inputs, progress, report, job.skipped, roi, efficacy,
                          deid)
        if report:  # issue 15: after the manifest, whose sha256 it carries
            written["report"].update(_write_officer_report(tmp, out, written, release_info))
        steward_file = None
        if deid.enabled:  # the private record first: a release is never in place without it
            from salm_desktop.core.export.deid import write_steward_record

            steward_file = write_steward_record(deid.steward, release=out, options=deid.options, table=written["steward"],
                                 skipped=[_skipped_dict(s, inputs) for s in written["skipped"]])
        if keyset is not None:
            from salm_desktop.core.ownership.release import write_release_keys

            write_release_keys(job.keys, keyset, marked_series, written["manifest"])
        try:
            _move_into_place(tmp, out, job.overwrite)
        except BaseException:
            if keyset is not None:
                shutil.rmtree(job.keys, ignore_errors=True)  # keys of a release that was never written
            raise
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        if isinstance(exc, OSError):
            raise JobError(_os_message(exc)) from None
        if isinstance(exc, ValueError) and not isinstance(exc, JobError):
            raise JobError(str(exc)) from None
        raise
    finally:
        job.close()

    def final(p: Path | None) -> Path | None:
        return None if p is None else out / p.relative_to(tmp)

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


def _export(plan, result, tmp: Path, settings, inputs, progress: Progress, report: bool,
            skipped: list[Skipped], roi, efficacy, deid=None) -> dict[str, Any]:
    from salm_desktop.core.export.common import ExportError, OutputLayout, WriteResult
    from salm_desktop.core.export.dicom import write_dicom_series
    from salm_desktop.core.export.images import write_image_series
    from salm_desktop.core.export.manifest import write_manifest
    from salm_desktop.core.export.nifti import write_nifti_series
    from salm_desktop.core.export.npz import write_npz_file
    from salm_desktop.core.export.volume import write_volume_series
    from salm_desktop.core.fidelity.metrics import JobFidelity, SeriesFidelity

    settings_dict = settings.as_dict() if hasattr(settings, "as_dict") else dict(vars(settings))
    salt = _settings_fingerprint(settings_dict)
    deidentifier = None
    if deid is not None and deid.enabled:
        from salm_desktop.core.export.deid import DicomDeidentifier

        # the options change the files, so they are part of what makes derived UIDs distinct
        deidentifier = DicomDeidentifier(deid.options, deid.secret, _settings_fingerprint(
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

    def protected_fn(series: Series):
        return lambda i: result.protected(series.id, i)

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
            fid = fidelity.add_series(SeriesFidelity.for_series(series, _series_budget(result, settings, series), roi_fns.get(series.id)))
            fid.series_id = release_id(series.id)
            kwargs = dict(observer=fid.add, progress=progress, done_offset=done, total=total_files)
            if series.kind in ("nifti", "nrrd", "volume") and deidentifier is not None:
                kwargs["deidentify"] = True
            if series.kind == "dicom":
                part = write_dicom_series(series, protected_fn(series), tmp, layout,
                                          derivation=derivation_text(settings, series, _series_budget(result, settings, series)),
                                          uid_salt=salt, deidentifier=deidentifier, **kwargs)
            elif series.kind == "nifti":
                part = write_nifti_series(series, protected_fn(series), tmp, layout, **kwargs)
            elif series.kind == "images":
                part = write_image_series(series, protected_fn(series), tmp, layout, **kwargs)
            elif series.kind in ("nrrd", "volume"):
                part = write_volume_series(series, protected_fn(series), tmp, layout, **kwargs)
            else:
                raise JobError(f"series {series.id}: writing {series.kind!r} data is not supported")
            written.extend(part)
            done += len(series.files)
        for path, parts in npz_files.items():
            progress.update("export", done, total_files, f"writing {path.name}")
            fids = {s.id: fidelity.add_series(SeriesFidelity.for_series(s, _series_budget(result, settings, s))) for s, fn in parts if fn is not None}
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
    if deidentifier is not None and isinstance(summary.get("epsilon_native_per_series"), dict):
        summary["epsilon_native_per_series"] = {release_id(k): v for k, v in summary["epsilon_native_per_series"].items()}
    skipped_dicts = [_skipped_dict(s, inputs) for s in skipped]
    if deidentifier is not None:  # source names may carry identifiers the DICOM files held
        skipped_dicts = [{"path": deidentifier.scrub(d["path"]), "reason": deidentifier.scrub(d["reason"])} for d in skipped_dicts]
        # a labels CSV path or a description in the settings or summary may hold a name as well
        settings_dict = deidentifier.scrub_strings(settings_dict)
        summary = deidentifier.scrub_strings(summary)
    series_info = [{"series": release_id(s.id), "kind": s.kind, "modality": s.modality, "samples": len(s.samples),
                    "protected": p, "split": s.meta.get("split"), "labels_used": _labels_used(result, s) if p else None}
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


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this job created (innermost first) if they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def _result_covers(result, series: Series) -> bool:
    where = getattr(result, "_where", None)
    if where is None:
        return True
    return all((series.id, i) in where for i in range(len(series.samples)))


def _labels_used(result, series: Series) -> dict[str, int] | None:
    try:
        labels = result.labels_used(series.id)
    except Exception:  # noqa: BLE001
        return None
    counts: dict[str, int] = {}
    for label in labels:
        counts[str(label)] = counts.get(str(label), 0) + 1
    return counts


def _skipped_dict(item: Skipped, inputs: Sequence[Path]) -> dict[str, str]:
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


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (threads may be writing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temporary folder to ``out`` (atomic on one filesystem)."""
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:  # appeared while we were working
            raise JobError(f"output folder {out} was created by someone else while the job ran; nothing was written")
        backup = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}old-{out.name}-", dir=out.parent))
        os.replace(out, backup / "old")
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(backup / "old", out)
            raise
        shutil.rmtree(backup, ignore_errors=True)
        return
    if out.is_dir():
        out.rmdir()  # empty: replace it
    os.replace(tmp, out)
