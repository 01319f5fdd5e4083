"""Benchmark scripts are not a package: tests load them from benchmarks/ by file name (fixture ``load_benchmark``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{Path(filename).stem}_under_test", BENCHMARKS / filename)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def load_benchmark():
    """``load_benchmark("efficacy.py")``: a fresh module object of that script (its own copy, so monkeypatching it
    touches no other test)."""
    return _load
