"""Throughput and peak memory of the whole protect path on a long real-CT series.

The three real 512 x 512 CT slices of ../shared/data/dicom/ct_3slice_dcmqi are replicated into one
long series (new SOPInstanceUIDs, positions 1 mm apart), then `run_protect_job` loads, protects and
writes it. Each size runs in its own process so that peak RSS is that run's own. Per stage it
reports seconds (from the progress events) and samples per second; peak RSS shows whether memory
grows with the number of slices.

    python3 benchmarks/throughput.py --slices 64 256 --rounds 2 [--device auto] [--report]

Batch mode (issue 6: does overlapping reading and writing with compute pay?): one batch job of UNITS
series, run with the pipeline on and off in alternating child processes of the same run:

    python3 benchmarks/throughput.py --batch 6 --slices 24 --rounds 1 [--pgd-steps 2 --train-steps 2]

Old against new (issue 20): the protect step alone (protect_series, default settings) of the code at
a baseline commit and of this working tree, back to back in alternating child processes of one run,
on the first N PneumoniaMNIST training images (images/s at 28x28) and on a replicated real-CT series
(slices/s at 512x512, clusters:2 pseudo-labels, at most --rounds rounds); prints the ratios:

    python3 benchmarks/throughput.py --baseline-commit f0e4736 --mnist-images 4708 --slices 16 --rounds 3 --threads 1 [--concurrent]

``--real-ct`` adds the real 3-slice CT itself (not replicated), each code run until its own stop
criterion or ``--rounds`` rounds: the time a user waits for that series.

(the baseline is extracted with `git archive` into a temporary folder and imported first on sys.path;
`--new-settings precision=fp32` etc. pass extra ProtectSettings to the new code only.)

Results go to stdout as a markdown table (paste into docs/benchmarks.md) and to
benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SALM_TEST_DATA", ROOT.parent / "shared" / "data"))


def make_series(folder: Path, slices: int, tag: str = "") -> None:
    import pydicom
    from pydicom.uid import generate_uid

    sources = [pydicom.dcmread(p) for p in sorted((DATA / "dicom" / "ct_3slice_dcmqi" / "dicom").glob("*.dcm"))]
    series_uid = generate_uid(entropy_srcs=["throughput", str(slices), tag])
    z0 = float(sources[0].ImagePositionPatient[2])
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(slices):
        ds = sources[i % len(sources)].copy()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["throughput", str(slices), tag, str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z0 + i * 1.0]
        ds.SliceLocation = z0 + i * 1.0
        ds.save_as(folder / f"ct{i:05d}.dcm")


class MemorySampler:
    """Peak anonymous and file-backed resident memory (Linux /proc/self/status), sampled every 0.2 s.

    ru_maxrss counts pages of memory-mapped files too; the engine's per-sample stores switch to a
    memory-mapped file past 256 MB, and those pages are reclaimable cache, not memory the job holds.
    """

    def __init__(self) -> None:
        import threading

        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(value.split()[0]) // 1024)
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_one(slices: int, rounds: int, device: str, report: bool, pgd_steps: int = 20, train_steps: int = 10,
            threads: int = 0) -> dict:
    """Child process: build the series, protect it, print one JSON line."""
    import torch

    from salm_desktop.core.jobs import run_protect_job
    from salm_desktop.core.progress import Progress
    from salm_desktop.core.protect import ProtectSettings

    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="salm-throughput-") as tmp:
        src = Path(tmp) / "series"
        make_series(src, slices)
        stages: dict[str, list[float]] = {}

        def listen(event) -> None:
            if event.stage == "log":
                return
            now = time.monotonic()
            first_last = stages.setdefault(event.stage, [now, now])
            first_last[1] = now

        settings = ProtectSettings(method="salm", labels="clusters", n_clusters=2, max_rounds=rounds, device=device, seed=0,
                                   pgd_steps=pgd_steps, train_steps=train_steps)
        started = time.monotonic()
        with MemorySampler() as memory:
            result = run_protect_job([src], Path(tmp) / "out", settings, report=report, progress=Progress(listen))
        total = time.monotonic() - started
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        data_mb = sum(p.stat().st_size for p in src.iterdir()) / 1e6
        return {
            "slices": slices, "rounds_max": rounds, "rounds": result.summary.get("rounds"),
            "pgd_steps": pgd_steps, "train_steps": train_steps,
            "device": result.summary.get("device"), "input_mb": round(data_mb, 1),
            "seconds_total": round(total, 2),
            "seconds_by_stage": {k: round(v[1] - v[0], 2) for k, v in stages.items()},
            "samples_per_s": round(slices / total, 2),
            "peak_rss_mb": round(rss_mb, 1),
            "peak_anon_mb": memory.peak["RssAnon"], "peak_file_mb": memory.peak["RssFile"],
        }


def run_batch_once(units: int, slices: int, rounds: int, device: str, pipeline: bool, pgd_steps: int,
                   train_steps: int, threads: int) -> dict:
    """Child process: one batch job of ``units`` series of ``slices`` slices, pipelined or sequential."""
    import torch

    from salm_desktop.core.batch import load_config, run_batch

    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="salm-throughput-batch-") as tmp:
        src = Path(tmp) / "cohort"
        for u in range(units):
            make_series(src / f"series{u:03d}", slices, tag=f"unit{u}")
        config_path = Path(tmp) / "batch.toml"
        config_path.write_text(f'output = "out"\ninputs = ["cohort"]\n[settings]\nlabels = "clusters:2"\n'
                               f'max_rounds = {rounds}\ndevice = "{device}"\nreport = false\n', encoding="utf-8")
        config = load_config(config_path)
        for job in config.jobs:  # schedule knobs that the batch config does not expose
            job.settings = dataclasses.replace(job.settings, pgd_steps=pgd_steps, train_steps=train_steps)
        started = time.monotonic()
        result = run_batch(config, pipeline=pipeline)
        total = time.monotonic() - started
        job = result.jobs[0]
        assert job.status == "done" and job.units_total == units, job.as_dict()
        return {
            "mode": "pipelined" if pipeline else "sequential", "units": units, "slices_per_unit": slices,
            "pgd_steps": pgd_steps, "train_steps": train_steps, "rounds_max": rounds, "torch_threads": torch.get_num_threads(),
            "device": job.summary.get("device"), "seconds_total": round(total, 2),
            "samples_per_s": round(units * slices / total, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def _child(args, *extra: str) -> dict:
    """Run this script as a child process (fresh peak RSS) with the common options; its last line is JSON."""
    cmd = [sys.executable, __file__, *extra, "--rounds", str(args.rounds), "--device", args.device,
           "--pgd-steps", str(args.pgd_steps), "--train-steps", str(args.train_steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"done: {row}", file=sys.stderr)
    return row


def _save(rows: list[dict], name: str) -> None:
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / name).write_text(json.dumps(rows, indent=2))


def batch_main(args) -> int:
    """Pipelined vs sequential batch, alternating in one run so both see the same machine load."""
    rows = []
    for rep in range(args.repeats):
        for pipeline in ((True, False) if rep % 2 == 0 else (False, True)):
            mode = [] if pipeline else ["--sequential"]
            rows.append(_child(args, "--batch-child", str(args.batch), "--slices", str(args.slices[0]), *mode))
    _save(rows, "throughput-batch.json")
    print("| mode | units x slices | PGD / train steps | device | torch threads | total s | samples/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['units']} x {r['slices_per_unit']} | {r['pgd_steps']} / {r['train_steps']} | {r['device']} | "
              f"{r['torch_threads']} | "
              f"{r['seconds_total']} | {r['samples_per_s']} | {r['peak_rss_mb']} |")
    best = {m: min(r["seconds_total"] for r in rows if r["mode"] == m) for m in ("pipelined", "sequential")}
    print(f"\nbest pipelined / best sequential wall time: {best['pipelined'] / best['sequential']:.3f}")
    return 0


def _setting_value(text: str):
    if text.lower() in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def run_speed_once(kind: str, n: int, rounds: int, device: str, threads: int, code_root: str,
                   extra: dict) -> dict:
    """Child process: protect_series alone, with the code under ``code_root`` (imported first)."""
    sys.path.insert(0, code_root)
    import torch

    import salm_desktop
    from salm_desktop.core.protect import ProtectSettings, protect_series

    assert Path(salm_desktop.__file__).resolve().is_relative_to(Path(code_root).resolve()), salm_desktop.__file__
    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="salm-speed-") as tmp:
        if kind == "mnist":
            from salm_desktop.core.evaluate import medmnist_series

            series = medmnist_series(DATA / "medmnist" / "pneumoniamnist.npz", "train", n=n)
            settings = ProtectSettings(device=device, seed=0, **extra)
        else:  # "ct": the replicated series; "ct_real": the real 3-slice CT itself (until the stop or --rounds)
            from salm_desktop.core.studies import load_paths

            folder = DATA / "dicom" / "ct_3slice_dcmqi" / "dicom" if kind == "ct_real" else Path(tmp) / "series"
            if kind == "ct":
                make_series(folder, n)
            series = load_paths([folder]).series[0]
            n = len(series.samples)
            settings = ProtectSettings(device=device, seed=0, labels="clusters", n_clusters=2, max_rounds=rounds, **extra)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = protect_series([series], settings)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        summary = result.summary
        result.close()
    return {"kind": kind, "samples": n, "seconds": round(seconds, 2), "samples_per_s": round(n / seconds, 3),
            "cpu_seconds": round(cpu_seconds, 2), "samples_per_cpu_s": round(n / cpu_seconds, 3),
            "rounds": summary["rounds"], "surrogate_accuracy": summary["surrogate_accuracy"],
            "precision": summary.get("precision", "fp32"), "pgd_steps_run_fraction": summary.get("pgd_steps_run_fraction", 1.0),
            "variant": summary.get("variant"),
            "torch_threads": torch.get_num_threads(), "device": summary["device"]}


def print_speed_table(rows: list[dict]) -> None:
    """The old-against-new markdown table and the ratios per pair (also: --speed-table FILE)."""
    def shown(v, fmt="{}"):  # the texture path has no rounds, PGD steps or surrogate accuracy
        return "–" if v is None else fmt.format(v)

    print("| code | data | samples | variant | rounds | precision | PGD steps run | threads | protect s | samples/s "
          "| protect CPU s | samples per CPU s | surrogate acc |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        data = {"mnist": "PneumoniaMNIST train 28x28", "ct_real": "the real CT, 3 slices 512x512 (clusters:2)"}.get(
            r["kind"], "CT 512x512 (clusters:2)")
        rounds = r["rounds"] if r.get("surrogate_accuracy") is not None else None
        print(f"| {r['code']} | {data} | {r['samples']} | {r.get('variant') or 'min-min'} | {shown(rounds)} | "
              f"{r['precision']} | {shown(r['pgd_steps_run_fraction'])} | {r['torch_threads']} | {r['seconds']} | "
              f"{r['samples_per_s']} | {r['cpu_seconds']} | {r['samples_per_cpu_s']} | "
              f"{shown(r['surrogate_accuracy'], '{:.3f}')} |")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for label, key in (("wall", "seconds"), ("CPU", "cpu_seconds")):
            old = [r[key] for r in rows if r["kind"] == kind and r["code"] != "new"]
            new = [r[key] for r in rows if r["kind"] == kind and r["code"] == "new"]
            pairs = ", ".join(f"{o / n:.2f}" for o, n in zip(old, new))
            print(f"{kind}: baseline / new {label} time, per pair: {pairs}; best / best: {min(old) / min(new):.2f}")


def speed_main(args) -> int:
    """Baseline commit against this tree, alternating child processes, each kind in turn."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="salm-baseline-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_commit, "salm_desktop"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        roots = {"baseline": str(tmp), "new": str(ROOT)}
        extra = dict(kv.split("=", 1) for kv in args.new_settings)
        rows = []
        kinds = ([("mnist", args.mnist_images)] if args.mnist_images else []) + ([("ct", args.slices[0])] if args.slices else []) \
            + ([("ct_real", 3)] if args.real_ct else [])
        for kind, n in kinds:
            for rep in range(args.repeats):
                order = ("baseline", "new") if rep % 2 == 0 else ("new", "baseline")
                procs = []
                for code in order:
                    cmd = [sys.executable, __file__, "--speed-child", kind, "--slices", str(n), "--rounds", str(args.rounds),
                           "--device", args.device, "--threads", str(args.threads), "--code-root", roots[code]]
                    if code == "new":
                        cmd += ["--new-settings", *args.new_settings] if args.new_settings else []
                    procs.append((code, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
                    if not args.concurrent:
                        procs[-1] = (code, procs[-1][1].communicate(), procs[-1][1].returncode)
                for item in procs:
                    code, (stdout, stderr), rc = item if not args.concurrent else (item[0], item[1].communicate(), item[1].returncode)
                    if rc != 0:
                        print(stderr, file=sys.stderr)
                        return 1
                    row = {"code": code if code == "new" else f"baseline {args.baseline_commit}",
                           **json.loads(stdout.strip().splitlines()[-1]), "new_settings": extra if code == "new" else {}}
                    print(f"done: {row}", file=sys.stderr, flush=True)
                    rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _save(rows, "throughput-speed.json")
    print_speed_table(rows)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="+", default=None, help="CT series lengths (default 64 256; old-against-new: none)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", action="store_true", help="also write report.html/.pdf (off: measure data only)")
    parser.add_argument("--batch", type=int, metavar="UNITS",
                        help="batch mode: UNITS series of --slices slices each, pipelined vs sequential run_batch")
    parser.add_argument("--repeats", type=int, default=2, help="batch mode: runs per mode (alternating order)")
    parser.add_argument("--pgd-steps", type=int, default=20, help="PGD steps per round (fewer: a quicker run, e.g. to measure memory on long series)")
    parser.add_argument("--train-steps", type=int, default=10, help="surrogate steps per round")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = all cores; in batch mode fewer leaves a core for reading and writing, as a GPU would)")
    parser.add_argument("--baseline-commit", help="old-against-new mode: the commit to compare this tree with")
    parser.add_argument("--real-ct", action="store_true",
                        help="old-against-new: also the real 3-slice CT, at most --rounds rounds (stop criterion as configured)")
    parser.add_argument("--mnist-images", type=int, default=0, help="old-against-new: first N PneumoniaMNIST training images (0: skip)")
    parser.add_argument("--new-settings", nargs="*", default=[], metavar="KEY=VALUE",
                        help="old-against-new: extra ProtectSettings for the new code only (strings, ints, floats, none)")
    parser.add_argument("--concurrent", action="store_true",
                        help="old-against-new: run each baseline/new pair at the same time (same machine load; the one "
                             "that finishes first leaves the other more CPU, which favours the baseline)")
    parser.add_argument("--speed-table", type=Path, metavar="JSON",
                        help="old-against-new: only print the table of a saved run (benchmarks/results/throughput-speed.json)")
    parser.add_argument("--speed-child", help=argparse.SUPPRESS)
    parser.add_argument("--code-root", help=argparse.SUPPRESS)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sequential", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.slices is None and not args.baseline_commit:
        args.slices = [64, 256]
    if args.speed_child:
        extra = {k: _setting_value(v) for k, v in (kv.split("=", 1) for kv in args.new_settings)}
        print(json.dumps(run_speed_once(args.speed_child, args.slices[0], args.rounds, args.device, args.threads,
                                        args.code_root, extra)))
        return 0
    if args.speed_table:
        print_speed_table(json.loads(args.speed_table.read_text()))
        return 0
    if args.baseline_commit:
        return speed_main(args)
    if args.batch_child:
        print(json.dumps(run_batch_once(args.batch_child, args.slices[0], args.rounds, args.device, not args.sequential,
                                        args.pgd_steps, args.train_steps, args.threads)))
        return 0
    if args.batch:
        return batch_main(args)
    if args.child:
        print(json.dumps(run_one(args.child, args.rounds, args.device, args.report, args.pgd_steps, args.train_steps,
                                 args.threads)))
        return 0

    rows = []
    for n in args.slices:
        rows.append(_child(args, "--child", str(n), *(["--report"] if args.report else [])))
    _save(rows, "throughput.json")
    print("| slices (512x512 CT) | input MB | device | rounds | PGD / train steps | load s | protect s | export s | total s | samples/s "
          "| peak RSS MB | peak anonymous MB | peak file-backed MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        st = r["seconds_by_stage"]
        print(f"| {r['slices']} | {r['input_mb']} | {r['device']} | {r['rounds']} | {r['pgd_steps']} / {r['train_steps']} | "
              f"{st.get('load', 0)} | {st.get('protect', 0)} | {st.get('export', 0)} | {r['seconds_total']} | {r['samples_per_s']} | "
              f"{r['peak_rss_mb']} | {r['peak_anon_mb']} | {r['peak_file_mb']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
