#!/usr/bin/env bash
# Smoke-test a frozen build: the GUI self-test off-screen and `inspect` on compressed DICOM.
# Usage: packaging/smoke.sh DIST_FOLDER [DATA_DIR]
set -euo pipefail
dist="${1:?usage: smoke.sh DIST_FOLDER [DATA_DIR]}"
data="${2:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}"

export QT_QPA_PLATFORM=offscreen
t0=$(date +%s%N)
"$dist/salm-protect" --version
t1=$(date +%s%N)
echo "salm-protect start-up: $(( (t1 - t0) / 1000000 )) ms"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Compressed encodings must decode in the frozen app too (pylibjpeg plugins are found through their
# package metadata). Each file is inspected on its own: the loader reads the pixels for the intensity
# range, and all encodings of MR_small must give the same range as the uncompressed file.
for f in MR_small.dcm MR_small_jp2klossless.dcm MR_small_jpeg_ls_lossless.dcm MR_small_RLE.dcm; do
  mkdir -p "$tmp/$f.d"
  cp "$data/dicom/pydicom_small/$f" "$tmp/$f.d/"
  "$dist/salm-protect" inspect "$tmp/$f.d" --json > "$tmp/$f.json"
done
python3 - "$tmp" <<'PY'
import json, pathlib, sys
ranges = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    report = json.loads(path.read_text())
    assert len(report["series"]) == 1 and report["series"][0]["samples"] == 1 and not report["skipped"], (path.name, report)
    ranges[path.stem] = report["series"][0]["intensity_range"]
assert len(set(map(tuple, ranges.values()))) == 1, ranges
print(f"frozen inspect: {len(ranges)} encodings (JPEG 2000, JPEG-LS, RLE, uncompressed) decoded to the same range {next(iter(ranges.values()))}")
PY

t0=$(date +%s%N)
"$dist/salm-desktop" --selftest
t1=$(date +%s%N)
echo "salm-desktop --selftest: passed in $(( (t1 - t0) / 1000000 )) ms"
