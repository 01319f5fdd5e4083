"""The Review and Export pages' logic without widgets: the fidelity table and a default output folder."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence


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
