#!/usr/bin/env bash
# Set-up + demo in one command: builds puppetcam and animates the bundled default avatar with
# the embedded default driver (no camera, no GPU), writing a video file you can open.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
cargo build --release
exec target/release/puppetcam demo "$@"
