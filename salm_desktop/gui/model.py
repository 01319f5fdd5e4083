"""The wizard's state and presentation logic, without widgets (testable without a display).

Pages show what these functions return and hand user input back to them; every real action goes
through :mod:`salm_desktop.gui.services`, which calls the same core functions as the CLI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence


from salm_desktop.core.model import IntensityMap, LoadResult, Series

# The Protect, Review and Export pages' logic lives in its own modules; the pages import it from here.
from .protect_status import (ROUND_LOG, ProtectStatus, RoundPoint, device_label, duration_text,  # noqa: F401
                             epsilon_text, number_with_unit, run_summary_lines)
from .review_export import FIDELITY_COLUMNS, default_output_dir, fidelity_rows  # noqa: F401

if TYPE_CHECKING:
    from salm_desktop.core.jobs import JobResult
    from salm_desktop.core.protect.result import ProtectResult
    from salm_desktop.core.protect.settings import ProtectSettings

METHODS = [("salm", "SALM (sparse local mask; class texture on 2D 8-bit images)"),
           ("salm-v1", "SALM min-min everywhere (no texture; weaker against augmenting thieves)"),
           ("em", "EM (full image, baseline)"), ("random", "Random noise (baseline)")]
LABEL_SOURCES = [
    ("auto", "Automatic (the study's labels, else pseudo-labels)"),
    ("folders", "Class folders"),
    ("npz", "npz labels"),
    ("csv", "CSV file…"),
    ("clusters", "None: pseudo-labels (clusters)"),
]
# The job pipeline writes every series in its input's own format (DICOM -> derived DICOM, NIfTI ->
# NIfTI, npz -> npz, PNG -> PNG); it refuses other choices, so the wizard offers only this one.
FORMATS = [("auto", "As input (DICOM → DICOM, NIfTI → NIfTI, npz → npz, PNG → PNG)")]


def parse_epsilon(text: str) -> float:
    """"8/255", "0.03", "8" (= 8/255) -> a normalized budget in (0, 1], by the core's one parser."""
    from salm_desktop.core.options import parse_epsilon as parse_budget

    fraction, _, _ = parse_budget(text, "the budget")
    if fraction is None:
        raise ValueError(f"'{text}' is a budget in native units, not a fraction of the window")
    return fraction


def _engine_default(name: str, fallback: Any) -> Any:
    """The engine's own default for a setting, so that the wizard never disagrees with the CLI."""
    try:
        from salm_desktop.core.protect.settings import ProtectSettings

        return getattr(ProtectSettings(), name)
    except Exception:
        return fallback


ADVANCED_OPTIONS = ("noise_cap", "extra_rounds", "stop_loss", "step_size", "mask_scope", "local_mean_free",
                    "surrogate_lr", "init", "robust", "precision", "recalibrate_norms", "early_exit_loss")
# the schema's rare options (core/option_schema.py), as typed on the command line; "" = the engine's default
_AdvancedOptions = dataclasses.make_dataclass("_AdvancedOptions", [(key, str, field(default="")) for key in ADVANCED_OPTIONS])


@dataclass
class WizardSettings(_AdvancedOptions):
    """Everything the Settings page edits; persisted through QSettings as a flat dict."""

    label_source: str = "auto"  # auto | folders | npz | csv | clusters
    csv_path: str = ""
    n_clusters: int = 2
    method: str = _engine_default("method", "salm")
    epsilon: float = _engine_default("epsilon", 8 / 255)
    epsilon_native: float = 0.0  # > 0: the budget in native units ("12HU"), used instead of epsilon
    epsilon_unit: str = ""
    mask_ratio: float = 0.0  # 0 = auto: each variant's own (class texture 0.3, min-min 0.2); spin boxes show "auto"
    device: str = "auto"
    seed: int = 0
    # advanced
    pgd_steps: int = _engine_default("pgd_steps", 20)
    train_steps: int = _engine_default("train_steps", 10)
    max_rounds: int = _engine_default("max_rounds", 10)
    stop_accuracy: float = _engine_default("stop_accuracy", 0.99)
    foreground: bool = _engine_default("foreground", False)
    batch_size: int = _engine_default("batch_size", 64)
    surrogate: str = _engine_default("surrogate", "auto")
    recompute_mask: str = str(_engine_default("recompute_mask", "never"))
    # export
    output_format: str = "auto"
    report: bool = True
    splits: str = "train"

    def loader_labels(self) -> str | None:
        """The ``labels`` argument of ``load_paths``."""
        if self.label_source == "auto":
            return None
        if self.label_source == "csv":
            return f"csv:{self.csv_path}" if self.csv_path else None
        if self.label_source == "clusters":
            return "none"
        return self.label_source

    def study_labels(self) -> str | None:
        """The ``labels`` argument the wizard loads a study with: as ``loader_labels``, except that
        with pseudo-labels the study's own labels are still read, so that the Load page can show them
        and warn that they are not used (the engine replaces them with clusters either way)."""
        return None if self.label_source == "clusters" else self.loader_labels()

    def options(self) -> dict[str, Any]:
        """The settings as options of the one schema (core/option_schema.py), as the CLI and TOML give them."""
        native = f"{self.epsilon_native!r}{self.epsilon_unit or 'native'}" if self.epsilon_native > 0 else None
        values: dict[str, Any] = {
            "method": self.method, "epsilon": native or float(self.epsilon), "mask_ratio": float(self.mask_ratio) if self.mask_ratio > 0 else "auto",
            "device": self.device, "seed": int(self.seed), "pgd_steps": int(self.pgd_steps),
            "train_steps": int(self.train_steps), "max_rounds": int(self.max_rounds),
            "stop_accuracy": float(self.stop_accuracy), "foreground": bool(self.foreground),
            "batch_size": int(self.batch_size), "surrogate": self.surrogate, "recompute_mask": self.recompute_mask,
            "labels": f"clusters:{int(self.n_clusters)}" if self.label_source == "clusters" else self.loader_labels(),
        }
        values.update({key: getattr(self, key) for key in ADVANCED_OPTIONS if str(getattr(self, key)).strip()})
        return values

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def copy(self) -> "WizardSettings":
        return dataclasses.replace(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WizardSettings":
        """Tolerant: unknown keys ignored, wrong types fall back to the default."""
        defaults = cls()
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            default = getattr(defaults, f.name)
            raw = data[f.name]
            try:
                if isinstance(default, bool):
                    value: Any = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
                elif isinstance(default, int):
                    value = int(float(raw))
                elif isinstance(default, float):
                    value = float(raw)
                else:
                    value = str(raw)
            except (TypeError, ValueError):
                continue
            values[f.name] = value
        settings = cls(**values)
        if settings.method not in {m for m, _ in METHODS}:
            settings.method = defaults.method
        if settings.label_source not in {k for k, _ in LABEL_SOURCES}:
            settings.label_source = defaults.label_source
        if not (0 < settings.epsilon <= 1):
            settings.epsilon = defaults.epsilon
        if not (0 <= settings.mask_ratio <= 1):
            settings.mask_ratio = defaults.mask_ratio
        for key in ADVANCED_OPTIONS:
            if option_error(key, getattr(settings, key)):
                setattr(settings, key, "")
        return settings


def option_error(key: str, text: str) -> str:
    """"" when ``text`` is a usable value of the schema option ``key`` (or empty: the default), else why not."""
    from salm_desktop.core.option_schema import OPTIONS, OptionError

    if not str(text).strip():
        return ""
    try:
        OPTIONS[key].parse(text, key.replace("_", "-"))
    except OptionError as exc:
        return str(exc)
    return ""


def option_help(key: str) -> str:
    from salm_desktop.core.option_schema import OPTIONS

    return OPTIONS[key].help


def build_protect_settings(settings: WizardSettings) -> "ProtectSettings":
    """A core ``ProtectSettings`` from the wizard settings, through the same parser as the CLI and TOML."""
    from salm_desktop.core.options import build_settings

    return build_settings(settings.options())[0]


# -- load page -------------------------------------------------------------------------------------

SERIES_COLUMNS = ["Series", "Type", "Modality", "Description", "Images", "Size", "Labels", "Warnings"]


def _shape_text(series: Series) -> str:
    shape = series.sample_shape
    if shape is None:
        shapes = sorted({tuple(s.shape) for s in series.samples})
        return "mixed: " + ", ".join("×".join(map(str, s)) for s in shapes[:3]) + ("…" if len(shapes) > 3 else "")
    text = "×".join(str(d) for d in shape)
    dims = (series.meta or {}).get("dims")
    if dims:
        text += "  (" + " × ".join(str(d) for d in dims) + ")"
    return text


def series_name(series: Series) -> str:
    """The one way a series is named everywhere in the wizard: its modality, then its full id
    (the id alone in the Load table's Series column, beside a Modality column)."""
    return f"{series.modality} {series.id}".strip()


def labels_text(series: Series) -> str:
    counts = series.label_counts()
    if list(counts) == ["unlabelled"]:
        return "none"
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def has_labels(series: Series) -> bool:
    return any(s.label is not None for s in series.samples)


def effective_label_mode(settings: "WizardSettings", series: Sequence[Series]) -> str:
    """"given" or "clusters": what the engine will use for these series with these settings.

    Automatic means the study's own labels when every series has them, else pseudo-labels.
    """
    if settings.label_source == "clusters":
        return "clusters"
    if settings.label_source == "auto" and series and not all(has_labels(s) for s in series):
        return "clusters"
    return "given"


def for_run(settings: "WizardSettings", series: Sequence[Series]) -> "WizardSettings":
    """The snapshot a run uses: automatic labels and device resolved, so that the log, the summary
    and the report say what really ran."""
    run = settings.copy()
    if effective_label_mode(settings, series) == "clusters" and run.label_source == "auto":
        run.label_source = "clusters"
    run.device = resolved_device(settings.device)
    return run


def labels_summary(settings: "WizardSettings", series: Sequence[Series]) -> tuple[str, str]:
    """(what the protection will use as labels, a warning when the setting does not fit the study)."""
    if not series:
        return "", ""
    labelled = [s for s in series if has_labels(s)]
    classes = sorted({str(x.label) for s in labelled for x in s.samples if x.label is not None})
    mode = effective_label_mode(settings, series)
    if mode == "clusters":
        text = f"Labels: pseudo-labels ({settings.n_clusters} intensity clusters)"
        if settings.label_source == "auto":
            text += ", because the study has no labels of its own"
    else:
        source = dict(LABEL_SOURCES).get(settings.label_source, settings.label_source)
        text = f"Labels: the study's own ({len(classes)} classes: {', '.join(classes[:8])}; {source})"
    warning = ""
    if settings.label_source == "clusters" and labelled:
        warning = (f"This study has its own labels ({len(classes)} classes) but the settings use pseudo-labels: "
                   "choose Automatic in step 2 to protect with the real labels.")
    elif settings.label_source in ("npz", "folders", "csv") and len(labelled) < len(series):
        missing = [series_name(s) for s in series if not has_labels(s)]
        warning = (f"The label source '{dict(LABEL_SOURCES).get(settings.label_source)}' gives no labels for "
                   f"{', '.join(missing[:3])}{'…' if len(missing) > 3 else ''}: choose Automatic or pseudo-labels.")
    return text, warning


def series_rows(result: LoadResult | None) -> list[list[str]]:
    if result is None:
        return []
    rows = []
    for s in result.series:
        rows.append([
            s.id, s.kind, s.modality, s.description or "", str(len(s.samples)), _shape_text(s),
            labels_text(s), "; ".join(s.warnings),
        ])
    return rows


def skipped_rows(result: LoadResult | None) -> list[list[str]]:
    if result is None:
        return []
    return [[str(s.path), s.reason] for s in result.skipped]


def load_summary(result: LoadResult | None) -> str:
    if result is None:
        return "Nothing loaded yet. Drop files or folders here, or use Add files / Add folder."
    n_samples = sum(len(s.samples) for s in result.series)
    text = f"{len(result.series)} series, {n_samples} images"
    if result.skipped:
        text += f", {len(result.skipped)} skipped (see below)"
    return text


# -- settings page ---------------------------------------------------------------------------------

def budget_texts(epsilon: float, series: Sequence[Series]) -> tuple[str, str]:
    """("±0.0314 of the intensity window (8/255)", "±63 HU (CT) · ±12.3 (MR 4f2a…)")."""
    normalized = f"±{epsilon:.4f} of each series' intensity window ({epsilon_text(epsilon)})"
    natives: list[str] = []
    seen: set[str] = set()
    for s in series:
        try:
            intensity: IntensityMap = s.intensity
            native = intensity.delta_to_native(epsilon)
        except Exception:  # a lazy intensity map that cannot be computed: show nothing for it
            continue
        unit = f" {intensity.unit}" if intensity.unit else ""
        text = f"±{native:.3g}{unit} ({series_name(s)}, window {intensity.low:.4g}..{intensity.high:.4g}{unit})"
        key = f"{native:.3g}{unit}{s.modality}"
        if key in seen:
            continue
        seen.add(key)
        natives.append(text)
    native_text = "; ".join(natives[:6]) + ("; …" if len(natives) > 6 else "") if natives else "(load a study first)"
    return normalized, native_text


def resolved_device(name: str) -> str:
    """The device the engine will really use for ``name`` ("auto" -> "cpu", "cuda", "mps"), by the
    core's own rule; the name itself when it cannot be resolved (the engine then reports why)."""
    try:
        from salm_desktop.core.protect.device import resolve_device

        return str(resolve_device(name))
    except Exception:
        return name


def device_text(name: str) -> str:
    """"CPU", "CUDA 0: NVIDIA H200", "Apple MPS": what a person calls the device that will run."""
    device = resolved_device(name)
    if device == "cpu":
        return "CPU"
    if device == "mps":
        return "Apple MPS"
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        try:
            import torch

            return f"CUDA {index}: {torch.cuda.get_device_name(index)}"
        except Exception:
            return f"CUDA {index}"
    return device


def device_choices() -> list[tuple[str, str]]:
    """[(device name for the engine, label)] — lists the CUDA GPUs by name when present; the automatic
    choice names the device it resolves to on this computer."""
    choices = [("auto", f"Automatic (here: {device_text('auto')})"), ("cpu", "CPU")]
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                choices.append((f"cuda:{i}", f"CUDA {i}: {torch.cuda.get_device_name(i)}"))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            choices.append(("mps", "Apple MPS"))
    except Exception:
        pass
    return choices


@dataclass
class WizardState:
    """What the steps hand to each other."""

    inputs: list[Path] = field(default_factory=list)
    load_result: LoadResult | None = None
    excluded: set[str] = field(default_factory=set)  # series ids the user unticked
    protect_result: ProtectResult | None = None
    protect_settings: WizardSettings | None = None  # the settings of the run behind protect_result
    protected_ids: list[str] = field(default_factory=list)
    export_result: JobResult | None = None

    @staticmethod
    def close_result(result: ProtectResult) -> None:
        """Free a protection result's temporary stores (the wizard owns the results it made)."""
        try:
            result.close()
        except OSError:  # a temporary store already gone: nothing left to free
            pass

    @property
    def series(self) -> list[Series]:
        return list(self.load_result.series) if self.load_result else []

    @property
    def selected_series(self) -> list[Series]:
        return [s for s in self.series if s.id not in self.excluded]

    def drop_unreadable(self, protected: Sequence[Series], asked: Sequence[str], skipped: Sequence[Any]) -> None:
        """After a protection that skipped unreadable files: each series asked for becomes the copy that
        was protected (without those files), one that lost every file leaves the study, and the files
        join the study's skipped list, so that review and export see what was protected."""
        if self.load_result is None or not skipped:
            return
        kept = {s.id: s for s in protected}
        series = [kept.get(s.id, s) for s in self.load_result.series if s.id in kept or s.id not in set(asked)]
        self.load_result = dataclasses.replace(self.load_result, series=series,
                                               skipped=[*self.load_result.skipped, *skipped])

    def series_by_id(self, sid: str) -> Series | None:
        for s in self.series:
            if s.id == sid:
                return s
        return None

    def default_excluded(self) -> set[str]:
        """npz splits other than train are left out by default (they are exported unchanged)."""
        return {s.id for s in self.series if s.kind == "npz" and (s.meta or {}).get("split", "train") != "train"}

    def export_load_result(self) -> LoadResult | None:
        """What the export job gets: the series the user kept, plus every npz split (the splits
        that are not protected are copied unchanged)."""
        if self.load_result is None:
            return None
        kept = [s for s in self.series if s.id not in self.excluded or s.kind == "npz"]
        return LoadResult(series=kept, skipped=list(self.load_result.skipped))

    def selected_splits(self) -> tuple[str, ...]:
        splits = sorted({str((s.meta or {}).get("split")) for s in self.selected_series
                         if s.kind == "npz" and (s.meta or {}).get("split")})
        return tuple(splits) or ("train",)
