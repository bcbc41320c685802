"""A whole-face refiner, for one measurement: does one network over the whole face (which can
also fill what a head turn uncovers: the near cheek, the ear, the hair beside it) beat the
shipped region refiner (mouth and eyes only) at the same cost? Issue 17 item 6 asked for it to
be measured once; issue 16 item 4 asked for a learned fill to be measured against the
deterministic one.

- network: a small U-Net over the face crop (the warp avatar's render, 3 x S x S, S = 128),
  at half resolution inside (pixel unshuffle / shuffle, as the region refiner's G), returning
  RGB in [-1, 1] and alpha in [0, 1]; the output is alpha-composited over the render, so where
  alpha is 0 the portrait's own pixels stay;
- losses: L1 and Laplacian-pyramid L1 of the composite against the real frame's crop, L1 of
  the raw RGB (a smaller weight), a small mean-alpha penalty (leave the render alone where it
  is right);
- data: `scripts/face_refiner_data.py` (the daemon's renders through its CLI, next to the real
  frames), turned frames (|yaw proxy| > 0.15) drawn four times as often, mirrored at random;
- export to ONNX (input `face` [1, 3, S, S], output `face_out` [1, 4, S, S]) with an ORT versus
  torch check.

No embedder, no discriminator: this is the cheapest whole-face design, trained in the same
wall time as the region refiner's run would take on this machine; docs/quality.md reports it.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .refiner import laplacian_l1

TURNED = 0.15


@dataclass
class FaceRefinerConfig:
    size: int = 128                   # crop side (the data's)
    ch: tuple = (24, 48, 96)          # widths at size/2, /4, /8 (as many ms as the region refiner)
    body: int = 3                     # residual blocks at size/8
    batch: int = 16
    lr: float = 2e-4
    alpha_penalty: float = 0.01       # weight of mean alpha (keep the render where it is right)
    rgb_weight: float = 0.25          # L1 of the raw RGB too, so that the RGB learns everywhere
                                      # whatever alpha is (a shut alpha passes no gradient to it)
    turned_boost: int = 4             # turned pairs drawn this many times as often (6 % of the pairs)
    minutes: float = 25.0             # wall-time budget of a run
    max_steps: int = 100000
    seed: int = 0


class Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + F.instance_norm(self.c2(F.relu(F.instance_norm(self.c1(x)))))


class FaceRefiner(nn.Module):
    def __init__(self, cfg: FaceRefinerConfig):
        super().__init__()
        c0, c1, c2 = cfg.ch
        self.stem = nn.Conv2d(12, c0, 3, padding=1)
        self.e1a, self.e1b = nn.Conv2d(c0, c1, 3, padding=1), nn.Conv2d(c1, c1, 3, padding=1)
        self.e2a, self.e2b = nn.Conv2d(c1, c2, 3, padding=1), nn.Conv2d(c2, c2, 3, padding=1)
        self.body = nn.Sequential(*[Res(c2) for _ in range(cfg.body)])
        self.d2 = nn.Conv2d(c2 + c1, c1, 3, padding=1)
        self.d1 = nn.Conv2d(c1 + c0, c0, 3, padding=1)
        self.head = nn.Conv2d(c0, 16, 3, padding=1)

    def forward(self, x):
        s0 = F.relu(self.stem(F.pixel_unshuffle(x, 2)))
        s1 = F.relu(self.e1b(F.relu(self.e1a(F.avg_pool2d(s0, 2)))))
        h = F.relu(self.e2b(F.relu(self.e2a(F.avg_pool2d(s1, 2)))))
        h = self.body(h)
        h = F.relu(self.d2(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), s1], 1)))
        h = F.relu(self.d1(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), s0], 1)))
        out = F.pixel_shuffle(self.head(h), 2)
        return torch.cat([torch.tanh(out[:, :3]), torch.sigmoid(out[:, 3:4] - 2.0)], 1)


def composite(x, out):
    return out[:, 3:4] * out[:, :3] + (1 - out[:, 3:4]) * x


def gflops(net: nn.Module, size: int) -> float:
    """Multiply-adds of the convolutions for one crop, in GFLOP (2 per multiply-add)."""
    total = [0]

    def hook(m, i, o):
        total[0] += 2 * o.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total[0] / 1e9


def to_t(a: np.ndarray) -> torch.Tensor:
    """uint8 N x S x S x 3 -> float N x 3 x S x S in [-1, 1]."""
    return torch.from_numpy(a).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class Pairs:
    """Every pair of the given `.npz` files, in memory (uint8)."""

    def __init__(self, files):
        r, t, y = [], [], []
        for f in files:
            z = np.load(f)
            r.append(z["render"])
            t.append(z["real"])
            y.append(z["yaw"])
        if not r:
            raise ValueError("no training pairs")
        self.render, self.real = np.concatenate(r), np.concatenate(t)
        yaw = np.nan_to_num(np.concatenate(y), nan=0.0)
        self.turned = np.abs(yaw) > TURNED

    def sampler(self, cfg: FaceRefinerConfig, rng: np.random.Generator):
        w = np.where(self.turned, float(cfg.turned_boost), 1.0)
        p = w / w.sum()
        while True:
            idx = rng.choice(len(p), cfg.batch, p=p)
            x, y = to_t(self.render[idx]), to_t(self.real[idx])
            flip = torch.from_numpy(rng.random(cfg.batch) < 0.5)
            x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
            yield x, y


def loss_fn(cfg, out, x, y):
    c = composite(x, out)
    l1 = (c - y).abs().mean()
    lap = laplacian_l1(c, y)
    a = out[:, 3].mean()
    raw = (out[:, :3] - y).abs().mean()
    return l1 + lap + cfg.rgb_weight * raw + cfg.alpha_penalty * a, {"l1": l1.item(), "lap": lap.item(), "alpha": a.item()}


def train(cfg: FaceRefinerConfig, files, out_dir: Path, log=print) -> dict:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = Pairs(files)
    net = FaceRefiner(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = open(out_dir / "stats.jsonl", "w")
    t0, step = time.time(), 0
    log(f"face refiner: {len(data.render)} pairs ({int(data.turned.sum())} turned), {gflops(net, cfg.size):.3f} GFLOP per crop")
    for x, y in data.sampler(cfg, rng):
        out = net(x)
        loss, parts = loss_fn(cfg, out, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            parts.update(step=step, s=round(time.time() - t0, 1))
            stats.write(json.dumps(parts) + "\n")
            stats.flush()
            if step % 500 == 0:
                log(f"step {step}: {parts}")
        if step >= cfg.max_steps or time.time() - t0 > cfg.minutes * 60:
            break
    stats.close()
    state = {"config": asdict(cfg), "step": step, "weights": net.state_dict(), "pairs": len(data.render),
             "files": [Path(f).name for f in files]}
    torch.save(state, out_dir / "face_refiner.pt")
    return state


def load(state: dict) -> FaceRefiner:
    cfg = FaceRefinerConfig(**{**state["config"], "ch": tuple(state["config"]["ch"])})
    net = FaceRefiner(cfg)
    net.load_state_dict(state["weights"])
    return net.eval()


def export(net: FaceRefiner, size: int, path: Path) -> float:
    """ONNX export; returns the largest ORT-versus-torch difference (refuses above 1e-3)."""
    import onnxruntime as ort
    x = torch.rand(1, 3, size, size) * 2 - 1
    torch.onnx.export(net, x, str(path), input_names=["face"], output_names=["face_out"], opset_version=17, dynamo=False)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = net(x).numpy()
    d = float(np.abs(s.run(None, {"face": x.numpy()})[0] - ref).max())
    if d > 1e-3:
        raise RuntimeError(f"ONNX export differs from torch by {d}")
    return d


def ort_ms(path: Path, inputs: dict, threads: int = 2, runs: int = 200) -> float:
    """Median ms of one run in ONNX Runtime on `threads` threads (the daemon's refiner budget)."""
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    for _ in range(10):
        s.run(None, inputs)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, inputs)
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts))


def apply_full(net: FaceRefiner, frame: np.ndarray, box, size: int) -> np.ndarray:
    """Refines `frame` (uint8 H x W x 3) inside the square `box` (x0, y0, side): the network's
    RGB and alpha are resized to the box and composited over the frame."""
    import cv2
    x0, y0, s = box
    crop = cv2.resize(frame[y0:y0 + s, x0:x0 + s], (size, size), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        out = net(to_t(crop[None]))[0].permute(1, 2, 0).numpy()
    rgb = cv2.resize((out[..., :3] + 1) * 127.5, (s, s), interpolation=cv2.INTER_LINEAR)
    a = cv2.resize(out[..., 3], (s, s), interpolation=cv2.INTER_LINEAR)[..., None]
    res = frame.copy()
    reg = res[y0:y0 + s, x0:x0 + s].astype(np.float32)
    res[y0:y0 + s, x0:x0 + s] = np.clip(a * rgb + (1 - a) * reg + 0.5, 0, 255).astype(np.uint8)
    return res
