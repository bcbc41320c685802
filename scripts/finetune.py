#!/usr/bin/env python3
"""Few-shot personalisation of a meta-trained checkpoint (see puppetcam_train/finetune.py).

  python scripts/finetune.py --ckpt runs/meta/latest.pt --images skimage:astronaut --out runs/astronaut.pt
  python scripts/finetune.py --ckpt runs/meta/latest.pt --video clip.mp4 --shots 8 --out runs/p.pt
The output holds the personalised generator, its provenance and the portrait for export.py.
"""
import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from puppetcam_train import checkpoint as ckpt  # noqa: E402
from puppetcam_train import dataset as DS  # noqa: E402
from puppetcam_train import finetune as FT  # noqa: E402
from puppetcam_train import landmarks as L  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="meta-training checkpoint")
    ap.add_argument("--images", nargs="*", default=[], help="image files or skimage:NAME (1..32)")
    ap.add_argument("--video", default=None, help="take the shots from the first frames of a video")
    ap.add_argument("--shots", type=int, default=8, help="frames taken from --video")
    ap.add_argument("--landmarks", default="auto", choices=["auto", "puppetcam", "mediapipe"])
    ap.add_argument("--out", required=True)
    ckpt.add_dataclass_args(ap, FT.FinetuneConfig)
    a = ap.parse_args()
    cfg = ckpt.dataclass_from_args(FT.FinetuneConfig, a)
    if a.video:
        frames = list(DS.read_frames(Path(a.video), max_frames=a.shots))
        shots = FT.shots_from_images(frames, a.landmarks, source=a.video)
        portrait = frames[0]
    else:
        imgs = [FT.portrait_rgb(p) for p in a.images]
        if not 1 <= len(imgs) <= 32:
            raise SystemExit("give 1..32 images")
        shots = FT.shots_from_images(imgs, a.landmarks, source=",".join(a.images))
        portrait = imgs[0]
    pg, prov = FT.finetune(a.ckpt, shots, cfg)
    # The first shot is the portrait the daemon pastes into: keep its full-image landmarks.
    r = L.landmarks_for_image(portrait, shots.backend)
    ckpt.save(Path(a.out), dict(kind="puppetcam-personal", net=prov["net"], psi=pg.psi.detach(),
                                G=pg.G.state_dict(), provenance=prov, portrait=portrait,
                                portrait_lm68=np.asarray(r[0]), portrait_iris=r[1],
                                check_rasters=shots.rasters[:4]))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
