#!/usr/bin/env python3
"""The whole-face refiner measured against the shipped region refiner (issue 17 item 6) and
as a learned fill of what a head turn uncovers (issue 16 item 4); docs/quality.md has the run.

  train  --data DIR --clips ... --out DIR     train on the `face_refiner_data.py` files of the
                                               given (training) clips, export, time both models
  eval   --model DIR --clips ... --work DIR   the self-reenactment protocol of docs/quality.md
                                               (K = 1, 3-D) on held-out clips: the warp avatar,
                                               the region-refined avatar, and the warp avatar
                                               with the whole-face refiner over it
  sheet  --works DIR... --out F.jpg            contact sheet of `eval --png` runs
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from puppetcam_train import avatar_eval as AE  # noqa: E402
from puppetcam_train import face_refiner as FR  # noqa: E402
from face_refiner_data import face_box  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("warp avatar K=1", "refined, no fine-tuning K=1", "warp avatar + whole-face refiner K=1",
        "refined, no fine-tuning + whole-face refiner K=1")
METRICS = ("face_psnr", "face_ssim", "mouth_psnr", "nme", "open_mouth_psnr", "teeth_err", "closed_eye_psnr",
           "turned_face_psnr", "turned_face_ssim", "turned_nme", "sharpness")


def lap_var(img, mesh):
    """Variance of the Laplacian of the grey face box (the real frame's landmarks, padded 10 %)."""
    import cv2
    h, w = img.shape[:2]
    b = AE.box(mesh, w, h, 0.10)
    g = cv2.cvtColor(np.ascontiguousarray(AE.crop(img, b)), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


def cmd_train(a):
    torch.set_num_threads(a.threads)
    files = sorted(f for c in a.clips for f in Path(a.data).glob(f"{c}_*.npz"))
    cfg = FR.FaceRefinerConfig(minutes=a.minutes, alpha_penalty=a.alpha_penalty)
    out = Path(a.out)
    state = FR.train(cfg, files, out)
    net = FR.load(state)
    d = FR.export(net, cfg.size, out / "face_refiner.onnx")
    x = {"face": np.random.default_rng(0).uniform(-1, 1, (1, 3, cfg.size, cfg.size)).astype(np.float32)}
    ms_face = FR.ort_ms(out / "face_refiner.onnx", x)
    r = np.random.default_rng(1)
    xr = {"mouth": r.uniform(-1, 1, (1, 6, 96, 96)).astype(np.float32), "eyes": r.uniform(-1, 1, (2, 6, 48, 48)).astype(np.float32),
          "e_mouth": r.normal(0, 1, (1, 128)).astype(np.float32), "e_eye": r.normal(0, 1, (1, 128)).astype(np.float32)}
    ms_region = FR.ort_ms(ROOT / "onnx" / "refiner.onnx", xr)
    info = {"steps": state["step"], "pairs": state["pairs"], "onnx_vs_torch": d, "gflop": FR.gflops(net, cfg.size),
            "ms_face_2threads": ms_face, "ms_region_2threads": ms_region}
    (out / "info.json").write_text(json.dumps(info, indent=1))
    print(info)


def cmd_eval(a):
    torch.set_num_threads(a.threads)
    state = torch.load(Path(a.model) / "face_refiner.pt", weights_only=False)
    net, size = FR.load(state), state["config"]["size"]
    binary = os.environ.get("PUPPETCAM_BIN", "target/release/puppetcam")
    data = Path(os.environ.get("PUPPETCAM_DATA", ROOT.parent / "shared" / "data"))
    work = Path(a.work)
    per_clip = {}
    for c in a.clips:
        clip = data / "videos" / f"{c}.mp4"
        res, outputs, frames = AE.self_reenactment(binary, clip, work / c, ks=(1,), variants=("warp", "ff"), modes=("3d",))
        n = len(frames)
        h, w = frames[0].shape[:2]
        first = int(np.ceil(0.4 * n))
        mesher = AE.Mesh()
        meshes = {}
        for i in list(range(first, n)) + [0]:
            m = mesher(frames[i])
            if m is not None:
                meshes[i] = m
        b = face_box(meshes[0], w, h)
        new = {}
        for src, dst in ((ROWS[0], ROWS[2]), (ROWS[1], ROWS[3])):
            new[dst] = [FR.apply_full(net, f, b, size) if i >= first else f for i, f in enumerate(outputs[src])]
        res.update(AE.score_rows(frames, new, meshes, mesher, first))
        # Sharpness: the face box's Laplacian variance, output over real (a blurred repaint
        # can raise PSNR while the portrait loses its detail).
        for r in ROWS:
            seq = new.get(r) or outputs[r]
            res[r]["sharpness"] = float(np.nanmean([lap_var(seq[i], meshes[i]) / max(lap_var(frames[i], meshes[i]), 1e-6)
                                                    for i in range(first, n) if i in meshes]))
        mesher.close()
        per_clip[c] = {r: res[r] for r in ROWS}
        if a.png:
            for r, tag in ((ROWS[0], "warp"), (ROWS[1], "region"), (ROWS[2], "face")):
                seq = new.get(r) or outputs[r]
                d = work / c / f"sheet_{tag}"
                d.mkdir(parents=True, exist_ok=True)
                for i in range(first, n, max(1, (n - first) // 6)):
                    AE.write_png(d / f"{i:05d}.png", seq[i])
        print(c, {r: {k: round(per_clip[c][r][k], 3) for k in ("face_psnr", "turned_face_psnr", "mouth_psnr")} for r in ROWS}, flush=True)
    (work / "per_clip.json").write_text(json.dumps(per_clip, indent=1))
    lines = ["| row | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for r in ROWS:
        vals = [np.nanmean([per_clip[c][r][k] for c in per_clip]) for k in METRICS]
        lines.append(f"| {r} | " + " | ".join(f"{v:.4f}" if "ssim" in k or "nme" in k or "err" in k or "sharp" in k else f"{v:.2f}"
                                               for k, v in zip(METRICS, vals)) + " |")
    (work / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _png(path):
    import cv2
    img = cv2.imread(str(path))
    if img is None:
        raise RuntimeError(f"cannot read {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def cmd_sheet(a):
    """Real frame, warp avatar, region refiner, then each run's whole-face refiner, at one scored
    frame per clip (the most turned of the frames `eval --png` wrote), cut to the face box."""
    import cv2
    data = Path(os.environ.get("PUPPETCAM_DATA", ROOT.parent / "shared" / "data"))
    works = [Path(w) for w in a.works]
    mesher = AE.Mesh()
    rows = []
    for c in a.clips:
        frames = AE.read_frames(data / "videos" / f"{c}.mp4")
        h, w = frames[0].shape[:2]
        m0 = mesher(frames[0])
        names = sorted(p.name for p in (works[0] / c / "sheet_face").glob("*.png"))
        yaws = []
        for nm in names:
            m = mesher(frames[int(nm[:5])])
            yaws.append(abs(AE.yaw_proxy(m) - AE.yaw_proxy(m0)) if m is not None else -1)
        pick = names[int(np.argmax(yaws))]
        x, y, side = face_box(m0, w, h)
        tiles = [frames[int(pick[:5])]]
        tiles += [_png(works[0] / c / f"sheet_{t}" / pick) for t in ("warp", "region")]
        tiles += [_png(wk / c / "sheet_face" / pick) for wk in works]
        rows.append(np.hstack([cv2.resize(t[y:y + side, x:x + side], (a.tile, a.tile), interpolation=cv2.INTER_AREA) for t in tiles]))
    mesher.close()
    cv2.imwrite(a.out, cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--clips", nargs="+", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--minutes", type=float, default=25.0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--alpha-penalty", type=float, default=FR.FaceRefinerConfig.alpha_penalty,
                   help="weight of the mean alpha (higher: repaint only where it clearly helps)")
    e = sub.add_parser("eval")
    e.add_argument("--model", required=True)
    e.add_argument("--clips", nargs="+", default=["lp_d5", "lp_d18", "r3_May_5s", "sh_video", "sk_4", "ss_obama_short", "sk_3", "fp_biden"])
    e.add_argument("--work", required=True)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--png", action="store_true", help="write a few frames of each row")
    sh = sub.add_parser("sheet")
    sh.add_argument("--works", nargs="+", required=True, help="eval --png work directories (their whole-face columns, in order)")
    sh.add_argument("--clips", nargs="+", default=["lp_d5", "r3_May_5s", "sk_4", "ss_obama_short", "fp_biden"])
    sh.add_argument("--out", required=True)
    sh.add_argument("--tile", type=int, default=192)
    a = ap.parse_args()
    {"train": cmd_train, "eval": cmd_eval, "sheet": cmd_sheet}[a.cmd](a)


if __name__ == "__main__":
    main()
