"""Device choice: ``auto`` picks CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from .settings import PRECISIONS


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' requested but Apple MPS is not available")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}") from exc


# Arithmetic of the surrogate's forward/backward passes. "fp32" is the reference path (bit-identical
# to releases before precision existed); "fp32_fast" keeps float32 but lays the tensors out
# channels-last and, for the passes with the surrogate fixed (PGD steps, saliency, stop check), folds
# each batch norm into the convolution before it (x2.1-2.2 per PGD step on an AVX2 CPU,
# docs/benchmarks.md; same gradients up to float rounding); "bf16" runs the convolutions under bfloat16 autocast with a
# channels-last layout except the first one, which sees the perturbed input in float32 (bf16's 8 bits
# are coarser than one PGD step); "bf16_all" puts the first convolution in bf16 too (faster, but the
# surrogate sees a coarse copy of the noise: measured in docs/benchmarks.md). The noise, its projection,
# the stop check and everything stored stay float32. "auto" picks "bf16" where the hardware has native
# bfloat16 arithmetic (AVX512_BF16/AMX on x86, CUDA compute capability 8.0+), else "fp32_fast" on the
# CPU (emulated bf16 is ten times slower than float32 there) and "fp32" elsewhere.


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively (faster than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``ProtectSettings.precision`` on ``device`` -> "fp32" | "bf16" | "bf16_all"."""
    name = (name or "auto").strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if native_bf16(device):
            return "bf16"
        return "fp32_fast" if device.type == "cpu" else "fp32"
    if name != "fp32" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision {name!r} is not available on device {device.type!r}; use fp32")
    return name
