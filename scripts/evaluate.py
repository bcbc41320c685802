#!/usr/bin/env python3
"""Evaluates avatars through the product's own CLI (docs/quality.md), or a trained generator.

  # self-reenactment on held-out clips: static, plain 468-point warp, warp and refined avatars
  # at K=1 and K=8 (plus ablations: refiner weights trained without a part, in --ablation-root)
  python scripts/evaluate.py self --clips lp_d5 lp_d18 r3_May_5s sh_video --out docs/quality-self.md
  python scripts/evaluate.py self --variants warp refined ff noemb noadv --ablation-root runs/ablations
  # head turns: which clips turn (yaw proxy), then 3-D against the 2-D warp on them
  python scripts/evaluate.py turns
  python scripts/evaluate.py self --clips r3_May_5s sh_video --modes 3d 2d
  python scripts/evaluate.py turn-sheet --sheet docs/quality-turn.jpg
  # cross-identity: portraits x drivers, openness correlations and a contact sheet
  python scripts/evaluate.py cross --portraits lp_s0 lp_s3 lp_s4 lp_s1 df_img20 --drivers lp_d5 lp_d18 r3_May_5s
  # mouth and eyes before/after: the same avatars rendered by two builds, then a contact sheet
  python scripts/evaluate.py cross --work W --tag _base   # with PUPPETCAM_BIN=<the old build>
  python scripts/evaluate.py cross --work W
  python scripts/evaluate.py mouth-sheet --work W --sheet docs/quality-mouth-eyes.jpg
  # the paper's full generator (contract-1 ONNX), on prepared training caches
  python scripts/evaluate.py generator --ckpt runs/meta/latest.pt --identities lp_d5 lp_d18

Clips and portraits are looked up in $PUPPETCAM_DATA (else ../shared/data) by name.
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def data_dir() -> Path:
    d = os.environ.get("PUPPETCAM_DATA")
    return Path(d) if d else (ROOT.parent / "shared" / "data")


def find(kind: str, name: str) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    d = data_dir() / kind
    hits = sorted(d.glob(name + ".*")) if d.is_dir() else []
    if not hits:
        raise SystemExit(f"evaluate: {kind[:-1]} `{name}` not found in {d} (set PUPPETCAM_DATA)")
    return hits[0]


def binary() -> Path:
    b = os.environ.get("PUPPETCAM_BIN")
    for c in ([Path(b)] if b else []) + [ROOT / "target/release/puppetcam", ROOT / "target/debug/puppetcam"]:
        if c.is_file():
            return c
    raise SystemExit("evaluate: no puppetcam binary (cargo build --release, or set PUPPETCAM_BIN)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("self", help="self-reenactment on held-out clips")
    s.add_argument("--clips", nargs="+", default=["lp_d5", "lp_d18", "r3_May_5s", "sh_video"])
    s.add_argument("--shots", type=int, nargs="+", default=[1, 8])
    s.add_argument("--work", default=None, help="keep renders here (default: a temporary directory)")
    s.add_argument("--out", default=None, help="write the markdown table here")
    s.add_argument("--json", default=None)
    s.add_argument("--sheet", default=None, help="contact sheet PNG (real frame, plain warp, warp / refined avatars)")
    s.add_argument("--variants", nargs="+", default=["warp", "refined"], help="avatar kinds: " + ", ".join(
        f"{k} ({v[0]})" for k, v in __import__("puppetcam_train.avatar_eval", fromlist=["VARIANTS"]).VARIANTS.items()))
    s.add_argument("--ablation-root", default=None, help="directory with noemb/ and noadv/ refiner weights")
    s.add_argument("--ablation-shots", type=int, nargs="+", default=None, help="K values for the ablation rows (default: all)")
    s.add_argument("--no-identity", action="store_true", help="skip the dlib identity distance")
    s.add_argument("--modes", nargs="+", default=["3d"], choices=["3d", "2d", "base"],
                   help="render modes per avatar: 3d (head turns in 3-D, default), 2d (the 2-D warp of 0.1), base (the same avatars rendered by $PUPPETCAM_BASE_BIN)")
    t = sub.add_parser("turns", help="rank clips by head turn (yaw proxy against frame 0, MediaPipe)")
    t.add_argument("--clips", nargs="*", default=None, help="default: every video in the data set")
    ts = sub.add_parser("turn-sheet", help="cross-identity head turns (2-D warp, 3-D, another build's 3-D) as a contact sheet")
    ts.add_argument("--portraits", nargs="+", default=["lp_s0", "lp_s3", "lp_s4", "lp_s1", "df_img20"])
    ts.add_argument("--drivers", nargs="+", default=["ss_obama_short", "sk_4"])
    ts.add_argument("--sheet", default="docs/quality-turn.jpg")
    ts.add_argument("--work", default=None)
    ts.add_argument("--variant", default="ff", help="avatar kind (see self --variants)")
    ts.add_argument("--modes", nargs="+", default=["2d", "3d"], choices=["3d", "2d", "base"],
                    help="columns per driver: 2d, 3d, base (3-D by $PUPPETCAM_BASE_BIN)")
    c = sub.add_parser("cross", help="cross-identity correlations and contact sheet")
    c.add_argument("--portraits", nargs="+", default=["lp_s0", "lp_s3", "lp_s4", "lp_s1", "df_img20"])
    c.add_argument("--drivers", nargs="+", default=["lp_d5", "lp_d18", "r3_May_5s"])
    c.add_argument("--sheet", default="docs/quality-cross.jpg")
    c.add_argument("--work", default=None)
    c.add_argument("--json", default=None)
    c.add_argument("--neutral-frame0", action="store_true", help="pass the driver's frame 0 as --neutral")
    c.add_argument("--variant", default="refined", help="avatar kind (see self --variants)")
    c.add_argument("--no-identity", action="store_true")
    c.add_argument("--tag", default="", help="suffix of the render folders (several builds sharing one --work and its avatars)")
    ms = sub.add_parser("mouth-sheet", help="before/after contact sheet of open mouths and closed eyes from two `cross --tag` runs")
    ms.add_argument("--work", required=True, help="the --work of the cross runs")
    ms.add_argument("--tags", nargs="+", default=["_base", ""], help="render-folder suffixes, left to right")
    ms.add_argument("--portraits", nargs="+", default=["lp_s0", "lp_s3", "lp_s4", "lp_s1", "df_img20"])
    ms.add_argument("--drivers", nargs="+", default=["lp_d18", "r3_May_5s"])
    ms.add_argument("--sheet", default="docs/quality-mouth-eyes.jpg")
    g = sub.add_parser("generator", help="the contract-1 generator on training caches (legacy)")
    g.add_argument("rest", nargs=argparse.REMAINDER)
    a = ap.parse_args()

    if a.cmd == "generator":
        from evaluate_generator import main as gen_main
        sys.argv = [sys.argv[0], *a.rest]
        return gen_main()
    from puppetcam_train import avatar_eval as AE
    if a.cmd == "turns":
        clips = [find("videos", c) for c in a.clips] if a.clips else sorted((data_dir() / "videos").glob("*.mp4"))
        for name, frac, peak in AE.rank_turns(clips):
            print(f"{name}: {frac:.2f} of frames turned, largest yaw-proxy change {peak:.3f}")
        return
    if a.cmd == "mouth-sheet":
        AE.mouth_eye_sheet(Path(a.work), [find("portraits", p) for p in a.portraits], [find("videos", d) for d in a.drivers],
                           a.tags, Path(a.sheet))
        return
    work = Path(a.work) if a.work else AE.tmpdir()
    if a.cmd == "turn-sheet":
        AE.turn_sheet(binary(), [find("portraits", p) for p in a.portraits], [find("videos", d) for d in a.drivers], work,
                      Path(a.sheet), variant=a.variant, modes=a.modes)
        return
    ident = None if a.no_identity else AE.identity_or_none()
    if a.cmd == "self":
        per_clip = {}
        sheet = []
        for name in a.clips:
            res, outputs, frames = AE.self_reenactment(binary(), find("videos", name), work / name, tuple(a.shots),
                                                       variants=tuple(a.variants), ablation_root=a.ablation_root,
                                                       ablation_ks=a.ablation_shots, ident=ident, modes=tuple(a.modes))
            per_clip[name] = res
            if a.sheet:
                sheet.append((name, frames, {k: v for k, v in outputs.items() if "plain 468-point warp" == k or "avatar" in k}))
                del outputs
        if a.sheet:
            AE.self_sheet(sheet, a.sheet)
        md = AE.markdown_table(per_clip)
        md += f"\nClips (held out: nothing was tuned on them): {', '.join(a.clips)}. Scored frames: the last 60 % of each clip.\n"
        print(md)
        if a.out:
            Path(a.out).write_text(md)
        if a.json:
            AE.write_json(a.json, per_clip)
    else:
        res = AE.cross_identity(binary(), [find("portraits", p) for p in a.portraits], [find("videos", d) for d in a.drivers], work,
                                Path(a.sheet), use_neutral=a.neutral_frame0, variant=a.variant, ident=ident, tag=a.tag)
        print("| pair | mouth r | eye r | mouth gain | teeth share out / driver | blink luminance out / driver | identity | frames with a face |")
        print("|---|---|---|---|---|---|---|---|")
        for k, v in res.items():
            print(f"| {k} | {v['mouth_r']:.3f} | {v['eye_r']:.3f} | {v['mouth_gain']:.2f} | {v['teeth_out']:.3f} / {v['teeth_driver']:.3f} | "
                  f"{v['blink_ratio_out']:.3f} / {v['blink_ratio_driver']:.3f} | {v.get('id_dist', float('nan')):.3f} | {v['face_found']}/{v['frames']} |")
        import numpy as np
        keys = ("mouth_r", "eye_r", "mouth_gain", "teeth_out", "teeth_driver", "blink_ratio_out", "blink_ratio_driver", "id_dist")
        m = {k: float(np.nanmean([v.get(k, np.nan) for v in res.values()])) for k in keys}
        print(f"| mean | {m['mouth_r']:.3f} | {m['eye_r']:.3f} | {m['mouth_gain']:.2f} | {m['teeth_out']:.3f} / {m['teeth_driver']:.3f} | "
              f"{m['blink_ratio_out']:.3f} / {m['blink_ratio_driver']:.3f} | {m['id_dist']:.3f} | |")
        if a.json:
            AE.write_json(a.json, res)


if __name__ == "__main__":
    main()
