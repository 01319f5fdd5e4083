"""Mask-preview latency on the CPU: a real 512x512 CT slice (shared/data/dicom/ct_3slice_dcmqi).

    python benchmarks/preview_speed.py

Prints the first call (builds and caches the surrogate) and the median of the next calls, for
mask ratios 0.05 / 0.2 with and without the foreground restriction.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salm_desktop.core.protect import preview_mask  # noqa: E402
from salm_desktop.core.studies import load_paths  # noqa: E402

DATA = Path(os.environ.get("SALM_TEST_DATA", REPO.parent / "shared" / "data"))


def main() -> int:
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    result = load_paths([DATA / "dicom" / "ct_3slice_dcmqi" / "dicom"])
    series = next(s for s in result.series if s.sample_shape == (512, 512))
    sample = series.samples[1]
    for ratio, fg in ((0.05, False), (0.2, False), (0.2, True)):
        t = time.perf_counter()
        preview_mask(sample, series.intensity, ratio, foreground=fg, device="cpu")
        first = time.perf_counter() - t
        times = []
        for _ in range(5):
            t = time.perf_counter()
            mask = preview_mask(sample, series.intensity, ratio, foreground=fg, device="cpu")
            times.append(time.perf_counter() - t)
        print(f"512x512 CT, mask_ratio {ratio}, foreground {fg}: first call {first:.2f} s, "
              f"then median {statistics.median(times):.2f} s (min {min(times):.2f}); mask covers {mask.mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
