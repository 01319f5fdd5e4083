"""The budget of a series and the noise's shape: window-relative epsilon, noise cap, projection,
and the smoothing the local-mean-free step uses."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from salm_desktop.core.model import Series

from .masks import body_mask
from .settings import ProtectSettings


def _projection_bounds(x: torch.Tensor, eps) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) with ``d.clamp(lower, upper) == _project(d, x, eps)`` exactly: both are min / max
    of the same numbers (-eps <= min(-x, 0) clipped ... <= 0 <= upper). x is fixed for a batch's steps,
    so the bounds are computed once and each step is one clamp instead of six passes."""
    lower = torch.clamp(-x, max=0.0)
    upper = torch.clamp(1.0 - x, min=0.0)
    if isinstance(eps, torch.Tensor):
        return torch.maximum(lower, -eps), torch.minimum(upper, eps)
    return lower.clamp(min=-eps), upper.clamp(max=eps)


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


def _band_matrix(n: int, taps: tuple[float, ...], replicate: bool) -> torch.Tensor:
    """n x n float64 matrix of the centred filter ``taps`` (rows: output pixel); borders zero-padded or,
    with ``replicate``, the edge pixel repeated (its weight folded onto the first / last column)."""
    radius = len(taps) // 2
    rows = torch.arange(n)[:, None].expand(n, len(taps))
    cols = rows + torch.arange(-radius, radius + 1)[None, :]
    weights = torch.tensor(taps, dtype=torch.float64)[None, :].expand(n, len(taps))
    if replicate:
        cols = cols.clamp(0, n - 1)
    inside = (cols >= 0) & (cols < n)
    band = torch.zeros(n, n, dtype=torch.float64)
    band.index_put_((rows[inside], cols[inside]), weights[inside], accumulate=True)
    return band


@functools.lru_cache(maxsize=32)
def _band_operator(n: int, taps: tuple[float, ...], replicate: bool, transposed: bool, dtype: torch.dtype,
                   device: str) -> torch.Tensor:
    """``_band_matrix`` (or its transpose) on ``device``: sparse CSR on the CPU (len(taps) entries per row),
    dense elsewhere (one large product suits a GPU better than many small sparse ones)."""
    band = _band_matrix(n, taps, replicate)
    band = (band.t().contiguous() if transposed else band).to(dtype=dtype, device=device)
    if torch.device(device).type != "cpu":
        return band
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is long-standing
        warnings.simplefilter("ignore", UserWarning)
        return band.to_sparse_csr()


def _filter_axes(t: torch.Tensor, taps: tuple[float, ...], replicate: bool) -> torch.Tensor:
    """The separable filter ``taps`` along every spatial axis of (N, C, *spatial) as band-matrix products;
    differentiable (the gradient applies the transposed bands, prepared once per size)."""
    if t.requires_grad:
        return _BandFilter.apply(t, taps, replicate)
    return _apply_bands(t, _bands_for(t, taps, replicate, transposed=False))


def _bands_for(t: torch.Tensor, taps: tuple[float, ...], replicate: bool, transposed: bool) -> list[torch.Tensor]:
    """One band operator per spatial axis of ``t`` (cached per size, dtype and device)."""
    return [_band_operator(n, taps, replicate, transposed, t.dtype, str(t.device)) for n in t.shape[2:]]


def _apply_bands(t: torch.Tensor, bands: list[torch.Tensor]) -> torch.Tensor:
    """``bands[k] @`` along spatial axis k. On the CPU image by image: each image's axis is moved to the front
    in a copy that stays in cache, then one sparse product; batched, the moves of the whole batch cost more
    than the products (docs/benchmarks.md, issue 20). Elsewhere one batched dense product per axis."""
    spatial = tuple(t.shape[2:])
    if t.device.type != "cpu":
        for axis, band in zip(range(2, t.ndim), bands):
            t = torch.movedim(torch.matmul(band, torch.movedim(t, axis, -2)), -2, axis)
        return t
    images = []
    for image in t.reshape(-1, *spatial):
        for axis, band in enumerate(bands):
            moved = torch.movedim(image, axis, 0)
            image = torch.movedim((band @ moved.reshape(spatial[axis], -1)).reshape(moved.shape), 0, axis)
        images.append(image)
    return torch.stack(images).reshape(t.shape)


class _BandFilter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, taps, replicate):
        ctx.taps, ctx.replicate = taps, replicate
        return _apply_bands(t, _bands_for(t, taps, replicate, transposed=False))

    @staticmethod
    def backward(ctx, grad):
        return _apply_bands(grad.contiguous(), _bands_for(grad, ctx.taps, ctx.replicate, transposed=True)), None, None


def _gaussian_taps(sigma: float) -> tuple[float, ...]:
    radius = int(round(3 * sigma))
    g = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    return tuple(float(v) for v in g / g.sum())


def _gaussian_smooth_banded(t: torch.Tensor, sigma: float = LOCAL_MEAN_SIGMA) -> torch.Tensor:
    """``_gaussian_smooth`` as one sparse band-matrix product per axis (equal to about 2e-7). The
    one-channel 25-tap convolutions ran badly in oneDNN (as the anti-alias blur did): at 512x512 they
    took 39 % of a CT round's CPU time (benchmarks/profile_protect.py ct --shapes); a dense band product
    took half of that, the sparse one a third (docs/benchmarks.md, issue 20)."""
    return _filter_axes(t, _gaussian_taps(float(sigma)), replicate=False)


BINOMIAL_TAPS = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def _binomial_blur_banded(t: torch.Tensor) -> torch.Tensor:
    """``_binomial_blur`` (replicate borders) as sparse band products: forward and backward about half
    the time of the shifted sums it replaced at 512x512 (docs/benchmarks.md, issue 20, fifth pass)."""
    return _filter_axes(t, BINOMIAL_TAPS, replicate=True)


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
