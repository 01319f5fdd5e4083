"""Input hardening shared by every reader: the memory limit, the pixel-read error, size plausibility.

A header can claim anything. Every reader checks what a file claims against what it can hold (its
size on disk, or the most a compressed stream can expand to) and against :func:`memory_limit`
*before* it allocates or decodes, and turns every failure to read pixels into a
:class:`PixelReadError` that names the file, so a job can skip that file and protect the others.
"""

from __future__ import annotations

import os
from pathlib import Path

MEMORY_LIMIT_ENV = "SALM_MEMORY_LIMIT"
DEFAULT_RAM_FRACTION = 1 / 8
FALLBACK_LIMIT = 2 * 2**30  # when the RAM size cannot be read
# deflate (gzip, zlib, PNG, zip) cannot expand more than ~1032:1; a header that claims more data than
# that from the bytes present is lying. Some slack for headers and padding.
DEFLATE_MAX_RATIO = 1100
# Native values beyond this cannot get an intensity window (float precision) and are no real measurement.
MAX_NATIVE_MAGNITUDE = 1e20


class PixelReadError(ValueError):
    """A sample's pixels could not be read; ``path`` is the file to skip, ``reason`` one line for the user."""

    def __init__(self, path: Path | str, reason: str, others: list[Path] | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.paths = [self.path] + [Path(p) for p in (others or []) if Path(p) != self.path]  # all files to skip
        super().__init__(f"{path}: {reason}")


def _parse_bytes(text: str) -> int | None:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = 1
    for suffix, mult in (("K", 2**10), ("M", 2**20), ("G", 2**30), ("T", 2**40)):
        if text.endswith(suffix):
            text, factor = text[:-1], mult
            break
    try:
        value = float(text) * factor
    except ValueError:
        return None
    return int(value) if value > 0 else None


def physical_ram() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit() -> int:
    """Bytes one input file may need in memory once decoded (native values plus a float32 copy).

    ``SALM_MEMORY_LIMIT`` (e.g. ``4G``, ``512M`` or a number of bytes) overrides the default, one
    eighth of the machine's RAM. A file that claims more is skipped before anything is allocated.
    """
    configured = os.environ.get(MEMORY_LIMIT_ENV)
    if configured:
        parsed = _parse_bytes(configured)
        if parsed is not None:
            return parsed
    ram = physical_ram()
    return int(ram * DEFAULT_RAM_FRACTION) if ram else FALLBACK_LIMIT


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def over_memory_limit(voxels: int, itemsize: int) -> str | None:
    """The skip reason when ``voxels`` values of ``itemsize`` bytes (plus their float32 copy) exceed the limit."""
    need = int(voxels) * (int(itemsize) + 4)
    limit = memory_limit()
    if need > limit:
        return (f"needs {human_bytes(need)} of memory once decoded, over the limit of {human_bytes(limit)} "
                f"(set {MEMORY_LIMIT_ENV} to raise it)")
    return None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
