#!/usr/bin/env bash
# Reproduces the latency tables of docs/performance.md (issue 19): `puppetcam bench` on the same
# clips for a "before" and an "after" binary, alternated run by run (A/B/A/B) so both see the same
# machine state, and the load average noted with every run. Timings on a shared 2-core machine
# are noisy: compare only rows taken in the same run of this script.
#
# Usage: scripts/bench_latency.sh [BEFORE_BINARY] [AFTER_BINARY]
#   BEFORE_BINARY  e.g. a build of the commit before the change (omit or "-": after only)
#   AFTER_BINARY   default target/release/puppetcam
# Environment: RUNS (default 2) repetitions; FRAMES (300) measured frames per run;
#   PUPPETCAM_DATA (default ../shared/data) the data set; OUT (default out/bench_latency) where
#   each run's JSON goes; ORT_DYLIB_PATH as for any puppetcam run (scripts/setup.sh sets it).
# Runs: lp_d5 live at 30 fps (--fps 30) and sh_video live at 25 (--fps 25), the same with --load
# (one core kept busy), flat out (every frame, throughput); after only (the flag is new): lp_d5
# delivered like a 30 and a 60 fps camera (--camera-fps), the output following the source.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BEFORE="${1:--}"
AFTER="${2:-target/release/puppetcam}"
RUNS="${RUNS:-2}"
FRAMES="${FRAMES:-300}"
DATA="${PUPPETCAM_DATA:-$ROOT/../shared/data}"
OUT="${OUT:-out/bench_latency}"
mkdir -p "$OUT"
for clip in lp_d5 sh_video; do
  [ -f "$DATA/videos/$clip.mp4" ] || { echo "bench_latency: $DATA/videos/$clip.mp4 not found (set PUPPETCAM_DATA)" >&2; exit 2; }
done
[ -x "$AFTER" ] || { echo "bench_latency: $AFTER is not an executable (build with cargo build --release)" >&2; exit 2; }
[ "$BEFORE" = - ] || [ -x "$BEFORE" ] || { echo "bench_latency: $BEFORE is not an executable" >&2; exit 2; }

COMMON=(--size 1280x720 --frames "$FRAMES" --json --cpu)
# name | arguments | which builds (both / after)
CASES=(
  "lp_d5_live30|--live --source loop:$DATA/videos/lp_d5.mp4 --fps 30|both"
  "sh_video_live25|--live --source loop:$DATA/videos/sh_video.mp4 --fps 25|both"
  "lp_d5_cam30|--live --source loop:$DATA/videos/lp_d5.mp4 --camera-fps 30|after"
  "lp_d5_cam60|--live --source loop:$DATA/videos/lp_d5.mp4 --camera-fps 60|after"
  "lp_d5_live30_load|--live --load --source loop:$DATA/videos/lp_d5.mp4 --fps 30|both"
  "sh_video_live25_load|--live --load --source loop:$DATA/videos/sh_video.mp4 --fps 25|both"
  "lp_d5_flatout|--source loop:$DATA/videos/lp_d5.mp4|both"
)

run_one() { # build-label binary case-name args...
  local label=$1 bin=$2 name=$3; shift 3
  local f="$OUT/${name}.${label}.$rep.json"
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  if timeout 300 "$bin" -q bench "$@" "${COMMON[@]}" >"$f.tmp" 2>"$OUT/${name}.${label}.$rep.log"; then
    mv "$f.tmp" "$f"
    echo "$load" >"$f.load"
  else
    echo "bench_latency: $name ($label, run $rep) failed, see $OUT/${name}.${label}.$rep.log" >&2
    rm -f "$f.tmp"
  fi
}

for rep in $(seq 1 "$RUNS"); do
  for c in "${CASES[@]}"; do
    IFS='|' read -r name args which <<<"$c"
    read -r -a argv <<<"$args"
    if [ "$which" = both ] && [ "$BEFORE" != - ]; then run_one before "$BEFORE" "$name" "${argv[@]}"; fi
    run_one after "$AFTER" "$name" "${argv[@]}"
  done
done

# One table row per run: the figures docs/performance.md quotes.
python3 - "$OUT" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
def g(d, *k):
    for x in k:
        if not isinstance(d, dict) or d.get(x) is None:
            return None
        d = d[x]
    return d
def f(v, p=1):
    return "-" if v is None else f"{v:.{p}f}"
print("| case | build | run | load avg (1/5/15 min) | e2e median / p95 / p99 ms | face median ms | generator median ms | generated / written new | written fps | face parts median ms (lm crop, lm model, iris model; iris runs/frame) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name, build, rep, _ = os.path.basename(path).rsplit(".", 3)
    d = json.load(open(path))
    load = open(path + ".load").read().strip() if os.path.exists(path + ".load") else "?"
    e = g(d, "stages", "end_to_end") or {}
    parts = d.get("face_parts")
    p = "-" if not parts else f"{f(g(parts,'landmark_crop','median_ms'),2)}, {f(g(parts,'landmark_model','median_ms'),2)}, {f(g(parts,'iris_model','median_ms'),2)}; {f(d.get('iris_runs_per_frame'),2)}"
    print(f"| {name} | {build} | {rep} | {load} | {f(e.get('median_ms'))} / {f(e.get('p95_ms'))} / {f(e.get('p99_ms'))} | "
          f"{f(g(d,'stages','face','median_ms'))} | {f(g(d,'stages','generator','median_ms'))} | "
          f"{d.get('generated_frames')} / {d.get('written_new_frames')} | {f(d.get('throughput_fps'))} | {p} |")
PY
