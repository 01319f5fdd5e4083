"""Clear messages before any unit starts: bad --cluster values, an unreachable scheduler, a worker
without the project, an output folder the workers cannot write."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_config

from salm_desktop.cli import main
from salm_desktop.core.cluster import ClusterError, open_cluster, parse_cluster_spec

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_cluster_specs_parse_and_bad_ones_say_what_is_expected(tmp_path: Path) -> None:
    assert parse_cluster_spec("local:2").workers == 2
    assert parse_cluster_spec("local:3,memory=4GB").memory == "4GB"
    assert parse_cluster_spec("10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_cluster_spec("tls://head.example.org:8786").kind == "address"
    for bad, expected in [("local:0", "local:N"), ("local:x", "local:N"), ("local:2,ram=4", "memory=SIZE"),
                          ("nowhere", "scheduler address"), (str(tmp_path / "missing.json"), "not found")]:
        with pytest.raises(ClusterError, match=expected):
            parse_cluster_spec(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_reported_before_anything_is_written(cohort_root: Path, capsys) -> None:
    pytest.importorskip("distributed")
    config = write_config(cohort_root, "unreachable")
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    code = main(["batch", "--config", str(config), "--cluster", address, "--cluster-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot reach the Dask scheduler at {address} within 1 s" in err and "Traceback" not in err
    assert not (cohort_root / "unreachable").exists()


@pytest.fixture
def scheduler():
    """A scheduler with no worker of its own; each test attaches the worker it needs."""
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=0, dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


def _worker(address: str, *prefix: str, preload: Path | None = None) -> subprocess.Popen:
    command = [*prefix, sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
               "--no-nanny", "--no-dashboard"]
    if preload is not None:
        command += ["--preload", str(preload)]
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def test_a_worker_that_cannot_import_the_project_is_named_before_any_unit(scheduler: str, cohort_root: Path,
                                                                          tmp_path: Path) -> None:
    # The worker's environment lacks salm_desktop: every import of it fails there, as without the install.
    hide = tmp_path / "hide_salm_desktop.py"
    hide.write_text(
        "import sys\n"
        "class HideProject:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'salm_desktop':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, HideProject())\n", encoding="utf-8")
    worker = _worker(scheduler, preload=hide)
    try:
        with pytest.raises(ClusterError) as caught:
            open_cluster(scheduler, output=cohort_root / "no-project", worker_timeout=120)
    finally:
        _stop(worker)
    message = str(caught.value)
    assert "cannot import salm_desktop (ModuleNotFoundError" in message and "Install salm-desktop 0.1.0" in message
    assert not (cohort_root / "no-project").exists()


def test_an_output_folder_the_workers_cannot_write_is_named_before_any_unit(scheduler: str, cohort_root: Path,
                                                                            tmp_path: Path) -> None:
    # Root without CAP_DAC_OVERRIDE obeys permission bits, like a worker running as another user.
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    worker = _worker(scheduler, "setpriv", "--bounding-set", "-dac_override")
    try:
        with pytest.raises(ClusterError) as caught:
            open_cluster(scheduler, output=read_only / "out", inputs=[cohort_root / "cohort" / "study1"],
                         worker_timeout=120)
    finally:
        _stop(worker)
        read_only.chmod(0o755)
    message = str(caught.value)
    assert f"the output folder {read_only / 'out'} is not writable from worker" in message
    assert "Permission denied" in message and not list(read_only.iterdir())


def test_without_dask_installed_the_message_says_how_to_install_it(cohort_root: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # what `import distributed` meets without the extra
    code = main(["batch", "--config", str(write_config(cohort_root, "no-dask")), "--cluster", "local:2"])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "salm-desktop[cluster]"' in err and "Traceback" not in err
    assert not (cohort_root / "no-dask").exists()


def test_threads_must_be_a_positive_whole_number(cohort_root: Path, capsys) -> None:
    assert main(["batch", "--config", str(write_config(cohort_root, "bad-threads")), "--threads", "0"]) == 2
    assert "--threads 0 must be a whole number of threads >= 1" in capsys.readouterr().err
    config = write_config(cohort_root, "bad-threads", threads="many")
    assert main(["batch", "--config", str(config)]) == 2
    assert "threads 'many' must be a whole number" in capsys.readouterr().err
