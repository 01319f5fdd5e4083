"""Synthetic edge cases (made with pydicom from a real file): multi-frame MONOCHROME1 with 12 bits
stored, and a source flagged as lossy-compressed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from salm_desktop.core.jobs import run_protect_job
from salm_desktop.core.protect import ProtectSettings, protect_series
from salm_desktop.core.studies import load_paths

SETTINGS = dict(method="random", mask_ratio=0.5, seed=7, device="cpu")


@pytest.fixture
def multiframe(dicom_dir, tmp_path) -> Path:
    ds = pydicom.dcmread(dicom_dir / "pydicom_small" / "MR_small.dcm")
    base = ds.pixel_array.astype(np.int32)
    frames = np.stack([base, base[::-1], base[:, ::-1]])
    frames = np.clip(frames * 2, 0, 4095).astype(np.uint16)  # 12-bit unsigned, values up to the top
    frames[:, :4, :4] = 4095  # saturated corner: noise must be clipped, not wrapped
    ds.PixelRepresentation = 0
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    ds["PixelData"].VR = "OW"
    for name in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter", "WindowWidth"):
        if name in ds:
            del ds[name]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    folder = tmp_path / "in"
    folder.mkdir()
    ds.save_as(folder / "mf.dcm", enforce_file_format=True)
    return folder


def test_multiframe_monochrome1_12bit(multiframe, tmp_path):
    out = tmp_path / "out"
    run_protect_job([multiframe], out, ProtectSettings(**SETTINGS), report=False)
    a, b = pydicom.dcmread(multiframe / "mf.dcm"), pydicom.dcmread(out / "mf.dcm")
    assert b.PhotometricInterpretation == "MONOCHROME1"
    assert (b.NumberOfFrames, b.BitsStored, b.HighBit, b.PixelRepresentation) == (3, 12, 11, 0)
    pa, pb = a.pixel_array.astype(int), b.pixel_array.astype(int)
    assert pb.shape == pa.shape == (3, 64, 64)
    assert pb.max() <= 4095 and pb.min() >= 0
    assert all(np.any(pa[f] != pb[f]) for f in range(3))  # every frame was perturbed
    # frames went back to their own place: the loader re-reads exactly what the engine produced
    loaded = load_paths([multiframe])
    expected = protect_series(loaded.series, ProtectSettings(**SETTINGS))
    try:
        back = load_paths([out]).series[0]
        series = loaded.series[0]
        assert [s.source.frame for s in series.samples] == [s.source.frame for s in back.samples]
        for i, sample in enumerate(back.samples):
            np.testing.assert_array_equal(sample.read(), expected.protected(series.id, i))
    finally:
        expected.close()


def test_lossy_source_keeps_flag_and_is_written_losslessly(dicom_dir, tmp_path):
    ds = pydicom.dcmread(dicom_dir / "pydicom_small" / "CT_small.dcm")
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "10"
    src = tmp_path / "in"
    src.mkdir()
    ds.save_as(src / "lossy.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    run_protect_job([src], out, ProtectSettings(**SETTINGS), report=False)
    b = pydicom.dcmread(out / "lossy.dcm")
    assert b.LossyImageCompression == "01" and b.LossyImageCompressionRatio == "10"
    assert b.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
