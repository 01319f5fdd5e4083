"""Loads every mutated file given on the command line in one process under a memory limit.

Run by test_fuzz.py as a subprocess so that a crash, a hang or a memory blow-up in the loader
fails the test instead of killing pytest. Prints one JSON line per file:
{"path", "outcome": "loaded" | "skipped" | "read_error", "reason", "seconds"} and at the end
{"max_rss_mb": ...}.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

MEMORY_LIMIT = 3 * 1024**3  # address space, bytes: a decoder that tries to allocate 64k x 64k x frames fails fast


def main(paths: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from salm_desktop.core.studies import load_paths

    for raw in paths:
        path = Path(raw)
        started = time.monotonic()
        record = {"path": path.name}
        try:
            result = load_paths([path])
            if result.series:
                record["outcome"] = "loaded"
                for series in result.series:
                    for sample in series.samples:
                        native = sample.read()
                        # What loaded must survive the write-back path unchanged (e.g. no slope of 0).
                        if not np.array_equal(sample.stored.quantize(native), native):
                            record["outcome"] = "roundtrip_broken"
                            record["reason"] = f"{series.id}: stored format {sample.stored} does not round-trip"
                            break
            else:
                record["outcome"] = "skipped"
                record["reason"] = result.skipped[0].reason if result.skipped else ""
        except ValueError as exc:  # a pixel read that fails lazily must name the file
            record["outcome"] = "read_error"
            record["reason"] = str(exc)
        record["seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(record), flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"max_rss_mb": usage.ru_maxrss / 1024}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
