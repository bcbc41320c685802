#!/usr/bin/env python3
"""The distilled iris model the live face stage runs (see puppetcam_train/iris.py for why and for
every option and its default).

  python scripts/train_iris.py data --videos ../shared/data/videos --out .cache/iris   # crops + teacher labels
  python scripts/train_iris.py train --data .cache/iris --out runs/iris
  python scripts/train_iris.py eval runs/iris/best.pt --data .cache/iris              # held-out clips
  python scripts/train_iris.py export runs/iris/best.pt onnx/iris_fast.onnx

`data` runs the daemon's own crop code (examples/iris_data.rs, release build) on every clip, so
the student learns on exactly the crops it will see; it needs PUPPETCAM_MODEL_DIR (or onnx/) for
MediaPipe's iris model, the teacher.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from puppetcam_train import checkpoint as ckpt  # noqa: E402
from puppetcam_train import iris as I  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="eye crops of every clip with the teacher's iris points")
    d.add_argument("--videos", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--jittered", type=int, default=3, help="jittered crops per eye and frame, besides the exact one")
    t = sub.add_parser("train", help="train the student")
    ckpt.add_dataclass_args(t, I.IrisConfig)
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("eval", help="centre and radius error against the teacher on held-out clips")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True)
    x = sub.add_parser("export", help="ONNX for the daemon (checked against PyTorch)")
    x.add_argument("checkpoint")
    x.add_argument("out")
    x.add_argument("--data", default=None, help="check on real crops from here instead of noise")
    a = ap.parse_args()
    if a.cmd == "data":
        subprocess.run(["cargo", "build", "--release", "--example", "iris_data"], cwd=ROOT, check=True)
        exe = ROOT / "target" / "release" / "examples" / "iris_data"
        env = dict(os.environ)
        env.setdefault("PUPPETCAM_MODEL_DIR", str(ROOT / "onnx"))
        for clip in sorted(Path(a.videos).glob("*.mp4")):
            subprocess.run([str(exe), str(clip), a.out, str(a.jittered)], env=env, check=True)
    elif a.cmd == "train":
        cfg = ckpt.dataclass_from_args(I.IrisConfig, a)
        print(json.dumps(I.train(cfg, progress=not a.no_progress)))
    elif a.cmd == "eval":
        state = ckpt.load(a.checkpoint)
        net = I.load_net(state)
        rows = {}
        for clip in state["held_out"]:
            data = I.IrisData(Path(a.data), include={clip})
            # All of the clip's crops, the exact ones and the jittered ones (docs/training.md).
            if len(data):
                rows[clip] = I.errors(I.predict(net, data), data.y)
        print(json.dumps(dict(step=state["step"], macs=state.get("macs"), held_out=rows), indent=1))
    elif a.cmd == "export":
        state = ckpt.load(a.checkpoint)
        check = I.IrisData(Path(a.data), include=set(state["held_out"])) if a.data else None
        worst = I.export(state, Path(a.out), check)
        print(f"wrote {a.out}: ONNX Runtime vs PyTorch max |diff| {worst:.2e} input pixels")


if __name__ == "__main__":
    main()
