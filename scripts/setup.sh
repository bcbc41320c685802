#!/usr/bin/env bash
# Idempotent set-up of everything puppetcam needs on a fresh Debian machine: system packages,
# the project-local Python venv (.venv, with onnxruntime 1.31.1 whose libonnxruntime the daemon
# loads) and the Rust build. Sourcing it exports ORT_DYLIB_PATH and PUPPETCAM_PY.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APT_PKGS=(libopencv-dev clang libclang-dev pkg-config nasm ffmpeg chromium fonts-liberation systemd)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

VENV="${PUPPETCAM_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
stamp="$VENV/.requirements.sha"
want="$(sha256sum scripts/requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into $VENV (torch is large: a few minutes the first time)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi
export PUPPETCAM_PY="$VENV/bin/python"
ORT_DYLIB_PATH="$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.* | head -n1)"
export ORT_DYLIB_PATH
