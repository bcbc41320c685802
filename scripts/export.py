#!/usr/bin/env python3
"""Personalised checkpoint (finetune.py) -> ONNX avatar per docs/generator-contract.md.

  python scripts/export.py --personal runs/astronaut.pt --out onnx/default_avatar.onnx --name astronaut
Refuses to write the file when ONNX Runtime and PyTorch disagree (see puppetcam_train/export.py).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from puppetcam_train import checkpoint as ckpt  # noqa: E402
from puppetcam_train import export as EX  # noqa: E402
from puppetcam_train.dataset import to_tensor  # noqa: E402
from puppetcam_train.networks import Generator, NetConfig, PersonalisedGenerator  # noqa: E402


def load_personal(path):
    s = ckpt.load(path)
    n = s["net"]
    G = Generator(NetConfig(**{**n, "g_channels": tuple(n["g_channels"]), "d_channels": tuple(n["d_channels"])}))
    G.load_state_dict(s["G"])
    return s, PersonalisedGenerator(G, s["psi"]).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--personal", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="avatar")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--bench", action="store_true", help="print FLOPs, size and ORT CPU latency")
    a = ap.parse_args()
    s, pg = load_personal(a.personal)
    meta = EX.portrait_metadata(s["portrait"], s["portrait_lm68"], s["portrait_iris"])
    prov = {**s["provenance"], "personal_checkpoint": a.personal, "exported": ckpt.versions()}
    meta.update({"puppetcam.name": a.name, "puppetcam.provenance": json.dumps(prov, default=str)})
    checks = [to_tensor(r)[None].numpy() for r in s["check_rasters"]]
    rep = EX.export(pg, Path(a.out), meta, a.precision, checks, a.opset)
    print(f"wrote {a.out}: {rep}")
    if a.bench:
        import torch
        from puppetcam_train.networks import bake_spectral_norm, count_flops
        flops = count_flops(bake_spectral_norm(pg), torch.zeros(1, 3, 256, 256))
        size = Path(a.out).stat().st_size
        lat = {t: EX.bench(Path(a.out), threads=t) for t in (1, 2)}
        print(f"GFLOP/frame {flops / 1e9:.3f}, file {size / 1e6:.2f} MB, ORT CPU median ms/frame "
              + ", ".join(f"{t} thread(s): {v:.1f}" for t, v in lat.items()))


if __name__ == "__main__":
    main()
