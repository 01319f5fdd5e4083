"""NIfTI, NRRD, npz and image-folder outputs keep their format, geometry and data type."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from salm_desktop.core.jobs import run_protect_job
from salm_desktop.core.protect import ProtectSettings, protect_series
from salm_desktop.core.studies import load_paths

SETTINGS = dict(method="random", mask_ratio=0.3, seed=1, device="cpu")


@pytest.fixture(scope="module")
def nifti_job(data_dir: Path, tmp_path_factory):
    inp = data_dir / "nifti" / "nibabel"
    out = tmp_path_factory.mktemp("nifti") / "out"
    result = run_protect_job([inp], out, ProtectSettings(**SETTINGS), report=False)
    return inp, out, result


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii"])
def test_nifti_keeps_affine_shape_dtype_codes_and_scaling(nifti_job, name):
    inp, out, result = nifti_job
    assert not result.skipped
    a, b = nib.load(str(inp / name)), nib.load(str(out / name))
    assert type(a) is type(b)
    assert a.shape == b.shape
    np.testing.assert_array_equal(b.affine, a.affine)
    assert a.get_data_dtype() == b.get_data_dtype()  # includes byte order (anatomical.nii is big endian)
    for key in ("sform_code", "qform_code", "pixdim", "xyzt_units", "dim_info"):
        np.testing.assert_array_equal(b.header[key], a.header[key])
    assert (b.dataobj.slope, b.dataobj.inter) == pytest.approx((a.dataobj.slope, a.dataobj.inter))
    ra, rb = np.asarray(a.dataobj.get_unscaled()), np.asarray(b.dataobj.get_unscaled())
    changed = np.count_nonzero(ra != rb) / ra.size
    assert 0.01 < changed < 0.5  # random noise on ~30 % of the voxels (some round to zero)


def test_nifti_round_trip_equals_protected(nifti_job):
    inp, out, _ = nifti_job
    names = ["anatomical.nii", "example_nifti2.nii.gz", "functional.nii"]
    loaded = load_paths([inp / n for n in names])
    expected = protect_series(loaded.series, ProtectSettings(**SETTINGS))
    try:
        back = load_paths([out / n for n in names])
        by_key = {(Path(s.root).name, s.samples[0].source.path.name): s for s in back.series}
        for series in loaded.series:
            other = by_key[(Path(series.root).name, series.samples[0].source.path.name)]
            for i, sample in enumerate(series.samples):
                np.testing.assert_array_equal(other.samples[i].read(), expected.protected(series.id, i))
    finally:
        expected.close()


def test_nrrd_keeps_geometry_and_type(data_dir, tmp_path):
    src = data_dir / "nrrd" / "pyradiomics" / "brain1_image.nrrd"
    out = tmp_path / "out"
    run_protect_job([src], out, ProtectSettings(**SETTINGS), report=False)
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out / src.name))
    assert a.GetSize() == b.GetSize() and a.GetPixelID() == b.GetPixelID()
    np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing())
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin())
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection())
    assert np.any(sitk.GetArrayFromImage(a) != sitk.GetArrayFromImage(b))


@pytest.fixture
def small_npz(medmnist_dir, tmp_path):
    """A 40/10/10 subset of BreastMNIST in the official layout (compressed npz, uint8, labels (N, 1))."""
    with np.load(medmnist_dir / "breastmnist.npz") as d:
        arrays = {k: d[k][:40] if k.startswith("train") else d[k][:10] for k in d.files}
    folder = tmp_path / "in"
    folder.mkdir()
    np.savez_compressed(folder / "breast_small.npz", **arrays)
    return folder / "breast_small.npz", arrays


def test_npz_same_keys_only_listed_splits_change(small_npz, tmp_path, hashes):
    path, arrays = small_npz
    before = hashes(path)
    out = tmp_path / "out"
    result = run_protect_job([path], out, ProtectSettings(method="salm", mask_ratio=0.2, max_rounds=1, pgd_steps=2,
                                                          train_steps=2, seed=0, device="cpu"), splits=("train",), report=False)
    assert hashes(path) == before
    written = out / path.name
    assert written.is_file() and result.files == [written]
    with zipfile.ZipFile(written) as zf:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
    with np.load(written) as d:
        assert list(d.files) == list(arrays)
        for key in arrays:
            assert d[key].dtype == arrays[key].dtype and d[key].shape == arrays[key].shape
            if key != "train_images":
                np.testing.assert_array_equal(d[key], arrays[key])
        diff = d["train_images"].astype(int) - arrays["train_images"].astype(int)
    assert np.any(diff != 0)
    assert np.abs(diff).max() <= 8  # 8/255 of 0..255, rounded
    assert np.count_nonzero(diff) / diff.size <= np.ceil(0.2 * 28 * 28) / (28 * 28) + 1e-9  # top-k per image, k rounded up
    # only the train split was protected: fidelity counts 40 samples
    assert result.fidelity["job"]["samples"] == 40


def test_image_folder_same_tree_and_bit_depth(medmnist_dir, tmp_path, hashes):
    with np.load(medmnist_dir / "breastmnist.npz") as d:
        images, labels = d["train_images"][:12], d["train_labels"][:12, 0]
    root = tmp_path / "pngs"
    for i, (img, lab) in enumerate(zip(images, labels)):
        folder = root / f"class{lab}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{i:02d}.png")
    wide = root / "class0" / "wide16.png"
    Image.fromarray(images[0].astype(np.uint16) * 257).save(wide)
    before = hashes(root)
    out = tmp_path / "out"
    result = run_protect_job([root], out, ProtectSettings(**SETTINGS), labels="folders", report=False)
    assert hashes(root) == before
    assert not result.skipped
    src_files = sorted(p.relative_to(root) for p in root.rglob("*.png"))
    out_files = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert src_files == out_files
    for rel in src_files:
        with Image.open(root / rel) as a, Image.open(out / rel) as b:
            assert a.mode == b.mode and a.size == b.size
            assert np.array(a).dtype == np.array(b).dtype
    back = load_paths([out], labels="folders")
    assert sorted(len(s.samples) for s in back.series) == sorted(len(s.samples) for s in load_paths([root], labels="folders").series)
