"""The writer registry: which function writes a series of each kind back in its own format.

Modelled on MONAI's ``register_writer`` / ``resolve_writer``: a writer is registered once for a
series kind (the ``Series.kind`` a reader produced) and the job pipeline asks the registry instead of
switching on kind strings. Every writer has the :class:`Writer` signature and gets the job's shared
:class:`~salm_desktop.core.export.common.WriteContext`. npz files are the one exception: a file holds
several series (its splits) and is written whole by :func:`salm_desktop.core.export.npz.write_npz_file`.
"""

from __future__ import annotations

from typing import Protocol

from salm_desktop.core.export.common import ExportError, Observer, ProtectedFn, WriteContext, WriteResult
from salm_desktop.core.export.dicom import write_dicom_series
from salm_desktop.core.export.images import write_image_series
from salm_desktop.core.export.nifti import write_nifti_series
from salm_desktop.core.export.volume import write_volume_series
from salm_desktop.core.model import Series


class Writer(Protocol):
    def __call__(self, series: Series, protected: ProtectedFn, ctx: WriteContext, *, observer: Observer | None = None,
                 done_offset: int = 0, total: int = 0) -> WriteResult: ...


_WRITERS: dict[str, Writer] = {}


def register_writer(kind: str, writer: Writer) -> None:
    """Make ``writer`` the one that writes series of ``kind`` (a later registration replaces it)."""
    _WRITERS[kind] = writer


def resolve_writer(kind: str) -> Writer:
    try:
        return _WRITERS[kind]
    except KeyError:
        raise ExportError(f"writing {kind!r} data is not supported (writers: {', '.join(sorted(_WRITERS))})") from None


def registered_kinds() -> tuple[str, ...]:
    return tuple(sorted(_WRITERS))


register_writer("dicom", write_dicom_series)
register_writer("nifti", write_nifti_series)
register_writer("nrrd", write_volume_series)  # NRRD and MetaImage volumes (studies/volume.py)
register_writer("images", write_image_series)
