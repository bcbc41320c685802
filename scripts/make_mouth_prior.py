#!/usr/bin/env python3
"""Builds the mouth-interior prior (src/core/mouth_prior.rs): what the inside of an open mouth
typically looks like (upper teeth under the upper lip, shadow, tongue, lower teeth), relative to
the face's skin colour, learned from the training identities' open-mouth frames.

A one-portrait avatar has never seen its own open mouth: the warp can only stretch lip pixels
across the opening. This prior gives it teeth, tongue and shadow in the portrait's colours
(`core::mouth_interior` multiplies it by the portrait's skin colour), which the refiner then
sharpens and blends.

Atlas: for every open-mouth frame (central inner-lip gap > 0.10 of the outer inter-ocular
distance), the opening is resampled on an S x T grid: column s runs from one inner mouth corner
to the other (by position along the corner-to-corner axis), row t from the upper inner lip (0)
to the lower one (1). Each sample is divided by the frame's skin colour (the mean at
`SKIN_POINTS`, the same points the daemon samples). Frames are grouped into gap bins (teeth
fill a narrow opening and are a band at the top of a wide one). Per bin and identity: how often
each sample is teeth (bright and unsaturated relative to the face, `feature_metrics`' rule), the
mean colour of its teeth and of the rest; then over identities. A plain mean would blur teeth
into a pink fog, so the atlas is a *typical* mouth: teeth where the (smoothed) teeth probability
is above the quantile that keeps the mean teeth area, the rest's mean colour elsewhere; mirrored
left-right (lighting differs by clip, teeth do not). Held-out identities (docs/quality.md) are
never read.

  python scripts/make_mouth_prior.py            # writes src/core/mouth_prior.rs
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from puppetcam_train import feature_metrics as FM  # noqa: E402

HELD_OUT = {"lp_d5", "lp_d18", "r3_May_5s", "sh_video"}
UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
# Skin points (cheeks, forehead): the face colour the prior is relative to (core::mouth_interior).
SKIN_POINTS = [50, 280, 101, 330, 205, 425, 36, 266, 117, 346, 123, 352, 151, 9, 108, 337, 187, 411, 142, 371]
S, T = 48, 24
# Gap bins (central inner-lip gap / outer inter-ocular distance): lower edges.
BINS = [0.10, 0.17, 0.26]


def mouth_frame(mesh):
    """Origin at the inner corner 78, unit x along 78 -> 308 (mouth width), y across (px)."""
    a, b = mesh[78].astype(np.float64), mesh[308].astype(np.float64)
    e = b - a
    w = float(np.linalg.norm(e))
    ux = e / max(w, 1e-9)
    uy = np.array([-ux[1], ux[0]])
    return a, w, ux, uy


def polyline_at(u, us, vs):
    """v of a polyline (us ascending after sorting) at u; clamped at the ends."""
    o = np.argsort(us)
    return np.interp(u, us[o], vs[o])


def atlas_coords(mesh):
    """(T, S, 2) image positions of the atlas grid for this mouth."""
    a, w, ux, uy = mouth_frame(mesh)
    to = lambda idx: ((mesh[idx] - a) @ ux / w, (mesh[idx] - a) @ uy)
    uu, vu = to(UPPER)
    ul, vl = to(LOWER)
    s = (np.arange(S) + 0.5) / S
    t = (np.arange(T) + 0.5) / T
    top, bot = polyline_at(s, uu, vu), polyline_at(s, ul, vl)
    v = top[None, :] + t[:, None] * (bot - top)[None, :]
    u = np.broadcast_to(s[None, :] * w, v.shape)
    return a[None, None, :] + u[..., None] * ux + v[..., None] * uy


def skin_colour(rgb, mesh):
    p = mesh[SKIN_POINTS].astype(np.float32)
    c = cv2.remap(rgb, p[:, 0].reshape(1, -1), p[:, 1].reshape(1, -1), cv2.INTER_LINEAR)
    return c.reshape(-1, 3).astype(np.float64).mean(0)


def teeth_mask(rgb, mesh, sample):
    """Which atlas samples look like teeth (feature_metrics' rule: bright and unsaturated
    relative to the face)."""
    face = FM.face_median(rgb, mesh)
    if face is None:
        return np.zeros(sample.shape[:2])
    return FM.is_teeth(sample, face).astype(np.float64)


def clip_samples(path, mesher, every=2, max_frames=400):
    cap = cv2.VideoCapture(str(path))
    out = {b: [] for b in range(len(BINS))}
    i = 0
    while i < max_frames * every:
        ok, f = cap.read()
        if not ok:
            break
        i += 1
        if (i - 1) % every:
            continue
        rgb = cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
        m = mesher(rgb)
        if m is None:
            continue
        g = FM.gap_iod(m)
        if not g > BINS[0]:
            continue
        b = max(k for k, lo in enumerate(BINS) if g >= lo)
        xy = atlas_coords(m).astype(np.float32)
        sample = cv2.remap(rgb, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR).astype(np.float64)
        skin = skin_colour(rgb, m)
        if np.any(skin < 8):
            continue
        out[b].append((sample / skin, teeth_mask(rgb, m, sample), g))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = os.environ.get("PUPPETCAM_DATA")
    ap.add_argument("--videos", default=str((Path(d) if d else ROOT.parent / "shared" / "data") / "videos"))
    ap.add_argument("--out", default=str(ROOT / "src/core/mouth_prior.rs"))
    ap.add_argument("--preview", default=None, help="write the atlases as a PNG (on a mid skin colour)")
    ap.add_argument("--soft", type=float, default=0.04, help="teeth probability ramp half-width around the threshold")
    ap.add_argument("--blur", type=float, default=1.5, help="teeth probability smoothing (atlas cells)")
    ap.add_argument("--min-frames", type=int, default=4, help="an identity's bin counts with at least this many frames")
    a = ap.parse_args()
    from puppetcam_train.avatar_eval import Mesh

    clips = sorted(p for p in Path(a.videos).glob("*.mp4") if p.stem not in HELD_OUT)
    mesher = Mesh()
    per_bin = {b: [] for b in range(len(BINS))}
    gaps = {b: [] for b in range(len(BINS))}
    used = []
    for c in clips:
        s = clip_samples(c, mesher)
        n = {b: len(v) for b, v in s.items()}
        print(f"{c.stem}: open frames per bin {n}", flush=True)
        for b, v in s.items():
            if len(v) >= a.min_frames:
                # Per identity: how often each sample is teeth, and the mean colour of its teeth
                # and of the rest (tongue, shadow, lips), where seen.
                x = np.stack([x for x, _, _ in v])
                t = np.stack([t for _, t, _ in v])[..., None]
                p = t.mean(0)
                teeth = (x * t).sum(0) / np.maximum(t.sum(0), 1e-9)
                other = (x * (1 - t)).sum(0) / np.maximum((1 - t).sum(0), 1e-9)
                per_bin[b].append((p, teeth, other, t.sum(0) > 0, (1 - t).sum(0) > 0))
                gaps[b].append(np.mean([g for _, _, g in v]))
        if any(len(v) >= a.min_frames for v in s.values()):
            used.append(c.stem)
    mesher.close()
    atlases, centres, counts = [], [], []
    for b in range(len(BINS)):
        if not per_bin[b]:
            raise SystemExit(f"no identity has open-mouth frames in gap bin {b}")
        # A typical mouth, not a mean one: a mean over people blurs teeth into the shadow and
        # loses them (the preview shows a pink fog). Teeth where most people show teeth (the
        # probability sharpened around one half), in the mean teeth colour; elsewhere the mean
        # colour of what is not teeth.
        p = np.mean([q[0] for q in per_bin[b]], 0)[..., 0]
        p = (p + p[:, ::-1]) / 2
        # Smoothed over about one tooth's width so that the teeth edge is a curve, not pixel noise.
        p = cv2.GaussianBlur(p.astype(np.float32), (0, 0), a.blur).astype(np.float64)[..., None]
        seen_t = np.sum([q[3] for q in per_bin[b]], 0)
        seen_o = np.sum([q[4] for q in per_bin[b]], 0)
        teeth = np.sum([q[1] * q[3] for q in per_bin[b]], 0) / np.maximum(seen_t, 1)
        other = np.sum([q[2] * q[4] for q in per_bin[b]], 0) / np.maximum(seen_o, 1)
        teeth_mean = np.sum(teeth * seen_t, (0, 1)) / max(np.sum(seen_t), 1)
        teeth = np.where(seen_t > 0, teeth, teeth_mean)
        # Threshold at the quantile that keeps the teeth area: the prior shows as much teeth as
        # the average open mouth of this gap, where they are most likely.
        tau = float(np.quantile(p, 1 - p.mean()))
        print(f"bin {b}: mean teeth share {p.mean():.3f}, max probability {p.max():.3f}, threshold {tau:.3f}")
        sharp = np.clip((p - (tau - a.soft)) / (2 * a.soft), 0, 1)
        sharp = sharp * sharp * (3 - 2 * sharp)
        m = sharp * teeth + (1 - sharp) * other
        m = (m + m[:, ::-1]) / 2
        atlases.append(m)
        centres.append(float(np.mean(gaps[b])))
        counts.append(len(per_bin[b]))
    # Stored as u8: ratio * 100 (ratios of 0..2.55 to the skin colour).
    q = [np.clip(np.round(x * 100), 0, 255).astype(np.uint8) for x in atlases]
    lines = [
        "//! Generated by scripts/make_mouth_prior.py: do not edit. A typical inside of an open mouth",
        "//! (teeth where most mouths show them, the mean colour of the rest) relative to the face's skin",
        "//! colour, per gap bin, from the training identities' open-mouth frames (held out: lp_d5,",
        "//! lp_d18, r3_May_5s, sh_video). Research-use data: see onnx/README.md.",
        f"//! Identities with open-mouth frames: {len(used)} ({', '.join(used)}); per bin: {counts}.",
        "",
        f"/// Atlas columns (inner mouth corner to corner) and rows (upper inner lip to lower).",
        f"pub const S: usize = {S};",
        f"pub const T: usize = {T};",
        "/// Mean central gap (over the outer inter-ocular distance) of each bin's frames.",
        f"pub const GAPS: [f32; {len(BINS)}] = [{', '.join(f'{g:.4f}' for g in centres)}];",
        "/// Mesh points whose mean colour is the skin colour the atlas is relative to.",
        f"pub const SKIN_POINTS: [usize; {len(SKIN_POINTS)}] = {SKIN_POINTS};",
        "/// Per bin, T rows of S RGB samples, each 100 x (colour / skin colour), row-major.",
        f"pub const ATLAS: [[u8; {S * T * 3}]; {len(BINS)}] = [",
    ]
    for x in q:
        flat = x.reshape(-1)
        lines.append("    [")
        for r in range(0, len(flat), 24):
            lines.append("        " + ", ".join(str(int(v)) for v in flat[r:r + 24]) + ",")
        lines.append("    ],")
    lines.append("];")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}: bins at gaps {centres}, identities per bin {counts}")
    if a.preview:
        skin = np.array([200, 150, 125], np.float64)
        tiles = [cv2.resize(np.clip(x * skin, 0, 255).astype(np.uint8), (S * 4, T * 4 + int(T * 4 * g / 0.2)),
                            interpolation=cv2.INTER_CUBIC) for x, g in zip(atlases, centres)]
        hmax = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, hmax - t.shape[0]), (4, 4), (0, 0))) for t in tiles]
        cv2.imwrite(a.preview, cv2.cvtColor(np.hstack(tiles), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
