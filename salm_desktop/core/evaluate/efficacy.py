"""Efficacy: does a model trained on the protected copy fail on clean patients?

These are the *earlier* attackers (Adam, no val split, augmentation only as a defense), kept for the
countermeasure check (``evaluate --defense``). The default check is the thief suite in thieves.py
(crop + flip on, three architectures, SGD and Adam, val-selected epoch, few-clean refit).

The literature's protocol: train a fresh classifier (an architecture other than the protector's
surrogate) once on the protected training split and once on the clean one with the same recipe,
and report accuracy, balanced accuracy and ROC AUC on the clean test split, after the last epoch
and the peak over epochs. AUC matters: a model whose accuracy collapses while its AUC stays high
still ranks patients, and a thief can recalibrate its threshold.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from salm_desktop.core.model import IntensityMap
from salm_desktop.core.progress import Progress

from .defenses import DEFENSES as _DEFENSE_NAMES, canonical as _canonical_defense, defend_batch, prepare_training_set
from .training import fit, seeded_attacker

ARCHS = ("cnn", "resnet", "densenet")
DEFENSES = (None, *_DEFENSE_NAMES[1:])  # see defenses.py; names combine with "+"

Split = tuple[np.ndarray, np.ndarray]  # (images in native units, labels)


class PlainCNN(nn.Module):
    """VGG-style: two stages of two 3x3 conv+BN+ReLU, max pooling, pooled to 2x2, an MLP head."""

    def __init__(self, dims: int, n_classes: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
        w = 32 if dims == 2 else 16

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [conv(cin, cout, 3, padding=1, bias=False), bn(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, w), *block(w, w), pool(2), *block(w, 2 * w), *block(2 * w, 2 * w), pool(2), gap(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 2**dims, 128), nn.ReLU(inplace=True), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_attacker(arch: str, dims: int, n_classes: int) -> nn.Module:
    arch = arch.lower()
    if arch == "cnn":
        return PlainCNN(dims, n_classes)
    if arch == "resnet":  # MONAI ResNet-18 layout, slim widths, CIFAR-style 3x3 stem for small images
        from monai.networks.nets import ResNet

        return ResNet("basic", [2, 2, 2, 2], [16, 32, 64, 128], spatial_dims=dims, n_input_channels=1,
                      conv1_t_size=3, conv1_t_stride=1, no_max_pool=True, num_classes=n_classes)
    if arch == "densenet":  # MONAI DenseNet, small growth rate
        from monai.networks.nets import DenseNet

        return DenseNet(spatial_dims=dims, in_channels=1, out_channels=n_classes, init_features=16,
                        growth_rate=12, block_config=(4, 8, 6))
    raise ValueError(f"unknown attacker architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def _to_tensor(images: np.ndarray, intensity: IntensityMap) -> torch.Tensor:
    x = np.clip(intensity.normalize(np.asarray(images)), 0.0, 1.0)
    return torch.from_numpy(x).unsqueeze(1)


def _labels(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(np.int64))


def classification_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """accuracy, balanced accuracy (mean per-class recall) and ROC AUC (macro one-vs-rest)."""
    from monai.metrics import compute_roc_auc

    y = np.asarray(y).astype(np.int64)
    pred = probs.argmax(1)
    n_classes = probs.shape[1]
    recalls = [float((pred[y == c] == c).mean()) for c in range(n_classes) if np.any(y == c)]
    if n_classes == 2:
        auc = compute_roc_auc(torch.from_numpy(probs[:, 1]), torch.from_numpy(y))
    else:
        onehot = np.eye(n_classes, dtype=np.float32)[y]
        auc = compute_roc_auc(torch.from_numpy(probs), torch.from_numpy(onehot), average="macro")
    return {"acc": float((pred == y).mean()), "balanced_acc": float(np.mean(recalls)), "auc": float(auc)}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and +-2 pixel shifts (a cheap standard defense)."""
    spatial = list(range(2, x.ndim))
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(spatial[-1]), x)
    pad = 2
    xp = F.pad(x, [pad] * (2 * len(spatial)), mode="replicate" if x.ndim <= 5 else "constant")
    offs = torch.randint(0, 2 * pad + 1, (len(spatial),), generator=gen).tolist()
    sl = [slice(None), slice(None)] + [slice(o, o + s) for o, s in zip(offs, x.shape[2:])]
    return xp[tuple(sl)]


def train_and_test(train: Split, test: Split, arch: str, epochs: int, seed: int, intensity: IntensityMap,
                   defense: str | None = None, progress: Progress | None = None, tag: str = "",
                   batch_size: int = 32, lr: float = 1e-3, device: str = "cpu") -> dict:
    x_tr, y_tr = _to_tensor(train[0], intensity), _labels(train[1])
    x_te, y_te = _to_tensor(test[0], intensity), _labels(test[1])
    defense = _canonical_defense(defense)
    x_tr = prepare_training_set(x_tr, defense)  # dataset-level defenses (blur, median, jpeg, bitdepth)
    dims = x_tr.ndim - 2
    n_classes = int(max(int(y_tr.max()), int(y_te.max()))) + 1
    model = seeded_attacker(arch, dims, n_classes, seed)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(int(seed) + 7)
    history = []

    def test_epoch(epoch: int) -> None:
        with torch.no_grad():
            probs = torch.cat([torch.softmax(model(x_te[i:i + 512].to(dev)), 1).cpu() for i in range(0, len(x_te), 512)])
        m = classification_metrics(probs.numpy().astype(np.float64), y_te.numpy())
        m["epoch"] = epoch
        history.append(m)
        if progress is not None:
            progress.update("evaluate", epoch, epochs, f"{tag} epoch {epoch}", **{k: m[k] for k in ("acc", "balanced_acc", "auc")})

    fit(model, x_tr, y_tr, epochs=epochs, gen=gen, batch_size=batch_size, lr=lr, device=device,
        transform=lambda xb, yb, net: defend_batch(defense, xb, gen, net, yb),  # augment, advtrain
        after_epoch=test_epoch)
    final = {k: history[-1][k] for k in ("acc", "balanced_acc", "auc")}
    peak = {k: max(h[k] for h in history) for k in ("acc", "balanced_acc", "auc")}
    return {"final": final, "peak": peak, "history": history}


def evaluate_efficacy(protected_train: Split, clean_train: Split | None, clean_test: Split, arch: str = "cnn",
                      epochs: int = 15, seed: int = 0, defense: str | None = None,
                      progress: Progress | None = None, intensity: IntensityMap | None = None,
                      device: str = "cpu") -> dict:
    """Train ``arch`` on the protected split and on the clean split; test both on ``clean_test``.

    Splits are ``(images, labels)`` in native units (uint8 MedMNIST arrays, or anything with an
    ``intensity`` map). Returns ``{"protected": {"final", "peak", "history"}, "clean": {...}, ...}``;
    ``clean`` is None when ``clean_train`` is None.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown attacker architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    defense = _canonical_defense(defense)  # ValueError naming the valid defenses
    if len(protected_train[0]) != len(protected_train[1]):
        raise ValueError("protected training images and labels differ in length")
    if intensity is None:
        ref = clean_train[0] if clean_train is not None else protected_train[0]
        intensity = IntensityMap.for_uint8() if np.asarray(ref).dtype == np.uint8 else IntensityMap.robust(np.asarray(ref))
    t0 = time.perf_counter()
    prot = train_and_test(protected_train, clean_test, arch, epochs, seed, intensity, defense, progress, "protected", device=device)
    clean = None
    if clean_train is not None:
        clean = train_and_test(clean_train, clean_test, arch, epochs, seed, intensity, defense, progress, "clean", device=device)
    return {
        "arch": arch, "epochs": epochs, "seed": seed, "defense": defense,
        "train_samples": int(len(protected_train[0])), "test_samples": int(len(clean_test[0])),
        "protected": prot, "clean": clean, "seconds": round(time.perf_counter() - t0, 2),
    }
