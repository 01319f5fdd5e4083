"""An independent thief for issue 14: code of its own (nothing from salm_desktop), a black box to verify.

It trains on a release's training images (or on clean ones, the innocent case) with its own small CNN and
its own augmentation (random shifts of up to 3 pixels with reflection padding, horizontal flips, a
brightness jitter of +-5 %), reads the key queries as PNG files (what a service would be sent) and writes
its answers as PRED.csv (``query,label,p0,p1``). The steward's side is the product's CLI:

    python -m salm_desktop.cli protect IN.npz --out REL --keys KEYS
    python benchmarks/ownership_outside_thief.py REL/IN.npz KEYS/queries answers.csv
    python -m salm_desktop.cli verify --keys KEYS --predictions answers.csv --release REL --json
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def net() -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 24), *block(24, 48), *block(48, 96), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 2))


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect")
    out = torch.empty_like(x)
    dy, dx = torch.randint(0, 7, (n,), generator=g), torch.randint(0, 7, (n,), generator=g)
    for i in range(n):
        out[i] = pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return (out * (1 + 0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5))).clamp(0, 1)


def main() -> None:
    data, queries, answers = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    with np.load(data) as z:
        x = torch.from_numpy(z["train_images"].astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(z["train_labels"].reshape(-1).astype(np.int64))
    model = net()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x) - 1, 64):
            idx = perm[s:s + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(augment(x[idx], g)), y[idx]).backward()
            opt.step()
    model.eval()
    files = sorted(queries.glob("*.png"))
    q = torch.from_numpy(np.stack([np.asarray(Image.open(f), dtype=np.float32) / 255.0 for f in files])).unsqueeze(1)
    with torch.no_grad():
        p = torch.softmax(model(q), 1).numpy()
    with answers.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["query", "label", "p0", "p1"])
        for f, row in zip(files, p):
            w.writerow([f.stem, int(row.argmax()), f"{row[0]:.6f}", f"{row[1]:.6f}"])
    print(f"{len(files)} answers written to {answers}")


if __name__ == "__main__":
    main()
