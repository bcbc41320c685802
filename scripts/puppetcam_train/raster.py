"""Landmark raster of docs/rasteriser.md (version 1), the Python twin of src/core/raster.rs.

Training draws its generator inputs with this module and the daemon with the Rust one; both must
reproduce tests/golden/raster_*.png bit for bit (scripts/tests/test_raster.py checks this side).
"""
from __future__ import annotations

import cv2
import numpy as np

SIZE = 256
SHIFT = 4
LINE_AA = 16
# Coordinates beyond this are nonsense for a 256 px crop and could overflow OpenCV's fixed point.
MAX_ABS_COORD = 16384.0

# (first, last inclusive, closed, (R, G, B)) in drawing order, after the irises.
PARTS = [
    (0, 16, False, (0, 160, 255)),    # jaw
    (17, 21, False, (255, 128, 0)),   # right brow
    (22, 26, False, (255, 210, 0)),   # left brow
    (27, 30, False, (0, 255, 255)),   # nose bridge
    (31, 35, False, (0, 200, 120)),   # nose base
    (36, 41, True, (0, 255, 0)),      # right eye
    (42, 47, True, (160, 255, 0)),    # left eye
    (48, 59, True, (255, 0, 96)),     # outer lips
    (60, 67, True, (255, 0, 255)),    # inner lips
]
IRIS_COLOUR = (255, 255, 255)


def _as_f32_f64(a) -> np.ndarray:
    # The daemon holds landmarks as f32; rounding through float32 first makes the fixed-point
    # conversion identical for float64 inputs too (otherwise x.xxx03125 ties could split).
    arr = np.asarray(a, dtype=np.float32).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("raster: non-finite coordinate")
    if np.any(np.abs(arr) > MAX_ABS_COORD):
        raise ValueError(f"raster: coordinate beyond +-{MAX_ABS_COORD}")
    return arr


def _fixed(v: np.ndarray) -> np.ndarray:
    # floor(v*16 + 0.5), not numpy.round (banker's rounding would differ on ties).
    return np.floor(v * (1 << SHIFT) + 0.5).astype(np.int32)


def rasterise(pts68, iris=None) -> np.ndarray:
    """Draws the raster: pts68 is (68, 2) crop pixels, iris None or ((cx, cy, r), (cx, cy, r)).

    Returns a (256, 256, 3) uint8 RGB image.
    """
    pts = _as_f32_f64(pts68)
    if pts.shape != (68, 2):
        raise ValueError(f"raster: expected 68x2 points, got {pts.shape}")
    img = np.zeros((SIZE, SIZE, 3), np.uint8)  # bytes are RGB, so colours are given as RGB
    if iris is not None:
        irs = _as_f32_f64(iris)
        if irs.shape != (2, 3):
            raise ValueError(f"raster: expected 2x3 iris values, got {irs.shape}")
        for cx, cy, r in irs:
            if r < 0.5:
                continue
            c = _fixed(np.array([cx, cy]))
            cv2.circle(img, (int(c[0]), int(c[1])), int(_fixed(np.array(r))), IRIS_COLOUR,
                       thickness=-1, lineType=LINE_AA, shift=SHIFT)
    q = _fixed(pts)
    for first, last, closed, colour in PARTS:
        contour = np.ascontiguousarray(q[first:last + 1].reshape(-1, 1, 2))
        cv2.polylines(img, [contour], closed, colour, thickness=2, lineType=LINE_AA, shift=SHIFT)
    return img


def to_input(raster: np.ndarray) -> np.ndarray:
    """(256, 256, 3) uint8 RGB -> float32 [1, 3, 256, 256] in [-1, 1] (x / 127.5 - 1)."""
    r = np.asarray(raster)
    if r.shape != (SIZE, SIZE, 3) or r.dtype != np.uint8:
        raise ValueError(f"raster: expected (256, 256, 3) uint8, got {r.shape} {r.dtype}")
    return (r.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).transpose(2, 0, 1)[None].copy()


def crop_box_from_68(pts68) -> tuple[float, float, float]:
    """Square crop box (x0, y0, side) of the face crop rule, in the landmarks' pixels."""
    pts = _as_f32_f64(pts68)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    w, h = x1 - x0, y1 - y0
    side = 1.8 * max(w, h)
    if not side >= 1.0:
        raise ValueError("raster: degenerate landmarks (crop side < 1 px)")
    cx = (x0 + x1) / 2.0
    cy = (y0 + y1) / 2.0 - 0.1 * h
    return (float(cx - side / 2.0), float(cy - side / 2.0), float(side))


def median_box(boxes) -> tuple[float, float, float]:
    """Per-coordinate median of per-frame boxes (training clips keep head motion visible)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 3)
    if len(b) == 0:
        raise ValueError("raster: no boxes")
    m = np.median(b, axis=0)
    return (float(m[0]), float(m[1]), float(m[2]))


def crop_matrix(box, size: int = SIZE) -> np.ndarray:
    """2x3 affine map from source pixels to crop pixels: u = (x - x0) * size / side."""
    x0, y0, side = box
    s = size / side
    return np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]], dtype=np.float64)


def warp_to_crop(img: np.ndarray, box, size: int = SIZE) -> np.ndarray:
    """Crops and scales img to size x size with warpAffine(INTER_LINEAR, BORDER_REPLICATE)."""
    return cv2.warpAffine(img, crop_matrix(box, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def to_crop(pts, box, size: int = SIZE) -> np.ndarray:
    """Maps (..., 2) points from source pixels to crop pixels."""
    x0, y0, side = box
    p = np.asarray(pts, dtype=np.float64)
    return (p - np.array([x0, y0])) * (size / side)


def from_crop(pts, box, size: int = SIZE) -> np.ndarray:
    """Inverse of to_crop."""
    x0, y0, side = box
    p = np.asarray(pts, dtype=np.float64)
    return p * (side / size) + np.array([x0, y0])


