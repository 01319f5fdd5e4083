"""inspect_paths / format_inspect_report: what `salm-protect inspect` prints.

The report is plain JSON-able data. ``intensity_range`` reads every sample's pixels (native units);
that is the only place the loader reads all pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from salm_desktop.core.model import Series
from salm_desktop.core.progress import Progress

SERIES_KEYS = (
    "id", "kind", "modality", "description", "samples", "shape", "spacing", "intensity_range",
    "intensity_unit", "label_counts", "warnings", "files",
)


def _spacing(series: Series) -> list[float] | None:
    spacings = {s.geometry.spacing for s in series.samples}
    if len(spacings) != 1:
        return None
    spacing = list(spacings.pop())
    if not spacing:
        return None
    slice_spacing = series.meta.get("slice_spacing")
    if series.kind in ("dicom", "nifti", "nrrd") and slice_spacing:
        spacing.append(float(slice_spacing))
    return [round(float(v), 6) for v in spacing]


def _intensity_range(series: Series) -> tuple[list[float] | None, list[str]]:
    low, high = math.inf, -math.inf
    failed: list[str] = []
    arrays = series.meta.get("arrays")
    images_key = series.meta.get("images_key")
    if series.kind == "npz" and arrays is not None and images_key:
        data = arrays.get(images_key)
        if data.size:
            return [float(data.min()), float(data.max())], []
    for sample in series.samples:
        try:
            values = sample.read()
        except Exception as exc:  # a file that fails to decode is reported, not fatal
            text = str(exc).strip().splitlines()
            failed.append(f"{sample.source.path.name}: {text[0][:160] if text else type(exc).__name__}")
            continue
        finite = values[np.isfinite(values)]
        if finite.size:
            low = min(low, float(finite.min()))
            high = max(high, float(finite.max()))
    if not math.isfinite(low):
        return None, failed
    return [low, high], failed


def _sorted_counts(counts: dict[str, int]) -> dict[str, int]:
    def key(name: str) -> tuple:
        if name == "unlabelled":
            return (2, 0, name)
        try:
            return (0, int(name), name)
        except ValueError:
            return (1, 0, name)

    return {k: counts[k] for k in sorted(counts, key=key)}


def series_report(series: Series) -> dict[str, Any]:
    shape = series.sample_shape
    intensity_range, failed = _intensity_range(series)
    warnings = list(series.warnings)
    if failed:
        warnings.append(f"{len(failed)} sample(s) could not be decoded, e.g. {failed[0]}")
    description = series.description
    dims = series.meta.get("dims")
    if dims and len(dims) == 2:
        extra = f"4D: {dims[0]} time points x {dims[1]} slices"
        description = f"{description} ({extra})" if description else extra
    unit = series.meta.get("intensity_unit")
    if unit is None:
        unit = series.intensity.unit
    return {
        "id": series.id,
        "kind": series.kind,
        "modality": series.modality,
        "description": description,
        "samples": len(series.samples),
        "shape": list(shape) if shape is not None else None,
        "spacing": _spacing(series),
        "intensity_range": intensity_range,
        "intensity_unit": unit,
        "label_counts": _sorted_counts(series.label_counts()),
        "warnings": warnings,
        "files": len(series.files),
    }


def inspect_paths(paths: Sequence[Path | str], labels: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    from salm_desktop.core.studies.loader import load_paths, split_label_maps

    result = load_paths(paths, labels=labels, progress=progress)
    label_maps = [{"path": str(m.files[0]), "shape": list(m.sample_shape or ()) if m.sample_shape else None}
                  for m in split_label_maps(result)]
    series = []
    for i, s in enumerate(result.series, start=1):
        series.append(series_report(s))
        if progress is not None:
            progress.update("inspect", i, len(result.series), f"series {s.id}")
    return {"series": series, "label_maps": label_maps, "skipped": [s.as_dict() for s in result.skipped]}


def _fmt_num(v: float) -> str:
    return f"{v:.6g}"


def format_inspect_report(report: dict[str, Any]) -> str:
    lines: list[str] = []
    series = report.get("series", [])
    skipped = report.get("skipped", [])
    n_maps = len(report.get("label_maps", []))
    lines.append(f"{len(series)} series, " + (f"{n_maps} label map(s), " if n_maps else "") + f"{len(skipped)} skipped file(s)")
    for s in series:
        lines.append("")
        desc = f" - {s['description']}" if s.get("description") else ""
        lines.append(f"[{s['id']}] {s['kind']} {s['modality']}{desc}")
        shape = "x".join(str(v) for v in s["shape"]) if s.get("shape") else "mixed"
        lines.append(f"    samples: {s['samples']} of {shape}   files: {s['files']}")
        if s.get("spacing"):
            lines.append(f"    spacing: {' x '.join(_fmt_num(v) for v in s['spacing'])} mm")
        rng = s.get("intensity_range")
        unit = f" {s['intensity_unit']}" if s.get("intensity_unit") else ""
        if rng:
            lines.append(f"    intensity: {_fmt_num(rng[0])} .. {_fmt_num(rng[1])}{unit}")
        else:
            lines.append("    intensity: unknown (pixels could not be read)")
        counts = s.get("label_counts") or {}
        lines.append("    labels: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
        for w in s.get("warnings", []):
            lines.append(f"    warning: {w}")
    label_maps = report.get("label_maps", [])
    if label_maps:
        lines.append("")
        lines.append("Label maps (not protected; give one to `protect --roi FILE` for region statistics):")
        for item in label_maps:
            lines.append(f"    {item['path']}")
    if skipped:
        lines.append("")
        lines.append("Skipped:")
        for item in skipped:
            lines.append(f"    {item['path']}: {item['reason']}")
    if not series:
        lines.append("")
        lines.append("Nothing loadable was found.")
    return "\n".join(lines)
