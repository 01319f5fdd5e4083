"""Clinical-fidelity metrics and the report (report.html, report.pdf). Qt-free; figures use
matplotlib's Agg canvas. Definitions in docs/report.md."""

from .metrics import JobFidelity, SeriesFidelity, foreground_mask, psnr_from_mse, ssim_normalized
from .report import write_report
from .roi import RoiError, roi_for_series

__all__ = [
    "JobFidelity",
    "RoiError",
    "SeriesFidelity",
    "foreground_mask",
    "psnr_from_mse",
    "roi_for_series",
    "ssim_normalized",
    "write_report",
]
