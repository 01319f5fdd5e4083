"""Label sources: auto, npz, folders, csv:FILE, none; LabelsError messages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from salm_desktop.core.studies import LabelsError, load_paths


def _png(path, value=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "imgs"
    for name in ("a.png", "b.png", "c.png"):
        _png(root / name)
    return root


def test_csv_with_header_and_relative_paths(tmp_path, image_tree):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nimgs/a.png,1\nimgs/b.png,0\n")
    (series,) = load_paths([image_tree], labels=f"csv:{csv}").series
    assert {s.key: s.label for s in series.samples} == {"a.png": 1, "b.png": 0, "c.png": None}
    assert series.label_counts() == {"1": 1, "0": 1, "unlabelled": 1}


def test_csv_without_header_string_labels(tmp_path, image_tree):
    csv = image_tree / "labels.csv"  # next to the images: ignored as an input file, used as labels
    csv.write_text("a.png;benign\nb.png;malignant\nc.png;benign\n")
    result = load_paths([image_tree], labels=f"csv:{csv}")
    assert result.skipped == []
    (series,) = result.series
    assert series.meta["classes"] == ["benign", "malignant"]
    assert [s.label for s in series.samples] == [0, 1, 0]


def test_csv_by_series_uid(tmp_path, dicom_dir):
    from pydicom import dcmread

    folder = dicom_dir / "hitachi_shoulder_mr" / "dicom"
    uid = dcmread(folder / "001.dcm", stop_before_pixels=True).SeriesInstanceUID
    csv = tmp_path / "uids.csv"
    csv.write_text(f"SeriesInstanceUID,label\n{uid},1\n")
    (series,) = load_paths([folder], labels=f"csv:{csv}").series
    assert series.labels == [1, 1, 1, 1]
    csv.write_text("1.2.3.4.5.6,1\n")
    with pytest.raises(LabelsError, match=r"uids\.csv: 1 SeriesInstanceUID\(s\) not found .*line 1: 1\.2\.3\.4\.5\.6"):
        load_paths([folder], labels=f"csv:{csv}")


def test_csv_naming_missing_files(tmp_path, image_tree):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nimgs/a.png,1\nimgs/gone.png,0\nimgs/lost.png,1\n")
    with pytest.raises(LabelsError) as info:
        load_paths([image_tree], labels=f"csv:{csv}")
    message = str(info.value)
    assert str(csv) in message
    assert "2 row(s) name missing files" in message
    assert "line 3: imgs/gone.png" in message and "line 4: imgs/lost.png" in message
    assert isinstance(info.value, ValueError)


def test_malformed_csv(tmp_path, image_tree):
    csv = tmp_path / "bad.csv"
    csv.write_text("path,label\nimgs/a.png,1\nimgs/b.png,0,extra\n")
    with pytest.raises(LabelsError, match=r"bad\.csv: line 3: expected 2 columns \(path or SeriesInstanceUID, label\), got 3"):
        load_paths([image_tree], labels=f"csv:{csv}")
    csv.write_text("imgs/a.png,\n")
    with pytest.raises(LabelsError, match=r"line 1: empty label"):
        load_paths([image_tree], labels=f"csv:{csv}")
    with pytest.raises(LabelsError, match=r"nothere\.csv: labels file not found"):
        load_paths([image_tree], labels=f"csv:{tmp_path / 'nothere.csv'}")


def test_unknown_label_spec():
    with pytest.raises(LabelsError, match="unknown source"):
        load_paths(["."], labels="magic")


def test_npz_labels_none_and_folders_modes(medmnist_dir, tmp_path):
    path = medmnist_dir / "breastmnist.npz"
    (train, *_rest) = load_paths([path], labels="npz").series
    assert train.label_counts() == {"0": 147, "1": 399}
    (train, *_rest) = load_paths([path], labels="none").series
    assert train.label_counts() == {"unlabelled": 546}
    with pytest.raises(LabelsError, match="labels from folders: no class sub-folders found"):
        load_paths([path], labels="folders")


def test_folders_mode_for_dicom(tmp_path, make_dicom_slice):
    for cls, uid in (("healthy", "1.2.3.1"), ("tumour", "1.2.3.2")):
        for i in range(2):
            make_dicom_slice(tmp_path / cls / "patient" / f"{i}.dcm", series_uid=uid, z=i, instance=i + 1)
    auto = load_paths([tmp_path]).series
    assert all(s.labels == [None, None] for s in auto)  # auto: DICOM stays unlabelled
    series = load_paths([tmp_path], labels="folders").series
    assert sorted(s.labels[0] for s in series) == [0, 1]
    assert series[0].meta["classes"] == ["healthy", "tumour"]


def test_npz_mode_without_npz_is_an_error(image_tree):
    with pytest.raises(LabelsError, match="no npz file"):
        load_paths([image_tree], labels="npz")


def test_csv_with_unusual_header_names(tmp_path, image_tree):
    csv = tmp_path / "labels.tsv.csv"
    csv.write_text("image_path\tdiagnosis\nimgs/a.png\t1\nimgs/c.png\t1\n")
    (series,) = load_paths([image_tree], labels=f"csv:{csv}").series
    assert {s.key: s.label for s in series.samples} == {"a.png": 1, "b.png": None, "c.png": 1}


def test_csv_row_naming_a_folder_labels_everything_below(tmp_path):
    for cls in ("x", "y"):
        for i in range(2):
            _png(tmp_path / "data" / cls / f"{i}.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("data/x,0\ndata/y,1\n")
    (series,) = load_paths([tmp_path / "data"], labels=f"csv:{csv}").series
    assert series.labels == [0, 0, 1, 1]
