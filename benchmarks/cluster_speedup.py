"""Speed-up of `batch --cluster local:N` over the plain batch, in the same run (docs/benchmarks.md).

One job of four similar units: four copies of the real BreastMNIST npz file (each npz file is a unit;
its train split is protected). Both runs use the same config with ``threads = 1`` and must write the
same bytes (checked); times are wall-clock of ``run_batch`` (the cluster's start is listed apart).

    OMP_NUM_THREADS=1 python benchmarks/cluster_speedup.py --workers 2 --rounds 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SALM_TEST_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))  # this checkout's package, also in the workers (they inherit sys.path)


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.npz"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--units", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="plain/cluster pairs, alternated")
    parser.add_argument("--max-rounds", type=int, default=3, help="min-min rounds per unit (SALM setting max_rounds)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    os.environ.setdefault("SALM_DESKTOP_CONFIG_DIR", tempfile.mkdtemp(prefix="salm-bench-config-"))
    from salm_desktop.core.batch import load_config, run_batch
    from salm_desktop.core.cluster import open_cluster

    work = Path(tempfile.mkdtemp(prefix="salm-cluster-bench-"))
    job = work / "archive"
    job.mkdir()
    for i in range(args.units):
        shutil.copy2(DATA / "medmnist" / "breastmnist.npz", job / f"part{i}.npz")

    def config(name: str):
        (work / f"{name}.toml").write_text(
            f'output = "{name}"\ninputs = ["archive"]\n[settings]\nmethod = "salm"\nlabels = "npz"\n'
            f'seed = 0\nthreads = 1\nmax_rounds = {args.max_rounds}\ndevice = "{args.device}"\n', encoding="utf-8")
        return load_config(work / f"{name}.toml")

    started = time.perf_counter()
    executor = open_cluster(f"local:{args.workers}", output=work, inputs=[job])
    start_s = time.perf_counter() - started
    plain_s, cluster_s, reference = [], [], None
    try:
        for r in range(args.rounds):
            for kind in ("plain", "cluster"):
                name = f"{kind}{r}"
                t0 = time.perf_counter()
                result = run_batch(config(name), executor=executor if kind == "cluster" else None)
                elapsed = time.perf_counter() - t0
                assert result.complete, [j.as_dict() for j in result.jobs]
                assert result.jobs[0].units_total == args.units
                pixels = digests(work / name / "archive")
                reference = reference or pixels
                assert pixels == reference, f"{name} wrote other bytes than the first run"
                (plain_s if kind == "plain" else cluster_s).append(elapsed)
                print(f"round {r + 1} {kind:7s} {elapsed:7.1f} s", flush=True)
    finally:
        executor.close()
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    numbers = {"workers": args.workers, "units": args.units, "cpu_count": os.cpu_count(), "device": args.device,
               "plain_s": [round(x, 1) for x in plain_s], "cluster_s": [round(x, 1) for x in cluster_s],
               "cluster_start_s": round(start_s, 1),
               "speedup_median": round(statistics.median(plain_s) / statistics.median(cluster_s), 2),
               "speedup_best": round(min(plain_s) / min(cluster_s), 2),
               "loadavg_1_5_15_at_end": [round(x, 2) for x in load], "same_bytes": True}
    print(json.dumps(numbers))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
