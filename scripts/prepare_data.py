#!/usr/bin/env python3
"""Videos -> cached face crops, landmarks and rasters for training (see puppetcam_train/dataset.py).

  python scripts/prepare_data.py ../shared/data/videos --cache .cache/train
  (VoxCeleb2-style trees identity/video/clip.mp4 work too; each flat video is one identity.)
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from puppetcam_train import dataset  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="folder of videos or identity/video/clip tree")
    ap.add_argument("--cache", type=Path, default=Path(".cache/train"))
    ap.add_argument("--landmarks", default="auto", choices=["auto", "puppetcam", "mediapipe"],
                    help="auto = the puppetcam binary when it works, else mediapipe")
    ap.add_argument("--max-frames", type=int, default=None, help="per clip, after stride")
    ap.add_argument("--stride", type=int, default=1, help="keep every n-th frame")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args()
    done = dataset.prepare(a.root, a.cache, a.landmarks, a.max_frames, a.stride, a.overwrite)
    print(f"{len(done)} clips in {a.cache}")


if __name__ == "__main__":
    main()
