"""The engine's PGD inner step in isolation (issue 20): fp32, channels-last, bf16 autocast, both.

The default surrogate in eval mode, forward and backward to the input only, on random input; the four
variants interleaved, 3 repeats, best images/s of each:

    python benchmarks/surrogate_speed.py --threads 1 --size 28 --batch 64
    python benchmarks/surrogate_speed.py --threads 1 --size 512 --batch 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salm_desktop.core.protect.surrogates import build_surrogate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_surrogate("auto", 2, 2, (args.size, args.size)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(args.batch, 1, args.size, args.size)
    y = torch.randint(0, 2, (args.batch,))

    def step(channels_last: bool, bf16: bool) -> None:
        d = torch.zeros_like(x)
        if channels_last:
            d = d.contiguous(memory_format=torch.channels_last)
        d.requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(torch.clamp(x + d, 0, 1)).float(), y)
        torch.autograd.grad(loss, d)

    variants = [(False, False), (True, False), (False, True), (True, True)]
    best = {v: 0.0 for v in variants}
    n = 10 if args.size < 100 else 2
    for rep in range(args.repeats + 1):
        for cl, bf in variants:
            model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            t0 = time.perf_counter()
            for _ in range(n if rep else 2):
                step(cl, bf)
            if rep:  # repeat 0 warms up
                best[(cl, bf)] = max(best[(cl, bf)], args.batch * n / (time.perf_counter() - t0))
    print(f"{args.size}x{args.size}, batch {args.batch}, {args.threads} thread(s), images/s (best of {args.repeats}):")
    for (cl, bf), v in best.items():
        print(f"  channels_last={cl!s:5} bf16={bf!s:5} {v:8.0f}   x{v / best[(False, False)]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
