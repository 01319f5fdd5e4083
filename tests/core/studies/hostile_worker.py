"""Loads each hostile case given on the command line and reads its pixels, in one process under a
memory limit (run by test_hostile_headers.py and benchmarks/hostile_inputs.py as a subprocess, so a
crash, a hang or a memory blow-up fails the caller instead of killing it).

One JSON line per file: {"path", "outcome", "reason", "seconds"}; outcome is "loaded" (pixels read),
"skipped" (at scan time, with a reason), "pixel_skip" (a PixelReadError naming the file: a job skips
the file) or "aborted" (anything else: a job would stop). Last line: {"max_rss_mb": ...}.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    """This process's own peak resident memory. ru_maxrss would not do: Linux carries it over from the
    forked parent across exec, so under a large pytest process it reports the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(paths: list[str]) -> int:
    limit = int(os.environ.get("HOSTILE_ADDRESS_SPACE", str(3 * 1024**3)))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from salm_desktop.core.studies import load_paths
    from salm_desktop.core.studies.limits import PixelReadError

    for raw in paths:
        path = Path(raw)
        started = time.monotonic()
        record: dict = {"path": path.name}
        try:
            result = load_paths([path])
            if not result.series:
                record["outcome"] = "skipped"
                record["reason"] = result.skipped[0].reason if result.skipped else ""
            else:
                record["outcome"] = "loaded"
                try:
                    for series in result.series:
                        series.intensity  # the lazy window reads pixels too
                        for sample in series.samples:
                            sample.read()
                except PixelReadError as exc:
                    record["outcome"] = "pixel_skip"
                    record["reason"] = str(exc)
                    record["names_file"] = exc.path.name == path.name
        except BaseException as exc:  # noqa: BLE001 - anything else would abort a job
            record["outcome"] = "aborted"
            record["reason"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        record["seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(record), flush=True)
    print(json.dumps({"max_rss_mb": _peak_rss_mb()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
