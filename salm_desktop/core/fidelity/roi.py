"""Region-of-interest label maps (NRRD, NIfTI, ... read with SimpleITK) aligned with a series' samples."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from salm_desktop.core.model import Series


class RoiError(Exception):
    pass


def roi_for_series(label_path: Path, series: Series, tolerance_mm: float = 0.5) -> Callable[[int], np.ndarray | None] | None:
    """A function ``sample_index -> int label array of the sample's shape`` (``None`` where the label
    map has no slice for that sample), or ``None`` when the map does not overlap the series at all.

    DICOM samples are matched by ImagePositionPatient: the label voxel at that physical point gives
    the slice, and the row/column size must agree. Volumes (NIfTI, npz) of the same shape are matched
    directly."""
    try:
        image = sitk.ReadImage(str(label_path))
    except RuntimeError as exc:
        raise RoiError(f"{label_path}: cannot read the label map ({str(exc).strip().splitlines()[-1]})") from None
    labels = sitk.GetArrayFromImage(image)  # (z, y, x)
    mapping: dict[int, np.ndarray] = {}
    for i, sample in enumerate(series.samples):
        pos = sample.geometry.position
        if pos is not None and labels.ndim == 3:
            try:
                x, y, z = image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in pos))
            except Exception:  # noqa: BLE001
                continue
            k = int(round(z))
            if abs(z - k) * image.GetSpacing()[2] > tolerance_mm or not 0 <= k < labels.shape[0]:
                continue
            if abs(x) > 0.5 or abs(y) > 0.5:  # the slice must start at the same corner
                continue
            if labels.shape[1:] == tuple(sample.shape):
                mapping[i] = labels[k]
        elif labels.shape == tuple(sample.shape):
            mapping[i] = labels
    if not mapping:
        return None
    return lambda index: mapping.get(index)
