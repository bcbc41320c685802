#!/usr/bin/env bash
# Set-up + demo in one command: the runtime set-up (build dependencies and the ONNX Runtime
# library, no PyTorch), a release build, then the bundled default avatar animated by the embedded
# driver (no camera, no GPU needed), written to a video file you can open.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup.sh
source scripts/setup.sh runtime
cargo build --release
exec target/release/puppetcam demo "$@"
