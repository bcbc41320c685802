"""Acceptance test of `puppetcam landmarks` against MediaPipe's own Python face mesh.

For >= 30 frames of each of 5 real videos, the mean distance over the 468 points (x, y in pixels)
between our landmarks and MediaPipe's, divided by the inter-ocular distance, must be < 2%.
Binary: $PUPPETCAM_BIN (default target/debug/puppetcam); skipped only when it does not exist.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

BIN = Path(os.environ.get("PUPPETCAM_BIN", ROOT / "target" / "debug" / "puppetcam"))
# The data set: $PUPPETCAM_DATA, else ../shared/data next to the repository. Missing data skips
# on a developer machine and fails under CI=true, so CI cannot pass by skipping.
DATA = Path(os.environ.get("PUPPETCAM_DATA") or ROOT.parent / "shared" / "data")
VIDEOS = sorted((DATA / "videos").glob("*.mp4"))[:5]
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
FRAMES = 30
MAX_NORM_ERROR = 0.02

needs_bin = pytest.mark.skipif(not BIN.is_file(), reason=f"puppetcam binary not built at {BIN} (set PUPPETCAM_BIN)")
needs_videos = pytest.mark.skipif(len(VIDEOS) < 5 and not IN_CI, reason=f"need 5 videos under {DATA / 'videos'} (set PUPPETCAM_DATA)")


def run_landmarks(path: Path, out: Path, *extra: str) -> list:
    proc = subprocess.run(
        [str(BIN), "landmarks", str(path), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"puppetcam landmarks failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return [json.loads(line) for line in out.read_text().splitlines()]


def inter_ocular(lm68: np.ndarray) -> float:
    return float(np.linalg.norm(lm68[36:42].mean(0) - lm68[42:48].mean(0)))


def mesh_errors(ours: list, ref: list) -> np.ndarray:
    """Per-frame mean 468-point error / inter-ocular distance, for frames where both see a face."""
    by_frame = {r["frame"]: r for r in ref}
    errs = []
    for rec in ours:
        m = by_frame.get(rec["frame"])
        if m is None or not (rec["face"] and m["face"]):
            continue
        ours_xy = np.asarray(rec["mesh"], dtype=np.float64)[:, :2]
        ref_xy = np.asarray(m["mesh"], dtype=np.float64)[:, :2]
        assert ours_xy.shape == ref_xy.shape == (468, 2)
        iod = inter_ocular(np.asarray(rec["lm68"], dtype=np.float64))
        assert iod > 1.0, f"frame {rec['frame']}: degenerate inter-ocular distance {iod}"
        errs.append(np.linalg.norm(ours_xy - ref_xy, axis=1).mean() / iod)
    return np.asarray(errs)


@needs_bin
@needs_videos
def test_mesh_matches_mediapipe_on_real_videos(tmp_path):
    assert len(VIDEOS) >= 5, f"CI=true and the data set is missing: need 5 videos under {DATA / 'videos'} (set PUPPETCAM_DATA)"
    from mediapipe_reference import reference

    report = []
    for video in VIDEOS:
        ours = run_landmarks(video, tmp_path / f"{video.stem}.jsonl", "--max-frames", str(FRAMES))
        ref = list(reference(video, max_frames=FRAMES))
        assert len(ours) == FRAMES, f"{video.name}: {len(ours)} records, expected {FRAMES}"
        face_disagree = sum(1 for a, b in zip(ours, ref) if a["face"] != b["face"])
        errs = mesh_errors(ours, ref)
        report.append((video.name, len(errs), errs.mean() if len(errs) else float("nan"), errs.max() if len(errs) else float("nan"), face_disagree))
        # 68 points are the mapped mesh points (the training data depends on this).
        first = next(r for r in ours if r["face"])
        assert len(first["lm68"]) == 68 and len(first["mesh"]) == 468
    print("\nvideo          frames  mean err/IOD  max err/IOD  face disagreements")
    for name, n, mean, mx, dis in report:
        print(f"{name:14s} {n:6d}  {100 * mean:10.3f}%  {100 * mx:10.3f}%  {dis:d}")
    for name, n, mean, mx, dis in report:
        assert n >= FRAMES, f"{name}: only {n} frames with a face in both ({dis} disagreements)"
        assert mean < MAX_NORM_ERROR, f"{name}: mean error {100 * mean:.2f}% of inter-ocular distance"


@needs_bin
def test_frame_without_face_reports_no_face(tmp_path):
    import cv2

    # A smooth colour gradient: nothing face-like, but a valid image.
    y, x = np.mgrid[0:240, 0:320]
    img = np.stack([x * 255 // 319, y * 255 // 239, (x + y) * 255 // 558], axis=-1).astype(np.uint8)
    path = tmp_path / "gradient.png"
    assert cv2.imwrite(str(path), img)
    recs = run_landmarks(path, tmp_path / "out.jsonl")
    assert len(recs) == 1
    r = recs[0]
    assert r["face"] is False
    assert (r["width"], r["height"]) == (320, 240)
    assert r["mesh"] is None and r["lm68"] is None


@needs_bin
def test_portrait_matches_mediapipe_static(tmp_path):
    from mediapipe_reference import reference

    portraits = sorted((DATA / "portraits").glob("*.jpg"))
    if not portraits:
        pytest.skip(f"no portraits under {DATA / 'portraits'}")
    path = portraits[0]
    ours = run_landmarks(path, tmp_path / "p.jsonl")
    ref = list(reference(path, static=True))
    errs = mesh_errors(ours, ref)
    assert len(errs) == 1, "both must find the face"
    assert errs[0] < MAX_NORM_ERROR
    iris = ours[0]["iris"]
    if iris is not None:
        lm = np.asarray(ours[0]["lm68"])
        for k, eye in enumerate((lm[36:42], lm[42:48])):
            cx, cy, r = iris[k]
            lo, hi = eye.min(0), eye.max(0)
            assert lo[0] <= cx <= hi[0] and lo[1] - r <= cy <= hi[1] + r, f"iris {k} outside its eye"
            # Human iris radius is ~6 mm against ~63 mm between the eyes: ~0.09 IOD.
            assert 0.05 * inter_ocular(lm) < r < 0.15 * inter_ocular(lm), f"iris radius {r}"


@needs_bin
def test_corrupt_and_missing_input_fail_cleanly(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"definitely not a video")
    for path in (bad, tmp_path / "missing.mp4"):
        proc = subprocess.run([str(BIN), "landmarks", str(path), "--out", str(tmp_path / "o.jsonl")], capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert "panicked" not in proc.stderr
        assert path.name in proc.stderr
        assert not (tmp_path / "o.jsonl").exists()
