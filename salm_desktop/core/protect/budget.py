"""The budget of a series and the noise's shape: window-relative epsilon, noise cap, projection,
and the smoothing the local-mean-free step uses."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from salm_desktop.core.model import Series

from .masks import body_mask
from .settings import ProtectSettings


def _project(d: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """|d| <= eps, and x + d inside [0, 1] (pixels outside the window may only move towards it)."""
    if isinstance(eps, torch.Tensor):  # one budget per sample (series differ in window and noise)
        d = torch.maximum(torch.minimum(d, eps), -eps)
    else:
        d = d.clamp(-eps, eps)
    lo = torch.clamp(-x, max=0.0)
    hi = torch.clamp(1.0 - x, min=0.0)
    return torch.maximum(torch.minimum(d, hi), lo)


LOCAL_MEAN_SIGMA = 4.0


def _binomial_blur(t: torch.Tensor) -> torch.Tensor:
    """[1 4 6 4 1]/16 along every spatial axis (Gaussian SD 1 px), replicate borders."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=t.dtype, device=t.device) / 16.0
    dims = t.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = 5
        pad = [0] * (2 * dims)
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = 2
        t = conv(F.pad(t, pad, mode="replicate"), k.view(shape))
    return t


def _binomial_blur_shifts(t: torch.Tensor) -> torch.Tensor:
    """The same blur as weighted sums of shifted copies (equal to ``_binomial_blur`` to about 2e-7).

    A one-channel 5-tap convolution is a poor fit for oneDNN: at 512x512 the two passes forward and
    backward took about twice the surrogate's own float32 step; the sums take a fifteenth of that."""
    dims = t.ndim - 2
    for axis in range(dims):
        pad = [0] * (2 * dims)
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = 2
        p = F.pad(t, pad, mode="replicate")
        d, n = 2 + axis, t.shape[2 + axis]
        t = (p.narrow(d, 0, n) + p.narrow(d, 4, n)) * (1 / 16) + (p.narrow(d, 1, n) + p.narrow(d, 3, n)) * (4 / 16) \
            + p.narrow(d, 2, n) * (6 / 16)
    return t


def _gaussian_smooth(t: torch.Tensor, sigma: float = LOCAL_MEAN_SIGMA) -> torch.Tensor:
    """Separable Gaussian smoothing of (N, 1, *spatial), zero outside the image."""
    radius = int(round(3 * sigma))
    g = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=t.dtype, device=t.device) / sigma) ** 2)
    g = g / g.sum()
    dims = t.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = g.numel()
        pad = [0] * dims
        pad[axis] = radius
        t = conv(t, g.view(shape), padding=tuple(pad))
    return t


@functools.lru_cache(maxsize=16)
def _gaussian_band(n: int, sigma: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    """n x n matrix of the truncated Gaussian of ``_gaussian_smooth`` (rows: output pixel; zero padding)."""
    radius = int(round(3 * sigma))
    g = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    g = g / g.sum()
    offset = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    inside = offset.abs() <= radius
    band = torch.zeros(n, n, dtype=torch.float64)
    band[inside] = g[(offset + radius)[inside]]
    return band.to(dtype=dtype, device=device)


def _gaussian_smooth_banded(t: torch.Tensor, sigma: float = LOCAL_MEAN_SIGMA) -> torch.Tensor:
    """``_gaussian_smooth`` as one matrix product per axis with the Gaussian's band matrix (equal to
    about 1e-7). The one-channel 25-tap convolutions ran badly in oneDNN (as the anti-alias blur did):
    at 512x512 they took 39 % of a CT round's CPU time (benchmarks/profile_protect.py ct --shapes); a
    dense product does 20 times the arithmetic and still takes half the time (docs/benchmarks.md)."""
    for axis in range(2, t.ndim):
        band = _gaussian_band(t.shape[axis], float(sigma), t.dtype, str(t.device))
        t = torch.movedim(torch.movedim(t, axis, -1) @ band, -1, axis)  # the band is symmetric
    return t


def _local_mean_free(settings: ProtectSettings, series: Series) -> bool:
    value = getattr(settings, "local_mean_free", "auto")
    return series.intensity.unit == "HU" if value == "auto" else bool(value)


def series_noise_sd(series: Series, max_samples: int = 3) -> float | None:
    """The series' own noise level (native units): median over a few samples of the robust SD of
    the high-pass residual in homogeneous body tissue (salm_desktop.core.fidelity.noise)."""
    from salm_desktop.core.fidelity.noise import noise_sd

    n = len(series.samples)
    picks = sorted({int(round(v)) for v in np.linspace(0, n - 1, min(max_samples, n))}) if n else []
    values = []
    for i in picks:
        native = series.samples[i].read()
        sd = noise_sd(native, body_mask(native, series.intensity))
        if sd is not None:
            values.append(sd)
    return float(np.median(values)) if values else None


def series_epsilon(series: Series, settings: ProtectSettings, noise: float | None = None) -> float:
    """The budget of one series in its normalized scale (a fraction of its window width).

    ``settings.epsilon_native`` (e.g. 12 from "12HU") wins over ``settings.epsilon``; a native
    budget in a unit the series does not have is refused with a one-line reason. With
    ``settings.noise_cap`` the budget is at most that fraction of ``noise`` (the series' noise SD).
    """
    width = series.intensity.width
    eps = float(settings.epsilon)
    if settings.epsilon_native is not None:
        unit = settings.epsilon_unit or ""
        if unit and series.intensity.unit != unit:
            have = series.intensity.unit or "arbitrary units"
            raise ValueError(f"series {series.id} ({series.modality}): a budget of {settings.epsilon_native:g} {unit} "
                             f"cannot apply to data in {have}; give it as a fraction of the window, e.g. 8/255")
        eps = float(settings.epsilon_native) / width
    if settings.noise_cap is not None:
        if noise is None:
            raise ValueError(f"series {series.id}: its noise level cannot be estimated, so the noise cap "
                             f"{settings.noise_cap:g} x noise SD cannot be applied")
        eps = min(eps, float(settings.noise_cap) * noise / width)
    return eps
