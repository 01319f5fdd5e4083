"""The report of a real CT job: HTML parses, PDF renders, numbers match an independent computation."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from skimage.metrics import peak_signal_noise_ratio

from salm_desktop.core.jobs import run_protect_job
from salm_desktop.core.protect import ProtectSettings


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.data_json, self._in_json = [], 0, "", False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "table":
            self.tables += 1
        if tag == "script" and attrs.get("id") == "report-data":
            self._in_json = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_json = False

    def handle_data(self, data):
        if self._in_json:
            self.data_json += data


@pytest.fixture(scope="module")
def ct_report(dicom_dir, tmp_path_factory):
    inp = dicom_dir / "ct_3slice_dcmqi" / "dicom"
    out = tmp_path_factory.mktemp("report") / "out"
    roi = dicom_dir / "ct_3slice_dcmqi" / "seg" / "liver_seg.nrrd"
    result = run_protect_job([inp], out, ProtectSettings(method="random", mask_ratio=0.25, seed=5, device="cpu"),
                             roi=roi, efficacy={"arch": "cnn", "protected": {"peak": {"auc": 0.61}}})
    return inp, out, roi, result


def _native(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_html_is_self_contained_and_numbers_match(ct_report):
    inp, out, roi, result = ct_report
    html_text = (out / "report.html").read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(html_text)
    assert parser.tables >= 4
    assert len(parser.images) == 2  # slices + histogram of the one series
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html_text and "https://" not in html_text  # nothing to fetch
    data = json.loads(parser.data_json)
    series = data["series"][0]

    names = ["01.dcm", "02.dcm", "03.dcm"]
    before = np.stack([_native(inp / n) for n in names])
    after = np.stack([_native(out / n) for n in names])
    diff = after - before
    psnr = peak_signal_noise_ratio((before + 160) / 400, (after + 160) / 400, data_range=1.0)  # the file's window C40/W400
    assert series["psnr_db"] == pytest.approx(psnr, rel=1e-9)
    assert data["job"]["psnr_db"] == pytest.approx(psnr, rel=1e-9)
    assert series["max_abs_change_native"] == np.abs(diff).max()
    assert series["fraction_changed"] == pytest.approx(np.count_nonzero(diff) / diff.size)
    assert 0.1 < series["fraction_changed"] <= 0.25
    assert f"{psnr:.4g}" in html_text  # the visible table shows the same value

    # ROI: the liver label map over the same three slices (SimpleITK orders z like ImagePositionPatient)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(roi)))
    z = {round(float(pydicom.dcmread(inp / n).ImagePositionPatient[2]), 3): i for i, n in enumerate(names)}
    image = sitk.ReadImage(str(roi))
    order = [z[round(image.TransformIndexToPhysicalPoint((0, 0, k))[2], 3)] for k in range(labels.shape[0])]
    liver = np.zeros(before.shape, dtype=bool)
    for k, i in enumerate(order):
        liver[i] = labels[k] == 1
    assert liver.sum() > 1000
    row = {r["label"]: r for r in series["roi"]}[1]
    assert row["voxels"] == liver.sum()
    assert row["mean_before"] == pytest.approx(before[liver].mean())
    assert row["mean_change"] == pytest.approx(after[liver].mean() - before[liver].mean(), abs=1e-9)
    assert row["std_change"] == pytest.approx(after[liver].std() - before[liver].std(), abs=1e-9)
    assert "0.61" in html_text  # efficacy numbers passed in are shown


def test_pdf_renders_with_pdftoppm(ct_report, tmp_path):
    _, out, _, _ = ct_report
    proc = subprocess.run(["pdftoppm", "-r", "40", "-png", str(out / "report.pdf"), str(tmp_path / "page")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 3  # text, slices, histogram
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000 for p in pages)
    info = subprocess.run(["pdfinfo", str(out / "report.pdf")], capture_output=True, text=True).stdout
    assert re.search(r"Pages:\s+\d+", info)


def test_report_has_no_patient_data(ct_report, dicom_dir):
    inp, out, _, _ = ct_report
    ds = pydicom.dcmread(inp / "01.dcm")
    text = (out / "report.html").read_text(encoding="utf-8")
    pdf_text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True).stdout
    for value in (str(ds.PatientName), str(ds.get("PatientID", "")), str(ds.StudyInstanceUID)):
        if value:
            # as a value of its own: a short numeric ID ("99000") can occur by chance inside the random
            # digits of a pseudonymous 2.25 UID, which is not the ID leaking
            alone = re.compile(rf"(?<![0-9.]){re.escape(value)}(?![0-9])")
            assert not alone.search(text) and not alone.search(pdf_text), value
    assert result_series_id(out) in pdf_text


def result_series_id(out: Path) -> str:
    return json.loads((out / "manifest.json").read_text())["series"][0]["series"]


def test_report_states_what_the_protection_does_not_promise(ct_report):
    _, out, _, _ = ct_report
    html_text = (out / "report.html").read_text(encoding="utf-8")
    pdf_text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True).stdout
    assert "What the protection does and does not promise" in html_text
    assert "median filter" in html_text and "does not de-identify" in html_text
    assert "WHAT THE PROTECTION DOES AND DOES NOT PROMISE" in pdf_text and "median filter" in pdf_text
