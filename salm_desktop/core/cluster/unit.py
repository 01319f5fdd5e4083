"""One batch unit as a plain function of (task, unit) that any worker process can run.

:func:`run_unit` protects a unit and writes its output (export, manifest, report, rename into
place) into the job's partial folder, exactly as the plain batch does, and returns a small dict. It
never touches the journal: the client records the unit when the result comes back, so a worker
lost after the rename only costs a re-run of that unit.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from salm_desktop.core.threads import pinned_threads

PROGRESS_INTERVAL_S = 0.25  # a worker sends at most this often per unit (plus every stage's last event)
CANCEL_POLL_S = 1.0  # how often a running unit asks the scheduler whether the batch was cancelled


@dataclass(frozen=True)
class UnitTask:
    """What a worker needs besides the unit itself; small and picklable (no open files, no locks)."""

    job: str
    unit_id: str
    inputs: tuple[Path, ...]
    loader_labels: str | None
    settings: Any  # a ProtectSettings
    splits: tuple[str, ...]
    report: bool
    units_dir: Path
    partial: Path
    deid: Any  # a DeidContext (holds the pseudonym secret: use tls:// between machines)
    threads: int | None
    topic: str = ""  # the client's progress topic ("" outside a cluster)
    cancel_event: str = ""  # name of the distributed Event the client sets on cancel


def run_unit(task: UnitTask, unit: Any = None) -> dict[str, Any]:
    """Protect and write one unit; ``unit`` None: the worker finds it again from the job's inputs.

    Returns ``{"unit", "status": "done"|"failed", "reason", "worker", "pid"}``. A JobError (a bad file,
    a full disk) is a failed unit, as in the plain batch; Cancelled propagates.
    """
    from salm_desktop.core.jobs import JobError, protect_job, write_job
    from salm_desktop.core.model import LoadResult
    from salm_desktop.core.progress import Progress

    progress = Progress()
    forward = _WorkerForwarder.attach(task, progress)
    worker = forward.address if forward is not None else ""
    try:
        if unit is None:
            unit = _find_unit(task, progress)
        out = task.units_dir / task.unit_id
        # An earlier attempt of this unit (its worker was lost) may have finished or half-written it; the
        # client never journalled it, so it is redone from scratch.
        shutil.rmtree(out, ignore_errors=True)
        deid = task.deid
        if deid is not None and deid.enabled:  # each unit's private record waits in the partial folder
            deid = replace(deid, steward=task.partial / "steward" / task.unit_id)
        with pinned_threads(task.threads):
            try:
                protected = protect_job(list(task.inputs), out, task.settings, splits=list(task.splits),
                                        progress=progress, loaded=LoadResult(series=unit.series, skipped=[]))
                write_job(protected, report=task.report, progress=progress, deid=deid)
            except JobError as exc:
                return {"unit": task.unit_id, "status": "failed", "reason": str(exc), "worker": worker, "pid": os.getpid()}
        return {"unit": task.unit_id, "status": "done", "reason": "", "worker": worker, "pid": os.getpid()}
    finally:
        if forward is not None:
            forward.flush()


def _find_unit(task: UnitTask, progress: Any) -> Any:
    """Plan the job again on the worker and take this unit (units whose readers cannot travel: npz)."""
    from salm_desktop.core.batch import plan_units
    from salm_desktop.core.jobs import JobError
    from salm_desktop.core.studies import load_paths

    loaded = load_paths(list(task.inputs), labels=task.loader_labels, progress=progress)
    for unit in plan_units(loaded):
        if unit.id == task.unit_id:
            return unit
    raise JobError(f"unit {task.unit_id} is not in the inputs as this worker sees them (are the inputs the same on every node?)")


class _WorkerForwarder:
    """Sends a unit's progress events to the client as Dask events and polls the batch's cancel flag."""

    def __init__(self, task: UnitTask, progress: Any, worker: Any) -> None:
        self.task, self.progress, self.worker = task, progress, worker
        self.address = worker.address
        self.last_sent: dict[str, float] = {}
        self.last_poll = time.monotonic()
        self.latest: dict[str, Any] | None = None

    @classmethod
    def attach(cls, task: UnitTask, progress: Any) -> "_WorkerForwarder | None":
        if not task.topic:
            return None
        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):  # not running on a Dask worker
            return None
        forwarder = cls(task, progress, worker)
        progress.add_listener(forwarder)
        return forwarder

    def _send(self, message: dict[str, Any]) -> None:
        self.worker.log_event(self.task.topic, {"unit": self.task.unit_id, "worker": self.address, "pid": os.getpid(), **message})

    def __call__(self, event: Any) -> None:
        if event.stage == "log":
            self._send({"stage": "log", "message": event.message})
            return
        now = time.monotonic()
        message = {"stage": event.stage, "done": event.done, "total": event.total}
        if event.done >= event.total or now - self.last_sent.get(event.stage, 0.0) >= PROGRESS_INTERVAL_S:
            self.last_sent[event.stage] = now
            self._send(message)
            self.latest = None
        else:
            self.latest = message
        if self.task.cancel_event and now - self.last_poll >= CANCEL_POLL_S:
            self.last_poll = now
            from distributed import Event

            if Event(self.task.cancel_event).is_set():
                self.progress.cancel()  # Progress.update raises Cancelled right after its listeners

    def flush(self) -> None:
        if self.latest is not None:
            self._send(self.latest)
            self.latest = None
