"""The writer registry: one writer per series kind, asked by kind instead of an if/elif on strings."""

from __future__ import annotations

import pytest

from salm_desktop.core.export import ExportError, register_writer, resolve_writer
from salm_desktop.core.export.dicom import write_dicom_series
from salm_desktop.core.export.writers import registered_kinds
from salm_desktop.core.studies import load_paths


def test_every_kind_a_reader_produces_has_a_writer(data_dir):
    loaded = load_paths([data_dir / "dicom" / "hitachi_shoulder_mr" / "dicom", data_dir / "nifti" / "nibabel" / "anatomical.nii",
                         data_dir / "nrrd" / "pyradiomics" / "brain1_image.nrrd"])
    kinds = {s.kind for s in loaded.series}
    assert kinds == {"dicom", "nifti", "nrrd"}
    assert kinds <= set(registered_kinds()) and "images" in registered_kinds()
    assert resolve_writer("dicom") is write_dicom_series


def test_an_unknown_kind_is_refused_with_the_kinds_that_exist():
    with pytest.raises(ExportError, match=r"'volume'.*dicom, images, nifti, nrrd"):
        resolve_writer("volume")


def test_a_registered_writer_replaces_the_one_before(monkeypatch):
    from salm_desktop.core.export import writers

    monkeypatch.setattr(writers, "_WRITERS", dict(writers._WRITERS))
    sentinel = lambda series, protected, ctx, **kw: None  # noqa: E731
    register_writer("dicom", sentinel)
    assert resolve_writer("dicom") is sentinel
