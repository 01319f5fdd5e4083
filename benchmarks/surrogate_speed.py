"""The engine's PGD inner step in isolation (issue 20): fp32 against the bf16 variants.

The default surrogate in eval mode, forward and backward to the input only, on image-like input
(uniform 0.45-0.65 plus noise within 8/255); variants interleaved, best images per CPU second
(process time, which other processes on the machine disturb less than wall time) of ``--repeats``:

- ``fp32``: no autocast, contiguous layout (the reference path, ``precision="fp32"``);
- ``bf16, conv1 fp32``: bf16 autocast + channels-last, the first convolution in float32 and its
  float32 output running on through the first stage (``precision="bf16"`` before this change);
- ``bf16, conv1+bn1 fp32``: the same, but cast to bf16 after the first batch norm
  (``surrogates.first_layer_in_fp32``, ``precision="bf16"`` now);
- ``bf16_all``: every convolution in bf16 (``precision="bf16_all"``).

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

from salm_desktop.core.protect.surrogates import build_surrogate, first_layer_in_fp32  # noqa: E402

VARIANTS = ("fp32", "bf16, conv1 fp32", "bf16, conv1+bn1 fp32", "bf16_all")


def _conv1_fp32_only(model: torch.nn.Module) -> None:
    """The first convolution in float32 and nothing else (the bf16 path before the cast after bn1)."""
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv_forward = first.forward

    def forward_fp32(inp: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return conv_forward(inp.float())

    first.forward = forward_fp32


def _model(variant: str, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_surrogate("auto", 2, 2, (size, size)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if variant != "fp32":
        model.to(memory_format=torch.channels_last)
    if variant == "bf16, conv1 fp32":
        _conv1_fp32_only(model)
    elif variant == "bf16, conv1+bn1 fp32":
        first_layer_in_fp32(model, "cpu")
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {v: _model(v, args.size) for v in VARIANTS}
    torch.manual_seed(1)
    x = torch.rand(args.batch, 1, args.size, args.size) * 0.2 + 0.45
    d0 = (torch.rand_like(x) * 2 - 1) * 8 / 255
    y = torch.randint(0, 2, (args.batch,))

    def step(variant: str) -> None:
        fmt = torch.contiguous_format if variant == "fp32" else torch.channels_last
        xv = x.contiguous(memory_format=fmt)
        d = d0.contiguous(memory_format=fmt).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant != "fp32"):
            loss = F.cross_entropy(models[variant](torch.clamp(xv + d, 0, 1)).float(), y)
        torch.autograd.grad(loss, d)

    best = {v: 0.0 for v in VARIANTS}
    n = 10 if args.size < 100 else 2
    for rep in range(args.repeats + 1):
        for v in VARIANTS:
            t0 = time.process_time()
            for _ in range(n if rep else 2):
                step(v)
            if rep:  # repeat 0 warms up
                best[v] = max(best[v], args.batch * n / (time.process_time() - t0))
    print(f"{args.size}x{args.size}, batch {args.batch}, {args.threads} thread(s), images per CPU s (best of {args.repeats}):")
    for v, ips in best.items():
        print(f"  {v:22} {ips:8.0f}   x{ips / best['fp32']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
