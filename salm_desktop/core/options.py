"""User-facing option values -> ProtectSettings, shared by the CLI, batch configs and the GUI.

Each parser raises :class:`OptionError` (a ValueError) with a one-line message naming the option.
"""

from __future__ import annotations

import math
from typing import Any, Mapping


class OptionError(ValueError):
    """An option value the user gave that cannot be used."""


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


NATIVE_UNITS = {"hu": "HU", "native": "", "units": ""}


def parse_epsilon(text: Any, name: str = "epsilon") -> tuple[float | None, float | None, str]:
    """A budget -> ``(fraction of the window, native value, native unit)``; one of the first two is None.

    ``8/255`` or ``0.03``: a fraction of each series' window (the reader's window; 8-bit: 0..255).
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
    if not 0 < value <= 1:
        raise OptionError(f"{name} {text!r}: a fraction of the window must be in (0, 1], e.g. 8/255; "
                          f"for native units write e.g. 12HU")
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


def build_settings(options: Mapping[str, Any]):
    """A ProtectSettings from loosely typed options (strings from a CLI or TOML are fine).

    Recognised keys: method, epsilon (8/255, 0.03 or 12HU, see :func:`parse_epsilon`), noise_cap, mask_ratio, labels (a label spec), device, seed, max_rounds,
    batch_size, foreground, recompute_mask. Returns ``(settings, loader_labels)``.
    """
    from salm_desktop.core.protect import ProtectSettings

    known = {"method", "epsilon", "mask_ratio", "labels", "device", "seed", "max_rounds", "batch_size",
             "foreground", "recompute_mask", "noise_cap"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise OptionError(f"unknown setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    loader_labels, label_mode, clusters = parse_label_spec(options.get("labels"), "labels")
    values: dict[str, Any] = {"labels": label_mode}
    if clusters is not None:
        values["n_clusters"] = clusters
    for key in ("method", "device", "recompute_mask"):
        if options.get(key) is not None:
            values[key] = options[key]
    if options.get("epsilon") is not None:
        fraction, native, unit = parse_epsilon(options["epsilon"])
        if fraction is not None:
            values["epsilon"] = fraction
        else:
            values["epsilon_native"], values["epsilon_unit"] = native, unit
    if options.get("noise_cap") is not None:
        values["noise_cap"] = parse_fraction(options["noise_cap"], "noise-cap")
    if options.get("mask_ratio") is not None:
        values["mask_ratio"] = parse_fraction(options["mask_ratio"], "mask-ratio")
    for key in ("seed", "max_rounds", "batch_size"):
        if options.get(key) is not None:
            try:
                values[key] = int(options[key])
            except (TypeError, ValueError):
                raise OptionError(f"{key} {options[key]!r} is not an integer") from None
    if options.get("foreground") is not None:
        values["foreground"] = bool(options["foreground"])
    try:
        return ProtectSettings(**values), loader_labels
    except (TypeError, ValueError) as exc:
        raise OptionError(str(exc)) from None
