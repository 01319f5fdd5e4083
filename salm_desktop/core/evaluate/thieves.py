"""The thief suite: realistic attackers that train on a protected copy and are tested on clean patients.

A thief is a :class:`ThiefRecipe` (architecture, optimizer, epochs, augmentation, and what clean data
of its own it has). :func:`run_thief` trains one on a training split and reports, on the clean test
split, ranking power (``max(AUC, 1 - AUC)``: an inverted ranking is flipped by any thief who sees
it), balanced accuracy, AUC and accuracy

* after the last epoch (``final``),
* at the epoch the thief itself would keep, chosen on a *clean* held-out split (MedMNIST's val
  split) by the best validation ranking power (``val_selected``),
* for the ``few_clean`` variant: the last layer refitted on ``few_clean`` clean training images,
  on the final and on the val-selected model.

A ``clean_mix`` recipe replaces that fraction of the protected training images by their clean
originals (the thief owns some clean data and mixes it in).

A ``prefilter`` recipe (``median``, ``blur``, ``jpeg10``, ...; see defenses.py) runs that filter once
on every image its model will see: the training split, its own clean validation split and the
patients at test time, so the filter costs the thief no train/test mismatch. It is the thief who
has read that filtering removes imperceptible perturbations and keeps augmenting besides.

Speed: the whole split lives in one tensor; crop-with-padding and flip are done per sample on the
batch tensor (no data loader); small inputs train channels-last. :func:`run_suite` runs several
recipes and seeds and returns mean and range per metric.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .defenses import DATASET_LEVEL, prepare_training_set
from .efficacy import classification_metrics

THIEF_ARCHS = ("cnn", "resnet18", "vgg")
OPTIMIZERS = ("sgd", "adam")
CROP_PAD = 4  # torchvision RandomCrop(size, padding=4), the CIFAR/MedMNIST training recipe
HEADLINE = ("rank_power", "balanced_acc", "auc", "acc")


@dataclass(frozen=True)
class ThiefRecipe:
    arch: str = "resnet18"
    optimizer: str = "sgd"  # "sgd": momentum 0.9, nesterov off, weight decay 5e-4, cosine schedule; "adam": 1e-3, constant
    epochs: int = 20
    augment: bool = True  # random crop with 4-pixel zero padding + horizontal flip, per sample
    batch_size: int = 128
    lr: float | None = None  # None: 0.05 for SGD, 1e-3 for Adam
    clean_mix: float = 0.0  # fraction of the training split replaced by the thief's own clean originals
    few_clean: int = 50  # clean labelled training images the thief refits the last layer on (0: skip)
    prefilter: str | None = None  # a dataset-level filter (defenses.DATASET_LEVEL) run on every image the model sees

    def __post_init__(self) -> None:
        if self.arch not in THIEF_ARCHS:
            raise ValueError(f"unknown thief architecture {self.arch!r}; choose one of {', '.join(THIEF_ARCHS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be at least 1 and batch_size at least 2")
        if not 0.0 <= self.clean_mix < 1.0:
            raise ValueError(f"clean_mix must be in [0, 1), got {self.clean_mix}")
        if self.prefilter is not None and self.prefilter not in DATASET_LEVEL:
            raise ValueError(f"unknown prefilter {self.prefilter!r}; choose one of {', '.join(DATASET_LEVEL)}")

    @property
    def name(self) -> str:
        parts = [self.arch, self.optimizer, "aug" if self.augment else "noaug"]
        parts += [self.prefilter] if self.prefilter else []
        parts.append(f"{self.epochs}ep")
        if self.clean_mix:
            parts.append(f"mix{round(100 * self.clean_mix)}")
        return "-".join(parts)

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr else (0.05 if self.optimizer == "sgd" else 1e-3)


def default_suite(epochs: int = 20) -> list[ThiefRecipe]:
    """Three architectures with augmentation (SGD+cosine), Adam, the no-augmentation row, a 10 % clean mix
    and a thief who blurs every image first (the one filter that took the class texture's effect away)."""
    return [
        ThiefRecipe("cnn", "sgd", epochs),
        ThiefRecipe("resnet18", "sgd", epochs),
        ThiefRecipe("vgg", "sgd", epochs),
        ThiefRecipe("resnet18", "adam", epochs),
        ThiefRecipe("resnet18", "sgd", epochs, augment=False),
        ThiefRecipe("resnet18", "sgd", epochs, clean_mix=0.1, few_clean=0),
        ThiefRecipe("cnn", "sgd", epochs, prefilter="blur"),
    ]


def parse_thief(name: str, epochs: int = 20) -> ThiefRecipe:
    """``resnet18-sgd-aug`` / ``vgg-adam-noaug`` / ``resnet18-sgd-aug-mix10`` / ``cnn-sgd-aug-median``
    (optionally ``-NNep``) -> a recipe.

    Raises ValueError naming the bad part."""
    parts = [p for p in name.strip().lower().split("-") if p]
    if not parts:
        raise ValueError("empty thief name")
    kw: dict = {"arch": parts[0], "epochs": epochs}
    for p in parts[1:]:
        if p in OPTIMIZERS:
            kw["optimizer"] = p
        elif p in ("aug", "noaug"):
            kw["augment"] = p == "aug"
        elif p.startswith("mix") and p[3:].isdigit():
            kw["clean_mix"], kw["few_clean"] = int(p[3:]) / 100.0, 0
        elif p in DATASET_LEVEL:
            kw["prefilter"] = p
        elif p.endswith("ep") and p[:-2].isdigit():
            kw["epochs"] = int(p[:-2])
        else:
            raise ValueError(f"thief {name!r}: unknown part {p!r} (use ARCH-OPTIMIZER-aug|noaug[-mixNN][-FILTER][-NNep], "
                             f"FILTER one of {', '.join(DATASET_LEVEL)})")
    return ThiefRecipe(**kw)


# -- architectures: each has embed(x) -> penultimate features and fc (the layer a few-clean thief refits) --
def _cbr(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class _Net(nn.Module):
    fc: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


class ThiefCNN(_Net):
    """The project's plain CNN: two stages of two 3x3 conv+BN+ReLU with max pooling, an MLP head."""

    def __init__(self, n_classes: int, w: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(*_cbr(1, w), *_cbr(w, w), nn.MaxPool2d(2), *_cbr(w, 2 * w), *_cbr(2 * w, 2 * w),
                                      nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                      nn.Linear(2 * w * 4, 128), nn.ReLU(inplace=True))
        self.fc = nn.Linear(128, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.short(x), inplace=True)


class ThiefResNet18(_Net):
    """ResNet-18 (4 stages of 2 basic blocks), CIFAR-style 3x3 stem without max pooling.

    Widths 16-32-64-128 (a quarter of the ImageNet widths) so that 20 epochs fit on a CPU; the
    layout, depth and residual structure are ResNet-18's.
    """

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cbr(1, widths[0]))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers += [_BasicBlock(cin, w, 1 if i == 0 else 2), _BasicBlock(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)


class ThiefVGG(_Net):
    """VGG-11 layout with BatchNorm (conv 1-1-2-2-2 per stage, max pooling between), half widths, GAP head."""

    def __init__(self, n_classes: int, cfg: tuple = (32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256)) -> None:
        super().__init__()
        layers, cin = [], 1
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += _cbr(cin, int(v))
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


def build_thief(arch: str, n_classes: int) -> _Net:
    if arch == "cnn":
        return ThiefCNN(n_classes)
    if arch == "resnet18":
        return ThiefResNet18(n_classes)
    if arch == "vgg":
        return ThiefVGG(n_classes)
    raise ValueError(f"unknown thief architecture {arch!r}; choose one of {', '.join(THIEF_ARCHS)}")


# -- data ------------------------------------------------------------------------------------------
def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (or [0, 1] float) images N x H x W -> float32 N x 1 x H x W in [0, 1]."""
    a = np.asarray(images)
    x = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else np.clip(a.astype(np.float32), 0.0, 1.0)
    return torch.from_numpy(x.reshape(len(a), 1, *a.shape[-2:]).copy())


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = CROP_PAD) -> torch.Tensor:
    """Per-sample random crop from a zero-padded copy and random horizontal flip (N x C x H x W)."""
    n, _, h, w = x.shape
    xp = F.pad(x, [pad, pad, pad, pad])
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = oy[:, None] + torch.arange(h)[None]  # n x h
    cols = ox[:, None] + torch.arange(w)[None]  # n x w
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # n x h x w x c
    return out.permute(0, 3, 1, 2).contiguous()


def rank_power(auc: float) -> float:
    return float(max(auc, 1.0 - auc))


def bf16_available() -> bool:
    """CPU with native bfloat16 (AVX512-BF16/AMX): mixed precision halves the thief's training time."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # older builds without the op
        return False


_BF16 = {"on": None}


def _autocast():
    if _BF16["on"] is None:
        _BF16["on"] = bf16_available()
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(_BF16["on"]))


def set_mixed_precision(enabled: bool | None) -> None:
    """Force bf16 autocast on/off for thief training (None: on where the CPU supports it)."""
    _BF16["on"] = enabled


def _metrics(model: nn.Module, x: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    model.eval()
    with torch.no_grad(), _autocast():
        probs = torch.cat([torch.softmax(model(x[i:i + 1024]).float(), 1) for i in range(0, len(x), 1024)])
    m = classification_metrics(probs.numpy().astype(np.float64), y)
    m["rank_power"] = rank_power(m["auc"])
    return m


def _refit_last_layer(model: _Net, x: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 300) -> _Net:
    """A copy of ``model`` whose last layer is re-fitted (fresh init, L2 0.01) on a few clean images."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad(), _autocast():
        feats = model.embed(x).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.fc.reset_parameters()
    opt = torch.optim.Adam(model.fc.parameters(), lr=0.01, weight_decay=1e-2)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model.fc(feats), y).backward()
        opt.step()
    return model


def run_thief(train_images: np.ndarray, train_labels: np.ndarray, val: tuple[np.ndarray, np.ndarray],
              test: tuple[np.ndarray, np.ndarray], recipe: ThiefRecipe, seed: int = 0,
              clean_train_images: np.ndarray | None = None, progress=None) -> dict:
    """Train one thief; returns ``final``, ``val_selected`` (+ ``few_clean_*``) test metrics and the history.

    ``clean_train_images`` (the clean originals of ``train_images``, same order) is needed for
    ``clean_mix`` and ``few_clean``; without it those parts are skipped.
    """
    t0 = time.perf_counter()
    y_np = np.asarray(train_labels).reshape(len(train_labels), -1)[:, 0].astype(np.int64)
    x_tr = to_tensor(train_images)
    rng = np.random.default_rng(seed + 1000)
    clean_x = to_tensor(clean_train_images) if clean_train_images is not None else None
    if recipe.clean_mix and clean_x is not None:
        own = rng.choice(len(x_tr), size=int(round(recipe.clean_mix * len(x_tr))), replace=False)
        x_tr[own] = clean_x[own]
    y_tr = torch.from_numpy(y_np)
    x_val, y_val = to_tensor(val[0]), np.asarray(val[1]).reshape(len(val[1]), -1)[:, 0].astype(np.int64)
    x_te, y_te = to_tensor(test[0]), np.asarray(test[1]).reshape(len(test[1]), -1)[:, 0].astype(np.int64)
    if recipe.prefilter:  # after the clean mix: the thief filters its own clean images too
        x_tr, x_val, x_te = (prepare_training_set(x, recipe.prefilter) for x in (x_tr, x_val, x_te))
        clean_x = None if clean_x is None else prepare_training_set(clean_x, recipe.prefilter)
    n_classes = max(2, int(max(y_np.max(), y_te.max())) + 1)
    cl = torch.channels_last
    x_tr, x_val, x_te = x_tr.contiguous(memory_format=cl), x_val.contiguous(memory_format=cl), x_te.contiguous(memory_format=cl)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_thief(recipe.arch, n_classes).to(memory_format=cl)
    steps_per_epoch = max(1, len(x_tr) // recipe.batch_size)  # drop the last partial batch (BatchNorm)
    total_steps = steps_per_epoch * recipe.epochs
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=recipe.learning_rate, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
        sched = None
    gen = torch.Generator().manual_seed(seed + 7)
    history, best, best_state = [], None, None
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * recipe.batch_size:(s + 1) * recipe.batch_size]
            xb = x_tr[idx]
            if recipe.augment:
                xb = crop_flip(xb, gen)
            xb = xb.contiguous(memory_format=cl)
            opt.zero_grad(set_to_none=True)
            with _autocast():  # mixed precision (standard AMP recipe); the loss in float32
                logits = model(xb)
            F.cross_entropy(logits.float(), y_tr[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
        vm = _metrics(model, x_val, y_val)
        tm = _metrics(model, x_te, y_te)
        history.append({"epoch": epoch, "val_rank_power": round(vm["rank_power"], 4), "val_auc": round(vm["auc"], 4),
                        **{k: round(tm[k], 4) for k in HEADLINE}})
        if best is None or vm["rank_power"] > best["val"]:
            best = {"val": vm["rank_power"], "epoch": epoch, "test": tm}
            best_state = copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(epoch, recipe.epochs, tm)
    out = {"recipe": recipe.name, "seed": seed, "train_images": len(x_tr),
           "final": {k: tm[k] for k in HEADLINE},
           "val_selected": {**{k: best["test"][k] for k in HEADLINE}, "epoch": best["epoch"]},
           "history": history}
    if recipe.few_clean and clean_x is not None:
        few = _few_clean_indices(y_np, recipe.few_clean, rng)
        xf, yf = clean_x[few].contiguous(memory_format=cl), y_tr[few]
        out["few_clean_final"] = {k: _metrics(_refit_last_layer(model, xf, yf, seed), x_te, y_te)[k] for k in HEADLINE}
        best_model = copy.deepcopy(model)
        best_model.load_state_dict(best_state)
        refit = _metrics(_refit_last_layer(best_model, xf, yf, seed), x_te, y_te)
        out["few_clean_val_selected"] = {k: refit[k] for k in HEADLINE}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _few_clean_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` training indices with every class represented (at least 1 each, the rest at random)."""
    classes = np.unique(labels)
    picked = [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]
    rest = np.setdiff1d(np.arange(len(labels)), picked)
    picked += rng.choice(rest, size=max(0, min(n, len(labels)) - len(picked)), replace=False).tolist()
    return np.asarray(sorted(picked))


VIEWS = ("final", "val_selected", "few_clean_final", "few_clean_val_selected")


def summarize(runs: list[dict]) -> dict:
    """Mean and range (min, max) over runs of every headline metric, per view."""
    out: dict = {"n": len(runs)}
    for view in VIEWS:
        vals = [r[view] for r in runs if view in r]
        if not vals:
            continue
        out[view] = {k: {"mean": float(np.mean([v[k] for v in vals])), "min": float(min(v[k] for v in vals)),
                         "max": float(max(v[k] for v in vals))} for k in HEADLINE}
    return out


def run_suite(train_images: np.ndarray, train_labels: np.ndarray, val, test, recipes: list[ThiefRecipe] | None = None,
              seeds: tuple[int, ...] = (0,), clean_train_images: np.ndarray | None = None, progress=None) -> dict:
    """Every recipe x seed; ``{recipe name: {"runs": [...], "summary": {...}, "recipe": {...}}}``."""
    results = {}
    for recipe in recipes or default_suite():
        runs = []
        for seed in seeds:
            cb = None if progress is None else (lambda e, n, m, r=recipe, s=seed: progress(f"{r.name} seed {s}", e, n, m))
            runs.append(run_thief(train_images, train_labels, val, test, recipe, seed, clean_train_images, cb))
        results[recipe.name] = {"recipe": asdict(recipe), "runs": runs, "summary": summarize(runs)}
    return results


__all__ = ["CROP_PAD", "HEADLINE", "OPTIMIZERS", "THIEF_ARCHS", "ThiefRecipe", "VIEWS", "build_thief", "crop_flip",
           "default_suite", "parse_thief", "rank_power", "replace", "set_mixed_precision", "run_suite", "run_thief", "summarize", "to_tensor"]
