"""One-line error text for dialogs (no Qt, shared by workers and the batch queue)."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The exception's own first line (core errors already name the file and the reason)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not text:
        return type(exc).__name__
    filename = getattr(exc, "filename", None)
    if isinstance(exc, OSError) and filename and str(filename) not in text:
        return f"{filename}: {text}"
    return text
