#!/usr/bin/env python3
"""Chooses the landmark smoothing (One Euro filter, src/core/one_euro.rs) on training clips.

Why this objective: MediaPipe's Python face mesh in static-image mode detects every frame from
scratch, so its noise is independent of puppetcam's tracker (which crops around the previous
frame). Then E|smoothed - reference|^2 = E|smoothed - truth|^2 + a constant, i.e. the error
against this noisy reference ranks filters exactly as the error against the unknown truth would:
lag and jitter both count. Reported next to it: the jitter left on the stillest 20 % of frames
(mean second difference, inter-ocular distances), which is what a still face shows.

  python scripts/landmark_smoothing.py --clips lp_d3 lp_d7 ... [--cache DIR]

Clips come from $PUPPETCAM_DATA/videos (else ../shared/data/videos); use training identities
only (docs/quality.md lists the held-out ones). Needs a release build (`puppetcam landmarks`).
"""
import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def alpha(cutoff, dt):
    tau = 1 / (2 * np.pi * cutoff)
    return 1 / (1 + tau / dt)


def one_euro(x, dt, min_cutoff, beta, d_cutoff, per_iod):
    """The filter of src/core/one_euro.rs over a (frames, points, 2) track; NaN frames reset it.
    `per_iod`: speed in inter-ocular distances per second (as the tracker does), else in px/s."""
    y = x.copy()
    prev = pdx = None
    for t in range(len(x)):
        v = x[t]
        if np.isnan(v).any():
            prev = None
            continue
        if prev is None:
            prev, pdx = v.copy(), np.zeros_like(v)
            continue
        s = 1 / np.linalg.norm(v[33] - v[263]) if per_iod else 1.0
        edx = pdx + alpha(d_cutoff, dt) * ((v - prev) / dt * s - pdx)
        a = alpha(min_cutoff + beta * np.abs(edx), dt)
        prev, pdx = prev + a * (v - prev), edx
        y[t] = prev
    return y


def sq_error(track, ref):
    ok = ~np.isnan(track).any((1, 2)) & ~np.isnan(ref).any((1, 2))
    iod = np.linalg.norm(ref[ok][:, 33] - ref[ok][:, 263], axis=1)
    return float((((track[ok] - ref[ok]) ** 2).sum(2).mean(1) / iod ** 2).mean())


def still_jitter(track, raw):
    def acc(y):
        iod = np.linalg.norm(y[:, 33] - y[:, 263], axis=1)
        return np.linalg.norm(y[2:] - 2 * y[1:-1] + y[:-2], axis=2).mean(1) / iod[1:-1]
    a_raw, a = acc(raw), acc(track)
    m = ~np.isnan(a_raw)
    sel = m & (a_raw <= np.quantile(a_raw[m], 0.2))
    return float(np.nanmean(a[sel]))


def load(clip, cache: Path, binary, mesher, max_frames=300):
    out = cache / f"{clip.stem}.npz"
    if out.exists():
        d = np.load(out)
        return d["raw"], d["ref"], float(d["fps"])
    from puppetcam_train import avatar_eval as AE
    import cv2
    raw = AE.product_meshes(binary, clip, cache / f"{clip.stem}.jsonl", smooth=False)
    frames = AE.read_frames(clip)[:max_frames]
    r = np.full((len(frames), 468, 2), np.nan, np.float32)
    g = np.full_like(r, np.nan)
    for i, f in enumerate(frames):
        if i in raw:
            r[i] = raw[i]
        m = mesher(f)
        if m is not None:
            g[i] = m
    fps = cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FPS) or 30.0
    np.savez(out, raw=r, ref=g, fps=fps)
    return r, g, fps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", required=True)
    ap.add_argument("--cache", default=None, help="keep the landmark tracks here")
    a = ap.parse_args()
    from evaluate import binary, find
    from puppetcam_train import avatar_eval as AE
    cache = Path(a.cache) if a.cache else AE.tmpdir()
    cache.mkdir(parents=True, exist_ok=True)
    mesher = AE.Mesh()
    data = [load(find("videos", c), cache, binary(), mesher) for c in a.clips]
    mesher.close()
    rows = [("none", None), ("per pixel 1.5 / 0.03 / 1 (before)", (1.5, 0.03, 1.0, False))]
    rows += [(f"per IOD {m} / {b} / {d}", (m, b, d, True)) for m, b, d in itertools.product([1, 2, 4], [10, 30, 100], [1, 4, 8])]
    print("| filter (min_cutoff Hz / beta / d_cutoff Hz) | RMS error / IOD | still-face jitter / IOD |\n|---|---|---|")
    for name, cfg in rows:
        errs, jit = [], []
        for raw, ref, fps in data:
            y = raw if cfg is None else one_euro(raw, 1 / fps, *cfg)
            errs.append(sq_error(y, ref))
            jit.append(still_jitter(y, raw))
        print(f"| {name} | {np.sqrt(np.mean(errs)):.5f} | {np.mean(jit):.5f} |", flush=True)


if __name__ == "__main__":
    main()
