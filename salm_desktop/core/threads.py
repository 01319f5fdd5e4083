"""The ``threads`` setting: torch intra-op threads per unit.

The reduction order, hence a unit's bytes, depends on the thread count, so a batch that pins it gets
the same bytes wherever a unit runs (in-process or on a cluster worker, docs/cluster.md)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


def parse_threads(value: Any, where: str = "threads") -> int | None:
    """The ``threads`` setting: torch threads per unit (None: leave torch's own default)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(value) < 1:
        raise ValueError(f"{where} {value!r} must be a whole number of threads >= 1")
    return int(value)


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Run torch with exactly ``threads`` intra-op threads (the reduction order, hence the bytes, depend on it)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
