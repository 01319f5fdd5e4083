"""The wizard's batch queue without widgets: several folders protected one after another through the
core's batch runner, with the same settings and the same resumable journal as ``salm-protect batch``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import WizardSettings, build_protect_settings, resolved_device


@dataclass
class BatchItem:
    path: Path
    status: str = "queued"  # queued | running | done | failed | cancelled
    message: str = ""
    out_dir: Path | None = None
    result: Any = None


class BatchQueue:
    """Several folders protected one after another with the same settings (no Qt here).

    Runs through the core's batch runner (``salm_desktop.core.batch.run_batch``, the same as
    ``salm-protect batch``): one job per folder written to ``<output root>/<folder name>``, a failing
    folder is recorded with its one-line reason and the queue goes on; a cancel keeps the series
    already finished, and running the same queue again with the same settings resumes there.
    """

    def __init__(self) -> None:
        self.items: list[BatchItem] = []
        self.summary_path: Path | None = None

    def add(self, path: Path | str) -> bool:
        path = Path(path)
        if any(item.path == path for item in self.items):
            return False
        self.items.append(BatchItem(path))
        return True

    def remove(self, index: int) -> None:
        if 0 <= index < len(self.items) and self.items[index].status != "running":
            del self.items[index]

    def job_names(self) -> list[str]:
        import re

        names: list[str] = []
        for item in self.items:
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", item.path.name).strip("._") or "job"
            while name in names:
                name = f"{name}-{len(names) + 1}"
            names.append(name)
        return names

    def build_config(self, out_root: Path, settings: WizardSettings) -> Any:
        from salm_desktop.core.batch import BatchConfig, BatchJob

        settings = dataclasses.replace(settings, device=resolved_device(settings.device))  # reports name what ran
        protect_settings = build_protect_settings(settings)
        options = {"splits": [x.strip() for x in settings.splits.split(",") if x.strip()] or ["train"],
                   "report": bool(settings.report)}  # the settings themselves are protect_settings
        jobs = [BatchJob(name, [item.path], dict(options), protect_settings, settings.loader_labels())
                for name, item in zip(self.job_names(), self.items)]
        return BatchConfig(path=Path("(wizard batch queue)"), output=Path(out_root), jobs=jobs)

    def run(self, out_root: Path, settings: WizardSettings, progress: Any, run_batch: Any = None,
            cluster: str = "") -> list[BatchItem]:
        """Run the queue; ``cluster`` (``local:N`` or a scheduler address, docs/cluster.md) runs the
        units on Dask workers, checked before any unit starts (a ClusterError says what is wrong)."""
        from salm_desktop.core.progress import Cancelled

        if run_batch is None:
            from salm_desktop.core.batch import run_batch
        config = self.build_config(out_root, settings)
        for item, job in zip(self.items, config.jobs):
            item.status, item.message, item.out_dir = "queued", "", Path(out_root) / job.name

        def on_job(index: int, job: Any) -> None:
            self.items[index].status = "running"
            if progress is not None:
                progress.log(f"Batch {index + 1}/{len(self.items)}: {self.items[index].path.name}")

        executor = None
        if cluster.strip():
            from salm_desktop.core.cluster import open_cluster

            executor = open_cluster(cluster.strip(), output=config.output, inputs=[i.path for i in self.items],
                                    log=progress.log if progress is not None else None)
        try:
            result = run_batch(config, progress, on_job=on_job, executor=executor)
        except Cancelled:
            for item in self.items:
                if item.status == "running":
                    item.status, item.message = "cancelled", "cancelled; finished series are kept for a rerun"
                elif item.status == "queued":
                    item.status, item.message = "cancelled", "not started"
            raise
        finally:
            if executor is not None:
                executor.close()
        self.summary_path = getattr(result, "summary_path", None)
        for item, outcome in zip(self.items, result.jobs):
            item.result = outcome
            item.status = "done" if outcome.status in ("done", "already done") else outcome.status
            item.message = outcome.message or ("finished in an earlier run" if outcome.status == "already done" else "protected")
            if outcome.skipped and item.status == "done":
                item.message = f"{len(outcome.skipped)} skipped: " + "; ".join(
                    f"{Path(k['path']).name}: {k['reason']}" for k in outcome.skipped[:2])
            if outcome.out_dir is not None:
                item.out_dir = Path(outcome.out_dir)
        return self.items

    def rows(self) -> list[list[str]]:
        return [[str(i.path), i.status, str(i.out_dir or ""), i.message] for i in self.items]
