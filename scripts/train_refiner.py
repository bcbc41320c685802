#!/usr/bin/env python3
"""The warp avatar's refiner (see puppetcam_train/refiner.py for every option and its default).

  scripts/prepare_refiner.sh .cache/refiner                     # crops, by the daemon's own code
  python scripts/train_refiner.py train --data .cache/refiner --out runs/refiner
  torchrun --nproc-per-node 2 scripts/train_refiner.py train ... --threads 1    # DDP
  python scripts/train_refiner.py ship runs/refiner/latest.pt onnx     # refiner_meta.pt, refiner.onnx, refiner_embedder.onnx
  python scripts/train_refiner.py finetune --meta onnx/refiner_meta.pt --shots DIR --steps 200 --out DIR

Training resumes from <out>/latest.pt when it exists. `finetune` is what `puppetcam avatar
create` runs: it reads the shots that puppetcam wrote to DIR and writes DIR/refiner.onnx and
DIR/refiner.json (the embeddings).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from puppetcam_train import checkpoint as ckpt  # noqa: E402
from puppetcam_train import refiner as R  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="meta-train E, G, D on refiner-data crops")
    ckpt.add_dataclass_args(t, R.RefinerConfig)
    t.add_argument("--resume", default=None, help="checkpoint (default: <out>/latest.pt if present)")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many more steps")
    t.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("ship", help="the files avatar create uses: refiner_meta.pt (weights to fine-tune, no "
                                     "optimiser state), refiner.onnx (feed-forward), refiner_embedder.onnx")
    s.add_argument("checkpoint")
    s.add_argument("out_dir")
    f = sub.add_parser("finetune", help="personalise on an avatar's shots (run by avatar create)")
    f.add_argument("--meta", required=True, help="meta-learned weights (onnx/refiner_meta.pt)")
    f.add_argument("--shots", required=True, help="directory puppetcam wrote the shots to")
    f.add_argument("--steps", type=int, default=200)
    f.add_argument("--threads", type=int, default=0)
    f.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    f.add_argument("--out", required=True, help="directory for refiner.onnx and refiner.json")
    f.add_argument("--no-progress", action="store_true")
    a = ap.parse_args()
    if a.cmd == "train":
        cfg = ckpt.dataclass_from_args(R.RefinerConfig, a)
        R.train(cfg, resume=a.resume, max_steps=a.max_steps, progress=not a.no_progress)
    elif a.cmd == "ship":
        out = Path(a.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = ckpt.load(a.checkpoint)
        R.ship(state, out / "refiner_meta.pt")
        meta = ckpt.load(out / "refiner_meta.pt")
        nets = R.load_nets(meta)
        zero = meta["config"].get("no_embedder", False)
        prov = json.dumps(dict(meta_step=meta["step"], meta_git=meta.get("versions", {}).get("git", ""),
                               held_out=meta.get("held_out"), videos=len(meta["videos"])))
        w = R.export_refiner(nets.Gm, nets.Ge, nets.Dm.W.mean(0) * 0, nets.De.W.mean(0) * 0, out / "refiner.onnx",
                             meta={"puppetcam.refiner": prov})
        we = R.export_embedder(nets.Em, nets.Ee, out / "refiner_embedder.onnx", zero=zero)
        print(f"shipped step {meta['step']} to {out}: ORT vs torch refiner {w:.2g}, embedder {we:.2g}", file=sys.stderr)
    elif a.cmd == "finetune":
        meta = ckpt.load(a.meta)
        shots, pairs = R.load_shot_dir(Path(a.shots))
        pers, info = R.finetune(meta, shots, pairs, a.steps, progress=not a.no_progress, threads=a.threads)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        provenance = dict(meta_step=meta["step"], meta_git=meta.get("versions", {}).get("git", ""), **info)
        worst = R.export_refiner(pers.Gm, pers.Ge, pers.em, pers.ee, out / "refiner.onnx", a.precision,
                                 meta={"puppetcam.refiner": json.dumps(provenance)})
        (out / "refiner.json").write_text(json.dumps(dict(
            e_mouth=pers.em.detach().reshape(-1).tolist(), e_eye=pers.ee.detach().reshape(-1).tolist(),
            info=dict(provenance, ort_vs_torch=worst, precision=a.precision))))
        print(f"refiner: K={info['k']}, {a.steps} fine-tuning steps, ORT vs torch {worst:.2g}", file=sys.stderr)


if __name__ == "__main__":
    main()
