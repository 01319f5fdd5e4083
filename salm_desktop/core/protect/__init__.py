"""SALM protection engine: sample-wise error-minimizing noise with sparsity-aware local masks.

Qt-free. See docs/algorithm.md for the algorithm and the reasons for every default.
"""

from .device import resolve_device
from .engine import ProtectResult, preview_mask, protect_series
from .masks import body_mask, topk_mask
from .settings import ProtectSettings

__all__ = [
    "ProtectResult",
    "ProtectSettings",
    "body_mask",
    "preview_mask",
    "protect_series",
    "resolve_device",
    "topk_mask",
]
