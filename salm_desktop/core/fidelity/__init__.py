"""Clinical-fidelity metrics and the report (report.html, report.pdf). Qt-free; figures use
matplotlib's Agg canvas. Definitions in docs/report.md."""

from salm_desktop.core.protect.masks import body_mask

from .metrics import JobFidelity, SeriesFidelity, psnr_from_mse, ssim_normalized
from .noise import highpass, noise_sd, periodicity
from .report import write_report
from .roi import RoiError, roi_for_series

__all__ = [
    "JobFidelity",
    "RoiError",
    "SeriesFidelity",
    "body_mask",
    "highpass",
    "noise_sd",
    "periodicity",
    "psnr_from_mse",
    "roi_for_series",
    "ssim_normalized",
    "write_report",
]
