"""Where protect_series spends its time (issue 20): torch.profiler, self CPU time per operator.

    python benchmarks/profile_protect.py mnist --n 512 --rounds 2      # first N PneumoniaMNIST training images
    python benchmarks/profile_protect.py ct --n 16 --rounds 1          # replicated real 512x512 CT, clusters:2
    python benchmarks/profile_protect.py ct --n 8 --set precision=fp32 # extra ProtectSettings

Runs the code of this tree (one torch thread by default) and prints the profiler's table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from throughput import DATA, _setting_value, make_series  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("mnist", "ct"))
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--shapes", action="store_true", help="one row per operator and input shape (which convolution costs)")
    args = ap.parse_args()
    from salm_desktop.core.protect import ProtectSettings, protect_series

    torch.set_num_threads(args.threads)
    extra = {k: _setting_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    with tempfile.TemporaryDirectory(prefix="salm-profile-") as tmp:
        if args.kind == "mnist":
            from salm_desktop.core.evaluate import medmnist_series

            series = medmnist_series(DATA / "medmnist" / "pneumoniamnist.npz", "train", n=args.n)
            settings = ProtectSettings(max_rounds=args.rounds, seed=0, **extra)
        else:
            from salm_desktop.core.studies import load_paths

            make_series(Path(tmp) / "series", args.n)
            series = load_paths([Path(tmp) / "series"]).series[0]
            settings = ProtectSettings(max_rounds=args.rounds, seed=0, labels="clusters", **extra)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
            result = protect_series([series], settings)
        print(f"wall {time.perf_counter() - t0:.1f} s, rounds {result.summary['rounds']}, "
              f"precision {result.summary.get('precision')}, PGD steps run {result.summary.get('pgd_steps_run_fraction')}")
        result.close()
    averages = prof.key_averages(group_by_input_shape=args.shapes)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40,
                         max_shapes_column_width=90))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
