#!/usr/bin/env python3
"""Reference landmarks from MediaPipe's own Python face mesh, to check `puppetcam landmarks`.

Writes JSON lines shaped like `puppetcam landmarks` output (frame, t_ms, width, height, face,
mesh in frame pixels: x * width, y * height, z * width), so both can be compared point by point.
Runs mp.solutions.face_mesh in video (tracking) mode with refine_landmarks=False, i.e. the same
detector + 468-point model the Rust tracker runs. With --refine, also writes MediaPipe's
attention-model iris centres ("iris_ref", image-left eye first) for a plausibility check of ours.

Usage: .venv/bin/python scripts/mediapipe_reference.py VIDEO_OR_IMAGE [--max-frames N] [--out F]
"""
import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def frames(path: Path, max_frames=None):
    """(index, t_ms, rgb) for each frame of a video, or the single image."""
    if path.suffix.lower() in IMAGE_EXT:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"{path}: cannot decode image")
        yield 0, 0.0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"{path}: cannot open video")
    i = 0
    try:
        while max_frames is None or i < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            yield i, float(cap.get(cv2.CAP_PROP_POS_MSEC)), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def reference(path: Path, max_frames=None, refine=False, static=False):
    """Yields one record per frame with MediaPipe's landmarks in pixels."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static,
        max_num_faces=1,
        refine_landmarks=refine,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    ) as fm:
        for i, t_ms, rgb in frames(path, max_frames):
            h, w = rgb.shape[:2]
            res = fm.process(rgb)
            rec = {"frame": i, "t_ms": t_ms, "width": w, "height": h, "face": False, "mesh": None}
            if res.multi_face_landmarks:
                lms = res.multi_face_landmarks[0].landmark
                pts = np.array([[p.x * w, p.y * h, p.z * w] for p in lms], dtype=np.float64)
                rec["face"] = True
                rec["mesh"] = pts[:468].round(3).tolist()
                if refine and len(pts) >= 478:
                    # 468..472: iris of the image-left eye (centre first), 473..477: image-right.
                    rec["iris_ref"] = [pts[468, :2].round(3).tolist(), pts[473, :2].round(3).tolist()]
            yield rec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path)
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--refine", action="store_true", help="also output MediaPipe's iris centres")
    ap.add_argument("--static", action="store_true", help="detect on every frame (no tracking)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    out = open(args.out, "w") if args.out else sys.stdout
    try:
        for rec in reference(args.input, args.max_frames, args.refine, args.static):
            out.write(json.dumps(rec) + "\n")
    finally:
        if args.out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
