"""Scores avatars through the product's own CLI (`puppetcam avatar create` + `puppetcam run`).

Self-reenactment protocol (docs/quality.md): portrait = frame 0 of a held-out clip, plus K-1
shots spread evenly over the first 40 % of the clip; the driver is the clip itself with
`--neutral` = frame 0; the output is rendered at the clip's size, so it is pixel-aligned with
the clip. Metrics over the last 60 % of the frames against the real frames: PSNR, SSIM and L1 on
the face box (MediaPipe landmarks of the real frame, padded 10 %), PSNR on the mouth box, and
landmark NME (MediaPipe on the output against MediaPipe on the real frame, 68-point subset,
divided by the inter-ocular distance), and identity distance (dlib's 128-d face descriptor of
the output against the real frame, every 5th scored frame; dlib and face-recognition-models
from PyPI, no download at run time). Rows: the static portrait, a plain piecewise-affine warp
of the 468 points (no outer ring, no eye or mouth handling), puppetcam warp avatars (no
refiner) and refined avatars (learned refiner, fine-tuned), plus the ablations asked for.

Cross-identity: portraits x drivers, mouth- and eye-openness correlation of the output with the
driver, and a contact sheet at the frames where the driver's mouth is widest / eyes most closed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import Delaunay
from skimage.metrics import structural_similarity

from . import feature_metrics as FM
from .landmarks import MP468_TO_68

# MediaPipe mesh indices (core/mesh.rs): lips, eye openings, inner-lip pairs.
OUTER_LIPS = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
INNER_LIPS = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
LIP_PAIRS = [(191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318), (415, 324)]
EYE_PAIRS = [[(160, 144), (159, 145), (158, 153)], [(385, 380), (386, 374), (387, 373)]]
EYE_CORNERS = [(33, 133), (362, 263)]


# Avatar variants: row name, `avatar create` arguments, refiner directory (an ablation's weights,
# relative to --ablation-root; None: the shipped ones).
VARIANTS = {
    "warp": ("warp avatar", ["--no-refiner"], None),
    "refined": ("refined avatar", [], None),
    "ff": ("refined, no fine-tuning", ["--steps", "0"], None),
    # Ablations at equal meta-training (1000 steps), feed-forward so that only the meta-learned
    # refiner differs (fine-tuning is the "ff" row's ablation).
    "main1000": ("refined feed-forward, 1000 meta steps", ["--steps", "0"], "main1000"),
    "noemb": ("refined feed-forward, no embedder, 1000 meta steps", ["--steps", "0"], "noemb"),
    "noadv": ("refined feed-forward, no adversarial, 1000 meta steps", ["--steps", "0"], "noadv"),
}


class Identity:
    """dlib's 128-d face descriptor (ResNet, face-recognition-models weights); distance < 0.6
    is dlib's "same person" threshold."""

    def __init__(self):
        import dlib
        import face_recognition_models as frm
        self.det = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def __call__(self, rgb):
        rgb = np.ascontiguousarray(rgb)
        faces = self.det(rgb, 1)
        if not faces:
            return None
        f = max(faces, key=lambda r: r.width() * r.height())
        return np.array(self.rec.compute_face_descriptor(rgb, self.sp(rgb, f)), np.float32)


def identity_or_none():
    try:
        return Identity()
    except Exception as e:  # dlib missing: the column is left out, with the reason
        print(f"identity distance: not measured ({e}); install dlib and face-recognition-models")
        return None


class Mesh:
    """MediaPipe's own Python face mesh (static images): the reference landmark extractor."""

    def __init__(self):
        import mediapipe as mp
        self.fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                                  min_detection_confidence=0.3)

    def __call__(self, rgb):
        r = self.fm.process(rgb)
        if not r.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        return np.array([(p.x * w, p.y * h) for p in r.multi_face_landmarks[0].landmark[:468]], np.float32)

    def close(self):
        self.fm.close()


box, psnr = FM.box, FM.psnr


def crop(img, b):
    return img[b[1]:b[3], b[0]:b[2]]


def mouth_open(mesh):
    w = np.linalg.norm(mesh[78] - mesh[308])
    return float(np.mean([np.linalg.norm(mesh[u] - mesh[l]) for u, l in LIP_PAIRS]) / max(w, 1e-6))


def eye_open(mesh):
    v = []
    for pairs, (a, b) in zip(EYE_PAIRS, EYE_CORNERS):
        w = np.linalg.norm(mesh[a] - mesh[b])
        v.append(np.mean([np.linalg.norm(mesh[u] - mesh[l]) for u, l in pairs]) / max(w, 1e-6))
    return float(np.mean(v))


def yaw_proxy(mesh):
    """Sideways offset of the nose tip from the eyes' midpoint, along the eye line, over the
    outer-corner distance: a head-yaw proxy (about 0.15 per 15 degrees on adult faces)."""
    a, b = mesh[33], mesh[263]
    axis = b - a
    iod = float(np.linalg.norm(axis))
    if iod < 1e-6:
        return float("nan")
    return float(np.dot(mesh[1] - (a + b) / 2, axis / iod) / iod)


# A frame is "turned" when its yaw proxy differs from the portrait's (frame 0) by more than this.
TURNED = 0.15


def nme68(pred, gt):
    p, g = pred[MP468_TO_68], gt[MP468_TO_68]
    iod = np.linalg.norm(g[36:42].mean(0) - g[42:48].mean(0))
    return float(np.linalg.norm(p - g, axis=1).mean() / max(iod, 1e-6))


def plain_pwa(img, src, dst):
    """The plain baseline: piecewise-affine warp of the 468 points only (Delaunay of the source
    mesh); outside the mesh the portrait stays as it is."""
    out = img.copy()
    tri = Delaunay(src)
    h, w = img.shape[:2]
    for t in tri.simplices:
        s, d = src[t].astype(np.float32), dst[t].astype(np.float32)
        e1, e2 = d[1] - d[0], d[2] - d[0]
        if abs(e1[0] * e2[1] - e1[1] * e2[0]) < 1e-3:
            continue
        x0, y0 = np.floor(d.min(0)).astype(int)
        x1, y1 = np.ceil(d.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        m = cv2.getAffineTransform((d - [x0, y0]).astype(np.float32), s)
        patch = cv2.warpAffine(img, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        # warpAffine with WARP_INVERSE_MAP samples src at m(x): m maps dst-local -> src.
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, np.round((d - [x0, y0]) * 16).astype(np.int32), 1, cv2.LINE_8, 4)
        sub = out[y0:y1, x0:x1]
        sub[mask > 0] = patch[mask > 0]
    return out


def read_frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    if not frames:
        raise RuntimeError(f"{path}: no frames decoded")
    return frames


def write_png(path, rgb):
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"cannot write {path}")


def read_pngs(d):
    fs = sorted(Path(d).glob("*.png"))
    return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in fs]


def run_cli(binary, args, log=print, env=None):
    env = {**os.environ, **(env or {})}
    env.setdefault("RUST_LOG", "warn")
    r = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"puppetcam {' '.join(map(str, args[:2]))} failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    return r


def product_meshes(binary, path, out, smooth):
    """{frame: (468, 2) mesh} from `puppetcam landmarks` (the daemon's own face stage)."""
    run_cli(binary, ["landmarks", path, "--out", out, "-q", *(["--smooth"] if smooth else [])])
    res = {}
    for line in Path(out).read_text().splitlines():
        r = json.loads(line)
        if r.get("face") and r.get("mesh"):
            res[int(r["frame"])] = np.array(r["mesh"], np.float32)[:, :2]
    return res


def render_avatar(binary, avatar, clip, neutral, size, outdir, extra=(), env=None):
    outdir.mkdir(parents=True, exist_ok=True)
    run_cli(binary, ["run", "--avatar", avatar, "--source", f"file:{clip}", "--output", f"png:{outdir}",
                     "--size", f"{size[0]}x{size[1]}", "--cpu", "-q", *(["--neutral", neutral] if neutral else []), *extra], env=env)
    return read_pngs(outdir)


def shot_indices(n_frames, k):
    """Frame 0 plus k-1 frames spread evenly over the first 40 % of the clip."""
    if k <= 1:
        return [0]
    last = max(1, int(0.4 * n_frames) - 1)
    return [0] + [int(round(last * (i + 1) / (k - 1))) for i in range(k - 1)]


def score_rows(frames, outputs: dict, meshes_gt, mesher, first, ident=None):
    """{row: metrics} for each output sequence over frames[first:]."""
    h, w = frames[0].shape[:2]
    res = {}
    gt_id = {}
    if ident is not None:
        for i in range(first, len(frames), 5):
            d = ident(frames[i])
            if d is not None:
                gt_id[i] = d
    y0 = yaw_proxy(meshes_gt[0]) if 0 in meshes_gt else np.nan
    # Issue 17's subsets: open mouths (real central gap > 0.10 iod), closed eyes (real opening
    # under 60 % of the clip's median), still stretches (flicker).
    scored = [i for i in range(first, len(frames)) if i in meshes_gt]
    eye_med = float(np.median([eye_open(meshes_gt[i]) for i in scored])) if scored else np.nan
    is_open = {i: FM.gap_iod(meshes_gt[i]) > FM.OPEN_GAP for i in scored}
    is_closed = {i: eye_open(meshes_gt[i]) < FM.CLOSED_EYE * eye_med for i in scored}
    still = FM.still_frames(meshes_gt, first, len(frames))
    real_flicker = FM.flicker(frames, meshes_gt, still)
    real_teeth = {i: FM.teeth_share(frames[i], meshes_gt[i]) for i in scored if is_open[i]}
    for name, outs in outputs.items():
        acc = {k: [] for k in ("face_psnr", "face_ssim", "face_l1", "mouth_psnr", "nme",
                               "turned_face_psnr", "turned_face_ssim", "turned_nme",
                               "open_mouth_psnr", "teeth_out", "teeth_real", "teeth_err", "closed_eye_psnr")}
        for i in range(first, len(frames)):
            g = meshes_gt.get(i)
            if g is None or i >= len(outs):
                continue
            gt, out = frames[i], outs[i]
            fb = box(g, w, h, 0.10)
            mb = box(g[OUTER_LIPS], w, h, 0.25)
            a, b = crop(out, fb), crop(gt, fb)
            fp = psnr(a, b)
            fs = structural_similarity(a, b, channel_axis=2, data_range=255)
            acc["face_psnr"].append(fp)
            acc["face_ssim"].append(fs)
            acc["face_l1"].append(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean()))
            acc["mouth_psnr"].append(psnr(crop(out, mb), crop(gt, mb)))
            m = mesher(out)
            nme = nme68(m, g) if m is not None else np.nan
            acc["nme"].append(nme)
            if abs(yaw_proxy(g) - y0) > TURNED:
                acc["turned_face_psnr"].append(fp)
                acc["turned_face_ssim"].append(fs)
                acc["turned_nme"].append(nme)
            if is_open.get(i):
                acc["open_mouth_psnr"].append(acc["mouth_psnr"][-1])
                t_out, t_real = FM.teeth_share(out, g), real_teeth[i]
                acc["teeth_out"].append(t_out)
                acc["teeth_real"].append(t_real)
                acc["teeth_err"].append(abs(t_out - t_real))
            if is_closed.get(i):
                acc["closed_eye_psnr"].append(FM.boxes_psnr(out, gt, FM.eye_boxes(g, w, h)))
        ids = []
        for i, d in gt_id.items():
            if i < len(outs):
                o = ident(outs[i])
                ids.append(float(np.linalg.norm(o - d)) if o is not None else np.nan)
        acc["id_dist"] = ids
        res[name] = {k: float(np.nanmean(v)) if v and not np.all(np.isnan(v)) else float("nan") for k, v in acc.items()}
        res[name]["frames"] = len(acc["face_psnr"])
        res[name]["open_frames"] = len(acc["open_mouth_psnr"])
        res[name]["closed_frames"] = len(acc["closed_eye_psnr"])
        res[name]["still_frames"] = len(still)
        res[name]["flicker_ratio"] = FM.flicker(outs, meshes_gt, still) / real_flicker if real_flicker > 0 else float("nan")
        res[name]["turned_frames"] = len(acc["turned_face_psnr"])
        res[name]["nme_missing"] = int(np.sum(np.isnan(acc["nme"])))
    return res


# Render modes of one avatar file: the 3-D head turn (default) and the 2-D warp of 0.1
# (`[retarget] head_3d = false`), which is what puppetcam did before the head turned in 3-D.
MODES = {"3d": ("", None), "2d": (", 2-D warp", "[retarget]\nhead_3d = false\n"),
         # The same avatar file rendered by another build ($PUPPETCAM_BASE_BIN): before/after rows
         # of a render-time change without remaking the avatars.
         "base": (", base build", None)}


def self_reenactment(binary, clip: Path, work: Path, ks=(1, 8), log=print, variants=("warp", "refined"),
                     ablation_root: Path | None = None, ablation_ks=None, ident=None, modes=("3d",)):
    frames = read_frames(clip)
    n = len(frames)
    h, w = frames[0].shape[:2]
    first = int(np.ceil(0.4 * n))
    work.mkdir(parents=True, exist_ok=True)
    mesher = Mesh()
    meshes_gt = {}
    for i in list(range(first, n)) + [0]:
        m = mesher(frames[i])
        if m is not None:
            meshes_gt[i] = m
    if 0 not in meshes_gt:
        raise RuntimeError(f"{clip}: no face in frame 0")
    portrait = work / "frame0.png"
    write_png(portrait, frames[0])
    outputs = {"static portrait": [frames[0]] * n}
    outputs["plain 468-point warp"] = [plain_pwa(frames[0], meshes_gt[0], meshes_gt[i]) if i in meshes_gt else frames[0]
                                       for i in range(n)]
    # The same plain warp driven by puppetcam's own (tracked, smoothed) landmarks, as the avatar
    # is: separates what the landmark source costs from what the warp method gains.
    ours = product_meshes(binary, clip, work / "landmarks.jsonl", smooth=True)
    p0 = product_meshes(binary, portrait, work / "portrait.jsonl", smooth=False).get(0)
    if p0 is not None:
        outputs["plain 468-point warp, puppetcam landmarks"] = [plain_pwa(frames[0], p0, ours[i]) if i in ours else frames[0]
                                                             for i in range(n)]
    timing = {}
    for k in ks:
        shots = []
        for j in shot_indices(n, k)[1:]:
            p = work / f"shot{j:04d}.png"
            write_png(p, frames[j])
            shots.append(p)
        for v in variants:
            if v not in ("warp", "refined") and ablation_ks and k not in ablation_ks:
                continue
            label, args, sub = VARIANTS[v]
            env = None
            if sub is not None:
                if ablation_root is None:
                    continue
                env = {"PUPPETCAM_REFINER_DIR": str(Path(ablation_root) / sub)}
            av = work / f"k{k}_{v}.pcav"
            import time
            t0 = time.time()
            # `avatar create` refuses to overwrite (no --force in older builds being compared).
            av.unlink(missing_ok=True)
            run_cli(binary, ["avatar", "create", portrait, *shots, "-o", av, "-q", *args], env=env)
            t1 = time.time()
            for mode in modes:
                suffix, cfg = MODES[mode]
                extra = []
                if cfg:
                    (work / f"{mode}.toml").write_text(cfg)
                    extra = ["--config", work / f"{mode}.toml"]
                t1 = time.time()
                b = binary
                if mode == "base":
                    b = os.environ.get("PUPPETCAM_BASE_BIN") or sys.exit("evaluate: --modes base needs PUPPETCAM_BASE_BIN")
                outputs[f"{label} K={k}{suffix}"] = render_avatar(b, av, clip, portrait, (w, h), work / f"out_k{k}_{v}_{mode}", extra)
                timing[f"{v} K={k}{suffix}"] = (round(t1 - t0, 1), round(time.time() - t1, 1))
    res = score_rows(frames, outputs, meshes_gt, mesher, first, ident)
    mesher.close()
    turned = sum(1 for i in range(first, n) if i in meshes_gt and abs(yaw_proxy(meshes_gt[i]) - yaw_proxy(meshes_gt[0])) > TURNED)
    log(f"{clip.name}: {n} frames, scored {first}..{n - 1} ({turned} turned); (create s, render s) {timing}")
    return res, outputs, frames


def self_sheet(clips, path, rows=("plain 468-point warp", "warp avatar K=1", "refined avatar K=1", "warp avatar K=8", "refined avatar K=8"), tile=160):
    """Contact sheet: per clip, the frames of the scored part with the widest mouth and the
    most head motion; columns: real frame, then each row's output (face crops)."""
    mesher = Mesh()
    lines = []
    for name, frames, outputs in clips:
        n = len(frames)
        first = int(np.ceil(0.4 * n))
        ms = {i: mesher(frames[i]) for i in range(first, n, 3)}
        ms = {i: m for i, m in ms.items() if m is not None}
        if not ms:
            continue
        m0 = mesher(frames[0])
        wide = max(ms, key=lambda i: mouth_open(ms[i]))
        moved = max(ms, key=lambda i: float(np.abs(ms[i] - m0).mean()) if m0 is not None else 0.0)
        for i in (wide, moved):
            h, w = frames[i].shape[:2]
            b = box(ms[i], w, h, 0.15)
            cells = [frames[i]] + [outputs[r][i] for r in rows if r in outputs]
            lines.append(np.hstack([cv2.resize(crop(c, b), (tile, tile), interpolation=cv2.INTER_AREA) for c in cells]))
    mesher.close()
    write_png(path, np.vstack(lines))


def markdown_table(per_clip: dict) -> str:
    rows = list(next(iter(per_clip.values())).keys())
    cols = ("face_psnr", "face_ssim", "face_l1", "mouth_psnr", "nme", "id_dist")
    out = ["| method | face PSNR dB | face SSIM | face L1 | mouth PSNR dB | NME | identity distance |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        vals = [np.nanmean([per_clip[c][r].get(k, np.nan) for c in per_clip]) for k in cols]
        out.append(f"| {r} | {vals[0]:.2f} | {vals[1]:.4f} | {vals[2]:.2f} | {vals[3]:.2f} | {vals[4]:.4f} | {vals[5]:.3f} |")
    first_row = {c: next(iter(per_clip[c].values())) for c in per_clip}
    out.append("")
    out.append("Mouth and eyes (issue 17; means over clips): mouth-open PSNR on frames whose real central inner-lip gap "
               f"exceeds {FM.OPEN_GAP} of the outer inter-ocular distance ({sum(first_row[c].get('open_frames', 0) for c in per_clip)} frames), "
               "teeth share of the inner-lip polygon (output / real, and the mean absolute error), closed-eye PSNR "
               f"(eye boxes, real opening under {FM.CLOSED_EYE:.0%} of the clip's median; "
               f"{sum(first_row[c].get('closed_frames', 0) for c in per_clip)} frames), flicker ratio (frame-to-frame change "
               f"in the mouth and eye boxes on still stretches, output over real; {sum(first_row[c].get('still_frames', 0) for c in per_clip)} frames):")
    out.append("")
    out.append("| method | mouth-open PSNR dB | teeth share out / real | teeth share error | closed-eye PSNR dB | flicker ratio |")
    out.append("|---|---|---|---|---|---|")
    for r in rows:
        v = {k: np.nanmean([per_clip[c][r].get(k, np.nan) for c in per_clip])
             for k in ("open_mouth_psnr", "teeth_out", "teeth_real", "teeth_err", "closed_eye_psnr", "flicker_ratio")}
        out.append(f"| {r} | {v['open_mouth_psnr']:.2f} | {v['teeth_out']:.3f} / {v['teeth_real']:.3f} | {v['teeth_err']:.3f} | "
                   f"{v['closed_eye_psnr']:.2f} | {v['flicker_ratio']:.2f} |")
    turned = [c for c in per_clip if next(iter(per_clip[c].values())).get("turned_frames", 0) > 0]
    if turned:
        n = sum(next(iter(per_clip[c].values()))["turned_frames"] for c in turned)
        out.append("")
        out.append(f"Turned frames (yaw proxy differs from the portrait's by more than {TURNED}; {n} frames of "
                   f"{', '.join(turned)}; means over clips):")
        out.append("")
        out.append("| method | face PSNR dB | face SSIM | NME |")
        out.append("|---|---|---|---|")
        for r in rows:
            v = [np.nanmean([per_clip[c][r].get(k, np.nan) for c in turned]) for k in ("turned_face_psnr", "turned_face_ssim", "turned_nme")]
            out.append(f"| {r} | {v[0]:.2f} | {v[1]:.4f} | {v[2]:.4f} |")
    out.append("")
    out.append("Per clip (face PSNR / face SSIM / mouth PSNR / NME):")
    out.append("")
    out.append("| clip | " + " | ".join(rows) + " |")
    out.append("|---|" + "---|" * len(rows))
    for c in per_clip:
        cells = [f"{per_clip[c][r]['face_psnr']:.2f} / {per_clip[c][r]['face_ssim']:.3f} / {per_clip[c][r]['mouth_psnr']:.2f} / "
                 f"{per_clip[c][r]['nme']:.4f}" for r in rows]
        out.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def cross_identity(binary, portraits, drivers, work: Path, sheet_path: Path, log=print, use_neutral=False,
                   variant="refined", ident=None, tag=""):
    """Portraits x drivers: openness correlations and a contact sheet. By default without
    `--neutral` (the out-of-the-box experience: provisional neutral from the first frames);
    `use_neutral` passes the driver's frame 0 as the neutral instead."""
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    mesher = Mesh()
    results = {}
    tiles = []
    for d in drivers:
        frames = read_frames(d)
        dm = [mesher(f) for f in frames]
        mouth_d = np.array([mouth_open(m) if m is not None else np.nan for m in dm])
        eye_d = np.array([eye_open(m) if m is not None else np.nan for m in dm])
        # Issue 17's driver-side references: opening per inter-ocular distance, open-mouth and
        # blink frames, the driver's own teeth share and blink luminance ratio.
        gap_d = np.array([FM.gap_iod(m) if m is not None else np.nan for m in dm])
        open_d = gap_d > FM.OPEN_GAP
        blink_d = eye_d < FM.CLOSED_EYE * np.nanmedian(eye_d)
        teeth_d = np.nanmean([FM.teeth_share(frames[i], dm[i]) for i in np.flatnonzero(open_d)]) if open_d.any() else np.nan
        luma_d = np.array([FM.eye_luma(frames[i], m) if m is not None else np.nan for i, m in enumerate(dm)])
        blink_ratio_d = float(np.nanmean(luma_d[blink_d]) / np.nanmedian(luma_d[~blink_d])) if blink_d.any() else np.nan
        i_mouth = int(np.nanargmax(mouth_d))
        i_eye = int(np.nanargmin(eye_d))
        neutral = work / f"{d.stem}_frame0.png"
        write_png(neutral, frames[0])
        row = [cv2.resize(frames[i_mouth], (192, 192)), cv2.resize(frames[i_eye], (192, 192))]
        for p in portraits:
            img = cv2.imread(str(p))
            h, w = img.shape[:2]
            s = min(1.0, 720 / max(h, w))
            size = (int(w * s) // 2 * 2, int(h * s) // 2 * 2)
            av = work / f"{p.stem}_{variant}.pcav"
            if not av.exists():
                run_cli(binary, ["avatar", "create", p, "-o", av, "-q", *VARIANTS[variant][1]])
            outs = render_avatar(binary, av, d, neutral if use_neutral else None, size, work / f"{p.stem}_{d.stem}_{variant}{tag}")
            om = [mesher(o) for o in outs]
            mouth_o = np.array([mouth_open(m) if m is not None else np.nan for m in om])
            eye_o = np.array([eye_open(m) if m is not None else np.nan for m in om])
            n = min(len(mouth_o), len(mouth_d))
            ok = ~np.isnan(mouth_o[:n]) & ~np.isnan(mouth_d[:n])
            ok_e = ~np.isnan(eye_o[:n]) & ~np.isnan(eye_d[:n])
            r_m = float(np.corrcoef(mouth_o[:n][ok], mouth_d[:n][ok])[0, 1])
            r_e = float(np.corrcoef(eye_o[:n][ok_e], eye_d[:n][ok_e])[0, 1])
            gap_o = np.array([FM.gap_iod(m) if m is not None else np.nan for m in om])
            teeth_o = [FM.teeth_share(outs[i], om[i]) for i in np.flatnonzero(open_d[:n]) if om[i] is not None]
            # Blink luminance relative to the open-eye portrait (the avatar's own rest frame: the
            # output's median over the driver's open-eye frames).
            luma_o = np.array([FM.eye_luma(outs[i], om[i]) if om[i] is not None else np.nan for i in range(n)])
            blink_ratio_o = float(np.nanmean(luma_o[blink_d[:n]]) / np.nanmedian(luma_o[~blink_d[:n]])) if blink_d[:n].any() else np.nan
            results[f"{p.stem} x {d.stem}"] = {
                "mouth_r": r_m, "eye_r": r_e, "frames": int(n), "face_found": int(ok.sum()),
                "mouth_gain": FM.slope(gap_d[:n], gap_o), "teeth_out": float(np.nanmean(teeth_o)) if teeth_o else np.nan,
                "teeth_driver": float(teeth_d), "blink_ratio_out": blink_ratio_o, "blink_ratio_driver": blink_ratio_d,
                "open_frames": int(open_d[:n].sum()), "blink_frames": int(blink_d[:n].sum())}
            if ident is not None:
                ref = ident(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
                ds = [ident(outs[i]) for i in range(0, len(outs), 10)]
                ds = [float(np.linalg.norm(x - ref)) for x in ds if x is not None and ref is not None]
                results[f"{p.stem} x {d.stem}"]["id_dist"] = float(np.mean(ds)) if ds else float("nan")
            rr = results[f"{p.stem} x {d.stem}"]
            log(f"{p.stem} x {d.stem}: mouth r {r_m:.3f}, eye r {r_e:.3f}, mouth gain {rr['mouth_gain']:.2f}, teeth "
                f"{rr['teeth_out']:.3f} (driver {rr['teeth_driver']:.3f}), blink luminance {rr['blink_ratio_out']:.3f} "
                f"(driver {rr['blink_ratio_driver']:.3f}) ({ok.sum()}/{n} frames with a face)")
            pm = om[0] if om[0] is not None else None
            for i in (i_mouth, i_eye):
                o = outs[min(i, len(outs) - 1)]
                m = om[min(i, len(om) - 1)]
                ref = m if m is not None else pm
                if ref is not None:
                    b = box(ref, o.shape[1], o.shape[0], 0.25)
                    side = max(b[2] - b[0], b[3] - b[1])
                    cx, cy = (b[0] + b[2]) // 2, (b[1] + b[3]) // 2
                    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
                    o = o[y0:y0 + side, x0:x0 + side]
                row.append(cv2.resize(o, (192, 192), interpolation=cv2.INTER_AREA))
        tiles.append(np.hstack(row))
    mesher.close()
    sheet = np.vstack(tiles)
    write_png(sheet_path, sheet)
    return results


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2))


def tmpdir():
    return Path(tempfile.mkdtemp(prefix="puppetcam-eval-"))


def rank_turns(clips, every=2):
    """[(clip name, fraction of frames turned, largest yaw-proxy change)] against frame 0, with
    MediaPipe's own mesh (the scoring reference), most-turned first."""
    mesher = Mesh()
    res = []
    for c in clips:
        frames = read_frames(c)
        m0 = mesher(frames[0])
        if m0 is None:
            continue
        y0 = yaw_proxy(m0)
        d = [abs(yaw_proxy(m) - y0) for m in (mesher(frames[i]) for i in range(0, len(frames), every)) if m is not None]
        if d:
            res.append((Path(c).stem, float(np.mean(np.array(d) > TURNED)), float(np.max(d))))
    mesher.close()
    return sorted(res, key=lambda r: -r[1])


def turn_sheet(binary, portraits, drivers, work: Path, sheet_path: Path, variant="ff", log=print, tile=200, modes=("2d", "3d")):
    """Cross-identity head turns, before and after: each portrait driven by each driver without
    `--neutral` (the rest pose is learned), rendered in each of `modes` (see MODES: the 2-D warp
    of 0.1, the 3-D head turn, the 3-D head turn of another build), at the driver's frame of
    largest turn (yaw proxy furthest from its median). Rows: portraits; per driver: the driver
    frame, then one column per mode."""
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    mesher = Mesh()
    picks = {}
    for d in drivers:
        frames = read_frames(d)
        ys = {i: yaw_proxy(m) for i in range(0, len(frames), 2) if (m := mesher(frames[i])) is not None}
        med = float(np.median(list(ys.values())))
        i = max(ys, key=lambda k: abs(ys[k] - med))
        picks[d] = (i, frames[i], ys[i] - med)
        log(f"{d.stem}: largest turn at frame {i} (yaw proxy {ys[i] - med:+.3f} from the median)")
    rows = []
    cfg = work / "2d.toml"
    cfg.write_text(MODES["2d"][1])
    for p in portraits:
        img = cv2.imread(str(p))
        h, w = img.shape[:2]
        s = min(1.0, 720 / max(h, w))
        size = (int(w * s) // 2 * 2, int(h * s) // 2 * 2)
        m = mesher(cv2.cvtColor(cv2.resize(img, size), cv2.COLOR_BGR2RGB))
        av = work / f"{p.stem}_{variant}.pcav"
        if not av.exists():
            run_cli(binary, ["avatar", "create", p, "-o", av, "-q", *VARIANTS[variant][1]])
        cells = []
        for d in drivers:
            i, frame, _ = picks[d]
            fm = mesher(frame)
            fb = box(fm, frame.shape[1], frame.shape[0], 0.35) if fm is not None else (0, 0, frame.shape[1], frame.shape[0])
            cells.append(cv2.resize(crop(frame, fb), (tile, tile), interpolation=cv2.INTER_AREA))
            for mode in modes:
                extra = ["--config", cfg] if mode == "2d" else []
                b = binary
                if mode == "base":
                    b = os.environ.get("PUPPETCAM_BASE_BIN") or sys.exit("evaluate: --modes base needs PUPPETCAM_BASE_BIN")
                out = work / f"{p.stem}_{d.stem}_{mode}"
                if not out.exists():
                    render_avatar(b, av, d, None, size, out, extra)
                pngs = sorted(out.glob("*.png"))
                o = cv2.cvtColor(cv2.imread(str(pngs[min(i, len(pngs) - 1)])), cv2.COLOR_BGR2RGB)
                b = box(m, size[0], size[1], 0.35) if m is not None else (0, 0, size[0], size[1])
                cells.append(cv2.resize(crop(o, b), (tile, tile), interpolation=cv2.INTER_AREA))
        rows.append(np.hstack(cells))
        log(f"{p.stem}: done")
    mesher.close()
    write_png(sheet_path, np.vstack(rows))


def _square(img, pts, pad, side_px):
    b = box(pts, img.shape[1], img.shape[0], pad)
    side = max(b[2] - b[0], b[3] - b[1], 8)
    cx, cy = (b[0] + b[2]) // 2, (b[1] + b[3]) // 2
    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
    return cv2.resize(img[y0:y0 + side, x0:x0 + side], (side_px, side_px), interpolation=cv2.INTER_AREA)


def mouth_eye_sheet(work: Path, portraits, drivers, tags, sheet_path: Path, variant="refined", tile=128, blink_frac=0.75):
    """Before/after contact sheet from `cross` renders that share one --work (one render folder
    per tag): per driver, its widest open mouth and its most closed eyes; per portrait, the
    output's mouth and eyes at those frames for each tag (left to right in `tags` order)."""
    mesher = Mesh()
    rows = []
    for d in drivers:
        frames = read_frames(d)
        dm = [mesher(f) for f in frames]
        gap = np.array([FM.gap_iod(m) if m is not None else np.nan for m in dm])
        eye = np.array([eye_open(m) if m is not None else np.nan for m in dm])
        i_m, i_e = int(np.nanargmax(gap)), int(np.nanargmin(eye))
        head = [_square(frames[i_m], dm[i_m][FM.OUTER_LIPS], 0.5, tile), _square(frames[i_e], dm[i_e][sum(FM.EYE_CONTOURS, [])], 0.15, tile)]
        for p in portraits:
            row = list(head)
            for t in tags:
                outs = read_pngs(Path(work) / f"{p.stem}_{d.stem}_{variant}{t}")
                ref = mesher(outs[0])
                for i, idx, pad in ((i_m, FM.OUTER_LIPS, 0.5), (i_e, sum(FM.EYE_CONTOURS, []), 0.15)):
                    o = outs[min(i, len(outs) - 1)]
                    m = mesher(o)
                    m = m if m is not None else ref
                    row.append(_square(o, m[idx], pad, tile) if m is not None else np.zeros((tile, tile, 3), np.uint8))
            rows.append(np.hstack(row))
    mesher.close()
    write_png(sheet_path, np.vstack(rows))
