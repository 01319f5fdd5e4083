"""Generation time of protection methods, measured in one process, alternating (issue 12: "generation
time <= EM's, measured in the same run").

    OMP_NUM_THREADS=1 python benchmarks/generation_time.py --dataset pneumoniamnist --methods salm,em --repeats 2

Each repeat protects the full training split once with every method, in turn, so that load changes on
a shared machine hit all methods alike. Prints one JSON object: per method the wall and CPU seconds
of every repeat, their medians, and the ratio of each method's median CPU time to the first method's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salm_desktop.core.evaluate import medmnist_series
from salm_desktop.core.protect import ProtectSettings, protect_series

DATA = REPO.parent / "shared" / "data" / "medmnist"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="pneumoniamnist")
    ap.add_argument("--methods", default="salm,em", help="comma-separated ProtectSettings methods; the first is the reference")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    series = medmnist_series(DATA / f"{args.dataset}.npz", "train")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        for method in methods:
            wall, cpu = time.perf_counter(), time.process_time()
            result = protect_series([series], ProtectSettings(method=method, seed=args.seed, device="cpu"))
            runs[method].append({"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
                                 "rounds": result._summary.get("rounds"), "variant": result._summary.get("variant")})
            result.close()
    median_cpu = {m: statistics.median(r["cpu_s"] for r in runs[m]) for m in methods}
    doc = {"dataset": args.dataset, "images": len(series.samples), "threads": 1, "runs": runs,
           "median_cpu_s": median_cpu, "median_wall_s": {m: statistics.median(r["wall_s"] for r in runs[m]) for m in methods},
           "cpu_ratio_to_first": {m: round(median_cpu[m] / median_cpu[methods[0]], 3) for m in methods}}
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
