#!/usr/bin/env python3
"""Self-reenactment evaluation of the contract-1 generator on held-out identities
(see puppetcam_train/evaluate.py); `scripts/evaluate.py generator ...` calls it.

  python scripts/evaluate.py generator --ckpt runs/meta/latest.pt --identities lp_d5 lp_d18 --out runs/eval.md
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from puppetcam_train import checkpoint as ckpt  # noqa: E402
from puppetcam_train import evaluate as EV  # noqa: E402
from puppetcam_train.finetune import FinetuneConfig  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--cache", default=".cache/train")
    ap.add_argument("--identities", nargs="+", default=["lp_d5", "lp_d18"])
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--targets", type=int, default=12, help="target frames per identity")
    ap.add_argument("--out", default=None, help="write the markdown table here too")
    ckpt.add_dataclass_args(ap, FinetuneConfig)
    a = ap.parse_args()
    ft = ckpt.dataclass_from_args(FinetuneConfig, a)
    res = EV.evaluate(a.ckpt, a.cache, a.identities, tuple(a.shots), a.targets, ft)
    md = EV.markdown(res) + f"\nFine-tune per (identity, K): {ft.steps} steps, batch {ft.batch}; " \
                            f"checkpoint {a.ckpt} (step {ckpt.load(a.ckpt)['step']}).\n"
    print(md)
    if a.out:
        Path(a.out).write_text(md)


if __name__ == "__main__":
    main()
