#!/usr/bin/env bash
# One command for the shipped refiner: crops -> meta-training (resumes) -> onnx/refiner_meta.pt,
# onnx/refiner.onnx and onnx/refiner_embedder.onnx (SHIP_DIR). Extra arguments go to
# `train_refiner.py train`.
#   scripts/train_refiner.sh --steps 4000
#   NPROC=2 scripts/train_refiner.sh ...     # DDP over 2 processes (torchrun)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${REFINER_DATA:-.cache/refiner}
RUN=${REFINER_RUN:-runs/refiner}
PY=${PYTHON:-.venv/bin/python}
scripts/prepare_refiner.sh "$DATA"
if [ "${NPROC:-1}" -gt 1 ]; then
  "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" scripts/train_refiner.py train --data "$DATA" --out "$RUN" --threads 1 "$@"
else
  "$PY" scripts/train_refiner.py train --data "$DATA" --out "$RUN" --threads "${THREADS:-2}" "$@"
fi
# Ship the checkpoint with the best validation score (identities kept apart from training and
# evaluation), else the last one.
CKPT="$RUN/best.pt"; [ -f "$CKPT" ] || CKPT="$RUN/latest.pt"
"$PY" scripts/train_refiner.py ship "$CKPT" "${SHIP_DIR:-onnx}"
