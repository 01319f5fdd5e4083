"""Running a batch's units on Dask: connect, check, submit, aggregate progress, journal on the client.

Semantics (docs/cluster.md): the client plans units, submits one task per unfinished unit, and
records a unit in the journal only when its result comes back, so the journal stays the truth and
the client its only writer. Dask re-runs the task of a worker that is lost (killed, out of memory,
node gone) on another worker; :func:`unit.run_unit` redoes such a unit from scratch. A unit that kills
``ALLOWED_FAILURES`` workers is recorded as failed, and the job goes on with the rest.
"""

from __future__ import annotations

import logging
import queue
import uuid
from pathlib import Path
from typing import Any, Callable

from salm_desktop.core.cluster.spec import ClusterError, ClusterSpec, parse_cluster_spec
from salm_desktop.core.cluster.unit import UnitTask, run_unit

CONNECT_TIMEOUT_S = 10.0
WORKER_TIMEOUT_S = 60.0  # an existing scheduler without any worker after this long is an error
POLL_S = 0.25
ALLOWED_FAILURES = 3  # workers a single unit may take down before it counts as failed
# Dask's default worker environment minus MALLOC_TRIM_THRESHOLD_=65536: with it glibc returns freed
# memory to the OS at once, and torch's many mid-sized CPU tensors then cost page faults on every
# allocation (a unit ran about 2x slower in a worker than in the plain batch). Thread caps stay: units
# pin their own torch threads.
WORKER_ENVIRON = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
INSTALL_HINT = 'install the cluster extra: pip install "salm-desktop[cluster]" (Dask distributed)'


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"--cluster needs Dask distributed, which is not installed; {INSTALL_HINT}") from None
    return distributed


def open_cluster(spec: str | ClusterSpec, *, output: Path, inputs: list[Path] = (), threads: int | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, worker_timeout: float = WORKER_TIMEOUT_S,
                 log: Callable[[str], None] | None = None) -> "DaskExecutor":
    """Start a local cluster or connect to a scheduler, then check every worker (raises ClusterError).

    Checks, all before any unit starts: the scheduler answers within ``connect_timeout``; it has a
    worker; every worker imports the same salm_desktop version; every worker can write into ``output``
    and sees every input. Use the result as a context manager (it closes what it started).
    """
    spec = parse_cluster_spec(spec) if isinstance(spec, str) else spec
    executor = DaskExecutor(spec, threads=threads, log=log)
    try:
        executor.start(connect_timeout, worker_timeout)
        executor.check(Path(output), [Path(p) for p in inputs])
    except BaseException:
        executor.close()
        raise
    return executor


class DaskExecutor:
    """Runs units on a Dask cluster; ``threads`` pins torch threads per unit (default 1, one per worker)."""

    def __init__(self, spec: ClusterSpec, threads: int | None = None, log: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.threads = threads
        self.log = log or (lambda message: None)
        self.client: Any = None
        self.cluster: Any = None
        self.resources: dict[str, float] | None = None
        self.warnings: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for thing in (self.client, self.cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing after an error must not hide that error
                    pass
        self.client = self.cluster = None

    def start(self, connect_timeout: float, worker_timeout: float) -> None:
        distributed = _distributed()
        import dask

        if self.spec.kind == "local":
            # A unit that takes down this many workers is reported as failed instead of retried forever
            # (an existing scheduler has its own setting, distributed.scheduler.allowed-failures).
            with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES - 1,
                                  "distributed.nanny.pre-spawn-environ": WORKER_ENVIRON}):
                self.cluster, gpus = _local_cluster(distributed, self.spec)
            self.client = distributed.Client(self.cluster, timeout=connect_timeout)
            if gpus:
                self.resources = {"GPU": 1}
            return
        what = self.spec.describe()
        try:
            if self.spec.kind == "scheduler-file":
                self.client = distributed.Client(scheduler_file=self.spec.address, timeout=connect_timeout)
            else:
                self.client = distributed.Client(self.spec.address, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach {what} within {connect_timeout:g} s ({_short(exc)}); "
                               "is the scheduler running and is the address right?") from None
        try:
            self.client.wait_for_workers(1, timeout=worker_timeout)
        except (TimeoutError, OSError):
            raise ClusterError(f"{what} has no worker after {worker_timeout:g} s; start workers "
                               "(dask worker ADDRESS, or dask-jobqueue, see docs/cluster.md)") from None
        workers = self.client.scheduler_info().get("workers", {})
        if any("GPU" in (w.get("resources") or {}) for w in workers.values()):
            self.resources = {"GPU": 1}

    # -- checks before any unit ------------------------------------------------------------------
    def _run_everywhere(self, function: Callable, *args: Any) -> dict[str, Any]:
        try:
            return self.client.run(function, *args, on_error="return")
        except Exception as exc:  # noqa: BLE001 - e.g. a worker that cannot even unpickle the probe
            raise ClusterError(f"the workers of {self.spec.describe()} could not run a check: {_short(exc)}") from None

    def check(self, output: Path, inputs: list[Path]) -> None:
        import cloudpickle

        import salm_desktop
        from salm_desktop.core.cluster import probe

        cloudpickle.register_pickle_by_value(probe)  # runs where salm_desktop cannot be imported, and says so
        try:
            facts = self._run_everywhere(probe.worker_environment)
            problems = []
            for address, fact in sorted(facts.items()):
                if isinstance(fact, BaseException):
                    problems.append(f"worker {address}: the check failed ({_short(fact)})")
                elif fact.get("error"):
                    problems.append(f"worker {address}: {fact['error']}")
                elif fact.get("version") != salm_desktop.__version__:
                    problems.append(f"worker {address}: salm_desktop {fact.get('version')} is installed, this client "
                                    f"runs {salm_desktop.__version__}")
            if problems:
                raise ClusterError("workers without this version of the project: " + "; ".join(problems)
                                   + f". Install salm-desktop {salm_desktop.__version__} with the cluster extra on every "
                                     "worker (the same environment as this client)")
            import torch

            torches = {f.get("torch") for f in facts.values()}
            if torches != {torch.__version__}:
                self.warnings.append(f"workers run torch {', '.join(sorted(map(str, torches)))} and this client "
                                     f"{torch.__version__}: units are not byte-identical across torch versions")
            output = output.expanduser().resolve()
            written = self._run_everywhere(probe.can_write, str(output))
            cannot = {a: r for a, r in written.items() if r}
            if cannot:
                raise ClusterError(f"the output folder {output} is not writable from "
                                   + "; ".join(f"worker {a} ({r if isinstance(r, str) else _short(r)})" for a, r in sorted(cannot.items()))
                                   + ": every worker must see the output root at the same path (a shared filesystem)")
            paths = [str(p.expanduser().resolve()) for p in inputs]
            if paths:
                missing = {a: m for a, m in self._run_everywhere(probe.missing_paths, paths).items() if m}
                if missing:
                    address, lost = sorted(missing.items())[0]
                    raise ClusterError(f"worker {address} cannot see the input {lost[0] if isinstance(lost, list) else lost}"
                                       + (f" (and {len(missing) - 1} more workers have missing inputs)" if len(missing) > 1 else "")
                                       + ": every worker must see the inputs at the same path")
            self._run_everywhere(probe.import_worker_modules)
        finally:
            cloudpickle.unregister_pickle_by_value(probe)
        workers = len(facts)
        self.log(f"cluster: {self.spec.describe()}, {workers} worker{'s' if workers != 1 else ''}"
                 f"{', one GPU each' if self.resources else ''}, {self.threads or 1} torch thread(s) per unit")
        for warning in self.warnings:
            self.log(f"cluster: warning: {warning}")

    def worker_pids(self) -> dict[str, int]:
        """The process id of every worker (the tests kill one)."""
        import os

        return self.client.run(os.getpid)

    # -- running ---------------------------------------------------------------------------------
    def run_units(self, job: Any, todo: list[tuple[int, Any]], n_units: int, units_dir: Path, partial: Path,
                  deid: Any, progress: Any, record: Callable[[Any, Any], None]) -> None:
        """Run ``todo`` ((number, Unit) pairs) on the cluster; ``record(unit, error)`` journals each result.

        Progress of every worker is aggregated into one "protect" stage on ``progress`` (samples done,
        counting each running unit's fraction), which is also where a cancel is noticed.
        """
        import cloudpickle

        from salm_desktop.core.jobs import JobError

        distributed = _distributed()
        if not todo:
            return
        token = uuid.uuid4().hex[:12]
        topic, cancel_name = f"salm-progress-{token}", f"salm-cancel-{token}"
        events: queue.Queue = queue.Queue()
        self.client.subscribe_topic(topic, lambda event: events.put(event[1]))
        cancel = distributed.Event(cancel_name, client=self.client)
        threads = self.threads if self.threads is not None else (job.threads if job.threads is not None else 1)
        use_gpu = self.resources if getattr(job.settings, "device", "auto") != "cpu" else None
        futures: dict[Any, Any] = {}
        for number, unit in todo:
            try:  # most units travel with their lazy readers; others (npz) are found again on the worker
                cloudpickle.dumps(unit)
                payload = unit
            except Exception:  # noqa: BLE001 - any pickling failure means "plan it there"
                payload = None
            task = UnitTask(job=job.name, unit_id=unit.id, inputs=tuple(job.inputs), loader_labels=job.loader_labels,
                            settings=job.settings, splits=tuple(job.splits), report=job.report, units_dir=units_dir,
                            partial=partial, deid=deid, threads=threads, topic=topic, cancel_event=cancel_name)
            future = self.client.submit(run_unit, task, payload, key=f"salm-unit-{token}-{unit.id}", pure=False,
                                        resources=use_gpu)
            futures[future] = unit
        tracker = _ProgressTracker({u.id: sum(len(s.samples) for s in u.series) for _, u in todo})
        pending = set(futures)
        last_state = None
        try:
            while pending:
                try:
                    done, _ = distributed.wait(list(pending), timeout=POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                for line in tracker.apply_all(_drain(events)):
                    progress.log(f"job {job.name}: {line}")
                for future in done:
                    pending.discard(future)
                    unit = futures[future]
                    error = None
                    try:
                        result = future.result()
                    except distributed.KilledWorker:
                        error = JobError(f"unit {unit.id}: {ALLOWED_FAILURES} workers died while running it "
                                         "(out of memory or killed); see the worker logs")
                    except Exception as exc:  # noqa: BLE001 - one unit's crash fails that unit, not the batch
                        error = JobError(f"unit {unit.id}: {type(exc).__name__}: {exc}")
                    else:
                        if result.get("status") != "done":
                            error = JobError(result.get("reason") or "failed")
                    record(unit, error)
                    tracker.finish(unit.id)
                    if error is None:
                        progress.log(f"job {job.name}: unit {unit.id} written")
                state = (tracker.done, tracker.busy, tracker.units_done)
                if state != last_state:  # one line per change, not one per poll
                    last_state = state
                    progress.update("protect", tracker.done, tracker.total, tracker.message(n_units, len(todo)),
                                    workers_busy=tracker.busy, units_done=tracker.units_done, units_todo=len(todo),
                                    running=tracker.running)
                else:
                    progress.check()
        except BaseException:
            try:  # running units stop at their next cancellation point; queued ones never start
                cancel.set()
                self.client.cancel(list(pending), force=True)
            except Exception:  # noqa: BLE001
                pass
            raise
        finally:
            try:
                self.client.unsubscribe_topic(topic)
            except Exception:  # noqa: BLE001
                pass


def _drain(events: queue.Queue) -> list[dict[str, Any]]:
    items = []
    while True:
        try:
            items.append(events.get_nowait())
        except queue.Empty:
            return items


class _ProgressTracker:
    """All workers' unit events -> one fraction of the samples to do, and who runs what."""

    WRITE_SHARE = 0.1  # of a unit's samples, for export + report after its protection
    IN_FLIGHT_MAX = 0.99

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.total = max(1, sum(sizes.values()))
        self.fraction: dict[str, float] = {}
        self.worker: dict[str, str] = {}  # unit -> the worker last seen running it
        self.finished: set[str] = set()

    def apply_all(self, messages: list[dict[str, Any]]) -> list[str]:
        lines = []
        for message in messages:
            unit, worker, stage = message.get("unit"), message.get("worker", ""), message.get("stage")
            if unit not in self.sizes or unit in self.finished:
                continue
            previous = self.worker.get(unit)
            if previous and previous != worker:
                lines.append(f"unit {unit}: worker {previous} was lost; running it again on {worker}")
                self.fraction[unit] = 0.0
            self.worker[unit] = worker
            if stage == "log":
                continue
            total = message.get("total") or 0
            part = min(1.0, message.get("done", 0) / total) if total > 0 else 0.0
            if stage == "protect":
                value = (1 - self.WRITE_SHARE) * part
            elif stage == "load":
                value = 0.0
            else:  # export, report, ...: after the protection
                value = 1 - self.WRITE_SHARE + self.WRITE_SHARE * part
            value = min(value, self.IN_FLIGHT_MAX)  # 100 % only once the client has the result
            self.fraction[unit] = max(self.fraction.get(unit, 0.0), value) if previous == worker else value
        return lines

    def finish(self, unit: str) -> None:
        self.finished.add(unit)
        self.fraction[unit] = 1.0

    @property
    def done(self) -> int:
        return int(round(sum(self.sizes[u] * f for u, f in self.fraction.items())))

    @property
    def busy(self) -> int:
        return len({w for u, w in self.worker.items() if u not in self.finished})

    @property
    def running(self) -> dict[str, str]:
        """worker address -> the unit it runs (unit ids are hashes, never patient data)."""
        return {w: u for u, w in self.worker.items() if u not in self.finished}

    @property
    def units_done(self) -> int:
        return len(self.finished)

    def message(self, n_units: int, n_todo: int) -> str:
        reused = n_units - n_todo
        return (f"{self.units_done}/{n_todo} units on the cluster, {self.busy} worker{'s' if self.busy != 1 else ''} busy"
                + (f" ({reused} reused)" if reused else ""))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _local_cluster(distributed: Any, spec: ClusterSpec) -> tuple[Any, int]:
    """``local:N``: N worker processes, one thread each, memory bounded; one GPU each when CUDA exists."""
    memory = spec.memory or "auto"  # auto: the machine's memory split evenly between the workers
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        gpus = 0
    common = dict(dashboard_address=None, silence_logs=logging.ERROR)
    if not gpus:
        return distributed.LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                                        memory_limit=memory, **common), 0
    # Like dask-cuda's LocalCUDACluster: worker i sees only GPU i % gpus and advertises GPU=1, so each
    # unit that asks for a GPU gets a device of its own ("cuda" on that worker is its GPU).
    from distributed.deploy.spec import SpecCluster
    from distributed.system import MEMORY_LIMIT

    limit = memory if spec.memory else int(MEMORY_LIMIT / spec.workers)
    scheduler = {"cls": distributed.Scheduler, "options": {"dashboard_address": None}}
    workers = {f"gpu-{i}": {"cls": distributed.Nanny, "options": {
        "nthreads": 1, "memory_limit": limit, "resources": {"GPU": 1},
        "env": {"CUDA_VISIBLE_DEVICES": str(i % gpus)}}} for i in range(spec.workers)}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR), gpus
