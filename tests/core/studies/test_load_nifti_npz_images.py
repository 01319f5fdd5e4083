"""NIfTI, MedMNIST npz, PNG/JPEG folders and NRRD volumes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from salm_desktop.core.model import IntensityMap
from salm_desktop.core.studies import load_paths


# ---------------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii"])
def test_nifti_keeps_affine_and_voxels(data_dir, name):
    path = data_dir / "nifti" / "nibabel" / name
    (series,) = load_paths([path]).series
    img = nib.load(path)
    assert series.kind == "nifti"
    np.testing.assert_array_equal(series.meta["affine"], img.affine)
    assert series.meta["volume_shape"] == img.shape
    assert series.meta["header"]["dim"].tolist() == img.header["dim"].tolist()
    data = np.asarray(img.get_fdata(dtype=np.float32))
    sample = series.samples[len(series.samples) // 2]
    t, k = (sample.source.index if len(sample.source.index) == 2 else (None, sample.source.index[0]))
    expected = data[:, :, k] if t is None else data[:, :, k, t]
    np.testing.assert_array_equal(sample.read(), expected)
    assert sample.geometry.affine == tuple(tuple(row) for row in img.affine.tolist())
    assert sample.geometry.slice_index == k
    assert sample.geometry.spacing == pytest.approx(img.header.get_zooms()[:2])


def test_nifti_4d_gives_time_slice_samples(data_dir):
    (series,) = load_paths([data_dir / "nifti" / "nibabel" / "example4d.nii.gz"]).series
    assert series.meta["dims"] == (2, 24)
    assert len(series.samples) == 48
    assert series.samples[0].key == "t0000/z0000" and series.samples[25].key == "t0001/z0001"
    assert series.samples[25].source.index == (1, 1)
    assert series.sample_shape == (128, 96)
    assert series.meta["nifti_version"] == 1


def test_nifti2_and_big_endian(data_dir):
    (n2,) = load_paths([data_dir / "nifti" / "nibabel" / "example_nifti2.nii.gz"]).series
    assert n2.meta["nifti_version"] == 2 and n2.meta["dims"] == (2, 12)
    (anat,) = load_paths([data_dir / "nifti" / "nibabel" / "anatomical.nii"]).series
    assert anat.samples[0].stored.dtype == "int16"  # stored big-endian; native values are plain floats
    assert anat.meta["axcodes"] == "LAS"


def test_nifti_scl_slope_applied(tmp_path):
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    img = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    (series,) = load_paths([tmp_path]).series
    sample = series.samples[1]
    np.testing.assert_allclose(sample.read(), data[:, :, 1] * 0.5 - 10.0)
    assert sample.stored.slope == 0.5 and sample.stored.intercept == -10.0 and sample.stored.dtype == "int16"
    assert series.meta["slice_spacing"] == 4.0


def test_bad_nifti_is_skipped(tmp_path):
    (tmp_path / "broken.nii").write_bytes(b"\0" * 100)
    result = load_paths([tmp_path])
    assert result.series == []
    assert result.skipped[0].reason.startswith("unreadable NIfTI file")


# ---------------------------------------------------------------------------------- npz


@pytest.mark.parametrize(
    "name, sizes, train_counts",
    [
        ("breastmnist.npz", (546, 78, 156), {"0": 147, "1": 399}),
        ("pneumoniamnist.npz", (4708, 524, 624), {"0": 1214, "1": 3494}),
    ],
)
def test_medmnist_splits_and_labels(medmnist_dir, name, sizes, train_counts):
    result = load_paths([medmnist_dir / name])
    assert result.skipped == []
    assert [s.meta["split"] for s in result.series] == ["train", "val", "test"]
    assert tuple(len(s.samples) for s in result.series) == sizes
    train = result.series[0]
    assert train.kind == "npz" and train.label_counts() == train_counts
    assert train.meta["images_key"] == "train_images" and train.meta["labels_key"] == "train_labels"
    assert train.sample_shape == (28, 28)
    assert train.intensity == IntensityMap.for_uint8()
    with np.load(medmnist_dir / name) as data:
        images, labels = data["train_images"], data["train_labels"]
    for i in (0, 17, len(images) - 1):
        np.testing.assert_array_equal(train.samples[i].read(), images[i])
        assert train.samples[i].label == int(labels[i, 0])
        assert train.samples[i].source.index == (i,) and train.samples[i].source.key == "train_images"


def test_npz_is_read_once_and_lazily(medmnist_dir):
    result = load_paths([medmnist_dir / "breastmnist.npz"])
    cache = result.series[0].meta["arrays"]
    assert cache.loads == 0  # scanning read only headers and labels
    for s in result.series[0].samples[:50]:
        s.read()
    assert cache.loads == 1


def test_adrenal_3d_volumes(medmnist_dir):
    (train, val, test) = load_paths([medmnist_dir / "adrenalmnist3d_64.npz"]).series
    assert train.sample_shape == (64, 64, 64)
    assert (len(train.samples), len(val.samples), len(test.samples)) == (1188, 98, 298)
    assert train.label_counts() == {"0": 929, "1": 259}


def test_npz_without_images_is_skipped(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    result = load_paths([tmp_path])
    assert result.series == []
    assert "without '{split}_images'" in result.skipped[0].reason


# ---------------------------------------------------------------------------------- images


def _png(path, value, size=(6, 4), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)).save(path)
    elif mode == "RGB":
        Image.fromarray(np.full(size[::-1] + (3,), value, dtype=np.uint8), "RGB").save(path)
    else:
        Image.fromarray(np.full(size[::-1], value, dtype=np.uint8)).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    for i in range(3):
        _png(tmp_path / "benign" / f"b{i}.png", 10 + i)
    for i in range(2):
        _png(tmp_path / "malignant" / f"m{i}.png", 200 + i)
    (tmp_path / "README.txt").write_text("labels are folder names")
    result = load_paths([tmp_path])
    assert result.skipped == []
    (series,) = result.series
    assert series.kind == "images" and len(series.samples) == 5
    assert series.meta["classes"] == ["benign", "malignant"]
    assert series.label_counts() == {"0": 3, "1": 2}
    by_key = {s.key: s for s in series.samples}
    assert by_key["malignant/m1.png"].label == 1
    np.testing.assert_array_equal(by_key["malignant/m1.png"].read(), np.full((4, 6), 201, np.float32))
    assert by_key["benign/b0.png"].stored.dtype == "uint8"
    assert series.intensity == IntensityMap.for_uint8()


def test_image_folder_16bit_and_rgb(tmp_path):
    _png(tmp_path / "a.png", 40000, mode="I;16")
    _png(tmp_path / "b.png", 90, mode="RGB")
    jpg = tmp_path / "c.jpg"
    Image.fromarray(np.full((4, 6), 128, np.uint8)).save(jpg)
    (series,) = load_paths([tmp_path]).series
    by_key = {s.key: s for s in series.samples}
    assert by_key["a.png"].stored.dtype == "uint16"
    assert float(by_key["a.png"].read()[0, 0]) == 40000
    assert by_key["b.png"].shape == (4, 6) and float(by_key["b.png"].read()[0, 0]) == 90
    assert any("converted to 8-bit grayscale" in w for w in series.warnings)
    assert abs(float(by_key["c.jpg"].read().mean()) - 128) < 2
    assert series.label_counts() == {"unlabelled": 3}  # no class folders


def test_single_class_folder_is_unlabelled_in_auto_mode(tmp_path):
    _png(tmp_path / "only" / "x.png", 1)
    (series,) = load_paths([tmp_path]).series
    assert series.labels == [None]


def test_split_folders_are_skipped_for_class_names(tmp_path):
    _png(tmp_path / "train" / "cat" / "1.png", 1)
    _png(tmp_path / "train" / "dog" / "2.png", 2)
    _png(tmp_path / "test" / "dog" / "3.png", 3)
    (series,) = load_paths([tmp_path]).series
    assert series.meta["classes"] == ["cat", "dog"]
    assert {s.key: s.label for s in series.samples} == {"test/dog/3.png": 1, "train/cat/1.png": 0, "train/dog/2.png": 1}


def test_broken_png_is_skipped(tmp_path):
    _png(tmp_path / "ok.png", 5)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    result = load_paths([tmp_path])
    assert len(result.series) == 1 and len(result.series[0].samples) == 1
    assert result.skipped[0].path.name == "bad.png" and result.skipped[0].reason.startswith("unreadable image file")


# ---------------------------------------------------------------------------------- NRRD


def test_nrrd_volume(data_dir):
    import SimpleITK as sitk

    path = data_dir / "nrrd" / "pyradiomics" / "brain1_image.nrrd"
    (series,) = load_paths([path]).series
    assert series.kind == "nrrd" and len(series.samples) == 25 and series.sample_shape == (256, 256)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(series.samples[12].read(), ref[12])
    assert series.samples[12].geometry.spacing == pytest.approx((0.78125, 0.78125), rel=1e-4)
    assert series.meta["slice_spacing"] == pytest.approx(6.5, rel=1e-4)


def test_reads_are_private_copies(tmp_path, data_dir):
    # float32 data: a careless np.asarray would hand out a view of the shared cache.
    np.savez(tmp_path / "f.npz", train_images=np.ones((3, 4, 4), np.float32), train_labels=np.zeros((3, 1), np.uint8))
    (train,) = load_paths([tmp_path / "f.npz"]).series
    first = train.samples[0].read()
    first[:] = -1
    assert train.samples[0].read().min() == 1.0
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.eye(4)), tmp_path / "f.nii")
    (vol,) = load_paths([tmp_path / "f.nii"]).series
    a = vol.samples[1].read()
    a[:] = -1
    assert vol.samples[1].read().min() == 1.0
    (nrrd,) = load_paths([data_dir / "nrrd" / "pyradiomics" / "brain1_label.nrrd"]).series
    a = nrrd.samples[3].read()
    a[:] = 99
    assert nrrd.samples[3].read().max() <= 1
