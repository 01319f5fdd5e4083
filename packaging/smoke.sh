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
# Compressed encodings must decode in the frozen app too (pylibjpeg plugins found via metadata).
for f in MR_small_jp2klossless.dcm MR_small_jpeg_ls_lossless.dcm MR_small_RLE.dcm; do
  cp "$data/dicom/pydicom_small/$f" "$tmp/"
done
"$dist/salm-protect" inspect "$tmp" --json > "$tmp/inspect.json"
python3 - "$tmp/inspect.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
samples = sum(s["samples"] for s in report["series"])
assert samples == 3 and not report["skipped"], report
print(f"frozen inspect: {len(report['series'])} series, {samples} compressed images decoded")
PY

t0=$(date +%s%N)
"$dist/salm-desktop" --selftest
t1=$(date +%s%N)
echo "salm-desktop --selftest: passed in $(( (t1 - t0) / 1000000 )) ms"
