"""DICOM: cheap header scan, series grouping, slice sorting and lazy pixel readers.

Scanning reads headers only (``stop_before_pixels``); pixels are decoded on demand by each
:class:`Sample`'s reader (``pydicom.pixels.pixel_array(path, index=frame)`` decodes one frame, and
``pydicom.pixels.apply_modality_lut`` applies the file's Modality LUT or rescale).

Grouping (see docs/loading.md):

1. SeriesInstanceUID, ImageType, Rows/Columns, ImageOrientationPatient (rounded to 1e-4).
2. Slices are sorted by ImagePositionPatient projected on the slice normal (row x column cosines).
3. Repeated positions: every position occurs T times -> a 4D series, samples ordered (time, slice)
   and ``meta["dims"] = (T, Z)``; unequal repeats -> separate volumes (by AcquisitionNumber when
   that separates them, else by occurrence), each with a warning.
4. Orientation groups of one series that are all single slices (localizer / radial sets) are kept
   together as a set of independent 2D images with a "mixed orientation" warning.

The work is done in four modules; this one keeps the names other code imports:

- :mod:`dicom_checks`: is it DICOM, is it an image, can its pixel description and pixel data be trusted;
- :mod:`dicom_headers`: one file's header -> its :class:`FrameHeader` s (frames, mosaic tiles);
- :mod:`dicom_geometry`: sorting along the slice normal, 4D, gaps and tilt;
- :mod:`dicom_series`: grouping into :class:`Series`, display windows, pixel readers.
"""

from __future__ import annotations

from salm_desktop.core.studies.dicom_checks import looks_like_dicom
from salm_desktop.core.studies.dicom_headers import FrameHeader, read_headers
from salm_desktop.core.studies.dicom_series import group_series, make_reader
from salm_desktop.core.studies.lazy import sample_values

_sample_values = sample_values  # the old private name, still imported by code written before the split

__all__ = ["FrameHeader", "group_series", "looks_like_dicom", "make_reader", "read_headers", "sample_values"]
