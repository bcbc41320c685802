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

Rounded lips ("o", "u", "w") cover the teeth. Each open frame's inner mouth width is taken
against its clip's rest width (the median over the clip's closed-mouth frames, as the daemon
takes the portrait's): the teeth share of the opening per narrowing is measured on the same
frames, and where it falls from the wide mouths' share to the rounded ones' fixes where rounding
starts and where it is full (`ROUND_FROM`, `ROUND_FULL`). The gap bins' atlases are made from
all open frames; the rounded frames also make one more atlas (`ROUND_ATLAS`, all gaps together: the
inside of a rounded mouth is shadow and tongue at any opening), a plain mean, as there are no
teeth to keep.

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


# A frame whose central gap is under this (over the inter-ocular distance) has its mouth closed:
# its inner width is the clip's rest width.
CLOSED_GAP = 0.04
# Narrowing (inner width over the clip's rest width) is read in these bins for the teeth curve.
NARROW_BINS = np.arange(0.55, 1.30, 0.05)


def inner_width(mesh):
    """Inner mouth-corner distance (78 - 308) over the outer inter-ocular distance."""
    return float(np.linalg.norm(mesh[UPPER[0]] - mesh[UPPER[-1]]) / max(FM.iod(mesh), 1e-9))


def clip_samples(path, mesher, every=2, max_frames=400):
    """Open-mouth samples of one clip: (atlas sample / skin, teeth mask, gap, inner width over the
    clip's rest width or nan), and the clip's rest width (nan without closed-mouth frames)."""
    cap = cv2.VideoCapture(str(path))
    out = []
    closed = []
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
        if g < CLOSED_GAP:
            closed.append(inner_width(m))
        if not g > BINS[0]:
            continue
        xy = atlas_coords(m).astype(np.float32)
        sample = cv2.remap(rgb, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR).astype(np.float64)
        skin = skin_colour(rgb, m)
        if np.any(skin < 8):
            continue
        # Compact (all clips are held until the rounding limits are known): ratios to 1e-3, 0/1 mask.
        out.append(((sample / skin).astype(np.float16), teeth_mask(rgb, m, sample).astype(np.uint8), g, inner_width(m)))
    rest = float(np.median(closed)) if len(closed) >= 5 else float("nan")
    return [(x, t, g, w / rest) for x, t, g, w in out], rest


def rounding_curve(samples):
    """Per identity, the mean teeth share of the opening per narrowing bin; then the mean over
    identities with at least 3 frames in a bin. Returns (bin centres, share, identities)."""
    centres = NARROW_BINS + 0.025
    rows = []
    for v in samples:
        r = np.array([n for _, _, _, n in v])
        share = np.array([t.mean(dtype=np.float64) for _, t, _, _ in v])
        row = np.full(len(centres), np.nan)
        for k, lo in enumerate(NARROW_BINS):
            sel = (r >= lo) & (r < lo + 0.05)
            if sel.sum() >= 3:
                row[k] = share[sel].mean()
        rows.append(row)
    rows = np.array(rows)
    ids = np.sum(~np.isnan(rows), 0)
    mean = np.array([np.nanmean(rows[:, k]) if ids[k] else np.nan for k in range(len(centres))])
    return centres, mean, ids


def rounding_limits(centres, share, ids, min_ids=3):
    """Where the teeth share, falling with narrowing, has gone 10 % (`ROUND_FROM`) and 90 %
    (`ROUND_FULL`) of the way from the share at the rest width (bins within 5 % of it) to the
    rounded mouths' (the two narrowest bins with `min_ids` identities): linear between bin
    centres. (Wider than rest, a smile, the share keeps rising: the gap bins' atlases hold that.)"""
    ok = ids >= min_ids
    c, s = centres[ok], share[ok]
    wide = float(np.mean(s[(c >= 0.95) & (c <= 1.05)]))
    narrow = float(np.mean(s[:2]))
    if not wide > narrow:
        raise SystemExit(f"teeth share does not fall with narrowing (wide {wide:.3f}, narrow {narrow:.3f})")

    def crossing(level):
        # The widest narrowing below which the share stays under `level`.
        for k in range(len(c) - 1, 0, -1):
            if s[k - 1] < level <= s[k]:
                return float(c[k - 1] + (level - s[k - 1]) / (s[k] - s[k - 1]) * (c[k] - c[k - 1]))
        raise SystemExit(f"teeth share never crosses {level:.3f}")

    return crossing(narrow + 0.9 * (wide - narrow)), crossing(narrow + 0.1 * (wide - narrow)), wide, narrow


def u8_rows(x, indent):
    """A u8 array as Rust array-literal lines of 24 values."""
    flat = x.reshape(-1)
    return [indent + ", ".join(str(int(v)) for v in flat[r:r + 24]) + "," for r in range(0, len(flat), 24)]


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
    read = []
    for c in clips:
        v, rest = clip_samples(c, mesher)
        print(f"{c.stem}: {len(v)} open frames, rest inner width {rest:.3f}", flush=True)
        read.append((c.stem, v))
    mesher.close()
    # Where rounding starts and is full, from the identities whose rest width is known.
    nc, ns, ni = rounding_curve([v for _, v in read if v and np.isfinite(v[0][3])])
    for c_, s_, n_ in zip(nc, ns, ni):
        print(f"narrowing {c_:.3f}: teeth share {s_:.3f} ({n_} identities)")
    round_from, round_full, wide, narrow = rounding_limits(nc, ns, ni)
    print(f"rounding: from {round_from:.3f} to {round_full:.3f} (teeth share {wide:.3f} wide, {narrow:.3f} rounded)")
    per_bin = {b: [] for b in range(len(BINS))}
    gaps = {b: [] for b in range(len(BINS))}
    rounded = []
    used = []
    for stem, v in read:
        # Every open frame makes the gap bins' atlases (built from the unrounded frames alone they
        # held more teeth, and the held-out teeth error rose from 0.089 to 0.099: docs/quality.md);
        # the fully rounded ones also make the rounded atlas.
        s = {b: [] for b in range(len(BINS))}
        rnd = []
        for x, t, g, r in v:
            x, t = x.astype(np.float64), t.astype(np.float64)
            if r < round_full:
                rnd.append(x)
            s[max(k for k, lo in enumerate(BINS) if g >= lo)].append((x, t, g))
        if len(rnd) >= a.min_frames:
            rounded.append(np.mean(rnd, 0))
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
            used.append(stem)
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
    if not rounded:
        raise SystemExit("no identity has rounded open-mouth frames")
    ra = np.mean(rounded, 0)
    ra = (ra + ra[:, ::-1]) / 2
    print(f"rounded atlas: {len(rounded)} identities")
    # Stored as u8: ratio * 100 (ratios of 0..2.55 to the skin colour).
    q = [np.clip(np.round(x * 100), 0, 255).astype(np.uint8) for x in atlases + [ra]]
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
        "/// Inner mouth width over its rest width at which rounded lips start to cover the teeth, and",
        "/// at which they are fully rounded: where the training frames' teeth share has fallen 10 % and",
        f"/// 90 % of the way from the wide mouths' ({wide:.3f}) to the rounded ones' ({narrow:.3f}).",
        f"pub const ROUND_FROM: f32 = {round_from:.3f};",
        f"pub const ROUND_FULL: f32 = {round_full:.3f};",
        f"/// The inside of a fully rounded mouth (any gap; {len(rounded)} identities), as `ATLAS`.",
        f"pub const ROUND_ATLAS: [u8; {S * T * 3}] = [",
    ]
    lines += u8_rows(q[-1], "    ")
    lines += [
        "];",
        "/// Per bin, T rows of S RGB samples, each 100 x (colour / skin colour), row-major.",
        f"pub const ATLAS: [[u8; {S * T * 3}]; {len(BINS)}] = [",
    ]
    for x in q[:-1]:
        lines += ["    [", *u8_rows(x, "        "), "    ],"]
    lines.append("];")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}: bins at gaps {centres}, identities per bin {counts}")
    if a.preview:
        skin = np.array([200, 150, 125], np.float64)
        tiles = [cv2.resize(np.clip(x * skin, 0, 255).astype(np.uint8), (S * 4, T * 4 + int(T * 4 * g / 0.2)),
                            interpolation=cv2.INTER_CUBIC) for x, g in zip(atlases + [ra], centres + [centres[-1]])]
        hmax = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, hmax - t.shape[0]), (4, 4), (0, 0))) for t in tiles]
        cv2.imwrite(a.preview, cv2.cvtColor(np.hstack(tiles), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
