"""The one body mask on real data: CT by HU threshold + morphology, MR by Otsu + morphology."""

from __future__ import annotations

import numpy as np
import pydicom

from salm_desktop.core.model import IntensityMap
from salm_desktop.core.protect.masks import body_mask
from salm_desktop.core.studies.loader import load_paths


def _hu(path):
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_ct_body_excludes_air_and_padding_keeps_lungs(dicom_dir):
    ct = _hu(dicom_dir / "ct_3slice_dcmqi" / "dicom" / "02.dcm")
    body = body_mask(ct, IntensityMap.for_window(40, 400, "HU"))
    air = (ct >= -1500) & (ct <= -900)
    # air around the patient (inside the reconstruction circle) and the padding outside it are background;
    # the rest of the air is bowel gas inside the outline, which stays in the body
    assert (~body)[air].mean() > 0.9
    assert not body[ct < -1500].any()
    assert 0.2 < body.mean() < 0.8
    # every dense pixel of the patient is in the body; holes (lung, gas) are filled
    dense = ct > -200
    assert body[dense].mean() > 0.97
    assert (air & body).sum() > 0  # gas inside the outline stays in the body (holes filled)
    # the mask is one smooth region: no pixel-scale speckle at its edge
    from scipy import ndimage
    assert ndimage.label(body)[1] <= 3


def test_mr_body_mask_from_otsu_and_morphology(dicom_dir):
    result = load_paths([dicom_dir / "hitachi_shoulder_mr"])
    series = result.series[0]
    sample = series.samples[len(series.samples) // 2]
    native = sample.read()
    body = body_mask(native, series.intensity)
    assert body.shape == native.shape and 0.05 < body.mean() < 0.95
    # the background is darker than the body
    assert np.median(native[~body]) < np.median(native[body])


def test_constant_image_is_all_body():
    assert body_mask(np.full((20, 20), 7.0, np.float32), IntensityMap(0, 10)).all()


def _breast_images(medmnist_dir, n=4):
    import torch

    with np.load(medmnist_dir / "breastmnist.npz") as d:
        images = d["train_images"][:n].astype(np.float32) / 255.0
    return torch.from_numpy(images)[:, None]


def test_topk_mask_picks_the_highest_scores_of_each_sample(medmnist_dir):
    import torch

    from salm_desktop.core.protect.masks import topk_mask

    images = _breast_images(medmnist_dir)
    # a tiny ramp breaks the ties of 8-bit values, so "the top 20 %" is one well-defined set
    score = images + torch.arange(images[0].numel()).reshape(images.shape[1:]) * 1e-7
    mask = topk_mask(score, 0.2)
    assert mask.shape == score.shape and mask.dtype == torch.bool
    k = round(0.2 * 28 * 28)
    for s, m in zip(score, mask):
        assert int(m.sum()) == k
        assert float(s[m].min()) > float(s[~m].max())


def test_topk_mask_stays_inside_the_allowed_region(medmnist_dir):
    import torch

    from salm_desktop.core.protect.masks import topk_mask

    images = _breast_images(medmnist_dir)
    allowed = torch.zeros_like(images, dtype=torch.bool)
    allowed[..., :10, :] = True  # 280 of 784 pixels
    wide = topk_mask(images, 0.2, allowed)  # 157 wanted, all inside the region
    assert not (wide & ~allowed).any() and all(int(m.sum()) == 157 for m in wide)
    narrow = torch.zeros_like(allowed)
    narrow[..., :5, :5] = True  # 25 pixels: fewer than asked
    small = topk_mask(images, 0.2, narrow)
    assert torch.equal(small, narrow)
    assert topk_mask(images, 1.0).all()
