#!/usr/bin/env bash
# Idempotent set-up of what puppetcam needs on a fresh Debian machine, at one of two levels:
#   runtime  the Debian build dependencies and the ONNX Runtime shared library the daemon loads
#            (scripts/requirements-runtime.txt, wheel only, no PyTorch): what scripts/demo.sh uses;
#   full     (default) runtime + the training/test stack (scripts/requirements-train.txt) and the
#            packages the tests use (ffmpeg, chromium, systemd): what scripts/test.sh uses.
# Usage: `source scripts/setup.sh [runtime|full]` (or PUPPETCAM_SETUP=runtime|full). The Rust
# build itself is done by the caller (demo.sh: release, test.sh: debug).
# GPU: when an NVIDIA driver answers (`nvidia-smi -L`), onnxruntime-gpu replaces the CPU wheel
# (scripts/requirements-runtime-gpu.txt); PUPPETCAM_GPU=0 or 1 overrides the detection.
# Exports ORT_DYLIB_PATH (and, at the full level, PUPPETCAM_PY).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LEVEL="${1:-${PUPPETCAM_SETUP:-full}}"
case "$LEVEL" in
  runtime|full) ;;
  *) echo "setup: unknown level '$LEVEL' (use runtime or full)" >&2; return 2 2>/dev/null || exit 2 ;;
esac

# Debian packages: building the daemon needs OpenCV headers, libclang (opencv crate bindings),
# nasm; the venv needs python3-venv. The tests also need ffmpeg, chromium (+ chromium-driver) and systemd.
APT_PKGS=(libopencv-dev clang libclang-dev pkg-config nasm python3-venv)
if [ "$LEVEL" = full ]; then APT_PKGS+=(ffmpeg chromium chromium-driver fonts-liberation systemd); fi
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # The runtime level skips Recommends (documentation, extra codecs): it only builds the daemon.
  NORECS=(); [ "$LEVEL" = runtime ] && NORECS=(--no-install-recommends)
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${NORECS[@]}" "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust >= 1.80 with rustup (https://rustup.rs), then rerun" >&2
  return 1 2>/dev/null || exit 1
fi

# ONNX Runtime flavour: GPU when an NVIDIA driver answers.
GPU="${PUPPETCAM_GPU:-}"
if [ -z "$GPU" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPU=1; else GPU=0; fi
fi
if [ "$GPU" = 1 ]; then
  RT_REQ=scripts/requirements-runtime-gpu.txt; RT_PKG=onnxruntime-gpu; RT_OTHER=onnxruntime
  echo "setup: NVIDIA driver found: using onnxruntime-gpu (CUDA 13 runtime, cuDNN 9 and TensorRT 10 must be installed; see README \"GPU\")"
else
  RT_REQ=scripts/requirements-runtime.txt; RT_PKG=onnxruntime; RT_OTHER=onnxruntime-gpu
fi

VENV="${PUPPETCAM_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
# The CPU and GPU wheels both install the `onnxruntime` package: never keep the other one.
switch_flavour() {
  if "$VENV/bin/pip" show -q "$RT_OTHER" >/dev/null 2>&1; then
    echo "setup: replacing $RT_OTHER with $RT_PKG"
    "$VENV/bin/pip" uninstall -q -y "$RT_OTHER"
  fi
}
full_stamp="$VENV/.requirements.sha"
full_want="$(cat "$RT_REQ" scripts/requirements-train.txt | sha256sum | cut -d' ' -f1)"
rt_stamp="$VENV/.runtime.sha"
rt_want="$(sha256sum "$RT_REQ" | cut -d' ' -f1)"
if [ "$LEVEL" = full ]; then
  if [ "$(cat "$full_stamp" 2>/dev/null)" != "$full_want" ]; then
    echo "setup: installing Python packages into $VENV (full level: PyTorch is large, a few minutes the first time)"
    switch_flavour
    "${PIP[@]}" --upgrade pip
    "${PIP[@]}" -r "$RT_REQ" -r scripts/requirements-train.txt
    echo "$full_want" > "$full_stamp"
    echo "$rt_want" > "$rt_stamp"
  fi
  export PUPPETCAM_PY="$VENV/bin/python"
elif [ "$(cat "$rt_stamp" 2>/dev/null)" != "$rt_want" ]; then
  # The daemon only dlopen()s the library: the wheel alone, without numpy/sympy/protobuf.
  echo "setup: installing $RT_PKG (library only) into $VENV"
  switch_flavour
  "${PIP[@]}" --no-deps -r "$RT_REQ"
  echo "$rt_want" > "$rt_stamp"
fi
ORT_DYLIB_PATH="$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.* | head -n1)"
export ORT_DYLIB_PATH
