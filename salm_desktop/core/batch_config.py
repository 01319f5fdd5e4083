"""A batch config (TOML, see :mod:`salm_desktop.core.batch` and docs/batch.md) -> jobs with their
settings, checked before anything runs; each job's fingerprint over its resolved settings."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salm_desktop import __version__
from salm_desktop.core.options import OptionError, build_settings, resolved_settings_dict, settings_fingerprint

if TYPE_CHECKING:
    from salm_desktop.core.protect.settings import ProtectSettings

# De-identification options (see docs/deidentification.md); like splits/report they are not engine settings.
DEID_OPTIONS = {"keep_identity", "secret", "allow_burned_in", "retain_dates", "retain_patient_characteristics",
                "retain_device_identity", "clean_descriptions", "retain_safe_private"}
JOB_OPTIONS = {"splits", "report", "threads"} | DEID_OPTIONS | {"pacs_sources", "send"}  # the last two: core/pacs/batch_sources.py; threads: docs/cluster.md


class ConfigError(ValueError):
    """A batch config that cannot be used; the message names the file and the problem."""


class BatchBusy(ConfigError):
    """Another batch holds the lock on the same output root."""


@dataclass
class BatchJob:
    name: str
    inputs: list[Path]
    options: dict[str, Any]  # settings options (see options.build_settings) + splits/report/de-identification
    settings: ProtectSettings | None = None
    loader_labels: str | None = None

    @property
    def splits(self) -> list[str]:
        return list(self.options.get("splits", ["train"]))

    @property
    def report(self) -> bool:
        return bool(self.options.get("report", True))

    @property
    def threads(self) -> int | None:
        """Torch threads per unit (None: torch's default); pins a unit's bytes wherever it runs."""
        return self.options.get("threads")

    def deid_options(self):
        from salm_desktop.core.export.deid import DeidOptions

        o = self.options
        secret = o.get("secret")
        return DeidOptions(keep_identity=bool(o.get("keep_identity", False)), retain_dates=bool(o.get("retain_dates", False)),
                           retain_patient_characteristics=bool(o.get("retain_patient_characteristics", False)),
                           retain_device_identity=bool(o.get("retain_device_identity", False)),
                           clean_descriptors=bool(o.get("clean_descriptions", False)),
                           retain_safe_private=bool(o.get("retain_safe_private", False)),
                           allow_burned_in=bool(o.get("allow_burned_in", False)),
                           secret=Path(secret) if secret else None)

    def job_options(self) -> dict[str, Any]:
        """The options that are not engine settings, with their defaults filled in (same meaning, same value)."""
        o = self.options
        values: dict[str, Any] = {"splits": self.splits, "report": self.report,
                                  "secret": str(o["secret"]) if o.get("secret") else None}
        values.update({k: bool(o.get(k, False)) for k in sorted(DEID_OPTIONS - {"secret"})})
        values.update({k: o[k] for k in ("pacs_sources", "send") if k in o})  # core/pacs/batch_sources.py
        if self.threads is not None:  # other threads may give other bytes: another job
            values["threads"] = self.threads
        return values

    def fingerprint(self) -> str:
        """Same inputs + same resolved settings + same software -> a rerun may reuse finished work.

        Over the settings as they will run (options.resolved_settings_dict), not as they were typed,
        so a batch started in the wizard and the same batch from the CLI resume each other."""
        return settings_fingerprint({
            "inputs": [str(p.resolve()) for p in self.inputs],
            "settings": resolved_settings_dict(self.settings, self.loader_labels),
            "job": self.job_options(),
            "version": __version__,
        }, length=20)


@dataclass
class BatchConfig:
    path: Path
    output: Path
    jobs: list[BatchJob]


# -- config ------------------------------------------------------------------------------------------
def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return name or "job"


def load_config(path: str | Path) -> BatchConfig:
    path = Path(path).expanduser()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    base = path.resolve().parent

    def resolve(value: Any, what: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}: {what} must be a path string, got {value!r}")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    unknown = sorted(set(raw) - {"output", "inputs", "settings", "jobs"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (expected output, inputs, settings, jobs)")
    if "output" not in raw:
        raise ConfigError(f"{path}: 'output' (the output root folder) is missing")
    output = resolve(raw["output"], "output")
    defaults = raw.get("settings", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [settings] must be a table")

    specs: list[tuple[str, list[Path], dict[str, Any]]] = []
    inputs = raw.get("inputs", [])
    if not isinstance(inputs, list):
        raise ConfigError(f"{path}: 'inputs' must be a list of folders")
    for item in inputs:
        if isinstance(item, str) and item.startswith(("dicomweb:", "dimse:")):  # PACS: core/pacs/batch_sources.py
            from salm_desktop.core.pacs.batch_sources import top_level_source

            specs.append(top_level_source(path, item))
            continue
        folder = resolve(item, "each entry of inputs")
        specs.append((folder.name, [folder], {}))
    for i, table in enumerate(raw.get("jobs", []), start=1):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [[jobs]] entry {i} must be a table")
        job_inputs = table.get("inputs", table.get("input"))
        job_inputs = [job_inputs] if isinstance(job_inputs, str) else job_inputs
        if not job_inputs:
            raise ConfigError(f"{path}: [[jobs]] entry {i} has no inputs")
        from salm_desktop.core.pacs.batch_sources import SELECTION_KEYS, job_name_default, split_job_inputs

        job_inputs, pacs = split_job_inputs(path, table, list(job_inputs), i)
        folders = [resolve(p, f"inputs of [[jobs]] entry {i}") for p in job_inputs]
        overrides = {k: v for k, v in table.items() if k not in ("name", "inputs", "input", *SELECTION_KEYS)} | pacs
        specs.append((str(table.get("name") or job_name_default(folders, overrides)), folders, overrides))
    if not specs:
        raise ConfigError(f"{path}: no jobs: give 'inputs' or [[jobs]] tables")

    jobs: list[BatchJob] = []
    names: set[str] = set()
    for name, folders, overrides in specs:
        name = _safe_name(name)
        while name in names:  # two folders with the same name: keep both, distinctly
            name = f"{name}-{len(names) + 1}"
        names.add(name)
        options = {**defaults, **overrides}
        from salm_desktop.core.pacs.batch_sources import check_options

        check_options(path, name, options)
        if isinstance(options.get("labels"), str) and options["labels"].startswith("csv:"):
            options["labels"] = "csv:" + str(resolve(options["labels"][4:], "labels csv"))
        if isinstance(options.get("secret"), str) and options["secret"].strip():
            options["secret"] = str(resolve(options["secret"], "secret"))
        if isinstance(options.get("splits"), str):
            options["splits"] = [s.strip() for s in options["splits"].split(",") if s.strip()]
        if "threads" in options:
            from salm_desktop.core.threads import parse_threads

            try:
                options["threads"] = parse_threads(options["threads"])
            except ValueError as exc:
                raise ConfigError(f"{path}: job {name!r}: {exc}") from None
        for folder in folders:
            if not folder.exists():
                raise ConfigError(f"{path}: job {name!r}: input {folder} does not exist")
            out = output.resolve()
            if out == folder.resolve() or str(out).startswith(str(folder.resolve()) + os.sep):
                raise ConfigError(f"{path}: output {output} is inside the input {folder}: choose a folder outside the inputs")
        setting_options = {k: v for k, v in options.items() if k not in JOB_OPTIONS}
        try:
            settings, loader_labels = build_settings(setting_options)
        except OptionError as exc:
            raise ConfigError(f"{path}: job {name!r}: {exc}") from None
        jobs.append(BatchJob(name, folders, options, settings, loader_labels))
    return BatchConfig(path=path, output=output, jobs=jobs)
