"""``protect --evaluate``: the thief suite run on the release being written, before it is in place.

Thieves train on the protected training split of the release and are tested on the clean test split
of the labelled input (an npz with train/test splits, or a ``train/<class>/``, ``test/<class>/``
image tree). The default is small and fast (one realistic thief: a CNN with crop-and-flip
augmentation and SGD, a few epochs, its last layer also refitted on 50 clean images); the full suite
stays ``salm-protect evaluate``. The result is the same JSON document ``evaluate --json`` prints, with
a note on its scope, so the report and the manifest carry it verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import load_split
from .suite import evaluate_suite
from .thieves import default_suite, parse_thief

QUICK_THIEVES = "cnn-sgd-aug"
QUICK_EPOCHS = 5


@dataclass(frozen=True)
class ReleaseEvaluation:
    """What ``protect --evaluate`` runs: ``clean`` is the labelled input the release is made from."""

    clean: Path
    thieves: str = QUICK_THIEVES  # comma-separated names, or "suite"
    epochs: int = QUICK_EPOCHS
    seeds: tuple[int, ...] = (0,)

    def recipes(self):
        if self.epochs < 1:
            raise ValueError("--evaluate-epochs must be at least 1")
        if self.thieves.strip() == "suite":
            return default_suite(self.epochs)
        return [parse_thief(t, self.epochs) for t in self.thieves.split(",") if t.strip()]

    def check(self) -> None:
        """Before any work: the input must hold labelled train and test splits of 2D images (ValueError)."""
        self.recipes()
        train = load_split(self.clean, "train")
        load_split(self.clean, "test")
        if train[0].ndim != 3:
            raise ValueError(f"{self.clean}: the thief suite evaluates 2D grey images only")

    def protected_path(self, release: Path) -> Path:
        """Where the protected copy of ``clean`` lies in the release (the output mirrors the input)."""
        return Path(release) / self.clean.name if self.clean.is_file() else Path(release)

    def __call__(self, release: Path, progress: Any = None) -> dict[str, Any]:
        recipes = self.recipes()
        protected = load_split(self.protected_path(release), "train")
        clean_train, clean_test = load_split(self.clean, "train"), load_split(self.clean, "test")
        try:
            clean_val = load_split(self.clean, "val")
        except ValueError:
            clean_val = None
        total = len(recipes) * len(self.seeds) * self.epochs * 2

        def show(tag: str, epoch: int, epochs: int, metrics: dict) -> None:
            if progress is not None:
                show.done += 1
                progress.update("evaluate", min(show.done, total), total,
                                f"{tag} epoch {epoch}/{epochs}: ranking power {metrics['rank_power']:.3f}")
        show.done = 0
        if progress is not None:
            progress.update("evaluate", 0, total, "training thief models on the protected copy")
        res = evaluate_suite(protected, clean_train, clean_val, clean_test, recipes, list(self.seeds), progress=show)
        names = ", ".join(r.name for r in recipes)
        res["quick"] = (f"protect --evaluate: {len(recipes)} thief recipe(s) ({names}), seeds "
                        f"{','.join(map(str, self.seeds))}; the full suite is 'salm-protect evaluate'")
        return res
