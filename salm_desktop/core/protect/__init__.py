"""SALM protection engine: sparse, locally masked noise (a class texture on 2D 8-bit images, sample-wise
error-minimizing noise elsewhere).

Qt-free. See docs/algorithm.md for the algorithm and the reasons for every default.
"""

from .device import resolve_device
from .engine import ProtectResult, preview_mask, protect_series
from .masks import body_mask, topk_mask
from .preview import default_mask_ratio, uses_class_texture
from .settings import ProtectSettings

__all__ = [
    "ProtectResult",
    "ProtectSettings",
    "body_mask",
    "default_mask_ratio",
    "preview_mask",
    "protect_series",
    "resolve_device",
    "topk_mask",
    "uses_class_texture",
]
