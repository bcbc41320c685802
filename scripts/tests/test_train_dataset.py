"""Data preparation on synthetic videos: layouts, crop rule, skipped frames, cache, episodes."""
import json

import numpy as np

from conftest import write_video
from puppetcam_train import dataset as DS
from puppetcam_train import raster as R


def test_find_clips_layouts(tmp_path):
    (tmp_path / "flat").mkdir()
    for n in ("x.mp4", "y.mp4"):
        (tmp_path / "flat" / n).touch()
    c = DS.find_clips(tmp_path / "flat")
    assert [(k.identity, k.video) for k in c] == [("x", "x"), ("y", "y")]
    for p in ("id1/vidA/00001.mp4", "id1/vidA/00002.mp4", "id2/vidB/00001.mp4"):
        (tmp_path / "vox" / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "vox" / p).touch()
    c = DS.find_clips(tmp_path / "vox")
    assert [k.identity for k in c] == ["id1", "id1", "id2"]
    assert [k.video for k in c] == ["id1/vidA", "id1/vidA", "id2/vidB"]
    assert len({k.clip_id for k in c}) == 3


def test_prepare_cache(tmp_path, fake_backend):
    fake_backend["v.mp4"] = lms = write_video(tmp_path / "v.mp4", n=10)
    d = DS.prepare_clip(DS.Clip(tmp_path / "v.mp4", "v", "v", "v"), tmp_path / "cache", "mediapipe")
    meta = json.loads((d / "meta.json").read_text())
    assert meta["landmark_backend"] == "mediapipe" and meta["frames"] == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    frames, rasters = np.load(d / "frames.npy"), np.load(d / "rasters.npy")
    lm, iris = np.load(d / "lm68.npy"), np.load(d / "iris.npy")
    assert frames.shape == rasters.shape == (9, 256, 256, 3) and frames.dtype == np.uint8
    # per-clip median box, landmarks mapped into it, raster drawn from the mapped landmarks
    keep = [lms[i] for i in meta["frames"]]
    box = R.median_box([R.crop_box_from_68(p) for p in keep])
    assert np.allclose(meta["box"], box)
    assert np.allclose(lm[0], R.to_crop(keep[0], box), atol=1e-3)
    assert np.array_equal(rasters[0], R.rasterise(lm[0], iris[0]))
    # the crop really is the warped frame (disc colour near the crop centre)
    assert frames[0, 128, 128, 0] > 150  # RGB order: the BGR (40, 120, 200) disc is red-ish
    # cached: a second call does not rewrite
    mtime = (d / "meta.json").stat().st_mtime_ns
    DS.prepare_clip(DS.Clip(tmp_path / "v.mp4", "v", "v", "v"), tmp_path / "cache", "mediapipe")
    assert (d / "meta.json").stat().st_mtime_ns == mtime


def test_episodes(tiny_cache):
    store = DS.ClipStore(tiny_cache, exclude_identities={"c"})
    assert len(store) == 2 and store.videos == ["a", "b"]
    ds = DS.EpisodeDataset(store, k=3, seed=1)
    ep = ds[5]
    assert ep["shots_img"].shape == (3, 3, 256, 256) and ep["img"].shape == (3, 256, 256)
    assert ep["raster"].min() >= -1 and ep["raster"].max() <= 1
    assert int(ep["video"]) in (0, 1)
    assert all(np.array_equal(ds[5][k], ep[k]) for k in ep)  # deterministic per index
