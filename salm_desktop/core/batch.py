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
import re
import shutil
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from salm_desktop import __version__
from salm_desktop.core.model import LoadResult, Series
from salm_desktop.core.options import OptionError, build_settings
from salm_desktop.core.progress import Cancelled, Progress

STATE_NAME = "state.json"
SUMMARY_NAME = "batch-summary.json"
PARTIAL_SUFFIX = ".salm-batch-partial"
# De-identification options (see docs/deidentification.md); like splits/report they are not engine settings.
DEID_OPTIONS = {"keep_identity", "secret", "allow_burned_in", "retain_dates", "retain_patient_characteristics",
                "retain_device_identity", "clean_descriptions", "retain_safe_private"}
JOB_OPTIONS = {"splits", "report", "threads"} | DEID_OPTIONS | {"pacs_sources", "send"}  # the last two: core/pacs/batch_sources.py; threads: docs/cluster.md


class ConfigError(ValueError):
    """A batch config that cannot be used; the message names the file and the problem."""


class BatchBusy(ConfigError):
    """Another batch holds the lock on the same output root."""


@dataclass
class BatchJob:
    name: str
    inputs: list[Path]
    options: dict[str, Any]  # settings options (see options.build_settings) + splits/report
    settings: Any = None
    loader_labels: str | None = None

    @property
    def splits(self) -> list[str]:
        return list(self.options.get("splits", ["train"]))

    @property
    def report(self) -> bool:
        return bool(self.options.get("report", True))

    @property
    def threads(self) -> int | None:
        return self.options.get("threads")

    def deid_options(self):
        from salm_desktop.core.export.deid import DeidOptions

        o = self.options
        secret = o.get("secret")
        return DeidOptions(keep_identity=bool(o.get("keep_identity", False)), retain_dates=bool(o.get("retain_dates", False)),
                           retain_patient_characteristics=bool(o.get("retain_patient_characteristics", False)),
                           retain_device_identity=bool(o.get("retain_device_identity", False)),
                           clean_descriptors=bool(o.get("clean_descriptions", False)),
                           retain_safe_private=bool(o.get("retain_safe_private", False)),
                           allow_burned_in=bool(o.get("allow_burned_in", False)),
                           secret=Path(secret) if secret else None)

    def fingerprint(self) -> str:
        """Same inputs + same settings + same software -> a rerun may reuse finished work."""
        text = json.dumps({
            "inputs": [str(p.resolve()) for p in self.inputs],
            "options": self.options,
            "version": __version__,
        }, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


@dataclass
class BatchConfig:
    path: Path
    output: Path
    jobs: list[BatchJob]


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


# -- config ------------------------------------------------------------------------------------------
def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return name or "job"


def load_config(path: str | Path) -> BatchConfig:
    path = Path(path).expanduser()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    base = path.resolve().parent

    def resolve(value: Any, what: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}: {what} must be a path string, got {value!r}")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    unknown = sorted(set(raw) - {"output", "inputs", "settings", "jobs"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (expected output, inputs, settings, jobs)")
    if "output" not in raw:
        raise ConfigError(f"{path}: 'output' (the output root folder) is missing")
    output = resolve(raw["output"], "output")
    defaults = raw.get("settings", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [settings] must be a table")

    specs: list[tuple[str, list[Path], dict[str, Any]]] = []
    inputs = raw.get("inputs", [])
    if not isinstance(inputs, list):
        raise ConfigError(f"{path}: 'inputs' must be a list of folders")
    for item in inputs:
        if isinstance(item, str) and item.startswith(("dicomweb:", "dimse:")):  # PACS: core/pacs/batch_sources.py
            from salm_desktop.core.pacs.batch_sources import top_level_source

            specs.append(top_level_source(path, item))
            continue
        folder = resolve(item, "each entry of inputs")
        specs.append((folder.name, [folder], {}))
    for i, table in enumerate(raw.get("jobs", []), start=1):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [[jobs]] entry {i} must be a table")
        job_inputs = table.get("inputs", table.get("input"))
        job_inputs = [job_inputs] if isinstance(job_inputs, str) else job_inputs
        if not job_inputs:
            raise ConfigError(f"{path}: [[jobs]] entry {i} has no inputs")
        from salm_desktop.core.pacs.batch_sources import SELECTION_KEYS, job_name_default, split_job_inputs

        job_inputs, pacs = split_job_inputs(path, table, list(job_inputs), i)
        folders = [resolve(p, f"inputs of [[jobs]] entry {i}") for p in job_inputs]
        overrides = {k: v for k, v in table.items() if k not in ("name", "inputs", "input", *SELECTION_KEYS)} | pacs
        specs.append((str(table.get("name") or job_name_default(folders, overrides)), folders, overrides))
    if not specs:
        raise ConfigError(f"{path}: no jobs: give 'inputs' or [[jobs]] tables")

    jobs: list[BatchJob] = []
    names: set[str] = set()
    for name, folders, overrides in specs:
        name = _safe_name(name)
        while name in names:  # two folders with the same name: keep both, distinctly
            name = f"{name}-{len(names) + 1}"
        names.add(name)
        options = {**defaults, **overrides}
        from salm_desktop.core.pacs.batch_sources import check_options

        check_options(path, name, options)
        if isinstance(options.get("labels"), str) and options["labels"].startswith("csv:"):
            options["labels"] = "csv:" + str(resolve(options["labels"][4:], "labels csv"))
        if isinstance(options.get("secret"), str) and options["secret"].strip():
            options["secret"] = str(resolve(options["secret"], "secret"))
        if isinstance(options.get("splits"), str):
            options["splits"] = [s.strip() for s in options["splits"].split(",") if s.strip()]
        if "threads" in options:
            from salm_desktop.core.cluster.unit import parse_threads

            try:
                options["threads"] = parse_threads(options["threads"])
            except ValueError as exc:
                raise ConfigError(f"{path}: job {name!r}: {exc}") from None
        for folder in folders:
            if not folder.exists():
                raise ConfigError(f"{path}: job {name!r}: input {folder} does not exist")
            out = output.resolve()
            if out == folder.resolve() or str(out).startswith(str(folder.resolve()) + os.sep):
                raise ConfigError(f"{path}: output {output} is inside the input {folder}: choose a folder outside the inputs")
        setting_options = {k: v for k, v in options.items() if k not in JOB_OPTIONS}
        try:
            settings, loader_labels = build_settings(setting_options)
        except OptionError as exc:
            raise ConfigError(f"{path}: job {name!r}: {exc}") from None
        jobs.append(BatchJob(name, folders, options, settings, loader_labels))
    return BatchConfig(path=path, output=output, jobs=jobs)


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
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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

    final = output / job.name
    try:  # the secret and the private record's place are checked before any work
        deid = prepare(job.deid_options(), final, default_steward_dir(final), job.inputs)
    except DeidError as exc:
        return JobOutcome(job.name, "failed", None, str(exc))
    fingerprint = job.fingerprint()
    if deid.secret is not None:  # another secret gives other pseudonyms: never mix units made with two secrets
        fingerprint = hashlib.sha256((fingerprint + hashlib.sha256(b"salm-batch\x1f" + deid.secret).hexdigest()).encode()).hexdigest()[:20]
    if final.exists():
        manifest = _read_json(final / "manifest.json") or {}
        if manifest.get("batch", {}).get("fingerprint") == fingerprint:
            shutil.rmtree(output / (job.name + PARTIAL_SUFFIX), ignore_errors=True)  # killed after the rename
            return JobOutcome(job.name, "already done", final, "finished in an earlier run",
                              skipped=manifest.get("skipped", []), summary=manifest.get("summary", {}))
        return JobOutcome(job.name, "failed", final, f"output folder {final} exists from another run or other settings; "
                          "move it away or choose another output root")

    partial = output / (job.name + PARTIAL_SUFFIX)
    state = _read_json(partial / STATE_NAME) if partial.is_dir() else None
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
    from salm_desktop.core.cluster.unit import pinned_threads

    with pinned_threads(job.threads):
        _run_units(job, todo, len(units), units_dir, partial, state, skipped, progress, pipeline, deid, executor)

    try:
        summary = _assemble(job, units, units_dir, partial, final, fingerprint, skipped, deid)
    except OSError as exc:
        return JobOutcome(job.name, "failed", None, f"could not assemble the job output: {exc.strerror or exc}")
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


def _assemble(job: BatchJob, units: list[Unit], units_dir: Path, partial: Path, final: Path, fingerprint: str,
              skipped: list[dict[str, str]], deid: Any = None) -> dict[str, Any]:
    """Merge finished units into one job folder with one manifest and report; rename it into place.

    De-identified (the default): the unit names in the release are keyed pseudonyms (internal unit ids
    are hashes of UIDs), skipped inputs are named by file name only, no UID map is in the manifest, and
    the units' private records are merged into ``<job>.steward`` next to the job folder.
    """
    from salm_desktop.core.export.common import sha256_file
    from salm_desktop.core.export.deid import STEWARD_FILE, Pseudonyms, write_steward_record

    private = deid is not None and deid.enabled
    pseudonyms = Pseudonyms(deid.secret, "") if private else None

    def unit_name(unit_id: str) -> str:
        return "unit-" + pseudonyms.release_id(unit_id) if pseudonyms is not None else unit_id

    assembled = partial / "assembled"
    shutil.rmtree(assembled, ignore_errors=True)
    assembled.mkdir()
    unit_manifests: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    uid_map: dict[str, str] = {}
    for unit in units:
        unit_dir = units_dir / unit.id
        manifest = _read_json(unit_dir / "manifest.json")
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
            files.append({"path": target.relative_to(assembled).as_posix(), "bytes": target.stat().st_size,
                          "sha256": sha256_file(target)})
        uid_map.update(manifest.get("uid_map", {}))
        skipped.extend(manifest.get("skipped", []))
        unit_manifests.append({"unit": unit_name(unit.id), "summary": manifest.get("summary", {}),
                               "series": manifest.get("series", []),
                               "report": f"reports/{unit_name(unit.id)}/report.html" if (unit_dir / "report.html").exists() else None})

    summary = _job_summary(unit_manifests)
    document = {
        "manifest_version": 1,
        "software": {"name": "SALM Desktop", "version": __version__},
        "batch": {"job": job.name, "fingerprint": fingerprint, "units": len(units)},
        "settings": job.settings.as_dict(),
        "seed": job.settings.seed,
        "summary": summary,
        "units": unit_manifests,
        "files": files,
        "uid_map": uid_map,
        "skipped": skipped,
    }
    steward_table: dict[str, Any] = {"uid_map": {}, "patients": {}, "series_ids": {}, "private_attributes_dropped": 0}
    if private:
        del document["uid_map"]  # the map back to the originals never goes into a release
        document["deidentification"] = deid.options.release_facts()
        unit_ids = {u.id for u in units}
        document["skipped"] = [{"path": unit_name(s["path"]) if s["path"] in unit_ids else Path(s["path"]).name,
                                "reason": s["reason"]} for s in skipped]
        for unit in units:
            record = _read_json(partial / "steward" / unit.id / STEWARD_FILE) or {}
            for key in ("uid_map", "patients", "series_ids"):
                steward_table[key].update(record.get(key, {}))
            steward_table["private_attributes_dropped"] += int(record.get("private_attributes_dropped") or 0)
        steward_table["units"] = {unit_name(u.id): u.id for u in units}
    if job.report:
        _write_job_report(assembled, job, document)
        for name in ("report.html", "report.pdf"):
            target = assembled / name
            files.append({"path": name, "bytes": target.stat().st_size, "sha256": sha256_file(target)})
    _write_json_atomic(assembled / "manifest.json", document)
    if private:
        write_steward_record(deid.steward, release=final, options=deid.options, table=steward_table, skipped=skipped)
    os.replace(assembled, final)
    shutil.rmtree(partial, ignore_errors=True)
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


def _write_job_report(folder: Path, job: BatchJob, document: dict[str, Any]) -> None:
    """The job's report: one row per series with its numbers and a link to the series' full report."""
    import html

    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    rows = []
    for unit in document["units"]:
        s = unit["summary"]
        rows.append([unit["unit"], str(s.get("samples", "")), f"{float(s.get('psnr_db') or 0):.1f}",
                     f"{float(s.get('ssim') or 0):.4f}", f"{100 * float(s.get('fraction_pixels_changed') or 0):.1f} %",
                     f"{float(s.get('max_abs_change_native') or 0):.4g}", unit.get("report") or ""])
    head = ["series", "samples", "PSNR dB", "SSIM", "pixels changed", "max change (native)", "full report"]
    summary = document["summary"]
    lines = [
        f"Job {job.name}: {summary.get('samples')} samples in {summary.get('series')} series, method {summary.get('method')}, "
        f"epsilon {float(summary.get('epsilon') or 0):.4f}, device {summary.get('device')}, {summary.get('seconds')} s.",
        f"Skipped or failed inputs: {len(document['skipped'])}.",
    ]
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r[:-1])
        + (f"<td><a href=\"{html.escape(r[-1])}\">report</a></td>" if r[-1] else "<td></td>") + "</tr>" for r in rows)
    skipped = "".join(f"<li>{html.escape(Path(s['path']).name)}: {html.escape(s['reason'])}</li>" for s in document["skipped"])
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
