"""Batch protection of many folders from one TOML config, resumable after a cancel or a crash.

One *job* per input folder (or per ``[[jobs]]`` table). Each job is split into *units* that are
protected and written independently with :func:`run_protect_job`: one unit per DICOM/NIfTI/NRRD
series, one per npz file (all its splits), one per image folder. A unit's output is renamed into
place only when complete, and a journal (``state.json``) records finished units, so re-running the
same command after Ctrl-C or a power loss continues with the first unfinished unit; finished series
are not redone and nothing is duplicated or half-written. When every unit of a job is done, the
job's folder is assembled (data files in the input's tree, one manifest.json, one report.html/.pdf
linking each series' own report) and renamed to ``OUTPUT/<job name>``. ``batch-summary.json`` lists
every job's outcome.

Config (relative paths are relative to the config file)::

    output = "protected"                 # output root
    inputs = ["study1", "study2"]        # one job each, named after the folder
    [settings]                           # the same settings as `salm-protect protect`
    method = "salm"
    epsilon = "8/255"
    labels = "clusters:2"                # folders | npz | csv:FILE | clusters:K
    splits = ["train"]                   # npz splits to protect
    report = true
    [[jobs]]                             # optional, instead of / besides `inputs`
    name = "cohort-b"
    inputs = ["cohort_b/scans"]
    labels = "csv:cohort_b/labels.csv"   # per-job overrides of any setting
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from salm_desktop import __version__
from salm_desktop.core.batch_config import (  # noqa: F401 - the config's names are this module's public names too
    DEID_OPTIONS,
    JOB_OPTIONS,
    BatchBusy,
    BatchConfig,
    BatchJob,
    ConfigError,
    load_config,
)
from salm_desktop.core.batch_record import assemble as _assemble
from salm_desktop.core.batch_record import read_json
from salm_desktop.core.model import LoadResult, Series
from salm_desktop.core.progress import Cancelled, Progress

STATE_NAME = "state.json"
SUMMARY_NAME = "batch-summary.json"
PARTIAL_SUFFIX = ".salm-batch-partial"


@dataclass
class JobOutcome:
    name: str
    status: str  # "done" | "already done" | "failed" | "cancelled"
    out_dir: Path | None = None
    message: str = ""
    units_done: int = 0
    units_total: int = 0
    units_reused: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.name, "status": self.status, "out": str(self.out_dir) if self.out_dir else None,
                "message": self.message, "units_done": self.units_done, "units_total": self.units_total,
                "units_reused": self.units_reused, "skipped": self.skipped, "summary": self.summary}


@dataclass
class BatchResult:
    jobs: list[JobOutcome]
    summary_path: Path | None = None

    @property
    def cancelled(self) -> bool:
        return any(j.status == "cancelled" for j in self.jobs)

    @property
    def complete(self) -> bool:
        return all(j.status in ("done", "already done") and not j.skipped for j in self.jobs)


# -- units -------------------------------------------------------------------------------------------
@dataclass
class Unit:
    id: str
    series: list[Series]


MIN_UNIT_SAMPLES = 16  # smaller series are protected together: a surrogate needs several samples to fit


def plan_units(loaded: LoadResult) -> list[Unit]:
    """Split a job into independently written units (see the module docstring).

    Each series of at least MIN_UNIT_SAMPLES samples is a unit of its own; smaller series (single
    images, short localizer series) are packed together in order until a unit is large enough, so that
    the min-min surrogate and the pseudo-label clustering have enough samples to work with.
    """
    units: dict[str, Unit] = {}
    pending: list[Series] = []

    def flush() -> None:
        if pending:
            key = "group-" + hashlib.sha256("|".join(s.id for s in pending).encode()).hexdigest()[:10]
            units[key] = Unit(key, list(pending))
            pending.clear()

    for series in loaded.series:
        if series.kind == "npz":  # the splits of one file are written together
            key = "npz-" + hashlib.sha256(str(series.samples[0].source.path).encode()).hexdigest()[:10]
            units.setdefault(key, Unit(key, [])).series.append(series)
        elif len(series.samples) >= MIN_UNIT_SAMPLES:
            units[f"{series.kind}-{series.id}"] = Unit(f"{series.kind}-{series.id}", [series])
        else:
            pending.append(series)
            if sum(len(s.samples) for s in pending) >= MIN_UNIT_SAMPLES:
                flush()
    if pending and units and sum(len(s.samples) for s in pending) < MIN_UNIT_SAMPLES:
        # A small remainder joins the last group of small series rather than standing alone.
        last = next((u for u in reversed(list(units.values())) if u.id.startswith("group-")), None)
        if last is not None:
            last.series.extend(pending)
            pending.clear()
    flush()
    return list(units.values())


# -- running -----------------------------------------------------------------------------------------
def _write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def run_batch(config: BatchConfig, progress: Progress | None = None,
              on_job: Callable[[int, BatchJob], None] | None = None, pipeline: bool = True,
              executor: Any = None) -> BatchResult:
    """Run (or resume) every job of ``config``. Raises nothing for a failing job: its outcome says why.

    A cancel (``progress.cancel()`` or Ctrl-C) stops at the next checkpoint; finished units stay in
    the job's partial folder for the next run, and the rest of the jobs are marked cancelled.
    ``pipeline`` (default) overlaps each unit's compute with reading the next unit's pixels and writing
    the previous unit (see :func:`_run_units`); ``pipeline=False`` runs the steps one after the other
    (the benchmark's baseline). ``executor`` (a core.cluster DaskExecutor) runs the units on a
    cluster instead of in this process; the journal and the assembly stay here.
    """
    from salm_desktop.core.jobs import JobError, OutputLock

    progress = progress or Progress()
    output = config.output.expanduser()
    output.mkdir(parents=True, exist_ok=True)
    try:  # one batch per output root: a second one started at once refuses instead of sharing the journal
        lock = OutputLock.acquire(output.resolve())
    except JobError:
        raise BatchBusy(f"another batch is writing to {output}; wait for it to finish or choose another output root") from None
    try:
        return _run_batch_locked(config, output, progress, on_job, pipeline, executor)
    finally:
        if lock is not None:
            lock.release()


def _run_batch_locked(config: BatchConfig, output: Path, progress: Progress,
                      on_job: Callable[[int, BatchJob], None] | None, pipeline: bool, executor: Any = None) -> BatchResult:
    outcomes: list[JobOutcome] = []
    cancelled = False
    for index, job in enumerate(config.jobs):
        if cancelled:
            outcomes.append(JobOutcome(job.name, "cancelled", message="not started"))
            continue
        if on_job is not None:
            on_job(index, job)
        try:
            from salm_desktop.core.pacs.batch_sources import run_job  # PACS sources pulled, release sent

            outcomes.append(run_job(job, output, progress, lambda j: _run_job(j, output, progress, pipeline, executor)))
        except (Cancelled, KeyboardInterrupt):
            cancelled = True
            outcomes.append(JobOutcome(job.name, "cancelled", message="cancelled; finished series are kept for a rerun"))
    result = BatchResult(outcomes)
    result.summary_path = output / SUMMARY_NAME
    _write_json_atomic(result.summary_path, {
        "software": {"name": "SALM Desktop", "version": __version__},
        "config": str(config.path),
        "jobs": [o.as_dict() for o in outcomes],
    })
    if cancelled:
        raise Cancelled("batch cancelled")
    return result


def _run_job(job: BatchJob, output: Path, progress: Progress, pipeline: bool = True, executor: Any = None) -> JobOutcome:
    from salm_desktop.core.studies import load_paths

    from salm_desktop.core.export.deid import DeidError, default_steward_dir, prepare
    from salm_desktop.core.transaction import JobError, recover_interrupted

    final = output / job.name
    recover_interrupted(final, progress)  # an assembly killed before its rename (the batch holds the root's lock)
    try:  # the secret and the private record's place are checked before any work
        deid = prepare(job.deid_options(), final, default_steward_dir(final), job.inputs)
    except DeidError as exc:
        return JobOutcome(job.name, "failed", None, str(exc))
    fingerprint = job.fingerprint()
    if deid.secret is not None:  # another secret gives other pseudonyms: never mix units made with two secrets
        fingerprint = hashlib.sha256((fingerprint + hashlib.sha256(b"salm-batch\x1f" + deid.secret).hexdigest()).encode()).hexdigest()[:20]
    if final.exists():
        manifest = read_json(final / "manifest.json") or {}
        if manifest.get("batch", {}).get("fingerprint") == fingerprint:
            shutil.rmtree(output / (job.name + PARTIAL_SUFFIX), ignore_errors=True)  # killed after the rename
            return JobOutcome(job.name, "already done", final, "finished in an earlier run",
                              skipped=manifest.get("skipped", []), summary=manifest.get("summary", {}))
        return JobOutcome(job.name, "failed", final, f"output folder {final} exists from another run or other settings; "
                          "move it away or choose another output root")

    partial = output / (job.name + PARTIAL_SUFFIX)
    state = read_json(partial / STATE_NAME) if partial.is_dir() else None
    if state is None or state.get("fingerprint") != fingerprint:
        shutil.rmtree(partial, ignore_errors=True)  # stale work from other settings is never mixed in
        partial.mkdir(parents=True)
        state = {"fingerprint": fingerprint, "job": job.name, "done": {}}
        _write_json_atomic(partial / STATE_NAME, state)
    units_dir = partial / "units"
    units_dir.mkdir(exist_ok=True)
    for leftover in units_dir.iterdir():  # a unit interrupted mid-write: its temp folder only
        if leftover.name not in state["done"]:
            shutil.rmtree(leftover, ignore_errors=True)

    try:
        loaded = load_paths(job.inputs, labels=job.loader_labels, progress=progress)
    except (ValueError, OSError) as exc:
        return JobOutcome(job.name, "failed", None, str(exc))
    units = plan_units(loaded)
    skipped = [{"path": str(s.path), "reason": s.reason} for s in loaded.skipped]
    if not units:
        return JobOutcome(job.name, "failed", None, "nothing loadable in the inputs", skipped=skipped)

    reused = sum(1 for u in units if u.id in state["done"])
    todo = [(number, unit) for number, unit in enumerate(units, start=1) if unit.id not in state["done"]]
    from salm_desktop.core.threads import pinned_threads

    with pinned_threads(job.threads):
        _run_units(job, todo, len(units), units_dir, partial, state, skipped, progress, pipeline, deid, executor)

    try:
        summary = _assemble(job, units, units_dir, partial, final, fingerprint, skipped, deid)
    except OSError as exc:
        return JobOutcome(job.name, "failed", None, f"could not assemble the job output: {exc.strerror or exc}")
    except JobError as exc:  # the output transaction's own checks
        return JobOutcome(job.name, "failed", None, f"could not assemble the job output: {exc}")
    return JobOutcome(job.name, "done", final, "", len(units), len(units), reused, skipped, summary)


PREFETCH_BYTES = 256 * 2**20  # pixels of the next unit decoded ahead of its turn, at most


def _run_units(job: BatchJob, todo: list[tuple[int, Unit]], n_units: int, units_dir: Path, partial: Path,
               state: dict[str, Any], skipped: list[dict[str, str]], progress: Progress, pipeline: bool,
               deid: Any = None, executor: Any = None) -> None:
    """Protect and write ``todo`` in order; record each unit in the journal once its output is in place.

    With ``pipeline`` three things run at once: the main thread computes unit k, a writer thread
    writes unit k-1 (export, report, rename into place) and a reader thread decodes unit k+1's pixels.
    At most one write is in flight, so memory holds at most two units' results plus the read-ahead
    buffer. A unit is journalled (under a lock) by whoever wrote it, right after its output was renamed
    into place; a crash in between just redoes that unit on the next run. Cancel (or Ctrl-C) stops the compute
    and the read-ahead at once; a unit already being written is complete and is finished and kept
    (its write has its own cancel flag), so a cancel never throws away finished work.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from salm_desktop.core.jobs import JobError, protect_job, write_job
    from salm_desktop.core.studies.prefetch import PixelPrefetcher

    journal_lock = threading.Lock()

    def record(unit: Unit, error: JobError | None) -> None:
        with journal_lock:
            if error is None:
                state["done"][unit.id] = {"status": "done"}
            else:
                skipped.append({"path": unit.id, "reason": str(error)})
                state["done"][unit.id] = {"status": "failed", "reason": str(error)}
            _write_json_atomic(partial / STATE_NAME, state)

    if executor is not None:  # units run on a cluster; results come back here to be journalled
        executor.run_units(job, todo, n_units, units_dir, partial, deid, progress, record)
        return

    def write(unit: Unit, protected, writer_progress: Progress) -> None:
        """Writer thread: a unit is journalled as soon as its output is in place (a kill right after keeps it)."""
        try:
            unit_deid = None
            if deid is not None and deid.enabled:  # each unit's private record waits in the partial folder
                from dataclasses import replace

                unit_deid = replace(deid, steward=partial / "steward" / unit.id)
            elif deid is not None:
                unit_deid = deid
            write_job(protected, report=job.report, progress=writer_progress, deid=unit_deid)
        except JobError as exc:
            record(unit, exc)
        else:
            record(unit, None)
            writer_progress.log(f"job {job.name}: unit {unit.id} written")

    def collect(pending: tuple[Unit, Future] | None) -> None:
        if pending is not None:
            pending[1].result()

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salm-writer") if pipeline else None
    writer_progress = progress.log_only()
    pending: tuple[Unit, Future] | None = None
    readers: dict[str, PixelPrefetcher] = {}

    def read_ahead(position: int) -> None:
        if pipeline and position < len(todo):
            unit = todo[position][1]
            readers[unit.id] = PixelPrefetcher(unit.series, PREFETCH_BYTES).start()

    try:
        read_ahead(0)
        for position, (number, unit) in enumerate(todo):
            progress.log(f"job {job.name}: unit {number}/{n_units} ({unit.id}, {sum(len(s.samples) for s in unit.series)} samples)")
            reader = readers.pop(unit.id, None)
            series = reader.series() if reader is not None else unit.series
            read_ahead(position + 1)
            try:
                protected = protect_job(job.inputs, units_dir / unit.id, job.settings, splits=job.splits, progress=progress,
                                        loaded=LoadResult(series=series, skipped=[]))
            except JobError as exc:
                collect(pending)
                pending = None
                record(unit, exc)
                continue
            finally:
                if reader is not None:
                    reader.close()
            collect(pending)  # at most one write in flight
            pending = None
            if writer is None:
                write(unit, protected, progress)
            else:
                pending = (unit, writer.submit(write, unit, protected, writer_progress))
        collect(pending)
        pending = None
    finally:
        for reader in readers.values():
            reader.close()
        if writer is not None:
            try:
                collect(pending)  # finish and journal the unit being written, even on cancel
            except BaseException:  # noqa: BLE001 - the batch is already ending with the first error
                pass
            writer.shutdown(wait=True)
