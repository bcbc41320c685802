"""The Python raster (scripts/puppetcam_train/raster.py) must reproduce tests/golden/ bit for bit,
exactly like the Rust one (tests/raster_golden.rs), so that training and the daemon agree."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from puppetcam_train import raster  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
CASES = sorted(p.stem.removeprefix("landmarks_") for p in GOLDEN.glob("landmarks_*.json"))


def load(name):
    d = json.loads((GOLDEN / f"landmarks_{name}.json").read_text())
    return d["pts68"], d["iris"]


def test_there_are_goldens():
    assert len(CASES) >= 4
    for name in CASES:
        assert (GOLDEN / f"raster_{name}.png").exists(), name


@pytest.mark.parametrize("name", CASES)
def test_matches_golden_bit_for_bit(name):
    pts, iris = load(name)
    img = raster.rasterise(pts, iris)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    want = cv2.imread(str(GOLDEN / f"raster_{name}.png"), cv2.IMREAD_COLOR)[:, :, ::-1]  # BGR -> RGB
    diff = img != want
    assert not diff.any(), (f"{name}: {int(diff.sum())} bytes differ (max |d| "
                            f"{int(np.abs(img.astype(int) - want).max())}); OpenCV {cv2.__version__}")


@pytest.mark.parametrize("name", CASES)
def test_float64_input_gives_same_raster(name):
    # Training holds float64 landmarks; the f32 round trip in the rasteriser makes them agree.
    pts, iris = load(name)
    a = raster.rasterise(np.asarray(pts, np.float64), None if iris is None else np.asarray(iris, np.float64))
    b = raster.rasterise(pts, iris)
    assert (a == b).all()


def test_fixed_point_rounds_half_up():
    v = np.array([1.0, 1 / 32, 3 / 32, 5 / 32, -1 / 32, -3 / 32, 0.03, 0.04])
    assert raster._fixed(v).tolist() == [16, 1, 2, 3, 0, -1, 0, 1]


def test_rejects_bad_input():
    pts = np.full((68, 2), 100.0)
    pts[5, 0] = np.nan
    with pytest.raises(ValueError):
        raster.rasterise(pts)
    with pytest.raises(ValueError):
        raster.rasterise(np.zeros((67, 2)))
    with pytest.raises(ValueError):
        raster.rasterise(np.full((68, 2), 1e7))


def test_small_iris_is_skipped():
    pts, _ = load(CASES[0])
    a = raster.rasterise(pts, [[60, 60, 0.49], [200, 60, 0.0]])
    assert (a == raster.rasterise(pts)).all()
    b = raster.rasterise(pts, [[60, 60, 5.0], [200, 60, 0.0]])
    assert tuple(b[60, 60]) == (255, 255, 255)


def test_to_input():
    img = np.zeros((256, 256, 3), np.uint8)
    img[5, 7] = (255, 0, 51)
    t = raster.to_input(img)
    assert t.shape == (1, 3, 256, 256) and t.dtype == np.float32
    assert t[0, 0, 5, 7] == 1.0 and t[0, 1, 5, 7] == -1.0
    assert abs(t[0, 2, 5, 7] - (51 / 127.5 - 1)) < 1e-7
    with pytest.raises(ValueError):
        raster.to_input(img[:100])


def test_crop_box_rule_and_maps():
    pts = np.array([[100 + 50 * (i % 2), 200 + 20 * (i % 3)] for i in range(68)], np.float64)
    x0, y0, side = raster.crop_box_from_68(pts)
    assert (x0, y0, side) == pytest.approx((80.0, 171.0, 90.0))
    box = (x0, y0, side)
    assert raster.to_crop([125, 216], box) == pytest.approx([128, 128])
    back = raster.from_crop(raster.to_crop([[111.5, 233.25]], box), box)
    assert back == pytest.approx(np.array([[111.5, 233.25]]))
    with pytest.raises(ValueError):
        raster.crop_box_from_68(np.full((68, 2), 3.0))
    assert raster.median_box([(1, 2, 3), (3, 4, 5), (2, 9, 4)]) == (2.0, 4.0, 4.0)


def test_warp_to_crop_samples_like_to_crop():
    h, w = 150, 200
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = np.arange(w)[None, :]
    img[:, :, 1] = np.arange(h)[:, None]
    box = (40.0, 30.0, 128.0)
    c = raster.warp_to_crop(img, box, 64)
    assert c.shape == (64, 64, 3)
    for u, v in [(0, 0), (10, 20), (50, 55)]:
        sx, sy = raster.from_crop([u, v], box, 64)
        assert (c[v, u, 0], c[v, u, 1]) == (sx, sy)
