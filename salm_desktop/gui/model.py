"""The wizard's state and presentation logic, without widgets (testable without a display).

Pages show what these functions return and hand user input back to them; every real action goes
through :mod:`salm_desktop.gui.services`, which calls the same core functions as the CLI.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence


from salm_desktop.core.model import IntensityMap, LoadResult, Series

if TYPE_CHECKING:
    from salm_desktop.core.protect.settings import ProtectSettings

METHODS = [("salm", "SALM (sparse local mask)"), ("em", "EM (full image, baseline)"), ("random", "Random noise (baseline)")]
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


def epsilon_text(value: float) -> str:
    """0.0313... -> "8/255" when it is a whole number of 255ths, else a decimal."""
    k = value * 255.0
    if abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}/255"
    return f"{value:.4g}"


def _engine_default(name: str, fallback: Any) -> Any:
    """The engine's own default for a setting, so that the wizard never disagrees with the CLI."""
    try:
        from salm_desktop.core.protect.settings import ProtectSettings

        return getattr(ProtectSettings(), name)
    except Exception:
        return fallback


@dataclass
class WizardSettings:
    """Everything the Settings page edits; persisted through QSettings as a flat dict."""

    label_source: str = "auto"  # auto | folders | npz | csv | clusters
    csv_path: str = ""
    n_clusters: int = 2
    method: str = _engine_default("method", "salm")
    epsilon: float = _engine_default("epsilon", 8 / 255)
    epsilon_native: float = 0.0  # > 0: the budget in native units ("12HU"), used instead of epsilon
    epsilon_unit: str = ""
    mask_ratio: float = _engine_default("mask_ratio", 0.2)
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
    # the schema's rare options (core/option_schema.py), as typed; "" = the engine's default
    noise_cap: str = ""
    extra_rounds: str = ""
    stop_loss: str = ""
    step_size: str = ""
    mask_scope: str = ""
    local_mean_free: str = ""
    surrogate_lr: str = ""
    init: str = ""
    robust: str = ""
    precision: str = ""
    early_exit_loss: str = ""
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
            "method": self.method, "epsilon": native or float(self.epsilon), "mask_ratio": float(self.mask_ratio),
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
        if not (0 < settings.mask_ratio <= 1):
            settings.mask_ratio = defaults.mask_ratio
        for key in ADVANCED_OPTIONS:
            if option_error(key, getattr(settings, key)):
                setattr(settings, key, "")
        return settings


ADVANCED_OPTIONS = ("noise_cap", "extra_rounds", "stop_loss", "step_size", "mask_scope", "local_mean_free",
                    "surrogate_lr", "init", "robust", "precision", "early_exit_loss")


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


# -- protect page ----------------------------------------------------------------------------------

def duration_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


ROUND_LOG = re.compile(r"round (\d+), surrogate accuracy on perturbed data ([0-9.]+), loss ([0-9.eE+-]+)")


@dataclass
class RoundPoint:
    round: int
    accuracy: float
    loss: float
    at_s: float  # seconds since the run started when the round ended


@dataclass
class ProtectStatus:
    """What the Protect page shows, folded from progress events.

    The time left comes from measured rounds only: (time since the samples were read) / (rounds
    finished) x (rounds still allowed). Before the first round has finished there is no estimate.
    It is an upper bound: the engine stops early once the surrogate reaches the stop accuracy.
    """

    fraction: float = 0.0
    message: str = ""
    round: int | None = None
    accuracy: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0
    per_series: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    max_rounds: int | None = None
    history: list[RoundPoint] = field(default_factory=list)  # one point per finished round
    rounds_started_s: float | None = None  # when the first round began (the samples were read)
    reading_until_s: float | None = None

    def update(self, event: Any, series_ids: Sequence[str] = (), now_s: float | None = None) -> None:
        """``now_s``: seconds since the run started (the page's clock); the event's own elapsed time
        when not given."""
        now = event.elapsed_s if now_s is None else now_s
        if event.stage == "log":
            if event.message:
                self.log.append(event.message)
                match = ROUND_LOG.search(event.message)
                if match:
                    self._round_finished(int(match.group(1)), float(match.group(2)), float(match.group(3)), now)
            return
        self.fraction = event.fraction
        self.elapsed_s = now
        if event.message:
            self.message = event.message
        metrics = event.metrics or {}
        if metrics.get("round") is not None:
            self.round = int(metrics["round"])
            if self.round == 0:  # still reading samples: round 1 (its training first) starts after this
                self.reading_until_s, self.rounds_started_s = now, None
            elif self.rounds_started_s is None:
                self.rounds_started_s = self.reading_until_s if self.reading_until_s is not None else now
        for key in ("surrogate_accuracy", "accuracy", "train_accuracy"):
            if metrics.get(key) is not None:
                self.accuracy = float(metrics[key])
                break
        self.eta_s = self._eta(now)
        if event.message == "done":
            self.eta_s = 0.0
        sid = metrics.get("series") or metrics.get("series_id")
        if sid is not None and "series_fraction" in metrics:
            self.per_series[str(sid)] = float(metrics["series_fraction"])
        elif sid is not None:
            self.per_series[str(sid)] = event.fraction
        elif series_ids:
            for s in series_ids:  # the engine protects all series together: they advance together
                self.per_series[s] = event.fraction

    def _round_finished(self, rnd: int, accuracy: float, loss: float, now: float) -> None:
        self.history = [p for p in self.history if p.round != rnd]
        self.history.append(RoundPoint(rnd, accuracy, loss, now))
        self.eta_s = self._eta(now)

    def seconds_per_round(self) -> float | None:
        if not self.history or self.rounds_started_s is None:
            return None
        last = max(self.history, key=lambda p: p.round)
        spent = last.at_s - self.rounds_started_s
        return spent / last.round if spent > 0 and last.round > 0 else None

    def _eta(self, now: float) -> float | None:
        per_round = self.seconds_per_round()
        if per_round is None or self.max_rounds is None:
            return None
        finished = max(p.round for p in self.history)
        in_round = max(0.0, now - max(p.at_s for p in self.history))
        return max(0.0, per_round * (self.max_rounds - finished) - in_round)

    def eta_text(self) -> str:
        if self.eta_s is None:
            return "measuring the first round…" if self.round else "–"
        if self.eta_s == 0:
            return "0 s"
        return f"at most {duration_text(self.eta_s)} (less if the surrogate reaches the stop accuracy sooner)"

    def accuracy_text(self) -> str:
        return "–" if self.accuracy is None else f"{100 * self.accuracy:.1f} %"


def number_with_unit(value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def run_summary_lines(summary: dict[str, Any], unit: str = "") -> list[str]:
    """A protection summary in words and units (for the log and the export page), not a key dump."""
    lines: list[str] = []
    if not summary:
        return lines
    method = {"salm": "SALM", "em": "EM", "random": "random noise"}.get(str(summary.get("method")), summary.get("method"))
    if "method" in summary:
        ratio = summary.get("mask_ratio")
        lines.append(f"Method: {method}" + (f", mask ratio {100 * float(ratio):.0f} % of the pixels" if ratio is not None
                                           and summary.get("method") == "salm" else ""))
    if summary.get("epsilon") is not None:
        eps = float(summary["epsilon"])
        native = summary.get("epsilon_native")
        lines.append(f"Budget: ±{epsilon_text(eps)} of the intensity window"
                     + (f" (±{number_with_unit(float(native), unit)})" if native is not None else ""))
    if summary.get("samples") is not None:
        lines.append(f"Images protected: {summary['samples']}" + (f" in {summary['series']} series" if summary.get("series") else ""))
    if summary.get("rounds") is not None:
        lines.append(f"Rounds: {summary['rounds']}")
    if summary.get("surrogate_accuracy") is not None:
        lines.append(f"Surrogate accuracy on the protected images: {100 * float(summary['surrogate_accuracy']):.1f} %")
    if summary.get("fraction_pixels_changed") is not None:
        lines.append(f"Pixels changed: {100 * float(summary['fraction_pixels_changed']):.1f} %")
    if summary.get("max_abs_change_native") is not None:
        lines.append(f"Largest change of a pixel: {number_with_unit(float(summary['max_abs_change_native']), unit)}")
    if summary.get("seconds") is not None:
        lines.append(f"Protection time: {duration_text(float(summary['seconds']))}")
    if summary.get("device") is not None:
        lines.append(f"Device: {device_label(str(summary['device']))}")
    return lines


def device_label(device: str) -> str:
    """"cpu" -> "CPU", "cuda:0" -> "CUDA 0", "mps" -> "Apple MPS"."""
    if device == "cpu":
        return "CPU"
    if device == "mps":
        return "Apple MPS"
    if device.startswith("cuda"):
        return "CUDA " + (device.split(":")[1] if ":" in device else "0")
    return device


# -- review page -----------------------------------------------------------------------------------

def fidelity_rows(per_series: dict[str, dict[str, float]], units: dict[str, str]) -> list[list[str]]:
    rows = []
    for sid, m in per_series.items():
        unit = units.get(sid, "")
        unit = f" {unit}" if unit else ""
        psnr = m.get("psnr_db", float("nan"))
        rows.append([
            sid,
            "∞" if psnr == float("inf") else f"{psnr:.1f} dB",
            f"{m.get('ssim', float('nan')):.4f}" if "ssim" in m else "–",
            f"{m.get('max_abs_change_native', 0):.4g}{unit}",
            f"{m.get('mean_abs_change_native', 0):.3g}{unit}",
            f"{100 * m.get('fraction_changed', 0):.1f} %",
            f"{100 * m['foreground_fraction_changed']:.1f} %" if "foreground_fraction_changed" in m else "–",
        ])
    return rows


FIDELITY_COLUMNS = ["Series", "PSNR", "SSIM", "Largest change", "Mean change", "Pixels changed", "Changed in body"]


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def default_output_dir(inputs: Sequence[Path | str], parent: Path | str | None = None) -> Path | None:
    """``<name>_protected`` in ``parent`` (the last output folder used; default ``~/salm-out``), never
    inside an input's folder tree (a study's own folder is its tree); a free name (``_2``, ``_3``, …)
    when that folder already exists and is not empty."""
    if not inputs:
        return None
    first = Path(inputs[0])
    name = (first.name.split(".")[0] if first.is_file() else first.name) or "study"
    trees = [Path(p) for p in inputs if Path(p).is_dir()]  # a file input: its folder's siblings are fine
    # the folder that holds a study ("ct_3slice_dcmqi" for ".../ct_3slice_dcmqi/dicom") is its tree too
    trees += [t.parent for t in trees if t.name.lower() in ("dicom", "images", "data", "series")]
    home_default = Path.home() / "salm-out"
    chosen = Path(parent) if parent else home_default
    if any(_inside(chosen, t) for t in trees):
        chosen = home_default
    if any(_inside(chosen, t) for t in trees):  # the inputs are under ~/salm-out itself
        chosen = Path(tempfile.gettempdir()) / "salm-out"
    base = chosen / f"{name}_protected"
    candidate, n = base, 2
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        candidate = base.with_name(f"{base.name}_{n}")
        n += 1
    return candidate


@dataclass
class WizardState:
    """What the steps hand to each other."""

    inputs: list[Path] = field(default_factory=list)
    load_result: LoadResult | None = None
    excluded: set[str] = field(default_factory=set)  # series ids the user unticked
    protect_result: Any = None
    protect_settings: WizardSettings | None = None  # the settings of the run behind protect_result
    protected_ids: list[str] = field(default_factory=list)
    export_result: Any = None

    @staticmethod
    def close_result(result: Any) -> None:
        """Free a protection result's temporary stores (the wizard owns the results it made)."""
        close = getattr(result, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
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


# -- batch -----------------------------------------------------------------------------------------

@dataclass
class BatchItem:
    path: Path
    status: str = "queued"  # queued | running | done | failed | cancelled
    message: str = ""
    out_dir: Path | None = None
    result: Any = None


class BatchQueue:
    """Several folders protected one after another with the same settings (no Qt here).

    Runs through the core's batch runner (``salm_desktop.core.batch.run_batch``, the same as
    ``salm-protect batch``): one job per folder written to ``<output root>/<folder name>``, a failing
    folder is recorded with its one-line reason and the queue goes on; a cancel keeps the series
    already finished, and running the same queue again with the same settings resumes there.
    """

    def __init__(self) -> None:
        self.items: list[BatchItem] = []
        self.summary_path: Path | None = None

    def add(self, path: Path | str) -> bool:
        path = Path(path)
        if any(item.path == path for item in self.items):
            return False
        self.items.append(BatchItem(path))
        return True

    def remove(self, index: int) -> None:
        if 0 <= index < len(self.items) and self.items[index].status != "running":
            del self.items[index]

    def job_names(self) -> list[str]:
        import re

        names: list[str] = []
        for item in self.items:
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", item.path.name).strip("._") or "job"
            while name in names:
                name = f"{name}-{len(names) + 1}"
            names.append(name)
        return names

    def build_config(self, out_root: Path, settings: WizardSettings) -> Any:
        from salm_desktop.core.batch import BatchConfig, BatchJob

        settings = dataclasses.replace(settings, device=resolved_device(settings.device))  # reports name what ran
        protect_settings = build_protect_settings(settings)
        options = {"splits": [x.strip() for x in settings.splits.split(",") if x.strip()] or ["train"],
                   "report": bool(settings.report)}  # the settings themselves are protect_settings
        jobs = [BatchJob(name, [item.path], dict(options), protect_settings, settings.loader_labels())
                for name, item in zip(self.job_names(), self.items)]
        return BatchConfig(path=Path("(wizard batch queue)"), output=Path(out_root), jobs=jobs)

    def run(self, out_root: Path, settings: WizardSettings, progress: Any, run_batch: Any = None) -> list[BatchItem]:
        from salm_desktop.core.progress import Cancelled

        if run_batch is None:
            from salm_desktop.core.batch import run_batch
        config = self.build_config(out_root, settings)
        for item, job in zip(self.items, config.jobs):
            item.status, item.message, item.out_dir = "queued", "", Path(out_root) / job.name

        def on_job(index: int, job: Any) -> None:
            self.items[index].status = "running"
            if progress is not None:
                progress.log(f"Batch {index + 1}/{len(self.items)}: {self.items[index].path.name}")

        try:
            result = run_batch(config, progress, on_job=on_job)
        except Cancelled:
            for item in self.items:
                if item.status == "running":
                    item.status, item.message = "cancelled", "cancelled; finished series are kept for a rerun"
                elif item.status == "queued":
                    item.status, item.message = "cancelled", "not started"
            raise
        self.summary_path = getattr(result, "summary_path", None)
        for item, outcome in zip(self.items, result.jobs):
            item.result = outcome
            item.status = "done" if outcome.status in ("done", "already done") else outcome.status
            item.message = outcome.message or ("finished in an earlier run" if outcome.status == "already done" else "protected")
            if outcome.skipped and item.status == "done":
                item.message = f"{len(outcome.skipped)} skipped: " + "; ".join(
                    f"{Path(k['path']).name}: {k['reason']}" for k in outcome.skipped[:2])
            if outcome.out_dir is not None:
                item.out_dir = Path(outcome.out_dir)
        return self.items

    def rows(self) -> list[list[str]]:
        return [[str(i.path), i.status, str(i.out_dir or ""), i.message] for i in self.items]
