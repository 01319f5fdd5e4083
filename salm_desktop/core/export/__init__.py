"""Writers for the protected copy (DICOM, NIfTI, NRRD, npz, image folders) and manifest.json.

The pipeline that calls them is :func:`salm_desktop.core.jobs.run_protect_job`; docs/report.md
describes the rules (derived DICOM, lossless syntaxes, layout, manifest).
"""

from .common import ExportError, OutputLayout, WriteContext, WriteResult, sha256_file
from .dicom import choose_output_syntax, derive_uid, write_dicom_series
from .images import write_image_series
from .manifest import MANIFEST_NAME, write_manifest
from .nifti import write_nifti_series
from .npz import write_npz_file
from .volume import write_volume_series
from .writers import Writer, register_writer, resolve_writer

__all__ = [
    "MANIFEST_NAME",
    "WriteContext",
    "Writer",
    "ExportError",
    "OutputLayout",
    "WriteResult",
    "choose_output_syntax",
    "derive_uid",
    "register_writer",
    "resolve_writer",
    "sha256_file",
    "write_dicom_series",
    "write_image_series",
    "write_manifest",
    "write_nifti_series",
    "write_npz_file",
    "write_volume_series",
]
