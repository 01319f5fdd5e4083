"""The ranking floor of the val-selected view (issue 12): what thieves rank before they learn anything.

Prints, per dataset and thief architecture, the clean-test ranking power max(AUC, 1-AUC) of the
*untrained* network (5 random initializations) and, from the efficacy grid's cache, the test
ranking power after epoch 1 of every cached thief run. Both are independent of (or barely touched
by) the protection, so they bound from below what the "val-selected epoch" view can show.

    python benchmarks/efficacy_floor.py            # results: benchmarks/results_efficacy/ (run efficacy.py --report-only first to mirror the cache)
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.efficacy import RESULTS, load_dataset  # noqa: E402
from salm_desktop.core.evaluate.thieves import THIEF_ARCHS, _metrics, build_thief, to_tensor  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    for name in ("breastmnist", "pneumoniamnist"):
        data = load_dataset(name)
        x, y = to_tensor(data["test"][0]), data["test"][1].astype(np.int64)
        for arch in THIEF_ARCHS:
            rp = []
            for seed in range(5):
                torch.manual_seed(seed)
                rp.append(_metrics(build_thief(arch, 2), x, y)["rank_power"])
            print(f"{name} {arch}: untrained, 5 initializations: {', '.join(f'{v:.2f}' for v in rp)} (mean {np.mean(rp):.2f})")
        first = collections.defaultdict(list)
        for f in sorted((RESULTS / name).glob("*-a*.json")):
            r = json.loads(f.read_text())
            first[f.name.split("-p")[0]].append(r["history"][0]["rank_power"])
        allv = [v for vs in first.values() for v in vs]
        for spec, vs in first.items():
            print(f"{name} {spec}: after epoch 1 ({len(vs)} runs): {', '.join(f'{v:.2f}' for v in vs)}")
        if allv:
            print(f"{name}: after epoch 1, all {len(allv)} cached runs: min {min(allv):.2f}, mean {np.mean(allv):.2f}, max {max(allv):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
