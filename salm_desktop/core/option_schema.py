"""The one table of user-facing protection settings: CLI flags, TOML keys and the wizard all read it.

Each :class:`Option` names the ``ProtectSettings`` fields it sets, how a loosely typed value (a CLI
string, a TOML number, a GUI text) is parsed into them, its help text and choices. ``options.py``
builds argparse arguments and ``ProtectSettings`` from it; ``gui/model.py`` maps the wizard's fields
onto its keys. A test checks that every ``ProtectSettings`` field is set by exactly one option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from salm_desktop.core.protect.settings import PRECISIONS

NATIVE_UNITS = {"hu": "HU", "native": "", "units": ""}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class OptionError(ValueError):
    """An option value the user gave that cannot be used."""


Parser = Callable[[Any, str], dict[str, Any]]


@dataclass(frozen=True)
class Option:
    key: str  # TOML / GUI key; the CLI flag is --key-with-dashes
    parse: Parser  # (value, name for messages) -> ProtectSettings field values
    fields: tuple[str, ...]  # the ProtectSettings fields it sets
    help: str
    choice_names: tuple[str, ...] | str = ()  # or the name of a tuple in protect/settings.py (read when needed)
    metavar: str | None = None
    advanced: bool = False  # a rare, measured knob: the GUI shows it in its Advanced group

    @property
    def choices(self) -> tuple[str, ...]:
        return _names(self.choice_names)

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


# -- value parsers -----------------------------------------------------------------------------------
def parse_fraction(text: Any, name: str = "value") -> float:
    """'8/255' -> 0.0313..., '0.03' -> 0.03, 0.03 -> 0.03."""
    raw = str(text).strip()
    try:
        if "/" in raw:
            num, den = raw.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(raw)
    except (ValueError, ZeroDivisionError):
        raise OptionError(f"{name} {text!r} is not a number or a fraction like 8/255") from None
    if not math.isfinite(value):
        raise OptionError(f"{name} {text!r} is not a finite number")
    return value


def parse_epsilon(text: Any, name: str = "epsilon") -> tuple[float | None, float | None, str]:
    """A budget -> ``(fraction of the window, native value, native unit)``; one of the first two is None.

    ``8/255`` or ``0.03``: a fraction of each series' window (the reader's window; 8-bit: 0..255);
    a plain number above 1 (``8``) counts in 255ths of the window, as a reader of 8-bit images means it.
    ``12HU`` / ``12 HU``: 12 Hounsfield units on every CT series (refused for data in other units);
    ``30native``: 30 in the series' own (arbitrary) units.
    """
    raw = str(text).strip()
    lower = raw.lower()
    for suffix, unit in NATIVE_UNITS.items():
        if lower.endswith(suffix):
            number = raw[: len(raw) - len(suffix)].strip()
            try:
                value = float(number)
            except ValueError:
                raise OptionError(f"{name} {text!r}: expected a number before {suffix!r}, e.g. 12HU") from None
            if not math.isfinite(value) or value <= 0:
                raise OptionError(f"{name} {text!r}: a budget in native units must be a positive number")
            return None, value, unit
    value = parse_fraction(raw, name)
    if value > 1 and "/" not in raw:
        value /= 255.0
    if not 0 < value <= 1:
        raise OptionError(f"{name} {text!r}: a fraction of the window must be in (0, 1], e.g. 8/255 (or 8 for "
                          f"8/255); for native units write e.g. 12HU")
    return value, None, ""


def parse_label_spec(spec: str | None, name: str = "--labels") -> tuple[str | None, str, int | None]:
    """A label source -> (loader labels source, engine label mode, number of clusters).

    ``None`` (auto), ``folders``, ``npz``, ``csv:FILE`` and ``none`` go to the loader;
    ``clusters`` / ``clusters:K`` asks the engine for K pseudo-labels (Unlearnable Clusters).
    """
    if spec is None or str(spec).strip() == "":
        return None, "given", None
    spec = str(spec).strip()
    if spec.startswith("clusters"):
        _, _, k = spec.partition(":")
        try:
            n = int(k) if k else 2
        except ValueError:
            raise OptionError(f"{name} {spec!r}: expected clusters:K with an integer K >= 2") from None
        if n < 2:
            raise OptionError(f"{name} {spec!r}: K must be at least 2")
        return None, "clusters", n
    return spec, "given", None


def _word(value: Any) -> str:
    return str(value).strip().lower()


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    word = _word(value)
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise OptionError(f"{name} {value!r}: expected true or false")


def _names(names: tuple[str, ...] | str) -> tuple[str, ...]:
    """Choices listed here, or named in protect/settings.py (imported late: it pulls in torch)."""
    if isinstance(names, str):
        from salm_desktop.core.protect import settings

        return tuple(getattr(settings, names))
    return names


def choice(field: str, names: tuple[str, ...] | str) -> Parser:
    def parse(value: Any, name: str) -> dict[str, Any]:
        word, choices = str(value).strip(), _names(names)
        if word not in choices:
            raise OptionError(f"{name} {value!r}: choose one of {', '.join(choices)}")
        return {field: word}
    return parse


def integer(field: str, minimum: int | None = None) -> Parser:
    def parse(value: Any, name: str) -> dict[str, Any]:
        try:
            number = int(value) if not isinstance(value, float) or value.is_integer() else None
        except (TypeError, ValueError):
            number = None
        if number is None or isinstance(value, bool):
            raise OptionError(f"{name} {value!r} is not an integer")
        if minimum is not None and number < minimum:
            raise OptionError(f"{name} {value!r}: must be at least {minimum}")
        return {field: number}
    return parse


def number(field: str, optional: bool = False, none_words: tuple[str, ...] = ("", "none", "off")) -> Parser:
    """A fraction or a decimal; ``optional``: one of ``none_words`` (or None) sets None."""
    def parse(value: Any, name: str) -> dict[str, Any]:
        if optional and (value is None or _word(value) in none_words):
            return {field: None}
        return {field: parse_fraction(value, name)}
    return parse


def flag(field: str) -> Parser:
    return lambda value, name: {field: _bool(value, name)}


def auto_or_flag(field: str) -> Parser:
    """"auto" (the engine decides per series or method) or a boolean."""
    return lambda value, name: {field: "auto" if _word(value) == "auto" else _bool(value, name)}


def _budget(value: Any, name: str) -> dict[str, Any]:
    fraction, native, unit = parse_epsilon(value, name)
    if fraction is not None:
        return {"epsilon": fraction}
    return {"epsilon_native": native, "epsilon_unit": unit}


def _labels(value: Any, name: str) -> dict[str, Any]:
    _, mode, clusters = parse_label_spec(value, name)
    return {"labels": mode} if clusters is None else {"labels": mode, "n_clusters": clusters}


def _recompute_mask(value: Any, name: str) -> dict[str, Any]:
    if isinstance(value, bool) or _word(value) in TRUE_WORDS + FALSE_WORDS:
        return {"recompute_mask": "step" if _bool(value, name) else "never"}
    return choice("recompute_mask", "MASK_MODES")(_word(value), name)


def _robust(value: Any, name: str) -> dict[str, Any]:
    word = _word(value)
    if word == "pgd":
        return {"robust": "pgd"}
    if word == "full":
        return {"robust": True}
    try:
        return {"robust": _bool(value, name)}
    except OptionError:
        raise OptionError(f"{name} {value!r}: choose off, full or pgd") from None


SURROGATES = ("auto", "cifar_resnet", "small_cnn", "resnet18", "densenet121")

SCHEMA: tuple[Option, ...] = (
    Option("method", choice("method", "METHODS"), ("method",),
           "salm (default); em, random and the published peers (docs/algorithm.md)", "METHODS"),
    Option("epsilon", _budget, ("epsilon", "epsilon_native", "epsilon_unit"),
           "budget: a fraction of the reader's window (the file's own window; CT without one: W400; 8-bit: "
           "0..255), e.g. 8/255, 0.03 or 8 (= 8/255), or native units, e.g. 12HU", metavar="BUDGET"),
    Option("noise_cap", number("noise_cap", optional=True), ("noise_cap",),
           "also cap the budget at this fraction of each series' own noise SD, e.g. 0.5", metavar="FRACTION"),
    Option("mask_ratio", number("mask_ratio", optional=True, none_words=("", "auto")), ("mask_ratio",),
           "fraction of pixels SALM may change; auto (default): 0.3 for the class texture on 2D 8-bit images, "
           "0.2 for min-min on CT, MR and 3D; em always uses 1", metavar="FRACTION"),
    Option("labels", _labels, ("labels", "n_clusters"),
           "folders | npz | csv:FILE | clusters:K (pseudo-labels; needed for unlabelled DICOM/NIfTI)", metavar="SOURCE"),
    Option("device", lambda value, name: {"device": str(value).strip()}, ("device",),
           "auto | cpu | cuda | cuda:N | mps"),
    Option("seed", integer("seed"), ("seed",), "random seed (same seed, same device: same output)"),
    Option("max_rounds", integer("max_rounds", 1), ("max_rounds",), "upper bound on min-min rounds"),
    Option("pgd_steps", integer("pgd_steps", 1), ("pgd_steps",), "perturbation steps per round", advanced=True),
    Option("train_steps", integer("train_steps", 0), ("train_steps",), "surrogate SGD steps per round", advanced=True),
    Option("stop_accuracy", number("stop_accuracy"), ("stop_accuracy",),
           "stop when the surrogate reaches this accuracy on the perturbed data (eval mode)", advanced=True),
    Option("extra_rounds", integer("extra_rounds", 0), ("extra_rounds",),
           "rounds to keep optimizing after the stop accuracy is reached", advanced=True),
    Option("stop_loss", number("stop_loss", optional=True), ("stop_loss",),
           "also require the surrogate's mean loss to be at most this (none: no loss criterion)", advanced=True),
    Option("step_size", number("step_size", optional=True), ("step_size",),
           "perturbation step (none: epsilon / 10)", advanced=True),
    Option("recompute_mask", _recompute_mask, ("recompute_mask",),
           "when the SALM mask is recomputed: step | round | never", "MASK_MODES", advanced=True),
    Option("mask_scope", choice("mask_scope", "MASK_SCOPES"), ("mask_scope",),
           "whose saliency ranks the mask: sample | class | class_from_start", "MASK_SCOPES", advanced=True),
    Option("foreground", flag("foreground"), ("foreground",),
           "restrict the mask to the body (foreground): true | false", advanced=True),
    Option("local_mean_free", auto_or_flag("local_mean_free"), ("local_mean_free",),
           "remove the noise's local mean: auto (on for HU data) | true | false", advanced=True),
    Option("surrogate", choice("surrogate", SURROGATES), ("surrogate",), "surrogate classifier", SURROGATES,
           advanced=True),
    Option("surrogate_lr", number("surrogate_lr"), ("surrogate_lr",), "surrogate learning rate", advanced=True),
    Option("batch_size", integer("batch_size", 1), ("batch_size",), "samples per batch", advanced=True),
    Option("init", choice("init", ("zero", "random")), ("init",), "initial noise: zero | random", ("zero", "random"),
           advanced=True),
    Option("robust", _robust, ("robust",),
           "optimize over random blur/median/shift/noise/quantize: off | full | pgd", ("off", "full", "pgd"),
           advanced=True),
    Option("precision", choice("precision", PRECISIONS), ("precision",),
           "surrogate arithmetic: " + " | ".join(PRECISIONS), PRECISIONS, advanced=True),
    Option("recalibrate_norms", auto_or_flag("recalibrate_norms"), ("recalibrate_norms",),
           "re-estimate the surrogate's batch-norm statistics each round: auto (salm's min-min) | true | false",
           advanced=True),
    Option("early_exit_loss", number("early_exit_loss", optional=True), ("early_exit_loss",),
           "a sample whose loss is at most this skips the rest of the round's steps (none: never)", advanced=True),
)

OPTIONS: dict[str, Option] = {o.key: o for o in SCHEMA}
