"""Hostile inputs benchmark (issue 21): how the readers treat files whose headers lie, and what it costs.

Writes the structure-aware hostile cases of tests/core/studies/hostile_cases.py (real files of
../shared/data with lying header fields), plus real decompression bombs (NIfTI, NRRD, npz and PNG
holding gigabytes of zeros in a few MiB, built here because they take seconds), then loads each one
alone and reads its pixels in a subprocess (tests/core/studies/hostile_worker.py) under the
*default* memory limit (a fraction of this machine's RAM; no SALM_MEMORY_LIMIT), recording per
file: loaded / skipped with a reason / per-file pixel error / aborted, its time, and the worker's
peak RSS. Then one default ``protect`` (SALM, the engine's defaults) runs over a folder holding the
three real CT slices and every case, and the result is checked: the three slices are written, every
hostile file is either written or listed as skipped with a reason.

    python benchmarks/hostile_inputs.py [--skip-protect]

Output: a markdown summary on stdout, details in benchmarks/results/hostile-inputs-<stamp>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tests" / "core" / "studies"))
import hostile_cases  # noqa: E402

WORKER = REPO / "tests" / "core" / "studies" / "hostile_worker.py"
BOMB_BYTES = 6 * 2**30  # what each bomb decompresses to (zeros)


def _zeros_deflated(total: int, wbits: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    chunk = b"\0" * (64 * 2**20)
    parts = []
    left = total
    while left > 0:
        n = min(left, len(chunk))
        parts.append(comp.compress(chunk[:n]))
        left -= n
    parts.append(comp.flush())
    return b"".join(parts)


def write_bombs(out: Path) -> list[hostile_cases.Case]:
    """Files that really hold BOMB_BYTES of (compressed) zeros: the header does not lie, the size does."""
    cases = []
    side = 4096
    depth = BOMB_BYTES // (side * side * 2)  # int16
    raw = bytearray((DATA / "nifti" / "nibabel" / "anatomical.nii").read_bytes()[:352])
    endian = ">" if struct.unpack("<i", raw[:4])[0] != 348 else "<"
    struct.pack_into(endian + "4h", raw, 40, 3, side, side, depth)
    body = _zeros_deflated(BOMB_BYTES, 31)  # gzip container
    header = gzip.compress(bytes(raw))
    # a gzip member for the header followed by a member for the data: one valid .gz stream
    (out / "bomb__nifti_6GiB_zeros.nii.gz").write_bytes(header + body)
    cases.append(hostile_cases.Case("bomb__nifti_6GiB_zeros.nii.gz", "nifti", "real 6 GiB gzip bomb", "skip"))
    nrrd = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {side} {side} {depth}\nendian: little\nencoding: gzip\n\n").encode()
    (out / "bomb__nrrd_6GiB_zeros.nrrd").write_bytes(nrrd + body)
    cases.append(hostile_cases.Case("bomb__nrrd_6GiB_zeros.nrrd", "nrrd", "real 6 GiB gzip bomb", "skip"))
    n = BOMB_BYTES // (512 * 512)
    npy_header = {"descr": "|u1", "fortran_order": False, "shape": (n, 512, 512)}
    text = repr(npy_header).encode("latin-1")
    pad = 64 - (10 + len(text) + 1) % 64
    head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text) + pad + 1) + text + b" " * pad + b"\n"
    target = out / "bomb__npz_6GiB_zeros.npz"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("train_images.npy", "w", force_zip64=True) as member:
            member.write(head)
            chunk = b"\0" * (64 * 2**20)
            left = BOMB_BYTES
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
    cases.append(hostile_cases.Case(target.name, "npz", "real 6 GiB deflate bomb", "skip"))
    width = height = 60000  # 3.6 G pixels of 8-bit grey
    scan = _zeros_deflated((width + 1) * height, 15)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    (out / "bomb__png_60000x60000.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + hostile_cases._png_chunk(b"IHDR", ihdr) + hostile_cases._png_chunk(b"IDAT", scan)
        + hostile_cases._png_chunk(b"IEND", b""))
    cases.append(hostile_cases.Case("bomb__png_60000x60000.png", "png", "real 3.4 GiB PNG bomb", "skip"))
    return cases


def run_worker(paths: list[Path]) -> tuple[list[dict], float]:
    env = {k: v for k, v in os.environ.items() if k != "SALM_MEMORY_LIMIT"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HOSTILE_ADDRESS_SPACE=str(64 * 2**30))
    proc = subprocess.run([sys.executable, str(WORKER), *map(str, paths)], capture_output=True, text=True, env=env,
                          timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"worker crashed: {proc.stderr[-3000:]}")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return [r for r in lines if "path" in r], lines[-1]["max_rss_mb"]


def run_protect(folder: Path, cases: list[hostile_cases.Case]) -> dict:
    out = folder.parent / "protected"
    env = {k: v for k, v in os.environ.items() if k != "SALM_MEMORY_LIMIT"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "salm_desktop.cli", "protect", str(folder), "--out", str(out),
                           "--labels", "clusters:2", "--no-report", "--json"],
                          capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    doc = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    written = {p.name for p in out.rglob("*") if p.is_file()} if out.exists() else set()
    skipped = {Path(s["path"]).name: s["reason"] for s in doc.get("skipped", [])}
    unaccounted = [c.name for c in cases if c.name not in written and not skipped.get(c.name, "").strip()]
    return {
        "exit_code": proc.returncode, "seconds": round(seconds, 1), "traceback": "Traceback" in proc.stderr,
        "ct_slices_written": sorted(n for n in written if n in ("01.dcm", "02.dcm", "03.dcm")),
        "samples_protected": doc.get("samples"), "skipped": len(skipped), "unaccounted": unaccounted,
        "peak_rss_mb_children": round(usage.ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-protect", action="store_true", help="only the per-file load + pixel read")
    parser.add_argument("--no-bombs", action="store_true", help="without the real multi-GiB decompression bombs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="salm-hostile-"))
    try:
        folder = work / "in"
        t0 = time.monotonic()
        cases = hostile_cases.write_cases(DATA, folder)
        if not args.no_bombs:
            cases += write_bombs(folder)
        build_s = time.monotonic() - t0
        records, peak = run_worker([folder / c.name for c in cases])
        by_name = {r["path"]: r for r in records}
        per_family: dict[str, Counter] = defaultdict(Counter)
        wrong_expectation = []
        for case in cases:
            record = by_name[case.name]
            per_family[case.family][record["outcome"]] += 1
            if case.expect == "skip" and record["outcome"] != "skipped":
                wrong_expectation.append((case.name, record["outcome"]))
        totals = Counter(r["outcome"] for r in records)
        bombs = {c.name: by_name[c.name] for c in cases if c.name.startswith("bomb__")}
        result = {
            "cases": len(cases), "build_seconds": round(build_s, 1), "outcomes": dict(totals),
            "per_family": {k: dict(v) for k, v in per_family.items()}, "worker_peak_rss_mb": round(peak, 1),
            "slowest": sorted(records, key=lambda r: -r["seconds"])[:5], "must_skip_not_skipped": wrong_expectation,
            "bombs": bombs, "aborted": [r for r in records if r["outcome"] == "aborted"],
        }
        if not args.skip_protect:
            shutil.copytree(DATA / "dicom" / "ct_3slice_dcmqi" / "dicom", folder, dirs_exist_ok=True)
            result["protect"] = run_protect(folder, cases)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = REPO / "benchmarks" / "results" / f"hostile-inputs-{stamp}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
        print("| family | cases | loaded | skipped at scan | skipped at pixel read | aborted |\n|---|---|---|---|---|---|")
        for family, counts in sorted(per_family.items()):
            print(f"| {family} | {sum(counts.values())} | {counts['loaded']} | {counts['skipped']} | "
                  f"{counts['pixel_skip']} | {counts['aborted']} |")
        print(f"| **all** | **{len(cases)}** | {totals['loaded']} | {totals['skipped']} | {totals['pixel_skip']} | "
              f"**{totals['aborted']}** |")
        print(f"\nworker peak RSS {peak:.0f} MB (all cases, one process, default memory limit); "
              f"slowest case {result['slowest'][0]['seconds']} s; must-skip cases not skipped: {len(wrong_expectation)}")
        for name, record in bombs.items():
            print(f"- {name}: {record['outcome']} in {record['seconds']} s: {record.get('reason', '')}")
        if "protect" in result:
            print(f"\nprotect over the CT slices + all cases: {json.dumps(result['protect'])}")
        print(f"\ndetails: {target.relative_to(REPO)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
