"""kill -9 at twenty seeded points of a protect job and of a batch (issue 21).

Each point is (the k-th progress line, then a seeded delay of 0-400 ms), so the kills land in
loading, protecting, every writer, the report, the manifest and the final rename. After each kill
the output must be complete and valid (every file listed in manifest.json with its SHA-256, nothing
else) or absent; then the same command is run again and must complete, leaving no temporary folder.

    python benchmarks/fault_injection.py [--points 20] [--report]

Output: a markdown summary on stdout, details in benchmarks/results/fault-injection-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))  # this checkout, not an installed copy
sys.path.insert(1, str(REPO / "tests" / "core"))
from test_fault_injection import assert_complete_and_valid  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def kill_after(cmd: list[str], stream: str, line: int, delay_s: float) -> int:
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL} if stream == "stdout" else \
        {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(cmd, text=True, env=ENV, **pipes)
    seen = 0
    for _ in getattr(proc, stream):
        seen += 1
        if seen >= line:
            time.sleep(delay_s)  # a benchmark, not a test: the delay spreads the kills inside a stage
            proc.send_signal(signal.SIGKILL)
            break
    getattr(proc, stream).close()
    proc.wait(timeout=600)
    return proc.returncode


def count_lines(cmd: list[str], stream: str) -> int:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=1800)
    return len(getattr(proc, stream).splitlines())


def state(out: Path) -> str:
    if not out.exists():
        return "absent"
    try:
        assert_complete_and_valid(out)
        return "complete"
    except (AssertionError, OSError, ValueError, KeyError) as exc:
        return f"INVALID: {exc}"


def job_points(work: Path, points: int, rng: np.random.Generator, report: bool) -> list[dict]:
    src = work / "ct"
    shutil.copytree(DATA / "dicom" / "ct_3slice_dcmqi" / "dicom", src)
    out = work / "job-out"
    cmd = [sys.executable, "-m", "salm_desktop.cli", "protect", str(src), "--out", str(out), "--method", "random",
           *([] if report else ["--no-report"])]
    lines = count_lines(cmd, "stderr")
    shutil.rmtree(out)
    rows = []
    for i in range(points):
        line, delay = int(rng.integers(1, lines + 1)), float(rng.uniform(0, 0.4))
        kill_after(cmd, "stderr", line, delay)
        after_kill = state(out)
        rerun = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=1800) if after_kill == "absent" else None
        rows.append({"point": i, "line": line, "of_lines": lines, "delay_s": round(delay, 3), "after_kill": after_kill,
                     "rerun_exit": None if rerun is None else rerun.returncode, "after_rerun": state(out),
                     "leftovers": [p.name for p in work.iterdir() if p.name.startswith(".salm-partial-")]})
        print(json.dumps({"job": rows[-1]}), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return rows


def batch_points(work: Path, points: int, rng: np.random.Generator) -> list[dict]:
    root = work / "batch"
    shutil.copytree(DATA / "dicom" / "ct_3slice_dcmqi" / "dicom", root / "cohort" / "a")
    shutil.copytree(DATA / "dicom" / "pydicom_small" / "MR700_series_16x16", root / "cohort" / "b")
    (root / "batch.toml").write_text('output = "out"\ninputs = ["cohort/a", "cohort/b"]\n[settings]\n'
                                     'method = "random"\nlabels = "clusters:2"\nseed = 5\nreport = false\n', encoding="utf-8")
    cmd = [sys.executable, "-m", "salm_desktop", "batch", "--config", str(root / "batch.toml"), "--json"]
    out = root / "out"
    lines = count_lines(cmd, "stdout")
    shutil.rmtree(out)
    rows = []
    for i in range(points):
        line, delay = int(rng.integers(1, lines + 1)), float(rng.uniform(0, 0.4))
        kill_after(cmd, "stdout", line, delay)
        after_kill = {job: state(out / job) for job in ("a", "b")}
        rerun = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=1800)
        after_rerun = {job: state(out / job) for job in ("a", "b")}
        rows.append({"point": i, "line": line, "of_lines": lines, "delay_s": round(delay, 3), "after_kill": after_kill,
                     "rerun_exit": rerun.returncode, "after_rerun": after_rerun,
                     "leftovers": sorted(p.name for p in out.iterdir() if p.name.endswith(".salm-batch-partial"))})
        print(json.dumps({"batch": rows[-1]}), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--report", action="store_true", help="the single job also writes report.html/.pdf (slower)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="salm-faults-"))
    try:
        rng = np.random.default_rng(args.seed)
        jobs = job_points(work, args.points, rng, args.report)
        batches = batch_points(work, args.points, rng)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = REPO / "benchmarks" / "results" / f"fault-injection-{stamp}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"job": jobs, "batch": batches}, indent=2), encoding="utf-8")

    job_after = Counter(r["after_kill"].split(":")[0] for r in jobs)
    job_rerun = Counter(r["after_rerun"].split(":")[0] for r in jobs)
    print("| run | kill points | after the kill: absent / complete / invalid | after the rerun: complete | leftovers |")
    print("|---|---|---|---|---|")
    print(f"| protect (3 CT slices{', report' if args.report else ''}) | {len(jobs)} | {job_after['absent']} / {job_after['complete']} / "
          f"{job_after['INVALID']} | {job_rerun['complete']} | {sum(bool(r['leftovers']) for r in jobs)} |")
    b_after = Counter(s.split(":")[0] for r in batches for s in r["after_kill"].values())
    b_rerun = Counter(s.split(":")[0] for r in batches for s in r["after_rerun"].values())
    print(f"| batch (2 jobs; per job output) | {len(batches)} ({2 * len(batches)} job outputs) | "
          f"{b_after['absent']} / {b_after['complete']} / {b_after['INVALID']} | {b_rerun['complete']} | "
          f"{sum(bool(r['leftovers']) for r in batches)} |")
    print(f"\ndetails: {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
