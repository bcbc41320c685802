"""Shared fixtures of the training tests: import path, synthetic faces, videos and caches.

Nothing here reads the shared data set: every image is generated, and landmark extraction is
replaced by known synthetic landmarks so the tests need neither the daemon nor a real face.
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(1)  # the tests are small; extra threads only contend on a shared CPU


def fake_lm68(cx=128.0, cy=128.0, s=60.0, t=0.0) -> np.ndarray:
    """A face-like 68-point layout (iBUG order) centred at (cx, cy), half-width s; t opens the mouth."""
    pts = []
    for a in np.linspace(np.pi, 0, 17):                     # jaw
        pts.append((np.cos(a), 0.1 + 0.9 * np.sin(a) * 1.1))
    pts += [(-0.8 + 0.15 * i, -0.45 - 0.05 * np.sin(i)) for i in range(5)]   # right brow
    pts += [(0.2 + 0.15 * i, -0.45 - 0.05 * np.sin(i)) for i in range(5)]    # left brow
    pts += [(0.0, -0.35 + 0.12 * i) for i in range(4)]                        # nose bridge
    pts += [(-0.2 + 0.1 * i, 0.15) for i in range(5)]                         # nose base
    for ex in (-0.4, 0.4):                                                    # eyes
        pts += [(ex + 0.15 * np.cos(a), -0.25 + 0.07 * np.sin(a))
                for a in np.linspace(np.pi, -np.pi, 7)[:6]]
    pts += [(0.35 * np.cos(a), 0.5 + (0.12 + t) * np.sin(a)) for a in np.linspace(np.pi, -np.pi, 13)[:12]]
    pts += [(0.25 * np.cos(a), 0.5 + (0.05 + t) * np.sin(a)) for a in np.linspace(np.pi, -np.pi, 9)[:8]]
    p = np.array(pts, np.float32)
    assert p.shape == (68, 2)
    return p * s + np.array([cx, cy], np.float32)


def fake_iris(lm):
    return np.array([[*lm[36:42].mean(0), 4.0], [*lm[42:48].mean(0), 4.0]], np.float32)


def write_video(path: Path, n=12, size=(160, 120)):
    """A synthetic mp4 (moving coloured disc on a gradient); returns the landmarks of each frame."""
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    lms = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = np.linspace(0, 255, w)[None].astype(np.uint8)
        cx, cy = w / 2 + 3 * np.sin(i), h / 2 + 2 * np.cos(i)
        cv2.circle(img, (int(cx), int(cy)), 30, (40, 120 + 5 * i, 200), -1)
        vw.write(img)
        lms.append(fake_lm68(cx, cy, 30, t=0.02 * (i % 4)))
    vw.release()
    return lms


@pytest.fixture
def fake_backend(monkeypatch):
    """Replaces landmark extraction: known landmarks for every frame except frame 2 (no face)."""
    from puppetcam_train import dataset as DS
    from puppetcam_train import landmarks as L
    table = {}

    def fake(path, frames, backend):
        lms = table[Path(path).name]
        return {i: (lms[i], fake_iris(lms[i]), 1.0) for i in range(len(lms)) if i != 2}

    monkeypatch.setattr(L, "landmarks_for_video", fake)
    monkeypatch.setattr(DS.L, "landmarks_for_video", fake)
    return table


@pytest.fixture
def tiny_cache(tmp_path, fake_backend):
    """Three synthetic clips (a flat folder: one identity each) prepared into a cache."""
    from puppetcam_train import dataset as DS
    vids = tmp_path / "videos"
    vids.mkdir()
    for name in ("a", "b", "c"):
        fake_backend[f"{name}.mp4"] = write_video(vids / f"{name}.mp4")
    DS.prepare(vids, tmp_path / "cache", backend="mediapipe")
    return tmp_path / "cache"
