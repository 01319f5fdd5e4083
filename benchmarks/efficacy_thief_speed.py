"""Thief training speed: ms per image and SGD step for each thief architecture, float32 vs channels-last vs
channels-last + bf16 autocast (1 torch thread, batch 128, 8 steps on PneumoniaMNIST 28x28 images).

    python benchmarks/efficacy_thief_speed.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salm_desktop.core.evaluate.thieves import THIEF_ARCHS, build_thief, crop_flip, to_tensor  # noqa: E402

DATA = Path(os.environ.get("SALM_TEST_DATA", REPO.parent / "shared" / "data")) / "medmnist"


def main() -> int:
    torch.set_num_threads(1)
    with np.load(DATA / "pneumoniamnist.npz") as z:
        x = to_tensor(z["train_images"][:1024])
        y = torch.from_numpy(z["train_labels"][:1024, 0].astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    print("| thief | float32 | channels-last | channels-last + bf16 autocast |\n|---|---|---|---|")
    for arch in THIEF_ARCHS:
        cells = []
        for mode in ("fp32", "cl", "bf16cl"):
            model = build_thief(arch, 2)
            cl = mode != "fp32"
            if cl:
                model = model.to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            t0 = time.perf_counter()
            for s in range(8):
                xb = crop_flip(x[s * 128:(s + 1) * 128], gen)
                if cl:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                opt.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16cl"):
                    out = model(xb)
                F.cross_entropy(out.float(), y[s * 128:(s + 1) * 128]).backward()
                opt.step()
            cells.append(f"{(time.perf_counter() - t0) / 1024 * 1000:.2f}")
        print(f"| {arch} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
