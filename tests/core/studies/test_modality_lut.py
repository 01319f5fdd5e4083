"""The Modality LUT Sequence is honoured (pydicom's apply_modality_lut), on a real MR slice of
../shared/data whose rescale is replaced by a table; tables that could not be written back are refused."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from salm_desktop.core.studies import load_paths


def _with_modality_lut(source, target, table, first):
    ds = pydicom.dcmread(source)
    item = Dataset()
    # the slice is signed (PixelRepresentation 1): the first mapped value is SS; the table is OW words
    item.add_new(0x00283002, "SS", [len(table) % 2**16, first, 16])  # LUTDescriptor
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "OW", np.asarray(table, dtype="<u2").tobytes())  # LUTData
    ds.ModalityLUTSequence = Sequence([item])
    for name in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if name in ds:
            delattr(ds, name)
    ds.save_as(target)
    return ds.pixel_array  # the stored values, decoded by pydicom straight from the source


@pytest.fixture
def shoulder_slice(dicom_dir):
    path = dicom_dir / "hitachi_shoulder_mr" / "dicom" / "001.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert (ds.BitsStored, ds.PixelRepresentation) == (12, 1)  # stored values -2048..2047
    return path


def test_a_linear_modality_lut_gives_the_native_values_and_stores_back_exactly(shoulder_slice, tmp_path):
    entries = np.arange(4096)
    table = 3 * entries + 7  # native = 3 * (stored + 2048) + 7
    stored = _with_modality_lut(shoulder_slice, tmp_path / "lut.dcm", table, first=-2048)
    (series,) = load_paths([tmp_path]).series
    (sample,) = series.samples
    native = sample.read()
    np.testing.assert_array_equal(native, (table[stored.astype(np.int64) + 2048]).astype(np.float32))
    assert native.min() >= 7 and native.max() > 3 * 2048  # the table was applied, not ignored
    # the export writes protected values back through StoredFormat: the round trip is exact
    np.testing.assert_array_equal(sample.stored.to_stored(native), stored)
    assert (sample.stored.slope, sample.stored.intercept) == (3.0, 3 * 2048 + 7)


def test_a_non_linear_modality_lut_is_skipped_with_its_reason(shoulder_slice, tmp_path):
    table = np.sqrt(np.arange(4096)) * 100
    _with_modality_lut(shoulder_slice, tmp_path / "sqrt.dcm", table, first=-2048)
    result = load_paths([tmp_path])
    assert result.series == []
    (skipped,) = result.skipped
    assert skipped.path.name == "sqrt.dcm"
    assert skipped.reason.startswith("non-linear Modality LUT Sequence: not supported")


def test_a_modality_lut_that_misses_stored_values_is_skipped(shoulder_slice, tmp_path):
    _with_modality_lut(shoulder_slice, tmp_path / "short.dcm", np.arange(1024) * 2, first=0)
    (skipped,) = load_paths([tmp_path]).skipped
    assert skipped.reason == ("Modality LUT Sequence covers stored values 0..1023, not every value -2048..2047 "
                              "of BitsStored 12: not supported")
