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
