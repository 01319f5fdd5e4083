"""Qt-free helpers the page presenters share."""

from __future__ import annotations

from typing import Iterable


def common_unit(series: Iterable) -> str:  # noqa: ANN001 - Series or anything with an intensity map
    """The intensity unit every series shares ("HU"), or "" when they differ or have none."""
    units = set()
    for s in series:
        try:
            units.add(s.intensity.unit or "")
        except Exception:  # noqa: BLE001 - a lazy window that cannot be computed has no unit
            units.add("")
    return units.pop() if len(units) == 1 else ""
