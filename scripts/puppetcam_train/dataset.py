"""Training data: videos -> cached 256x256 face crops + 68 landmarks + rasters, and K-shot episodes.

Cache layout (one folder per clip, under the cache dir):
  frames.npy  (N,256,256,3) uint8 RGB crops      rasters.npy (N,256,256,3) uint8 (raster.py)
  lm68.npy    (N,68,2) float32 crop pixels        iris.npy    (N,2,3) float32, NaN when absent
  meta.json   source, identity, video, box, frame indices, landmark backend
Frames are plain .npy so the loader can memory-map them (no decode cost per episode).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from . import landmarks as L
from . import raster as R

VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv", ".webm")
CACHE_VERSION = 1


@dataclass
class Clip:
    path: Path
    identity: str   # person; held-out splits are made by identity
    video: str      # the paper's "video i" (owns one row W_i of the discriminator)
    clip_id: str    # unique folder name in the cache


def find_clips(root: Path) -> list[Clip]:
    """VoxCeleb2-style tree (identity/video/clip.mp4) or a flat folder (one video = one identity)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXT)
    clips = []
    for p in files:
        rel = p.relative_to(root).parts
        if len(rel) >= 3:  # identity/video/clip
            ident, vid = rel[-3], f"{rel[-3]}/{rel[-2]}"
        elif len(rel) == 2:  # identity/clip: each clip its own video
            ident, vid = rel[0], f"{rel[0]}/{p.stem}"
        else:
            ident, vid = p.stem, p.stem
        clips.append(Clip(p, ident, vid, "__".join(rel).rsplit(".", 1)[0].replace("/", "__")))
    return clips


def read_frames(path: Path, max_frames: int | None = None, stride: int = 1):
    """Yields RGB frames of a video (every stride-th, at most max_frames)."""
    cap = cv2.VideoCapture(str(path))
    i = n = 0
    while True:
        ok, bgr = cap.read()
        if not ok or (max_frames is not None and n >= max_frames):
            break
        if i % stride == 0:
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            n += 1
        i += 1
    cap.release()


def prepare_clip(clip: Clip, cache: Path, backend: str, max_frames: int | None = None,
                 stride: int = 1, overwrite: bool = False) -> Path | None:
    """Crops one clip into the cache; returns its folder, or None when no face was found."""
    out = Path(cache) / clip.clip_id
    if (out / "meta.json").exists() and not overwrite:
        return out
    frames = list(read_frames(clip.path, max_frames, stride))
    if backend == "puppetcam" and stride != 1:
        raise ValueError("stride must be 1 with the puppetcam backend (it numbers every frame)")
    lms = L.landmarks_for_video(clip.path, frames, backend)
    keep = sorted(i for i in lms if i < len(frames))  # skip frames without a face
    if not keep:
        return None
    box = R.median_box([R.crop_box_from_68(lms[i][0]) for i in keep])
    n = len(keep)
    crops = np.zeros((n, 256, 256, 3), np.uint8)
    rasters = np.zeros_like(crops)
    lm68 = np.zeros((n, 68, 2), np.float32)
    iris = np.full((n, 2, 3), np.nan, np.float32)
    for j, i in enumerate(keep):
        pts, irs, _ = lms[i]
        crops[j] = R.warp_to_crop(frames[i], box)
        lm68[j] = R.to_crop(pts, box)
        if irs is not None:
            iris[j, :, :2] = R.to_crop(irs[:, :2], box)
            iris[j, :, 2] = irs[:, 2] * 256.0 / box[2]
        rasters[j] = R.rasterise(lm68[j], None if irs is None else iris[j])
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("frames", crops), ("rasters", rasters), ("lm68", lm68), ("iris", iris)):
        np.save(out / f"{name}.npy", arr)
    meta = dict(cache_version=CACHE_VERSION, source=str(clip.path), identity=clip.identity,
                video=clip.video, box=list(box), frames=[i * stride for i in keep],
                n_decoded=len(frames), landmark_backend=backend, stride=stride)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks completion
    return out


def prepare(root: Path, cache: Path, backend: str = "auto", max_frames: int | None = None,
            stride: int = 1, overwrite: bool = False) -> list[Path]:
    backend = L.resolve_backend(backend)
    clips = find_clips(root)
    done = []
    for clip in tqdm(clips, desc=f"prepare ({backend})", unit="clip"):
        d = prepare_clip(clip, cache, backend, max_frames, stride, overwrite)
        if d is None:
            tqdm.write(f"no face in {clip.path}, skipped")
        else:
            done.append(d)
    return done


class ClipStore:
    """The cached clips (memory-mapped), optionally filtered by identity."""

    def __init__(self, cache: Path, exclude_identities=(), include_identities=None):
        self.dirs, self.meta = [], []
        for m in sorted(Path(cache).glob("*/meta.json")):
            meta = json.loads(m.read_text())
            ident = meta["identity"]
            if ident in exclude_identities:
                continue
            if include_identities is not None and ident not in include_identities:
                continue
            self.dirs.append(m.parent)
            self.meta.append(meta)
        self._arrays = {}
        self.videos = sorted({m["video"] for m in self.meta})
        self.video_index = {v: i for i, v in enumerate(self.videos)}

    def __len__(self):
        return len(self.dirs)

    def arrays(self, i):
        if i not in self._arrays:
            d = self.dirs[i]
            self._arrays[i] = {k: np.load(d / f"{k}.npy", mmap_mode="r")
                               for k in ("frames", "rasters", "lm68", "iris")}
        return self._arrays[i]

    def backends(self) -> list[str]:
        return sorted({m["landmark_backend"] for m in self.meta})


def to_tensor(u8: np.ndarray) -> torch.Tensor:
    """(...,H,W,3) uint8 -> (...,3,H,W) float32 in [-1, 1], the raster.to_input scaling."""
    t = torch.from_numpy(np.ascontiguousarray(u8)).float() / 127.5 - 1.0
    return t.movedim(-1, -3)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """Inverse of to_tensor (clamped), for one (3,H,W) image."""
    return ((t.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


class EpisodeDataset(torch.utils.data.Dataset):
    """Meta-learning episodes: K frames + 1 target frame of one video (paper, section 3.2).

    Each item picks a random clip (epoch length is nominal), K+1 distinct frames, and a random
    horizontal flip of the whole episode is NOT applied: flipping would swap left/right colours
    of the raster and teach the generator the wrong eye.
    """

    def __init__(self, store: ClipStore, k: int, length: int = 10_000, seed: int = 0):
        self.store, self.k, self.length, self.seed = store, k, length, seed

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        rng = random.Random(self.seed * 1_000_003 + idx)
        ci = rng.randrange(len(self.store))
        a = self.store.arrays(ci)
        n = len(a["frames"])
        pick = rng.sample(range(n), self.k + 1) if n > self.k else [rng.randrange(n) for _ in range(self.k + 1)]
        sel = np.array(pick[: self.k] + [pick[-1]])
        frames, rasters = to_tensor(a["frames"][sel]), to_tensor(a["rasters"][sel])
        return dict(shots_img=frames[:-1], shots_raster=rasters[:-1], img=frames[-1],
                    raster=rasters[-1],
                    video=torch.tensor(self.store.video_index[self.store.meta[ci]["video"]]))
