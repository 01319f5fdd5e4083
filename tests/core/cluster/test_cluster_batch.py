"""batch on a local Dask cluster: the same pixels as the plain batch, also when a worker is killed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import pixel_digests, write_config

from salm_desktop.core.batch import STATE_NAME, load_config, run_batch
from salm_desktop.core.progress import Progress


def test_local_cluster_writes_the_same_pixels_as_the_plain_batch(cohort_root: Path, plain_pixels, local_cluster) -> None:
    events = []
    config = load_config(write_config(cohort_root, "on-cluster"))
    result = run_batch(config, Progress(events.append), executor=local_cluster)

    job = result.jobs[0]
    assert job.status == "done" and job.units_done == 2 and not job.skipped
    assert pixel_digests(cohort_root / "on-cluster" / "study1") == plain_pixels
    protect = [e for e in events if e.stage == "protect"]
    assert protect[-1].done == protect[-1].total == 37 and protect[-1].metrics["units_done"] == 2
    # Both workers' progress arrives while they run, in one aggregated stage.
    assert any(0 < e.done < e.total for e in protect)
    assert len({w for e in protect for w in e.metrics["running"]}) == 2
    assert sum("written" in e.message for e in events if e.stage == "log") == 2


def test_a_worker_killed_mid_unit_has_its_unit_rerun_and_the_job_ends_the_same(
        cohort_root: Path, plain_pixels, local_cluster) -> None:
    killed: list[tuple[str, str]] = []
    events = []

    def kill_a_busy_worker(event) -> None:  # noqa: ANN001
        events.append(event)
        if killed or event.stage != "protect" or not event.metrics.get("running"):
            return
        address, unit = sorted(event.metrics["running"].items())[0]
        pid = local_cluster.client.run(os.getpid, workers=[address])[address]
        os.kill(pid, signal.SIGKILL)
        killed.append((address, unit))

    config = load_config(write_config(cohort_root, "killed"))
    result = run_batch(config, Progress(kill_a_busy_worker), executor=local_cluster)

    assert killed, "no worker was running a unit"
    job = result.jobs[0]
    assert job.status == "done" and job.units_done == 2 and not job.skipped
    assert pixel_digests(cohort_root / "killed" / "study1") == plain_pixels
    address, unit = killed[0]
    assert any(f"unit {unit}: worker {address} was lost" in e.message for e in events if e.stage == "log")
    assert not (cohort_root / "killed" / ("study1.salm-batch-partial")).exists()


def test_a_rerun_on_the_cluster_reuses_units_the_plain_batch_finished(cohort_root: Path, plain_pixels, local_cluster) -> None:
    """The journal is the truth wherever units ran: a job half done in-process finishes on the cluster."""
    from salm_desktop.core.progress import Cancelled

    config_path = write_config(cohort_root, "resumed")
    progress = Progress()

    def cancel_after_first_unit(event) -> None:  # noqa: ANN001
        if event.stage == "log" and "written" in event.message:
            progress.cancel()

    progress.add_listener(cancel_after_first_unit)
    try:
        run_batch(load_config(config_path), progress, pipeline=False)  # no unit written behind the cancel
    except Cancelled:
        pass
    partial = cohort_root / "resumed" / "study1.salm-batch-partial"
    assert (partial / STATE_NAME).is_file()

    result = run_batch(load_config(config_path), executor=local_cluster)
    job = result.jobs[0]
    assert job.status == "done" and job.units_reused == 1 and job.units_total == 2
    assert pixel_digests(cohort_root / "resumed" / "study1") == plain_pixels
