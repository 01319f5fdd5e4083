"""Find studies, group DICOM series, read pixels lazily, labels (Qt-free).

Public API::

    load_paths(paths, labels=None, progress=None) -> LoadResult
    inspect_paths(paths, labels=None) -> dict          # {"series": [...], "skipped": [...]}
    format_inspect_report(report) -> str
    LabelsError                                        # a ValueError subclass

See docs/loading.md for formats, grouping/sorting rules, warnings and skip reasons.
"""

from salm_desktop.core.studies.inspect import SERIES_KEYS, format_inspect_report, inspect_paths
from salm_desktop.core.studies.labels import LabelsError
from salm_desktop.core.studies.lazy import LazyIntensitySeries
from salm_desktop.core.studies.loader import find_files, load_paths

__all__ = [
    "LabelsError",
    "LazyIntensitySeries",
    "SERIES_KEYS",
    "find_files",
    "format_inspect_report",
    "inspect_paths",
    "load_paths",
]
