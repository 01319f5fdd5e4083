"""Train a model the way a thief would, and keep it (to query it).

The efficacy check (core/evaluate) trains, tests and throws the model away; ownership calibration
needs the model itself. Same recipe and the same loop as ``core.evaluate.efficacy.train_and_test``
(``core.evaluate.training.fit``): Adam 1e-3, batch 32, the same architectures and countermeasures.
"""

from __future__ import annotations

import numpy as np
import torch

from salm_desktop.core.evaluate.defenses import canonical, defend_batch, prepare_training_set
from salm_desktop.core.evaluate.training import fit, seeded_attacker
from salm_desktop.core.model import IntensityMap


def to_tensor(images: np.ndarray, intensity: IntensityMap) -> torch.Tensor:
    return torch.from_numpy(np.clip(intensity.normalize(np.asarray(images)), 0.0, 1.0)).unsqueeze(1)


def train_model(images: np.ndarray, labels: np.ndarray, *, arch: str = "cnn", epochs: int = 15, seed: int = 0,
                defense: str | None = None, intensity: IntensityMap | None = None, batch_size: int = 32,
                lr: float = 1e-3) -> torch.nn.Module:
    """A classifier trained on ``images`` (native values) in eval mode; input: normalized N x 1 x H x W."""
    intensity = intensity or IntensityMap.for_uint8()
    defense = canonical(defense)
    x = prepare_training_set(to_tensor(images, intensity), defense)
    y = torch.from_numpy(np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(np.int64))
    model = seeded_attacker(arch, x.ndim - 2, int(y.max()) + 1, seed)
    gen = torch.Generator().manual_seed(int(seed) + 7)
    return fit(model, x, y, epochs=epochs, gen=gen, batch_size=batch_size, lr=lr,
               transform=lambda xb, yb, net: defend_batch(defense, xb, gen, net, yb))


def predict(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Softmax scores (N x C) of normalized images N x 1 x H x W."""
    with torch.no_grad():
        return torch.cat([torch.softmax(model(x[i:i + 256]), 1) for i in range(0, len(x), 256)]).numpy()


def train_suite_thief(images: np.ndarray, labels: np.ndarray, recipe: str = "resnet18-sgd-aug", *, seed: int = 0,
                      defense: str | None = None, intensity: IntensityMap | None = None) -> torch.nn.Module:
    """A thief of the realistic suite (core/evaluate/thieves.py: ``build_thief``, ``crop_flip`` with 4-pixel zero
    padding, SGD + cosine or Adam, batch 128, 20 epochs by default) that is kept, in eval mode.

    Same loop as ``thieves.run_thief`` in float32 and without its validation bookkeeping; ``defense`` names a
    dataset-level countermeasure (``jpeg10``, ``median``) applied once to the training set first."""
    import math

    import torch.nn.functional as F

    from salm_desktop.core.evaluate.thieves import build_thief, crop_flip, parse_thief

    rec = parse_thief(recipe)
    intensity = intensity or IntensityMap.for_uint8()
    x = prepare_training_set(to_tensor(images, intensity), canonical(defense))
    y = torch.from_numpy(np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_thief(rec.arch, max(2, int(y.max()) + 1))
    steps = max(1, len(x) // rec.batch_size)
    total = steps * rec.epochs
    if rec.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=rec.learning_rate, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    else:
        opt, sched = torch.optim.Adam(model.parameters(), lr=rec.learning_rate), None
    gen = torch.Generator().manual_seed(int(seed) + 7)
    for _ in range(rec.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for s in range(steps):
            idx = perm[s * rec.batch_size:(s + 1) * rec.batch_size]
            xb = crop_flip(x[idx], gen) if rec.augment else x[idx]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), y[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
    return model.eval()
