"""salm-protect batch: many folders from a TOML config, resumable, optionally on a Dask cluster (docs/batch.md,
docs/cluster.md; the parser is in cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from salm_desktop.cli import EXIT_CANCELLED, EXIT_OK, EXIT_PARTIAL, UsageError


def cmd_batch(args: argparse.Namespace) -> int:
    """batch: run a TOML config's jobs (resumable), a progress bar or JSON lines, one line per job at the end."""
    from salm_desktop.core.batch import ConfigError, load_config, run_batch
    from salm_desktop.core.progress import Cancelled, Progress

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    current = {"job": "", "index": 0}
    bar = _TerminalBar(sys.stderr)

    json_lock = threading.Lock()  # the background writer logs from its own thread

    def show(ev) -> None:  # noqa: ANN001 - a ProgressEvent
        if args.json:
            line = json.dumps({"event": "progress" if ev.stage != "log" else "log", "job": current["job"],
                               "stage": ev.stage, "done": ev.done, "total": ev.total, "message": ev.message,
                               "eta_s": None if ev.eta_s is None else round(ev.eta_s, 1), **ev.metrics}, default=str)
            with json_lock:
                print(line, flush=True)
        elif ev.stage == "log":
            bar.line(ev.message)
        else:
            bar.show(f"[{current['index'] + 1}/{len(config.jobs)} {current['job']}] {ev.stage}", ev.fraction, ev.eta_s)

    def on_job(index: int, job) -> None:  # noqa: ANN001
        current.update(job=job.name, index=index)

    executor = _open_batch_cluster(args, config, show) if args.cluster or args.threads is not None else None
    try:
        result = run_batch(config, Progress(show), on_job=on_job, executor=executor)
    except ConfigError as exc:  # e.g. another batch is writing to the same output root
        raise UsageError(str(exc)) from None
    except (Cancelled, KeyboardInterrupt):
        bar.line(f"salm-protect: batch cancelled; rerun the same command to resume (summary: {config.output / 'batch-summary.json'})")
        return EXIT_CANCELLED
    finally:
        if executor is not None:
            executor.close()
    bar.finish()
    for job in result.jobs:
        line = {"event": "job", **job.as_dict()}
        if args.json:
            print(json.dumps(line, default=str), flush=True)
        else:
            extra = f", {job.units_reused} series reused from an earlier run" if job.units_reused else ""
            print(f"{job.name}: {job.status}{extra}{': ' + job.message if job.message else ''}"
                  f"{f' -> {job.out_dir}' if job.out_dir and job.status != 'failed' else ''}")
            for item in job.skipped:
                print(f"  skipped: {item['path']}: {item['reason']}")
    if args.json:
        print(json.dumps({"event": "summary", "summary": str(result.summary_path),
                          "jobs": len(result.jobs), "complete": result.complete}), flush=True)
    return EXIT_OK if result.complete else EXIT_PARTIAL


def _open_batch_cluster(args: argparse.Namespace, config, show):  # noqa: ANN001
    """--threads into every job; --cluster: start or reach it and check the workers before any unit."""
    from salm_desktop.core.cluster import ClusterError, open_cluster, parse_threads
    from salm_desktop.core.progress import ProgressEvent

    if args.threads is not None:
        try:
            threads = parse_threads(args.threads, "--threads")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for job in config.jobs:  # part of each job's fingerprint: a rerun with other threads starts afresh
            job.options["threads"] = threads
    if not args.cluster:
        return None
    try:
        return open_cluster(args.cluster, output=config.output, inputs=[p for job in config.jobs for p in job.inputs],
                            connect_timeout=args.cluster_timeout, log=lambda text: show(ProgressEvent("log", 0, 0, text)))
    except ClusterError as exc:
        raise UsageError(str(exc)) from None


class _TerminalBar:
    """A one-line progress bar on a terminal; plain lines when the stream is not a terminal.

    Batch's background writer logs lines from its own thread, hence the lock.
    """

    def __init__(self, stream) -> None:  # noqa: ANN001
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""
        self._lock = threading.Lock()

    def show(self, label: str, fraction: float, eta_s: float | None) -> None:
        filled = int(round(fraction * 30))
        eta = f" ETA {int(eta_s // 60)}m{int(eta_s % 60):02d}s" if eta_s is not None else ""
        text = f"{label} [{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}%{eta}"
        with self._lock:
            if self.tty:
                self.stream.write("\r" + text.ljust(len(self.last)))
                self.stream.flush()
            elif label != self.last.split(" [")[0] or fraction >= 1.0:
                self.stream.write(text + "\n")
            self.last = text

    def line(self, text: str) -> None:
        with self._lock:
            if self.tty and self.last:
                self.stream.write("\n")
            self.stream.write(text + "\n")
            self.last = ""

    def finish(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
