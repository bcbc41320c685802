#!/usr/bin/env python3
"""Meta-training of E, G, D (see puppetcam_train/train.py for every option and its default).

  python scripts/train.py --data .cache/train --out runs/meta --k 4 --batch 2
  python scripts/train.py --out runs/meta --resume runs/meta/latest.pt      # continue
  torchrun --nproc-per-node 4 scripts/train.py ...                         # DDP
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from puppetcam_train import checkpoint as ckpt  # noqa: E402
from puppetcam_train.train import TrainConfig, run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ckpt.add_dataclass_args(ap, TrainConfig)
    ap.add_argument("--resume", default=None, help="checkpoint to continue from")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many more steps")
    a = ap.parse_args()
    run(ckpt.dataclass_from_args(TrainConfig, a), resume=a.resume, max_steps=a.max_steps)


if __name__ == "__main__":
    main()
