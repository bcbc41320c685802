#!/usr/bin/env bash
# Cuts the refiner's training crops from every clip of the data set with the daemon's own warp
# and crop code (`puppetcam refiner-data`). Held-out identities go to <out>/val only.
#   scripts/prepare_refiner.sh [OUT_DIR]      (default .cache/refiner; data: $PUPPETCAM_DATA or ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.cache/refiner}
DATA=${PUPPETCAM_DATA:-../shared/data}
BIN=${PUPPETCAM_BIN:-target/release/puppetcam}
HELD_OUT="lp_d5 lp_d18 r3_May_5s sh_video"   # keep in sync with refiner.HELD_OUT
[ -x "$BIN" ] || cargo build --release
[ -n "${ORT_DYLIB_PATH:-}" ] || export ORT_DYLIB_PATH=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.* | head -1)
mkdir -p "$OUT/val"
for v in "$DATA"/videos/*.mp4; do
  b=$(basename "$v" .mp4)
  if [[ " $HELD_OUT " == *" $b "* ]]; then
    dest="$OUT/val"; args=(--sources 2 --targets 40 --shots 16)
  else
    dest="$OUT"; args=(--sources 6 --targets 60 --shots 24)
  fi
  [ -f "$dest/$b.shots.eyes_ras.npy" ] && continue
  "$BIN" -q refiner-data "$v" --out "$dest" "${args[@]}" || echo "refiner-data: $b failed (skipped)" >&2
done
echo "refiner data in $OUT ($(ls "$OUT"/*.pairs.mouth_in.npy | wc -l) training clips, $(ls "$OUT"/val/*.pairs.mouth_in.npy | wc -l) held-out)"
