#!/usr/bin/env python3
"""Training and evaluation material for the whole-face refiner experiment (issue 16 item 4,
issue 17 item 6): what the daemon draws, next to what the camera saw.

For each clip and source frame: the source frame becomes a one-shot avatar without refiner
(`puppetcam avatar create --no-refiner`), the clip drives it with `--neutral` = that frame
(the self-reenactment protocol of docs/quality.md), and every rendered frame is cut, with the
real frame, to one square box around the source face (the avatar's rest face, which the daemon
also knows), resized to `--size`. Written as `<clip>_<src>.npz`: `render`, `real` (uint8,
N x S x S x 3), `box` (x0, y0, side in the clip's pixels), `frames` (frame indices), `yaw`
(the real frame's yaw proxy minus the source's: the turned frames are the large ones).

Nothing here is tuned on the evaluation clips: `--clips` picks which clips are cut, and the
training run reads only the files of its training clips.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from puppetcam_train import avatar_eval as AE  # noqa: E402

# Side of the crop around the rest face, in units of the face's landmark box's larger side: the
# avatar's head moves by at most 0.12 of the crop side and scales by 0.85-1.2 (retarget limits),
# and the turned side of a head lies outside the frontal face box.
BOX_SCALE = 1.7


def face_box(mesh: np.ndarray, w: int, h: int, scale: float = BOX_SCALE) -> tuple[int, int, int]:
    """Square (x0, y0, side) around the landmark box's centre, `scale` times its larger side,
    moved (not shrunk) to lie inside the frame where it can."""
    x0, y0 = mesh.min(0)
    x1, y1 = mesh.max(0)
    side = int(round(max(x1 - x0, y1 - y0) * scale))
    side = max(8, min(side, w, h))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bx = int(round(min(max(cx - side / 2, 0), w - side)))
    by = int(round(min(max(cy - side / 2, 0), h - side)))
    return bx, by, side


def cut(img: np.ndarray, b: tuple[int, int, int], size: int) -> np.ndarray:
    x, y, s = b
    return cv2.resize(img[y:y + s, x:x + s], (size, size), interpolation=cv2.INTER_AREA)


def make(binary: str, clip: Path, src: int, out: Path, size: int, every: int, mesher) -> int:
    frames = AE.read_frames(clip)
    h, w = frames[0].shape[:2]
    m0 = mesher(frames[src])
    if m0 is None:
        print(f"{clip.stem}: no face in frame {src}, skipped")
        return 0
    y0 = AE.yaw_proxy(m0)
    b = face_box(m0, w, h)
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        portrait = td / "portrait.png"
        AE.write_png(portrait, frames[src])
        av = td / "a.pcav"
        AE.run_cli(binary, ["avatar", "create", portrait, "-o", av, "-q", "--no-refiner"])
        outs = AE.render_avatar(binary, av, clip, portrait, (w, h), td / "out")
    keep = [i for i in range(0, min(len(frames), len(outs)), every) if i != src]
    render, real, yaw = [], [], []
    for i in keep:
        m = mesher(frames[i])
        yaw.append(AE.yaw_proxy(m) - y0 if m is not None else np.nan)
        render.append(cut(outs[i], b, size))
        real.append(cut(frames[i], b, size))
    np.savez(out, render=np.stack(render), real=np.stack(real), box=np.array(b), frames=np.array(keep),
             yaw=np.array(yaw, np.float32))
    return len(keep)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", required=True, help="clip names (videos/<name>.mp4 of the data set)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--every", type=int, default=2, help="keep every n-th frame")
    ap.add_argument("--sources", type=float, nargs="+", default=[0.0, 0.5], help="source frames, as fractions of the clip")
    a = ap.parse_args()
    data = Path(os.environ.get("PUPPETCAM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    binary = os.environ.get("PUPPETCAM_BIN", "target/release/puppetcam")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    mesher = AE.Mesh()
    for c in a.clips:
        clip = data / "videos" / f"{c}.mp4"
        n = int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_COUNT))
        for f in a.sources:
            src = min(int(f * n), max(n - 1, 0))
            dst = out / f"{c}_{src:05d}.npz"
            if dst.exists():
                continue
            try:
                k = make(binary, clip, src, dst, a.size, a.every, mesher)
                print(f"{c} source {src}: {k} pairs", flush=True)
            except RuntimeError as e:
                print(f"{c} source {src}: {e}", flush=True)
    mesher.close()


if __name__ == "__main__":
    main()
