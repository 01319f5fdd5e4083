"""One training loop for the classifiers the project trains to *measure* its protection.

The efficacy check's thief, the hospital's clean model (clinical utility) and the ownership shadow
models all train the same way: an attacker architecture seeded on its own, Adam, mini-batches drawn
from a seeded permutation, an optional per-batch transform (augmentation, adversarial examples).
Keeping that in one place keeps their recipes from drifting apart. The thief suite (``thieves.py``)
has its own loop on purpose: SGD with a cosine schedule, bf16 and channels-last.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

#: ``transform(batch, labels, model) -> batch``; runs on the model's device before the step
BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.nn.Module], torch.Tensor]
#: ``loss(model, batch, labels) -> scalar``; the default is the cross-entropy of ``model(batch)``
BatchLoss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def seeded_attacker(arch: str, dims: int, n_classes: int, seed: int) -> torch.nn.Module:
    """``build_attacker`` under its own seed, without touching the caller's global RNG state."""
    from .efficacy import build_attacker

    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        return build_attacker(arch, dims, max(2, int(n_classes)))


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, gen: torch.Generator,
        batch_size: int = 32, lr: float = 1e-3, device: str = "cpu", transform: BatchTransform | None = None,
        after_epoch: Callable[[int], None] | None = None, loss: BatchLoss | None = None) -> torch.nn.Module:
    """Train ``model`` on ``(x, y)`` with Adam; ``after_epoch(epoch)`` runs with the model in eval mode;
    ``loss`` replaces the plain cross-entropy (the hospital's consistency recipe, ``utility.py``).

    Batches of one image are skipped (batch norm cannot train on them). Returns the model in eval mode.
    """
    dev = torch.device(device)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(perm), batch_size):
            idx = perm[start:start + batch_size]
            if len(idx) < 2:
                continue
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            if transform is not None:
                xb = transform(xb, yb, model)
            opt.zero_grad(set_to_none=True)
            (F.cross_entropy(model(xb), yb) if loss is None else loss(model, xb, yb)).backward()
            opt.step()
        model.eval()
        if after_epoch is not None:
            after_epoch(epoch)
    return model.eval()
