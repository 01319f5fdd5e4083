"""Settings of one protection job. Every default is explained in docs/algorithm.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

METHODS = ("salm", "em", "random", "em-class", "tap", "ar", "lsp", "ops", "salm-tap", "salm-ar", "salm-v1", "salm-tex", "salm-tex-tap")  # em-class..salm-ar, salm-tex*: peers.py; salm-v1: the first SALM default (min-min in the mask)
MASK_MODES = ("never", "round", "step")
# surrogate arithmetic (device.resolve_precision): "fp32" the bit-exact reference; "fp32_fast" float32 with a
# channels-last layout and, for the fixed-surrogate passes, batch norms folded into the convolutions;
# "bf16" / "bf16_all" bfloat16 autocast; "auto" = bf16 where native, else fp32_fast on the CPU
PRECISIONS = ("auto", "fp32", "fp32_fast", "bf16", "bf16_all")
# Default mask ratios per SALM variant (docs/algorithm.md, "Which variant runs"): the class texture on 2D
# 8-bit images changes 30 % of the pixels (20 % left a PneumoniaMNIST ResNet-18 thief at 0.90 ranking
# power, 30 % at 0.69; docs/benchmarks.md); min-min on CT/MR and 3D keeps the 20 % its fidelity
# targets were measured at.
TEXTURE_MASK_RATIO = 0.3
MIN_MIN_MASK_RATIO = 0.2
LABEL_MODES = ("given", "clusters")
# "class": round 1 uses sample masks and gathers class saliency, then one mask per class;
# "class_from_start": class saliency from one gradient pass before round 1, class masks from round 1
MASK_SCOPES = ("sample", "class", "class_from_start")


@dataclass
class ProtectSettings:
    method: str = "salm"  # "salm" | "em" | "random"
    epsilon: float = 8 / 255  # L-inf budget in the normalized scale of the series' IntensityMap (the reader's window)
    epsilon_native: float | None = None  # budget in native units (e.g. 12 for "12HU"); overrides epsilon per series
    epsilon_unit: str = ""  # unit of epsilon_native ("HU"); a series in other units is refused
    noise_cap: float | None = None  # also cap the budget at this fraction of each series' own noise SD
    local_mean_free: bool | str = "auto"  # remove the noise's local (15 px) mean: "auto" = on for quantitative data (HU)
    step_size: float | None = None  # None: epsilon / 10
    pgd_steps: int = 20  # perturbation steps per round
    train_steps: int = 10  # surrogate SGD steps per round
    stop_accuracy: float = 0.99  # surrogate accuracy on the perturbed data, eval mode
    max_rounds: int = 10
    extra_rounds: int = 0  # rounds to keep optimizing after stop_accuracy is reached (still capped by max_rounds)
    stop_loss: float | None = None  # also require the surrogate's mean loss on the perturbed data to be at most this
    mask_ratio: float | None = None  # fraction of each sample's pixels SALM may change; None: the variant's own (below); 1.0 == plain EM
    recompute_mask: bool | str = "step"  # "step" (every PGD step) | "round" | "never" (fixed after the first step); True == "step"
    mask_scope: str = "class"  # one of MASK_SCOPES: "sample" (each sample's own saliency), "class", "class_from_start"
    foreground: bool = False  # intersect the mask with the body/foreground region
    surrogate: str = "auto"  # "auto" | "cifar_resnet" | "small_cnn" | "densenet121" | "resnet18"
    batch_size: int = 64
    device: str = "auto"  # auto: CUDA, then MPS, then CPU
    seed: int = 0
    labels: str = "given"  # "given" | "clusters"
    n_clusters: int = 2
    surrogate_lr: float = 0.1
    init: str = "zero"  # "zero" | "random": start the noise at 0 or uniform in the budget (inside the mask)
    robust: bool | str = False  # False | True ("full") | "pgd": expectation over random blur/median/shift/noise/quantize (robust.py)
    precision: str = "auto"  # one of PRECISIONS: surrogate arithmetic; auto = bf16 where native, else fp32_fast on the CPU
    # before each round's noise steps, re-estimate the surrogate's batch-norm statistics on a few batches of the
    # perturbed data: "auto" = for salm's min-min (CT, MR, 3D); em and salm-v1 keep their published behaviour
    recalibrate_norms: bool | str = "auto"
    early_exit_loss: float | None = 0.01  # a sample whose loss is at most this (p(true) >= 0.99) skips the round's remaining PGD steps; None: never

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 0 < self.epsilon <= 1:
            raise ValueError(f"epsilon must be in (0, 1] of the intensity window, got {self.epsilon}")
        if self.epsilon_native is not None and not self.epsilon_native > 0:
            raise ValueError(f"epsilon in native units must be positive, got {self.epsilon_native}")
        if self.noise_cap is not None and not self.noise_cap > 0:
            raise ValueError(f"noise cap must be a positive fraction of the noise SD, got {self.noise_cap}")
        if self.mask_ratio is not None and not 0 < self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"labels must be 'given' or 'clusters', got {self.labels!r}")
        if self.n_clusters < 2:
            raise ValueError("n_clusters must be at least 2")
        if self.batch_size < 1 or self.pgd_steps < 1 or self.max_rounds < 1 or self.train_steps < 0:
            raise ValueError("batch_size, pgd_steps and max_rounds must be positive")
        if self.extra_rounds < 0:
            raise ValueError(f"extra_rounds must be 0 or more, got {self.extra_rounds}")
        if self.stop_loss is not None and not self.stop_loss > 0:
            raise ValueError(f"stop_loss must be positive (or None), got {self.stop_loss}")
        if self.local_mean_free not in (True, False, "auto"):
            raise ValueError(f"local_mean_free must be True, False or 'auto', got {self.local_mean_free!r}")
        if self.init not in ("zero", "random"):
            raise ValueError(f"init must be 'zero' or 'random', got {self.init!r}")
        self.mask_mode  # validates recompute_mask
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.early_exit_loss is not None and not self.early_exit_loss > 0:
            raise ValueError(f"early_exit_loss must be positive (or None), got {self.early_exit_loss}")
        if self.recalibrate_norms not in (True, False, "auto"):
            raise ValueError(f"recalibrate_norms must be True, False or 'auto', got {self.recalibrate_norms!r}")
        if self.mask_scope not in MASK_SCOPES:
            raise ValueError(f"mask_scope must be one of {', '.join(MASK_SCOPES)}, got {self.mask_scope!r}")

    @property
    def effective_step(self) -> float:
        return float(self.step_size) if self.step_size else float(self.epsilon) / 10.0

    @property
    def effective_mask_ratio(self) -> float:
        """The min-min variant's mask ratio (``salm`` on 3D and non-8-bit data, ``salm-v1``, ``em``)."""
        return self.mask_ratio_for(texture=False)

    def mask_ratio_for(self, texture: bool) -> float:
        """The mask ratio a variant really uses: the user's, else the variant's measured default."""
        if self.method == "em":
            return 1.0
        if self.mask_ratio is not None:
            return float(self.mask_ratio)
        return TEXTURE_MASK_RATIO if texture else MIN_MIN_MASK_RATIO

    @property
    def recalibrates_norms(self) -> bool:
        """Whether min-min re-estimates the batch-norm statistics each round (``recalibrate_norms``)."""
        if self.recalibrate_norms == "auto":
            return self.method == "salm"
        return bool(self.recalibrate_norms)

    @property
    def mask_mode(self) -> str:
        value = self.recompute_mask
        if value is True:
            return "step"
        if value is False or value is None:
            return "never"
        if value not in MASK_MODES:
            raise ValueError(f"recompute_mask must be one of {', '.join(MASK_MODES)} (or a bool), got {value!r}")
        return str(value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
