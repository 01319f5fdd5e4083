"""Fidelity numbers against values computed independently (numpy / scikit-image)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from salm_desktop.core.fidelity.metrics import JobFidelity, SeriesFidelity, pooled_fidelity
from salm_desktop.core.model import IntensityMap, Sample, Series, SourceRef, StoredFormat
from salm_desktop.core.protect.masks import body_mask


def _series(arrays, intensity, sid="s1") -> Series:
    samples = [Sample(key=f"k{i}", shape=a.shape, reader=lambda a=a: a, stored=StoredFormat.for_dtype("int16"),
                      source=SourceRef(Path(f"/x/{i}"))) for i, a in enumerate(arrays)]
    return Series(id=sid, kind="dicom", modality="CT", samples=samples, intensity=intensity, root=Path("/x"))


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :40]
    body = ((yy - 24) ** 2 + (xx - 20) ** 2 < 15**2)
    originals = [np.where(body, 40.0, -1000.0) + rng.normal(0, 20, body.shape).round() for _ in range(4)]
    deltas = [np.where(rng.random(body.shape) < 0.1, rng.integers(-60, 61, body.shape), 0).astype(np.float64) for _ in range(4)]
    return originals, [o + d for o, d in zip(originals, deltas)], deltas


def test_series_numbers_match_independent_computation(pair):
    originals, protected, deltas = pair
    intensity = IntensityMap.for_ct()
    fid = SeriesFidelity.for_series(_series(originals, intensity), epsilon=8 / 255)
    for i, (o, p) in enumerate(zip(originals, protected)):
        fid.add(i, o, p)
    got = fid.as_dict()

    norm = lambda a: (np.asarray(a) + 160.0) / 400.0  # noqa: E731 - the soft-tissue window C40/W400
    expected_psnr = peak_signal_noise_ratio(np.concatenate([norm(o).ravel() for o in originals]),
                                            np.concatenate([norm(p).ravel() for p in protected]), data_range=1.0)
    assert got["psnr_db"] == pytest.approx(expected_psnr, rel=1e-9)
    expected_ssim = np.mean([structural_similarity(norm(o), norm(p), data_range=1.0, win_size=7)
                             for o, p in zip(originals, protected)])
    assert got["ssim"] == pytest.approx(expected_ssim, rel=1e-9)
    all_d = np.concatenate([d.ravel() for d in deltas])
    assert got["max_abs_change_native"] == np.abs(all_d).max()
    assert got["mean_abs_change_native"] == pytest.approx(np.abs(all_d).mean())
    assert got["fraction_changed"] == pytest.approx(np.count_nonzero(all_d) / all_d.size)
    fg = np.concatenate([body_mask(o, intensity).ravel() for o in originals])
    disc = np.concatenate([np.broadcast_to(o > -500, o.shape).ravel() for o in originals])
    assert np.array_equal(fg, disc)  # the disc (40 HU) is the body, the air (-1000 HU) is not
    assert got["foreground"]["pixels"] == fg.sum()
    assert got["foreground"]["fraction_changed"] == pytest.approx(np.count_nonzero(all_d[fg]) / fg.sum())
    assert got["background"]["mean_abs_change_native"] == pytest.approx(np.abs(all_d[~fg]).mean())
    assert got["epsilon_native"] == pytest.approx(8 / 255 * 400)
    assert fid.hist_before.sum() == fid.hist_after.sum() == all_d.size
    assert len(fid.slices) == 2  # interior, evenly spaced representatives of 4 samples


def test_job_pools_series(pair):
    originals, protected, deltas = pair
    job = JobFidelity()
    a = job.add_series(SeriesFidelity.for_series(_series(originals[:2], IntensityMap.for_ct(), "a")))
    b = job.add_series(SeriesFidelity.for_series(_series(originals[2:], IntensityMap(0, 100), "b")))
    for i in range(2):
        a.add(i, originals[i], protected[i])
        b.add(i, originals[2 + i], protected[2 + i])
    s = job.summary()
    mse = (a.sq_err_norm + b.sq_err_norm) / (a.all_.pixels + b.all_.pixels)
    assert s["psnr_db"] == pytest.approx(10 * math.log10(1 / mse))
    assert s["samples"] == 4
    assert s["max_abs_change_native"] == max(a.all_.max_abs, b.all_.max_abs)

    # a batch job pools its units' series from their manifests: the same numbers as one job over them
    pooled = pooled_fidelity([a.as_dict(), b.as_dict()])
    assert pooled["series"] == [a.as_dict(), b.as_dict()]
    for key in ("samples", "pixels", "fraction_changed", "max_abs_change_native", "native_units"):
        assert pooled["job"][key] == s[key]
    for key in ("psnr_db", "ssim", "mean_abs_change_native"):
        assert pooled["job"][key] == pytest.approx(s[key], rel=1e-9)
    for region in ("foreground", "background"):
        assert pooled["job"][region] == pytest.approx(s[region], rel=1e-9)


def test_identical_images_give_infinite_psnr_as_none():
    img = np.arange(100, dtype=float).reshape(10, 10)
    fid = SeriesFidelity.for_series(_series([img], IntensityMap(0, 100)))
    fid.add(0, img, img.copy())
    d = fid.as_dict()
    assert d["psnr_db"] is None and d["ssim"] == 1.0 and d["fraction_changed"] == 0.0


def test_roi_mean_and_std(pair):
    originals, protected, _ = pair
    labels = np.zeros(originals[0].shape, dtype=int)
    labels[10:20, 10:30] = 1
    labels[30:40, 5:15] = 2
    fid = SeriesFidelity.for_series(_series(originals, IntensityMap.for_ct()), roi=lambda i: labels if i < 3 else None)
    for i, (o, p) in enumerate(zip(originals, protected)):
        fid.add(i, o, p)
    rows = {r["label"]: r for r in fid.as_dict()["roi"]}
    for lab in (1, 2):
        before = np.concatenate([o[labels == lab] for o in originals[:3]])
        after = np.concatenate([p[labels == lab] for p in protected[:3]])
        assert rows[lab]["voxels"] == before.size
        assert rows[lab]["mean_change"] == pytest.approx(after.mean() - before.mean(), abs=1e-9)
        assert rows[lab]["std_before"] == pytest.approx(before.std(), rel=1e-9)
        assert rows[lab]["std_after"] == pytest.approx(after.std(), rel=1e-9)


def test_html_only_report_draws_its_own_figures(pair, tmp_path):
    from salm_desktop.core.fidelity.report import write_report

    originals, protected, _ = pair
    job = JobFidelity()
    fid = job.add_series(SeriesFidelity.for_series(_series(originals, IntensityMap.for_ct()), epsilon=8 / 255))
    for i, (o, p) in enumerate(zip(originals, protected)):
        fid.add(i, o, p)
    paths = write_report(tmp_path, job, settings={"method": "test"}, pdf=False)
    assert set(paths) == {"html"} and not (tmp_path / "report.pdf").exists()
    text = paths["html"].read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 2
    assert f"{fid.as_dict()['psnr_db']:.4g}" in text


def test_report_formats_none_and_infinite_psnr():
    from salm_desktop.core.fidelity.report import _fmt, _psnr

    assert _fmt(None) == "n/a"
    assert _fmt(_psnr(None)) == "∞ (identical)"
    assert _fmt(_psnr(41.23456)) == "41.23"
