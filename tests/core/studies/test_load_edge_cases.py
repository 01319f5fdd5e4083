"""Edge cases with small DICOM files generated in the test, plus laziness, progress and cancel."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from salm_desktop.core.progress import Cancelled, Progress
from salm_desktop.core.studies import dicom_series as dicom_mod
from salm_desktop.core.studies import load_paths


def _series_of(tmp_path, make, n=5, uid="1.2.3.100", **kw):
    for i in range(n):
        make(tmp_path / f"s{i:02d}.dcm", series_uid=uid, z=2.0 * i, instance=i + 1, **kw)


def test_truncated_pixel_data_is_skipped(tmp_path, make_dicom_slice):
    good = make_dicom_slice(tmp_path / "good.dcm", series_uid="1.2.3.1", z=0, instance=1, rows=64, cols=64)
    data = good.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 3000])
    result = load_paths([tmp_path])
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert set(reasons) == {"cut.dcm"}
    assert reasons["cut.dcm"].startswith("truncated file: pixel data needs 8192 bytes")
    assert len(result.series) == 1 and len(result.series[0].samples) == 1


def test_truncated_header_is_skipped(tmp_path, make_dicom_slice):
    good = make_dicom_slice(tmp_path / "good.dcm", series_uid="1.2.3.1", z=0, instance=1)
    (tmp_path / "cut.dcm").write_bytes(good.read_bytes()[:300])
    result = load_paths([tmp_path / "cut.dcm"])
    assert result.series == []
    (skipped,) = result.skipped
    assert skipped.path.name == "cut.dcm"
    assert skipped.reason.startswith("truncated or incomplete DICOM file")


def test_missing_pixel_data_is_skipped(tmp_path, make_dicom_slice):
    make_dicom_slice(tmp_path / "nopix.dcm", series_uid="1.2.3.1", z=0, instance=1, pixels=False)
    result = load_paths([tmp_path])
    assert result.series == []
    (skipped,) = result.skipped
    assert skipped.reason == "DICOM object without pixel data (MR Image Storage) is not an image"


def test_missing_position_tags_fall_back_to_instance_number(tmp_path, make_dicom_slice):
    order = [3, 1, 5, 2, 4]
    for n, inst in enumerate(order):
        make_dicom_slice(
            tmp_path / f"f{n}.dcm", series_uid="1.2.3.7", z=0, instance=inst, position=False, orientation=False
        )
    (series,) = load_paths([tmp_path]).series
    assert [s.meta["instance_number"] for s in series.samples] == [1, 2, 3, 4, 5]
    assert [float(s.read()[0, 0]) for s in series.samples] == [1, 2, 3, 4, 5]
    assert any("missing ImagePositionPatient/ImageOrientationPatient" in w for w in series.warnings)


def test_non_dicom_named_dcm_is_skipped(tmp_path, make_dicom_slice):
    (tmp_path / "fake.dcm").write_bytes(os.urandom(4096))
    (tmp_path / "notes.dcm").write_text("this is not an image\n" * 20)
    make_dicom_slice(tmp_path / "real.dcm", series_uid="1.2.3.1", z=0, instance=1)
    result = load_paths([tmp_path])
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert reasons == {
        "fake.dcm": "not a DICOM file (no DICOM header found)",
        "notes.dcm": "not a DICOM file (no DICOM header found)",
    }
    assert len(result.series) == 1


def test_unknown_binary_file_is_skipped_and_readme_ignored(tmp_path, make_dicom_slice):
    (tmp_path / "blob.bin").write_bytes(os.urandom(1000))
    (tmp_path / "README").write_text("hello")
    (tmp_path / "info.json").write_text("{}")
    make_dicom_slice(tmp_path / "IM0001", series_uid="1.2.3.1", z=0, instance=1)  # no suffix
    result = load_paths([tmp_path])
    assert [s.path.name for s in result.skipped] == ["blob.bin"]
    assert result.skipped[0].reason.startswith("not an image file")
    assert len(result.series) == 1


def test_dicom_without_preamble_loads(tmp_path, make_dicom_slice):
    make_dicom_slice(tmp_path / "raw", series_uid="1.2.3.1", z=0, instance=1, value=77, preamble=False)
    assert (tmp_path / "raw").read_bytes()[128:132] != b"DICM"
    (series,) = load_paths([tmp_path]).series
    assert float(series.samples[0].read()[0, 0]) == 77


def test_two_interleaved_series_shuffled(tmp_path, make_dicom_slice):
    specs = [("1.2.3.10", i, "A") for i in range(6)] + [("1.2.3.20", i, "B") for i in range(4)]
    random.Random(3).shuffle(specs)
    for n, (uid, i, name) in enumerate(specs):
        value = (100 if name == "A" else 200) + i
        make_dicom_slice(
            tmp_path / f"img{n:03d}.dcm", series_uid=uid, z=-3.0 * i, instance=10 - i, value=value, description=name
        )
    result = load_paths([tmp_path])
    assert result.skipped == []
    by_desc = {s.description: s for s in result.series}
    assert set(by_desc) == {"A", "B"}
    a, b = by_desc["A"], by_desc["B"]
    assert len(a.samples) == 6 and len(b.samples) == 4
    # Sorted by position along the normal (0, 0, 1): most negative z first.
    assert [float(s.read()[0, 0]) for s in a.samples] == [105, 104, 103, 102, 101, 100]
    assert [float(s.read()[0, 0]) for s in b.samples] == [203, 202, 201, 200]
    assert a.meta["slice_spacing"] == pytest.approx(3.0)
    assert a.id != b.id and not a.warnings and not b.warnings


def test_oblique_stack_sorted_along_normal_not_z(tmp_path, make_dicom_slice):
    # Rows along x, columns tilted 60 degrees out of the axial plane: normal = (0, -sin, cos)(60deg).
    ang = np.deg2rad(60)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(ang), np.sin(ang)])
    normal = np.cross(row, col)
    rng = random.Random(5)
    files = list(range(6))
    rng.shuffle(files)
    for n, k in enumerate(files):
        # In-plane shifts along the column direction scramble the z order of the slices.
        shift = [0, 40, -30, 55, -20, 35][k]
        ipp = 4.0 * k * normal + shift * col
        make_dicom_slice(
            tmp_path / f"o{n}.dcm", series_uid="1.2.3.30", z=0, instance=n + 1, value=k, ipp=tuple(ipp),
            iop=tuple(row) + tuple(col),
        )
    (series,) = load_paths([tmp_path]).series
    assert [float(s.read()[0, 0]) for s in series.samples] == [0, 1, 2, 3, 4, 5]
    proj = [float(np.dot(s.geometry.position, normal)) for s in series.samples]
    np.testing.assert_allclose(np.diff(proj), 4.0, atol=1e-3)
    z_order = np.argsort([s.geometry.position[2] for s in series.samples])
    assert list(z_order) != list(range(6))  # naive z sorting would be wrong here
    assert any("drift in-plane" in w for w in series.warnings)


def test_gap_and_uneven_spacing_warnings(tmp_path, make_dicom_slice):
    for n, z in enumerate([0.0, 2.0, 4.0, 10.0, 12.0]):  # gap between 4 and 10
        make_dicom_slice(tmp_path / f"g{n}.dcm", series_uid="1.2.3.40", z=z, instance=n + 1)
    (series,) = load_paths([tmp_path]).series
    assert any(w.startswith("gap: 6 mm between slices 2 and 3") for w in series.warnings), series.warnings
    for n, z in enumerate([0.0, 2.0, 4.5, 6.0, 8.0]):
        make_dicom_slice(tmp_path / f"u{n}.dcm", series_uid="1.2.3.41", z=z, instance=n + 1)
    result = load_paths([tmp_path])
    uneven = [s for s in result.series if s.meta["series_uid"] == "1.2.3.41"][0]
    assert any(w.startswith("uneven slice spacing") for w in uneven.warnings), uneven.warnings


def test_repeated_positions_with_unequal_counts_split_into_volumes(tmp_path, make_dicom_slice):
    n = 0
    for t in range(2):
        for z in range(4 if t == 0 else 3):
            make_dicom_slice(tmp_path / f"r{n}.dcm", series_uid="1.2.3.50", z=2.0 * z, instance=n + 1, value=t)
            n += 1
    result = load_paths([tmp_path])
    assert sorted(len(s.samples) for s in result.series) == [3, 4]
    for s in result.series:
        assert any("unequal counts" in w for w in s.warnings)
        assert len({float(x.read()[0, 0]) for x in s.samples}) == 1  # each volume one time point


def test_equal_repeats_become_4d(tmp_path, make_dicom_slice):
    n = 0
    for t in range(3):
        for z in range(4):
            make_dicom_slice(tmp_path / f"f{n}.dcm", series_uid="1.2.3.60", z=2.0 * z, instance=n + 1, value=10 * t + z)
            n += 1
    (series,) = load_paths([tmp_path]).series
    assert series.meta["dims"] == (3, 4)
    values = [float(s.read()[0, 0]) for s in series.samples]
    assert values == [10 * t + z for t in range(3) for z in range(4)]


def test_scanning_reads_no_pixel_data(tmp_path, make_dicom_slice, monkeypatch, dicom_dir):
    calls = []

    def forbidden(path, frame):
        calls.append(path)
        raise AssertionError("pixel data decoded during scan")

    monkeypatch.setattr(dicom_mod, "_decode", forbidden)
    import pydicom.pixels

    monkeypatch.setattr(pydicom.pixels, "pixel_array", forbidden)
    result = load_paths([dicom_dir / "nih_ge_epi_fmri" / "dicom", dicom_dir / "qin_prostate_adc_mr"])
    assert len(result.series) == 2 and calls == []
    # Their own window tags give the window without pixels; without window tags (the shoulder MR) the
    # robust MR window is computed lazily: reading it is the first pixel access.
    assert all(s.intensity_is_computed for s in result.series) and calls == []
    lazy = load_paths([dicom_dir / "hitachi_shoulder_mr"]).series[0]
    assert not lazy.intensity_is_computed and calls == []
    monkeypatch.undo()
    assert lazy.intensity.name == "p0.5-p99.5" and lazy.intensity_is_computed


def test_progress_per_file_and_cancel(dicom_dir):
    events = []
    progress = Progress(events.append)
    load_paths([dicom_dir / "hitachi_shoulder_mr" / "dicom"], progress=progress)
    loads = [e for e in events if e.stage == "load"]
    assert loads[-1].done == loads[-1].total == 4
    assert [e.done for e in loads] == [0, 1, 2, 3, 4]

    def cancel_after_two(event):
        if event.stage == "load" and event.done == 2:
            progress2.cancel()

    progress2 = Progress(cancel_after_two)
    with pytest.raises(Cancelled):
        load_paths([dicom_dir / "nih_ge_epi_fmri" / "dicom"], progress=progress2)


def test_missing_input_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_paths([tmp_path / "nope"])


def test_patient_identifiers_never_in_ids_or_warnings(tmp_path, make_dicom_slice):
    _series_of(tmp_path, make_dicom_slice)
    (series,) = load_paths([tmp_path]).series
    text = " ".join([series.id, series.description, *series.warnings, *(s.key for s in series.samples)])
    assert "Secret" not in text and "PID-12345" not in text


def _multiframe(path, *, per_frame_positions: bool, photometric="MONOCHROME2", slopes=(1.0, 1.0, 1.0)):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = "1.2.3.70", "1.2.3.71", "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.Rows = ds.Columns = 4
    ds.NumberOfFrames = 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures = Dataset()
    measures.PixelSpacing = [0.7, 0.8]
    measures.SliceThickness = 1.5
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    z_of_frame = [4.0, 0.0, 2.0]  # stored out of spatial order
    for i in range(3):
        item = Dataset()
        if per_frame_positions:
            pos = Dataset()
            pos.ImagePositionPatient = [0, 0, z_of_frame[i]]
            item.PlanePositionSequence = Sequence([pos])
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slopes[i], 0, "US"
        item.PixelValueTransformationSequence = Sequence([pvt])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    pixels = np.stack([np.full((4, 4), -(i + 1) * 10, np.int16) for i in range(3)])
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_enhanced_multiframe_frames_become_sorted_samples(tmp_path):
    path = _multiframe(tmp_path / "mf.dcm", per_frame_positions=True, slopes=(1.0, 2.0, 1.0))
    (series,) = load_paths([path]).series
    assert len(series.samples) == 3 and series.meta["dims"] == (3,)
    assert [s.source.frame for s in series.samples] == [1, 2, 0]  # sorted by z: 0, 2, 4
    assert [float(s.read()[0, 0]) for s in series.samples] == [-40.0, -30.0, -10.0]  # frame 1 slope 2
    assert series.samples[0].stored.slope == 2.0 and series.samples[0].stored.dtype == "int16"
    assert series.samples[0].geometry.spacing == (0.7, 0.8)
    assert series.meta["slice_spacing"] == pytest.approx(2.0)


def test_multiframe_without_positions_keeps_frame_order(tmp_path):
    path = _multiframe(tmp_path / "mf.dcm", per_frame_positions=False, photometric="MONOCHROME1")
    (series,) = load_paths([path]).series
    assert [s.source.frame for s in series.samples] == [0, 1, 2]
    assert [float(s.read()[0, 0]) for s in series.samples] == [-10.0, -20.0, -30.0]
    assert series.meta["photometric"] == "MONOCHROME1"
    assert any("MONOCHROME1" in w for w in series.warnings)
    assert any("without per-frame positions" in w for w in series.warnings)


def test_corrupt_compressed_pixels_fail_on_read_with_file_named(tmp_path, dicom_dir):
    data = (dicom_dir / "pydicom_small" / "MR_small_jp2klossless.dcm").read_bytes()
    broken = tmp_path / "broken_j2k.dcm"
    # same length, garbage codestream tail; the item structure (and its sequence delimiter) stays intact
    fragment = data.find(b"\xfe\xff\x00\xe0", data.find(b"\xfe\xff\x00\xe0") + 8) + 8  # after the offset table
    broken.write_bytes(data[: fragment + 2] + b"\x00" * 2000 + data[fragment + 2002 :])  # codestream header gone
    result = load_paths([broken])
    (series,) = result.series  # the header is fine: found at scan time
    with pytest.raises(ValueError, match="broken_j2k.dcm"):
        series.samples[0].read()
    from salm_desktop.core.studies import inspect_paths

    report = inspect_paths([broken])
    assert any("could not be decoded" in w and "broken_j2k.dcm" in w for w in report["series"][0]["warnings"])
