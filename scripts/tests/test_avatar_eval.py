"""The avatar evaluation's pure parts: shot spacing, openness measures, box and PSNR, and the
plain piecewise-affine baseline (identity and a known translation)."""
import numpy as np

from puppetcam_train import avatar_eval as AE


def test_shots_start_at_frame_zero_and_stay_in_the_first_40_percent():
    assert AE.shot_indices(100, 1) == [0]
    s = AE.shot_indices(100, 8)
    assert s[0] == 0 and len(s) == 8 and max(s) <= 39 and s == sorted(set(s))


def face_mesh(open_mouth=0.0, eye=5.0):
    rng = np.random.default_rng(0)
    m = rng.uniform(60, 140, size=(468, 2)).astype(np.float32)
    m[78], m[308] = (80, 150), (120, 150)
    for u, l in AE.LIP_PAIRS:
        m[u] = (100, 150 - open_mouth / 2)
        m[l] = (100, 150 + open_mouth / 2)
    for pairs, (a, b) in zip(AE.EYE_PAIRS, AE.EYE_CORNERS):
        m[a], m[b] = (70, 90), (90, 90)
        for u, l in pairs:
            m[u], m[l] = (80, 90 - eye / 2), (80, 90 + eye / 2)
    return m


def test_openness_measures_follow_the_geometry():
    assert AE.mouth_open(face_mesh(0.0)) < 1e-6
    assert abs(AE.mouth_open(face_mesh(10.0)) - 0.25) < 1e-6
    assert abs(AE.eye_open(face_mesh(eye=5.0)) - 0.25) < 1e-6
    assert AE.eye_open(face_mesh(eye=0.0)) < 1e-6


def test_box_psnr_and_nme():
    pts = np.array([[10, 20], [30, 60]], np.float32)
    assert AE.box(pts, 100, 100, 0.1) == (8, 16, 32, 64)
    assert AE.box(pts, 25, 50, 0.5) == (0, 0, 25, 50)
    a = np.zeros((4, 4, 3), np.uint8)
    assert AE.psnr(a, a) == 99.0
    assert abs(AE.psnr(a, a + 1) - 48.13) < 0.01
    m = face_mesh()
    assert AE.nme68(m, m) == 0.0


def test_plain_warp_is_identity_at_rest_and_follows_a_translation():
    rng = np.random.default_rng(1)
    img = (rng.uniform(0, 255, (200, 200, 3))).astype(np.uint8)
    img = np.ascontiguousarray(np.clip(img.astype(np.float32), 0, 255).astype(np.uint8))
    ys, xs = np.mgrid[50:150:10, 50:150:10]
    src = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    assert np.array_equal(AE.plain_pwa(img, src, src)[60:140, 60:140], img[60:140, 60:140])
    out = AE.plain_pwa(img, src, src + [3, 0])
    # Inside the mesh, pixel (x, y) of the output is pixel (x - 3, y) of the input.
    assert np.abs(out[70:130, 73:133].astype(int) - img[70:130, 70:130].astype(int)).max() <= 1


def test_yaw_proxy_measures_the_nose_along_the_eye_line():
    m = np.zeros((468, 2), np.float32)
    m[33], m[263] = (0.0, 0.0), (100.0, 0.0)
    m[1] = (50.0, 40.0)
    assert abs(AE.yaw_proxy(m)) < 1e-9
    m[1] = (65.0, 40.0)
    assert abs(AE.yaw_proxy(m) - 0.15) < 1e-6
    # Invariant to roll and scale: the same face rotated by 30 degrees and doubled.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    r = (2 * m) @ np.array([[c, s], [-s, c]], np.float32)
    assert abs(AE.yaw_proxy(r) - 0.15) < 1e-5
    m[263] = m[33]
    assert np.isnan(AE.yaw_proxy(m))
