"""Checks run on every worker before any unit starts.

This module is pickled *by value* (see executor.py), so that its functions run even on a worker
where salm_desktop is not importable, and say so instead of failing to unpickle.
"""

from __future__ import annotations


def worker_environment() -> dict:
    """What the worker can import: salm_desktop's version and file, torch's version, CUDA."""
    import os
    import sys

    facts = {"pid": os.getpid(), "python": sys.version.split()[0]}
    try:
        import salm_desktop
    except Exception as exc:  # noqa: BLE001 - any import failure is the answer
        facts["error"] = f"cannot import salm_desktop ({type(exc).__name__}: {exc})"
        return facts
    facts["version"] = salm_desktop.__version__
    facts["file"] = salm_desktop.__file__
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["cuda"] = bool(torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001
        facts["error"] = f"cannot import torch ({type(exc).__name__}: {exc})"
    return facts


def can_write(folder: str) -> str:
    """'' when the worker can create, write, read back and delete a file in ``folder``; else the reason."""
    import os
    import uuid

    path = os.path.join(folder, f".salm-write-probe-{uuid.uuid4().hex}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"salm")
            handle.flush()
            os.fsync(handle.fileno())
        with open(path, "rb") as handle:
            if handle.read() != b"salm":
                return "a file written there reads back differently"
        os.unlink(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def missing_paths(paths: list) -> list:
    """The inputs this worker cannot see."""
    import os

    return [p for p in paths if not os.path.exists(p)]


WORKER_MODULES = ("salm_desktop.core.jobs", "salm_desktop.core.protect.engine", "salm_desktop.core.export.dicom",
                  "salm_desktop.core.export.npz", "salm_desktop.core.fidelity.report", "matplotlib.backends.backend_pdf")


def import_worker_modules() -> str:
    """Import what every unit uses once, while the cluster starts, not inside the first unit's time."""
    import importlib

    for name in WORKER_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the unit will report it where it matters
            return f"{name}: {type(exc).__name__}: {exc}"
    return ""
