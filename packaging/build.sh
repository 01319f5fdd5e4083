#!/usr/bin/env bash
# Build the one-folder app (CPU torch) into dist/salm-desktop/, then smoke-test the frozen binaries.
# Usage: packaging/build.sh [--skip-smoke]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"

python3 -m pip install -q -e ".[packaging]"
start=$(date +%s)
python3 -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$root/dist" --workpath "$root/build/pyinstaller" "$here/salm_desktop.spec"
echo "build took $(( $(date +%s) - start )) s"
du -sh "$root/dist/salm-desktop"

if [ "${1:-}" != "--skip-smoke" ]; then
  "$here/smoke.sh" "$root/dist/salm-desktop"
fi
