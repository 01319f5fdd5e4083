"""Clinical invisibility on the real CT (issue 13), measured by code independent of the core.

Protects ``../shared/data/dicom/ct_3slice_dcmqi/dicom`` (its own window C40/W400) through the CLI
with the default settings (pseudo-labels, the data are unlabelled), reads original and protected
DICOM back with pydicom and the liver label with SimpleITK, and reports per slice and overall:

- the largest change in HU (target: <= 8/255 of the file's window width + 1 HU rounding);
- the high-pass noise SD (image minus its 5x5 mean) inside the liver before/after (target: <= +5 %);
- the liver's mean shift (target: <= 1 HU);
- the largest local autocorrelation peak of the perturbation at lags 2..16 px along rows/columns
  (target: no peak more than 0.03 above both neighbouring lags);
- the fraction of air pixels (-1500..-900 HU) changed.

    python benchmarks/ct_fidelity.py [--out DIR] [extra protect options, e.g. --epsilon 12HU]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from scipy import ndimage

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dicom" / "ct_3slice_dcmqi"


def hu(path: Path) -> tuple[np.ndarray, pydicom.Dataset]:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept), ds


def highpass(a: np.ndarray) -> np.ndarray:
    return a - ndimage.uniform_filter(a, 5, mode="reflect")


def autocorr_peaks(d: np.ndarray, lo: int = 2, hi: int = 16) -> tuple[float, int, str]:
    d = d - d.mean()
    energy = float((d * d).sum()) or 1.0
    best = (0.0, 0, "")
    for axis in (0, 1):
        ac = [float((np.take(d, range(0, d.shape[axis] - k), axis) * np.take(d, range(k, d.shape[axis]), axis)).sum()) / energy
              for k in range(hi + 2)]
        for k in range(lo, hi + 1):
            excess = ac[k] - max(ac[k - 1], ac[k + 1])
            if excess > best[0]:
                best = (excess, k, "vertical" if axis == 0 else "horizontal")
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args, extra = ap.parse_known_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="ct_fidelity_")) / "protected"
    cmd = [sys.executable, "-m", "salm_desktop.cli", "protect", str(DATA / "dicom"), "--out", str(out),
           "--labels", "clusters:2", "--roi", str(DATA / "seg" / "liver_seg.nrrd"), "--overwrite", "--json", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:])
        return proc.returncode
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    label_img = sitk.ReadImage(str(DATA / "seg" / "liver_seg.nrrd"))
    labels = sitk.GetArrayFromImage(label_img)
    rows = []
    liver_o, liver_p, hp_o, hp_p = [], [], [], []
    air_changed, air_total, max_change, worst_peak = 0, 0, 0.0, (0.0, 0, "")
    window_width = None
    for src in sorted((DATA / "dicom").glob("*.dcm")):
        orig, ds = hu(src)
        matches = [p for p in out.rglob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber == ds.InstanceNumber]
        prot, _ = hu(matches[0])
        ww = ds.WindowWidth
        window_width = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
        x, y, z = label_img.TransformPhysicalPointToIndex(tuple(float(v) for v in ds.ImagePositionPatient))
        liver = labels[z] > 0
        diff = prot - orig
        air = (orig >= -1500) & (orig <= -900)
        air_changed += int(np.count_nonzero(diff[air]))
        air_total += int(air.sum())
        max_change = max(max_change, float(np.abs(diff).max()))
        peak = autocorr_peaks(diff)
        worst_peak = max(worst_peak, peak)
        liver_o.append(orig[liver]); liver_p.append(prot[liver])
        hp_o.append(highpass(orig)[liver]); hp_p.append(highpass(prot)[liver])
        rows.append({"slice": int(ds.InstanceNumber), "liver_px": int(liver.sum()), "max_change_hu": float(np.abs(diff).max()),
                     "changed": float(np.mean(diff != 0)), "peak_excess": round(peak[0], 4), "peak_lag": peak[1]})
    lo, lp, ho, hp = (np.concatenate(v) for v in (liver_o, liver_p, hp_o, hp_p))
    budget = 8 / 255 * window_width
    result = {
        "command": " ".join(["python", "benchmarks/ct_fidelity.py", *extra]),
        "budget_hu": budget,
        "max_change_hu": max_change, "max_change_target_hu": budget + 1,
        "liver_highpass_sd_before": float(ho.std()), "liver_highpass_sd_after": float(hp.std()),
        "liver_highpass_sd_change": float(hp.std() / ho.std() - 1),
        "liver_mean_shift_hu": float(lp.mean() - lo.mean()),
        "autocorr_peak_excess": round(worst_peak[0], 4), "autocorr_peak_lag": worst_peak[1], "autocorr_peak_axis": worst_peak[2],
        "air_fraction_changed": air_changed / max(1, air_total),
        "fraction_changed": summary.get("fraction_pixels_changed"),
        "surrogate_accuracy": summary.get("surrogate_accuracy"), "rounds": summary.get("rounds"),
        "per_slice": rows,
    }
    result["targets_met"] = {
        "max_change": max_change <= budget + 1,
        "liver_noise": result["liver_highpass_sd_change"] <= 0.05,
        "liver_mean": abs(result["liver_mean_shift_hu"]) <= 1.0,
        "no_periodic_peak": worst_peak[0] <= 0.03,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
