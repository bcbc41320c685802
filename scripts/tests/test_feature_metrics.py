"""Issue 17's mouth and eye metrics on synthetic faces whose answers are known by construction."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from puppetcam_train import feature_metrics as FM


def ellipse(idx, cx, cy, rx, ry, m):
    for k, i in enumerate(idx):
        a = 2 * np.pi * k / len(idx)
        m[i] = (cx + rx * np.cos(a), cy + ry * np.sin(a))


def synthetic(gap=20.0):
    """A 200x200 face: oval, eyes 80 px apart (outer corners), a mouth whose central gap is `gap`."""
    m = np.zeros((468, 2), np.float32)
    ellipse(FM.FACE_OVAL, 100, 100, 80, 95, m)
    ellipse(FM.OUTER_LIPS, 100, 150, 30, 12 + gap / 2, m)
    ellipse(FM.INNER_LIPS, 100, 150, 22, max(gap / 2, 0.5), m)
    for u, l in FM.CENTRAL_PAIRS:
        m[u], m[l] = (100, 150 - gap / 2), (100, 150 + gap / 2)
    for (a, b), c, cx in zip(FM.EYE_CORNERS, FM.EYE_CONTOURS, (75, 125)):
        ellipse(c, cx, 80, 12, 5, m)
    m[33], m[263] = (60, 80), (140, 80)
    return m


def test_gap_is_measured_against_the_outer_inter_ocular_distance():
    assert abs(FM.gap_iod(synthetic(20.0)) - 0.25) < 1e-6
    assert FM.gap_iod(synthetic(0.0)) < 1e-6


def test_teeth_share_counts_bright_unsaturated_pixels_inside_the_inner_lips():
    m = synthetic(30.0)
    img = np.zeros((200, 200, 3), np.uint8)
    img[:] = (200, 150, 120)  # skin
    top = np.zeros((200, 200), bool)
    top[:150] = True
    inner = FM.polygon_mask(img.shape, m[FM.INNER_LIPS])
    img[inner & top] = (235, 230, 225)  # teeth above the mouth's centre line
    img[inner & ~top] = (60, 20, 20)  # dark cavity below
    s = FM.teeth_share(img, m)
    assert 0.4 < s < 0.6, s
    img[inner] = (160, 60, 60)  # a red blob: no teeth
    assert FM.teeth_share(img, m) == 0.0
    # On a yellowed painting, yellowed teeth still count (relative to the face).
    img[:] = (180, 140, 70)
    img[inner] = (215, 205, 170)
    assert FM.teeth_share(img, m) > 0.9


def test_eye_luminance_and_box_psnr():
    m = synthetic()
    img = np.full((200, 200, 3), 180, np.uint8)
    open_l = FM.eye_luma(img, m)
    for b in FM.eye_boxes(m, 200, 200):
        img[b[1]:b[3], b[0]:b[2]] //= 2
    assert abs(FM.eye_luma(img, m) / open_l - 0.5) < 0.02
    a = np.zeros((200, 200, 3), np.uint8)
    assert FM.boxes_psnr(a, a, FM.eye_boxes(m, 200, 200)) == 99.0


def test_flicker_and_still_frames():
    m = synthetic()
    meshes = {0: m, 1: m, 2: m + 10}
    assert FM.still_frames(meshes, 0, 3) == [1]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (200, 200, 3), dtype=np.uint8) for _ in range(3)]
    assert FM.flicker(frames, meshes, [1]) > 50
    assert FM.flicker([frames[0]] * 3, meshes, [1]) == 0.0


def test_slope_recovers_a_gain():
    x = np.linspace(0, 0.4, 50)
    assert abs(FM.slope(x, 0.7 * x + 0.05) - 0.7) < 1e-9
    assert np.isnan(FM.slope([1, 1, 1], [1, 2, 3]))


def test_mouth_prior_atlas_spans_the_opening_from_upper_to_lower_lip():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("make_mouth_prior", Path(__file__).resolve().parents[1] / "make_mouth_prior.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    m = np.zeros((468, 2), np.float32)
    for k, (u, l) in enumerate(zip(mp.UPPER, mp.LOWER)):
        x = 80 + 4 * k
        h = 10 * np.sin(np.pi * k / 10)
        m[u], m[l] = (x, 150 - h), (x, 150 + h)
    xy = mp.atlas_coords(m)
    assert xy.shape == (mp.T, mp.S, 2)
    # Columns run corner to corner, rows from the upper lip (above the axis) to the lower one.
    assert np.all(np.diff(xy[0, :, 0]) > 0) and 80 < xy[0, 0, 0] < 82 and 118 < xy[0, -1, 0] < 120
    mid = mp.S // 2
    assert xy[0, mid, 1] < 141 and xy[-1, mid, 1] > 159 and np.all(np.diff(xy[:, mid, 1]) > 0)
    # Samples of the teeth rule are bright and unsaturated relative to the face.
    img = np.full((200, 200, 3), (200, 150, 120), np.uint8)
    ellipse(FM.FACE_OVAL, 100, 100, 80, 95, m)
    ellipse(FM.OUTER_LIPS, 100, 150, 30, 20, m)
    sample = np.array([[[235, 230, 225], [160, 60, 60]]], np.uint8)
    assert mp.teeth_mask(img, m, sample).tolist() == [[1.0, 0.0]]


def _mouth_prior_module():
    spec = importlib.util.spec_from_file_location("make_mouth_prior", Path(__file__).resolve().parents[1] / "make_mouth_prior.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    return mp


def test_rounding_limits_are_where_the_teeth_share_falls():
    """The rounding thresholds come from the teeth share per narrowing: 10 % and 90 % of the way
    down from the rest-width share to the narrowest bins'; a curve that does not fall is an error."""
    mp = _mouth_prior_module()
    # Two identities, frames at narrowings 0.8 .. 1.25 whose teeth share is 0.1 below 0.9, 0.3
    # from 0.95 on, linear between: the crossings are 0.9 + 0.1 x 0.05 and 0.9 + 0.9 x 0.05
    # (between bin centres 0.925 and 0.975, in bin-centre terms).
    def frames(shift):
        v = []
        for r in np.arange(0.8, 1.25, 0.01):
            share = 0.1 if r < 0.9 else 0.3 if r >= 0.95 else 0.1 + 0.2 * (r - 0.9) / 0.05
            t = (np.random.default_rng(int(r * 1000) + shift).random((mp.T, mp.S)) < share).astype(np.uint8)
            v += [(None, t, 0.2, r)] * 3
        return v
    c, s, ids = mp.rounding_curve([frames(0), frames(1)])
    assert np.all(ids[(c > 0.8) & (c < 1.25)] == 2)
    start, full, wide, narrow = mp.rounding_limits(c, s, ids, min_ids=2)
    assert abs(wide - 0.3) < 0.03 and abs(narrow - 0.1) < 0.03, (wide, narrow)
    assert 0.93 < start < 0.98 and 0.87 < full < 0.93 and start > full, (start, full)
    # A share that rises with narrowing has no rounding to find.
    with pytest.raises(SystemExit):
        mp.rounding_limits(c, s[::-1], ids[::-1], min_ids=2)
