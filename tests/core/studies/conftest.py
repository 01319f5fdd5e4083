"""Fixtures for the loader tests: small synthetic DICOM files written with pydicom into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def make_slice(
    path: Path,
    *,
    series_uid: str,
    z: float,
    instance: int,
    rows: int = 8,
    cols: int = 8,
    value: int | None = None,
    position: bool = True,
    orientation: bool = True,
    pixels: bool = True,
    modality: str = "MR",
    sop_class: str = MRImageStorage,
    description: str = "synthetic",
    preamble: bool = True,
    ipp: tuple[float, float, float] | None = None,
    iop: tuple[float, ...] | None = None,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.3.5"
    ds.PatientName = "Secret^Patient"
    ds.PatientID = "PID-12345"
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = instance
    if position:
        ds.ImagePositionPatient = list(ipp) if ipp is not None else [0.0, 0.0, float(z)]
    if orientation:
        ds.ImageOrientationPatient = list(iop) if iop is not None else [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 2.0
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if pixels:
        fill = instance if value is None else value
        ds.PixelData = np.full((rows, cols), fill, dtype=np.uint16).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=preamble)
    return path


@pytest.fixture
def make_dicom_slice():
    return make_slice
