#!/usr/bin/env bash
# Soak test wrapper (CI: `scripts/soak.sh --seconds 20`); the logic lives in scripts/soak.py.
set -euo pipefail
exec python3 "$(dirname "${BASH_SOURCE[0]}")/soak.py" "$@"
