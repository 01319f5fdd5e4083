"""User-facing option values -> ProtectSettings, for the CLI, batch configs and the wizard alike.

The options themselves (keys, parsers, help) are the table in :mod:`option_schema`; this module
turns that table into argparse arguments, a ``ProtectSettings`` and the settings fingerprint that
single jobs, batch journals and the GUI queue share. Each parser raises :class:`OptionError` (a
ValueError) with a one-line message naming the option.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import TYPE_CHECKING, Any, Mapping

from salm_desktop.core.option_schema import (
    NATIVE_UNITS,
    OPTIONS,
    SCHEMA,
    OptionError,
    parse_epsilon,
    parse_fraction,
    parse_label_spec,
)

if TYPE_CHECKING:
    from salm_desktop.core.protect.settings import ProtectSettings

__all__ = ["NATIVE_UNITS", "OPTIONS", "SCHEMA", "OptionError", "add_setting_arguments", "build_settings",
           "options_from_args", "parse_epsilon", "parse_fraction", "parse_label_spec", "resolved_settings_dict",
           "settings_fingerprint"]


def build_settings(options: Mapping[str, Any]) -> tuple["ProtectSettings", str | None]:
    """A ProtectSettings from loosely typed options (strings from a CLI or TOML are fine).

    Keys are those of :data:`option_schema.SCHEMA`; a value of None means "the engine's default".
    Returns ``(settings, loader_labels)`` (the ``labels`` argument of ``load_paths``).
    """
    from salm_desktop.core.protect.settings import ProtectSettings

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise OptionError(f"unknown setting(s): {', '.join(unknown)} (known: {', '.join(sorted(OPTIONS))})")
    loader_labels, _, _ = parse_label_spec(options.get("labels"), "labels")
    values: dict[str, Any] = {"labels": "given"}
    for key, value in options.items():
        if value is not None:
            values.update(OPTIONS[key].parse(value, key.replace("_", "-")))
    try:
        return ProtectSettings(**values), loader_labels
    except (TypeError, ValueError) as exc:
        raise OptionError(str(exc)) from None


# -- argparse ----------------------------------------------------------------------------------------
def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per option of the schema; the rare ones in an "advanced settings" group.

    Every default is None (the engine's default), so that a flag not given never overrides a value.
    """
    advanced = parser.add_argument_group("advanced settings", "measured knobs of the optimisation (docs/algorithm.md)")
    for option in SCHEMA:
        target = advanced if option.advanced else parser
        target.add_argument(option.flag, dest=option.key, default=None, metavar=option.metavar or option.key.upper(),
                            help=option.help)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The schema's options from parsed arguments (see :func:`add_setting_arguments`)."""
    return {o.key: getattr(args, o.key) for o in SCHEMA if getattr(args, o.key, None) is not None}


# -- fingerprint -------------------------------------------------------------------------------------
def resolved_settings_dict(settings: "ProtectSettings", loader_labels: str | None = None) -> dict[str, Any]:
    """The settings as the engine will really run them: the device resolved ("auto" -> "cpu"), the mask
    ratio em really uses, and the loader's label source only where labels are used at all."""
    from salm_desktop.core.protect.device import resolve_device

    values = settings.as_dict()
    try:
        values["device"] = str(resolve_device(settings.device))
    except (RuntimeError, ValueError):
        pass  # a device that does not exist here: the engine reports it; the name stands
    # em changes every pixel; salm's None stays None: its variant picks the ratio per series (the summary states it)
    values["mask_ratio"] = settings.mask_ratio if settings.method == "salm" else settings.effective_mask_ratio
    values["loader_labels"] = None if settings.labels == "clusters" else loader_labels
    return values


def settings_fingerprint(document: Mapping[str, Any], length: int = 16) -> str:
    """A short hash of a JSON-able document (settings and what else makes outputs differ)."""
    text = json.dumps(document, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
