"""The one training loop behind the thief check, the hospital model and the ownership shadow models."""

from __future__ import annotations

import numpy as np
import torch

from salm_desktop.core.evaluate.defenses import defend_batch
from salm_desktop.core.evaluate.training import fit, seeded_attacker


def _breast(n: int, medmnist_dir):
    d = np.load(medmnist_dir / "breastmnist.npz")
    x = torch.from_numpy(d["train_images"][:n].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(d["train_labels"][:n, 0].astype(np.int64))
    return x, y


def test_the_same_seed_gives_the_same_model_and_another_seed_another(medmnist_dir):
    x, y = _breast(65, medmnist_dir)  # 65 = two batches of 32 and one lone image, which is skipped

    def trained(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        model = fit(seeded_attacker("cnn", 2, 2, seed), x, y, epochs=1, gen=gen,
                    transform=lambda xb, yb, net: defend_batch("augment", xb, gen, net, yb))
        assert not model.training
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(trained(0), trained(0))
    assert not torch.equal(trained(0), trained(1))


def test_training_lowers_the_loss_and_reports_every_epoch_in_eval_mode(medmnist_dir):
    x, y = _breast(128, medmnist_dir)
    model = seeded_attacker("cnn", 2, 2, 0)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model.eval()(x), y).item()
    seen: list[tuple[int, bool]] = []
    fit(model, x, y, epochs=3, gen=torch.Generator().manual_seed(0),
        after_epoch=lambda epoch: seen.append((epoch, model.training)))
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(model(x), y).item()
    assert seen == [(1, False), (2, False), (3, False)]
    assert after < before
