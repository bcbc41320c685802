#!/usr/bin/env bash
# The one command that runs every test of puppetcam on a fresh machine: set-up (idempotent),
# Rust unit + integration tests, Python tests, the v4l2loopback round trip, the systemd unit,
# the webcam path and real browsers in VMs, the Debian package installed and purged in a clean Debian root, a short soak.
# Each suite runs even when an earlier one failed; the exit code is non-zero if any failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup.sh
source scripts/setup.sh || { echo "test: set-up failed"; exit 1; }
export PUPPETCAM_BIN="$ROOT/target/debug/puppetcam"
export RUST_LOG="${RUST_LOG:-warn}"

failed=()
suite() {
  local name="$1"; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  if "$@"; then echo "=== $name: ok ($((SECONDS - t0)) s)"; else echo "=== $name: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi
}

suite cargo-build cargo build --all-targets
suite cargo-test cargo test --no-fail-fast
suite pytest "$PUPPETCAM_PY" -m pytest -q scripts/tests
if [ -x scripts/vm/run-v4l2-test.sh ] && [ "${PUPPETCAM_SKIP_VM:-0}" != 1 ]; then
  suite v4l2-vm scripts/vm/run-v4l2-test.sh
fi
# The system unit under a real systemd (qemu, Debian root, systemd as PID 1): about 4 min cold,
# 2 min with the root file system cached. PUPPETCAM_SKIP_VM=1 skips both VM suites.
if [ -x scripts/vm/run-systemd-test.sh ] && [ "${PUPPETCAM_SKIP_VM:-0}" != 1 ] && [ "${PUPPETCAM_SKIP_SYSTEMD_VM:-0}" != 1 ]; then
  suite systemd-vm env PUPPETCAM_BIN="$PUPPETCAM_BIN" scripts/vm/run-systemd-test.sh
fi
# The webcam path (the same VM with ffmpeg feeding a talking clip into a second loopback device
# as the camera; YUYV, MJPEG, unplug/replug, start before the camera). Needs the data set
# ($PUPPETCAM_DATA; skipped without it, a failure under CI=true). PUPPETCAM_SKIP_VM=1 skips it too.
if [ -x scripts/vm/run-webcam-test.sh ] && [ "${PUPPETCAM_SKIP_VM:-0}" != 1 ] && [ "${PUPPETCAM_SKIP_WEBCAM_VM:-0}" != 1 ]; then
  suite webcam-vm env PUPPETCAM_BIN="$PUPPETCAM_BIN" scripts/vm/run-webcam-test.sh
fi
# Real browsers (Debian's chromium and firefox-esr, headless) pick puppetcam as their camera in the
# same VM: getUserMedia at 1280x720 and 640x480, YUYV and I420, opened before/after the daemon,
# SIGHUP and restarts while the stream is held (docs/virtual-camera.md). A synthetic driver, so
# no data set needed. About 35 min under TCG (the browsers take minutes to start there, and
# Chromium is started afresh for each new stream), at most 40 (the VM's limit);
# PUPPETCAM_SKIP_BROWSER_VM=1 or PUPPETCAM_SKIP_VM=1 skips it.
if [ -x scripts/vm/run-browser-test.sh ] && [ "${PUPPETCAM_SKIP_VM:-0}" != 1 ] && [ "${PUPPETCAM_SKIP_BROWSER_VM:-0}" != 1 ]; then
  suite browser-vm env PUPPETCAM_BIN="$PUPPETCAM_BIN" scripts/vm/run-browser-test.sh
fi
if [ "${PUPPETCAM_SKIP_DEB:-0}" != 1 ]; then
  # Release build + cargo-deb, then install/check/demo/purge in a clean Debian root (needs root).
  deb_install() { local deb; deb="$(scripts/package.sh | tail -n1)" && packaging/test-install.sh "$deb"; }
  suite deb-install deb_install
fi
if [ -x scripts/soak.sh ] && [ "${PUPPETCAM_SKIP_SOAK:-0}" != 1 ]; then
  suite soak-short scripts/soak.sh --seconds 20
fi

if [ ${#failed[@]} -gt 0 ]; then echo "test: FAILED suites: ${failed[*]}"; exit 1; fi
echo "test: all suites passed"
