"""DICOM geometry: slices of one orientation group sorted along the slice normal into volumes.

Repeated positions make a 4D (time, slice) series when every position repeats equally often, else
separate volumes (by AcquisitionNumber when that separates them); gaps, uneven spacing and in-plane
drift (gantry tilt) become warnings. See docs/loading.md.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from salm_desktop.core.studies.dicom_headers import FrameHeader

@dataclass
class Volume:
    """Sorted frames of one volume, with ``index`` (the (t, z) or (z,) of each frame) and its warnings."""

    frames: list[FrameHeader]
    split_key: tuple
    dims: tuple[int, ...] | None
    index: list[tuple[int, ...]]
    warnings: list[str] = field(default_factory=list)
    slice_spacing: float | None = None


def _time_key(h: FrameHeader) -> tuple:
    return (
        h.temporal_position if h.temporal_position is not None else 0,
        h.acquisition_number if h.acquisition_number is not None else 0,
        h.trigger_time if h.trigger_time is not None else 0.0,
        h.acquisition_time,
        h.instance_number,
        h.frame if h.frame is not None else 0,
        h.tile if h.tile is not None else 0,
        str(h.path),
    )


def instance_key(h: FrameHeader) -> tuple:
    return (h.instance_number, h.frame if h.frame is not None else 0, h.tile if h.tile is not None else 0, str(h.path))


def _spacing_warnings(distances: np.ndarray) -> tuple[float | None, list[str]]:
    """Median step between sorted unique positions, plus gap / uneven-spacing warnings."""
    if distances.size < 2:
        return None, []
    steps = np.diff(distances)
    median = float(np.median(steps))
    out: list[str] = []
    if median <= 1e-6:
        return None, out
    tol = max(0.01 * median, 1e-3)
    gaps = np.nonzero(steps > 1.5 * median)[0]
    for g in gaps[:3]:
        missing = int(round(steps[g] / median)) - 1
        out.append(
            f"gap: {steps[g]:.3g} mm between slices {g} and {g + 1} (usual step {median:.3g} mm, "
            f"~{max(missing, 1)} slice(s) missing)"
        )
    if len(gaps) > 3:
        out.append(f"gap: {len(gaps) - 3} more gaps")
    others = np.delete(steps, gaps)
    if others.size and np.max(np.abs(others - median)) > tol:
        out.append(f"uneven slice spacing: steps from {others.min():.4g} to {others.max():.4g} mm")
    return median, out


def build_volume(frames: list[FrameHeader], split_key: tuple) -> list[Volume]:
    """Sort one orientation group; detect repeated positions (4D) and spacing problems."""
    if len(frames) == 1:
        return [Volume(frames, split_key, (1,), [(0,)])]
    normal = frames[0].normal
    if normal is None or any(h.ipp is None for h in frames):
        ordered = sorted(frames, key=instance_key)
        vol = Volume(ordered, split_key, None, [(i,) for i in range(len(ordered))])
        single_multiframe = len({h.path for h in frames}) == 1 and all(h.frame is not None for h in frames)
        if not single_multiframe:
            vol.warnings.append("missing ImagePositionPatient/ImageOrientationPatient: slices ordered by InstanceNumber")
        return [vol]

    dist = np.array([float(np.dot(np.asarray(h.ipp), normal)) for h in frames])
    keys = np.round(dist, 2)
    positions = sorted(set(keys.tolist()))
    by_pos: dict[float, list[int]] = defaultdict(list)
    for i, k in enumerate(keys.tolist()):
        by_pos[k].append(i)
    counts = {len(v) for v in by_pos.values()}

    def finish(vol_frames: list[FrameHeader], key: tuple) -> Volume:
        d = np.array([float(np.dot(np.asarray(h.ipp), normal)) for h in vol_frames])
        order = np.argsort(d, kind="stable")
        ordered = [vol_frames[i] for i in order]
        vol = Volume(ordered, key, (len(ordered),), [(i,) for i in range(len(ordered))])
        vol.slice_spacing, vol.warnings = _spacing_warnings(np.sort(d))
        return vol

    if counts == {1}:
        vol = finish(frames, split_key)
        vol.warnings.extend(_tilt_warning(vol.frames))
        return [vol]

    if len(counts) == 1:  # every position repeated T times: 4D (time, slice)
        t_count = counts.pop()
        z_count = len(positions)
        grid: list[list[FrameHeader]] = []
        for p in positions:
            grid.append(sorted((frames[i] for i in by_pos[p]), key=_time_key))
        ordered, index = [], []
        for t in range(t_count):
            for z in range(z_count):
                ordered.append(grid[z][t])
                index.append((t, z))
        vol = Volume(ordered, split_key, (t_count, z_count), index)
        vol.slice_spacing, vol.warnings = _spacing_warnings(np.array(positions, dtype=np.float64))
        vol.warnings.append(f"repeated slice positions: loaded as 4D ({t_count} time points x {z_count} positions)")
        return [vol]

    # Unequal repeats: separate volumes, by AcquisitionNumber when that separates them.
    acq: dict[Any, list[FrameHeader]] = defaultdict(list)
    for h in frames:
        acq[h.acquisition_number].append(h)
    groups: list[list[FrameHeader]]
    if len(acq) > 1 and all(
        len({round(float(np.dot(np.asarray(h.ipp), normal)), 2) for h in g}) == len(g) for g in acq.values()
    ):
        groups = [acq[k] for k in sorted(acq, key=lambda v: (v is None, v or 0))]
        how = "AcquisitionNumber"
    else:
        occurrence: dict[int, list[FrameHeader]] = defaultdict(list)
        for p in positions:
            for n, i in enumerate(sorted(by_pos[p], key=lambda i: _time_key(frames[i]))):
                occurrence[n].append(frames[i])
        groups = [occurrence[n] for n in sorted(occurrence)]
        how = "repetition"
    vols = []
    for n, g in enumerate(groups):
        vol = finish(g, split_key + (f"{how}-{n}",))
        vol.warnings.insert(
            0, f"repeated slice positions with unequal counts: split by {how} into {len(groups)} volumes (this is {n + 1})"
        )
        vols.append(vol)
    return vols


def _tilt_warning(frames: list[FrameHeader]) -> list[str]:
    """Slices whose positions drift in-plane (gantry tilt, sheared stacks)."""
    if len(frames) < 2 or frames[0].iop is None:
        return []
    r = np.asarray(frames[0].iop[:3])
    c = np.asarray(frames[0].iop[3:])
    p = np.array([h.ipp for h in frames], dtype=np.float64)
    d = p - p[0]
    drift = np.max(np.abs(np.stack([d @ r, d @ c], axis=1)))
    spacing = frames[0].spacing or (1.0, 1.0)
    if drift > 0.5 * min(spacing):
        return [f"slice positions drift in-plane by up to {drift:.3g} mm (gantry tilt or sheared stack)"]
    return []
