"""Face landmarks for training data: the puppetcam binary (preferred) or MediaPipe's Python mesh.

The daemon and training must see the same landmarks, so the default backend runs
`puppetcam landmarks VIDEO --out X.jsonl` (same ONNX models as the daemon). While that command is
unavailable the `mediapipe` backend uses MediaPipe's own face mesh + iris with the same 468->68
table (docs/rasteriser.md). Which backend produced a cache is recorded in it and in checkpoints.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

# docs/rasteriser.md, "68-point scheme".
MP468_TO_68 = [
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107,
    336, 296, 334, 293, 300,
    168, 197, 5, 4,
    75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144,
    362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
]
assert len(MP468_TO_68) == 68

ROOT = Path(__file__).resolve().parents[2]


def puppetcam_bin() -> Path | None:
    """The daemon binary: $PUPPETCAM_BIN, else target/release or target/debug (newest first)."""
    env = os.environ.get("PUPPETCAM_BIN")
    if env:
        return Path(env)
    for p in (ROOT / "target/release/puppetcam", ROOT / "target/debug/puppetcam"):
        if p.exists():
            return p
    return None


def _env() -> dict:
    """The daemon loads ONNX Runtime dynamically: point it at the venv's library when unset."""
    env = dict(os.environ)
    if "ORT_DYLIB_PATH" not in env:
        import glob
        import onnxruntime
        libs = sorted(glob.glob(str(Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime.so.1*")))
        if libs:
            env["ORT_DYLIB_PATH"] = libs[0]
    return env


def binary_works() -> bool:
    """True when `puppetcam landmarks` runs on a probe image and writes its output file."""
    b = puppetcam_bin()
    if b is None or not b.exists():
        return False
    import cv2
    with tempfile.TemporaryDirectory() as td:
        img, out = Path(td) / "probe.png", Path(td) / "probe.jsonl"
        cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
        try:
            r = subprocess.run([str(b), "landmarks", str(img), "--out", str(out)],
                               capture_output=True, timeout=120, env=_env())
        except (OSError, subprocess.TimeoutExpired):
            return False
        return r.returncode == 0 and out.exists()


def resolve_backend(name: str) -> str:
    """'auto' -> 'puppetcam' when the binary is usable, else 'mediapipe'."""
    if name == "auto":
        return "puppetcam" if binary_works() else "mediapipe"
    if name not in ("puppetcam", "mediapipe"):
        raise ValueError(f"unknown landmark backend {name!r}")
    return name


def _parse_jsonl(lines) -> dict[int, tuple[np.ndarray, np.ndarray | None, float]]:
    out = {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        if not rec.get("face") or rec.get("lm68") is None:
            continue  # frames without a face are skipped
        lm = np.asarray(rec["lm68"], np.float32).reshape(68, 2)
        iris = None if rec.get("iris") is None else np.asarray(rec["iris"], np.float32).reshape(2, 3)
        out[int(rec["frame"])] = (lm, iris, float(rec.get("score", 1.0)))
    return out


def _run_binary(path: Path) -> dict:
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "lm.jsonl"
        r = subprocess.run([str(puppetcam_bin()), "landmarks", str(path), "--out", str(out)],
                           capture_output=True, text=True, env=_env())
        if r.returncode != 0:
            raise RuntimeError(f"puppetcam landmarks failed on {path}: {r.stderr.strip()[-500:]}")
        return _parse_jsonl(out.read_text().splitlines())


class MediaPipeMesh:
    """MediaPipe face mesh (+iris) -> 68 points and irises, in frame pixels."""

    def __init__(self, video: bool):
        import mediapipe as mp  # imported lazily: slow, and only this backend needs it
        self.fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=not video, max_num_faces=1,
                                                  refine_landmarks=True,
                                                  min_detection_confidence=0.5)

    def __call__(self, rgb: np.ndarray):
        res = self.fm.process(rgb)
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        mesh = np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark], np.float32)
        lm = mesh[MP468_TO_68]
        iris = None
        if len(mesh) >= 478:
            irs = []
            for c in (468, 473):  # centre, then 4 boundary points
                r = float(np.linalg.norm(mesh[c + 1:c + 5] - mesh[c], axis=1).mean())
                irs.append((mesh[c, 0], mesh[c, 1], r))
            irs = np.array(irs, np.float32)
            # index 0 must be the subject's right eye (image left, points 36..41)
            d0 = np.linalg.norm(irs[0, :2] - lm[36:42].mean(0))
            d1 = np.linalg.norm(irs[1, :2] - lm[36:42].mean(0))
            iris = irs if d0 <= d1 else irs[::-1].copy()
        return lm, iris, 1.0

    def close(self):
        self.fm.close()


def landmarks_for_video(path: Path, frames_rgb, backend: str) -> dict:
    """{frame index: (lm68 (68,2), iris (2,3) or None, score)} for the frames that have a face.

    frames_rgb is an iterable of the decoded RGB frames (only the mediapipe backend reads it).
    """
    if backend == "puppetcam":
        return _run_binary(path)
    mesh = MediaPipeMesh(video=True)
    out = {}
    for i, f in enumerate(frames_rgb):
        r = mesh(f)
        if r is not None:
            out[i] = r
    mesh.close()
    return out


def landmarks_for_image(rgb: np.ndarray, backend: str = "auto", path: Path | None = None):
    """Landmarks of one still image (portraits, generated frames); None when no face."""
    backend = resolve_backend(backend)
    if backend == "puppetcam":
        if path is None:
            import cv2
            with tempfile.TemporaryDirectory() as td:
                p = Path(td) / "img.png"
                cv2.imwrite(str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                return _run_binary(p).get(0)
        return _run_binary(path).get(0)
    mesh = MediaPipeMesh(video=False)
    try:
        return mesh(rgb)
    finally:
        mesh.close()
