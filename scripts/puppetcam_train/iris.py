"""The distilled iris model: a small CNN that reads the same 64x64 eye crop as MediaPipe's iris
model and answers its 5 iris points (centre, then 4 on the rim) and its 16 lid points (the first
16 of its 71 eye-contour points: corner, lower lid, corner, upper lid), at a twentieth of its cost.

Why: MediaPipe's iris model costs 107 MFLOP per eye (3.8 ms on one core here, more than the whole
468-point mesh), so the live face stage ran it on one eye per frame and carried the other
(issue 19). The student sees the daemon's own crops (examples/iris_data.rs cuts them, plus
jittered ones, and labels each with the teacher's answer on that very crop), so nothing of the
crop geometry is re-implemented here. It only has to reproduce the teacher where the daemon
looks, which a network of about 3 M multiply-adds can. The lids came in the second version: the
468-point mesh reads a shut eye as 0.8 of its open height (its lids barely move in a blink), while
the iris model's contour closes with it, so blinks reach the portrait only through the lids.

Data: `<data>/<clip>.u8` (N x 3 x 64 x 64 bytes) and `<data>/<clip>.f32` (N x 45: 10 iris and
32 lid point coordinates in input pixels, crop side and inter-ocular distance in frame pixels, eye
index).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoint as ckpt
from .refiner import HELD_OUT, VALIDATION

CONTRACT = "iris-2"
SIZE = 64
IRIS_POINTS, LID_POINTS = 5, 16
POINTS = IRIS_POINTS + LID_POINTS
COORDS = 2 * POINTS                       # 42 point coordinates per label row
COLS = COORDS + 3                         # then crop side, inter-ocular distance, eye index
# Lid-contour points whose distances make the opening: upper 160, 159, 158 over lower 144, 145,
# 153 (indices into the 16), over the corner-to-corner width (0 to 8).
OPENING_PAIRS = ((11, 3), (12, 4), (13, 5))
# The face-stage parity test and the latency benches run on these: never trained on either.
IRIS_HELD_OUT = tuple(HELD_OUT) + ("mt_German_20s", "sk_2", "ss_obama_short")


@dataclass
class IrisConfig:
    data: str = ".cache/iris"             # examples/iris_data.rs output (scripts/train_iris.py data)
    out: str = "runs/iris"                # checkpoints and stats.jsonl
    exclude: tuple = IRIS_HELD_OUT        # clips never trained on (evaluation)
    val_ids: tuple = VALIDATION           # never trained on either: checkpoint choice
    width: int = 32                       # channels of the first block; later blocks 1.5x, 2x, 3x
    batch: int = 128
    steps: int = 6000
    lr: float = 2e-3                      # AdamW, cosine decay to lr / 50
    weight_decay: float = 1e-4
    centre_weight: float = 3.0            # the centre is what the daemon draws; the rim gives r
    lid_weight: float = 1.0               # the lid points (what a blink is read from), per point
    photometric: float = 1.0              # strength of the brightness/contrast/colour/noise jitter
    glasses: float = 0.4                  # share of crops with spectacles drawn on (draw_glasses)
    threads: int = 2
    val_every: int = 250
    log_every: int = 50
    seed: int = 0


class DwBlock(nn.Module):
    """Depthwise 3x3 (optionally strided) + pointwise 1x1, each with BN; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu(self.bn1(self.dw(x)))
        y = self.bn2(self.pw(y))
        return F.relu(y + x if self.res else y)


class IrisNet(nn.Module):
    """64x64x3 in [0, 1] -> 42 coordinates in input pixels (5 iris then 16 lid points x (x, y)).

    One heatmap per point on a 16x16 grid, read by soft-argmax (the expected position under the
    softmax): translation-equivariant, so a shifted crop needs no new weights, and sub-pixel. A
    fully connected regressor of the same size learned the centre to only 2.9 % of the
    inter-ocular distance (it has to learn every position separately)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = [width, int(width * 1.5), width * 2]
        self.stem = nn.Sequential(nn.Conv2d(3, w[0] // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(w[0] // 2), nn.ReLU())  # 32
        self.b32 = DwBlock(w[0] // 2, w[0], 1)
        self.b16 = nn.Sequential(DwBlock(w[0], w[1], 2), DwBlock(w[1], w[1], 1))             # 16
        self.b8 = nn.Sequential(DwBlock(w[1], w[2], 2), DwBlock(w[2], w[2], 1), DwBlock(w[2], w[2], 1))  # 8: context
        self.up = nn.Sequential(nn.Conv2d(w[2], w[1], 1, bias=False), nn.BatchNorm2d(w[1]))
        self.fuse = nn.Sequential(DwBlock(w[1], w[1], 1), DwBlock(w[1], w[1], 1))
        self.heat = nn.Conv2d(w[1], POINTS, 1)
        # Cell centres in input pixels (each of the 16 cells spans 4 pixels).
        g = (torch.arange(16, dtype=torch.float32) + 0.5) * (SIZE / 16)
        self.register_buffer("gx", g.repeat(16), persistent=False)
        self.register_buffer("gy", g.repeat_interleave(16), persistent=False)

    def forward(self, x):
        f16 = self.b16(self.b32(self.stem(x - 0.5)))
        f8 = self.b8(f16)
        f = self.fuse(F.relu(f16 + F.interpolate(self.up(f8), scale_factor=2.0, mode="nearest")))
        p = torch.softmax(self.heat(f).flatten(2), -1)                      # [B, 21, 256]
        xy = torch.stack([p @ self.gx, p @ self.gy], -1)                    # [B, 21, 2]
        return xy.flatten(1)


def macs(net: IrisNet) -> int:
    """Multiply-adds of one forward pass (convolutions and linear layers)."""
    total = 0

    def hook(m, i, o):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += o.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, SIZE, SIZE))
    for h in hs:
        h.remove()
    return total


class IrisData:
    """All clips' crops in memory (uint8; about 12 KB per crop)."""

    def __init__(self, root: Path, include=None, exclude=()):
        xs, ys, names = [], [], []
        for lab in sorted(Path(root).glob("*.f32")):
            stem = lab.stem
            if stem in exclude or (include is not None and stem not in include):
                continue
            y = np.fromfile(lab, dtype="<f4")
            if y.size % COLS:
                raise SystemExit(f"{lab}: {y.size} floats is not a whole number of {COLS}-float labels (data from before the lids? rerun `data`)")
            y = y.reshape(-1, COLS)
            x = np.fromfile(lab.with_suffix(".u8"), dtype=np.uint8)
            if x.size != y.shape[0] * 3 * SIZE * SIZE:
                raise SystemExit(f"{lab}: {y.shape[0]} labels but {x.size} bytes of crops")
            xs.append(x.reshape(-1, 3, SIZE, SIZE))
            ys.append(y)
            names.append(stem)
        self.clips = names
        self.x = np.concatenate(xs) if xs else np.zeros((0, 3, SIZE, SIZE), np.uint8)
        self.y = np.concatenate(ys) if ys else np.zeros((0, COLS), np.float32)

    def __len__(self):
        return len(self.x)

    def batch(self, idx, rng: np.random.Generator | None = None, photometric: float = 0.0, glasses: float = 0.0):
        x = torch.from_numpy(self.x[idx]).float() / 255.0
        if rng is not None and glasses > 0:
            x = draw_glasses(x, rng, glasses)
        if rng is not None and photometric > 0:
            x = photometric_jitter(x, rng, photometric)
        return x, torch.from_numpy(self.y[idx])


def photometric_jitter(x: torch.Tensor, rng: np.random.Generator, s: float) -> torch.Tensor:
    """Brightness, contrast, per-channel gain, gamma and sensor noise: the iris does not move
    when the light changes, so the teacher's label stays right."""
    b = x.shape[0]
    r = lambda lo, hi, *shape: torch.from_numpy(rng.uniform(lo, hi, size=(b, *shape)).astype(np.float32))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + s * r(-0.35, 0.35, 1, 1, 1)) + mean + s * r(-0.15, 0.15, 1, 1, 1)
    x = x * (1 + s * r(-0.12, 0.12, 3, 1, 1))
    x = x.clamp(0, 1) ** torch.exp(s * r(-0.3, 0.3, 1, 1, 1))
    x = x + s * r(0, 0.03, 1, 1, 1) * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    return x.clamp(0, 1)


def draw_glasses(x: torch.Tensor, rng: np.random.Generator, p: float) -> torch.Tensor:
    """Spectacles drawn over a share `p` of the crops: a rim (an ellipse or rounded box around the
    eye, whole or only its top, 1-5 px, dark or coloured), a lens that tints and dims, and
    sometimes a white glare. The data set has few wearers, and a student that never saw a rim took
    it for the eye (4.4 % of the inter-ocular distance off on a held-out wearer). The iris does not
    move when glasses are put on, so the teacher's label on the bare crop stays right."""
    import cv2
    out = x.numpy().copy()
    for i in np.flatnonzero(rng.random(len(out)) < p):
        im = np.ascontiguousarray(out[i].transpose(1, 2, 0))
        c = (SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-5, 8))
        ax = (rng.uniform(20, 40), rng.uniform(12, 24))
        ang = rng.uniform(-12, 12)
        S = 16                                     # sub-pixel drawing: shift=4
        ctr, axes = (int(c[0] * S), int(c[1] * S)), (int(ax[0] * S), int(ax[1] * S))
        lens = np.zeros((SIZE, SIZE), np.float32)
        cv2.ellipse(lens, ctr, axes, ang, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
        tint = rng.uniform(0.8, 1.05) * (1 + rng.uniform(-0.08, 0.08, 3))
        im = im * (1 - lens[..., None]) + np.clip(im * tint, 0, 1) * lens[..., None]
        if rng.random() < 0.35:                    # glare
            g = np.zeros((SIZE, SIZE), np.float32)
            gc = (int((c[0] + rng.uniform(-ax[0], ax[0]) * 0.7) * S), int((c[1] + rng.uniform(-ax[1], ax[1]) * 0.7) * S))
            cv2.ellipse(g, gc, (int(rng.uniform(2, 10) * S), int(rng.uniform(1, 5) * S)), rng.uniform(0, 180), 0, 360,
                        rng.uniform(0.3, 0.9), -1, cv2.LINE_AA, 4)
            g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.5, 2.0)) * lens
            im = im + (1 - im) * g[..., None]
        rim = np.zeros((SIZE, SIZE), np.float32)
        th = int(rng.integers(1, 6))
        span = (180, 360) if rng.random() < 0.3 else (0, 360)       # top rim only (half-rims)
        cv2.ellipse(rim, ctr, axes, ang, span[0], span[1], 1.0, th, cv2.LINE_AA, 4)
        colour = rng.uniform(0.0, 0.25, 3) if rng.random() < 0.7 else rng.uniform(0.0, 0.8, 3)
        im = im * (1 - rim[..., None]) + colour * rim[..., None]
        out[i] = np.clip(im, 0, 1).transpose(2, 0, 1)
    return torch.from_numpy(out)


def loss_fn(pred: torch.Tensor, y: torch.Tensor, centre_weight: float, lid_weight: float = 1.0) -> torch.Tensor:
    w = torch.ones(COORDS)
    w[:2] = centre_weight
    w[2 * IRIS_POINTS:] = lid_weight
    return (F.smooth_l1_loss(pred / SIZE, y[:, :COORDS] / SIZE, reduction="none", beta=0.01) * w).mean()


def opening(p: np.ndarray) -> np.ndarray:
    """Lid opening over the eye's width from rows of 42 coordinates (the lids' part)."""
    lid = p[:, 2 * IRIS_POINTS:COORDS].reshape(-1, LID_POINTS, 2)
    width = np.linalg.norm(lid[:, 0] - lid[:, 8], axis=1)
    gap = np.mean([np.linalg.norm(lid[:, u] - lid[:, l], axis=1) for u, l in OPENING_PAIRS], axis=0)
    return gap / np.maximum(width, 1e-6)


def errors(pred: np.ndarray, y: np.ndarray) -> dict:
    """Centre and radius errors over the inter-ocular distance, as the parity tests measure; lid
    point error (mean, same unit) and the error of the lid opening (over the eye's width)."""
    scale = y[:, COORDS] / SIZE / y[:, COORDS + 1]  # input pixels -> inter-ocular distances
    c = np.hypot(pred[:, 0] - y[:, 0], pred[:, 1] - y[:, 1]) * scale

    def radius(p):
        return np.mean([np.hypot(p[:, 2 * i] - p[:, 0], p[:, 2 * i + 1] - p[:, 1]) for i in range(1, 5)], axis=0)
    r = np.abs(radius(pred) - radius(y)) * scale
    lp = np.linalg.norm((pred[:, 2 * IRIS_POINTS:COORDS] - y[:, 2 * IRIS_POINTS:COORDS]).reshape(-1, LID_POINTS, 2), axis=2).mean(1) * scale
    op = np.abs(opening(pred) - opening(y))
    return dict(centre_mean=float(c.mean()), centre_p95=float(np.percentile(c, 95)), radius_mean=float(r.mean()),
                lid_mean=float(lp.mean()), opening_mean=float(op.mean()), opening_p95=float(np.percentile(op, 95)), n=len(c))


@torch.no_grad()
def predict(net: IrisNet, data: IrisData, bs: int = 512) -> np.ndarray:
    net.eval()
    out = [net(data.batch(np.arange(i, min(i + bs, len(data))))[0]).numpy() for i in range(0, len(data), bs)]
    return np.concatenate(out) if out else np.zeros((0, COORDS), np.float32)


def train(cfg: IrisConfig, progress: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    data = IrisData(Path(cfg.data), exclude=tuple(cfg.exclude) + tuple(cfg.val_ids))
    val = IrisData(Path(cfg.data), include=set(cfg.val_ids))
    if len(data) == 0:
        raise SystemExit(f"no iris data in {cfg.data} (run scripts/train_iris.py data)")
    net = IrisNet(cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr / 50)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    best, t0 = (math.inf, 0), time.time()
    stats_f = open(out / "stats.jsonl", "a")
    for step in range(1, cfg.steps + 1):
        net.train()
        idx = rng.integers(0, len(data), cfg.batch)
        x, y = data.batch(idx, rng, cfg.photometric, cfg.glasses)
        loss = loss_fn(net(x), y, cfg.centre_weight, cfg.lid_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        rec = None
        if step % cfg.val_every == 0 or step == cfg.steps:
            e = errors(predict(net, val), val.y) if len(val) else dict(centre_mean=loss.item(), lid_mean=0.0)
            rec = dict(step=step, loss=loss.item(), val=e, seconds=round(time.time() - t0, 1))
            state = dict(kind="puppetcam-iris", contract=CONTRACT, step=step, config=asdict(cfg), train_clips=data.clips,
                         val_clips=val.clips, held_out=list(cfg.exclude), val=e, macs=macs(net), net=net.state_dict())
            ckpt.save(out / "latest.pt", state)
            # Chosen on the iris centre and the lids together (both over the inter-ocular distance).
            score = e["centre_mean"] + e["lid_mean"]
            if score < best[0]:
                best = (score, step)
                ckpt.save(out / "best.pt", state)
        elif step % cfg.log_every == 0:
            rec = dict(step=step, loss=loss.item(), seconds=round(time.time() - t0, 1))
        if rec:
            stats_f.write(json.dumps(rec) + "\n")
            stats_f.flush()
            if progress:
                print(json.dumps(rec), flush=True)
    stats_f.close()
    return dict(best_score=best[0], best_step=best[1])


def load_net(state: dict) -> IrisNet:
    net = IrisNet(state["config"]["width"])
    net.load_state_dict(state["net"])
    return net.eval()


class _Export(nn.Module):
    """MediaPipe's layout, (x, y, z) per point with z = 0 (the daemon reads x, y): `iris` [1, 15]
    and `lids` [1, 48]."""

    def __init__(self, net: IrisNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        p = self.net(x).reshape(-1, POINTS, 2)
        p = torch.cat([p, torch.zeros_like(p[..., :1])], -1)
        return p[:, :IRIS_POINTS].reshape(-1, 3 * IRIS_POINTS), p[:, IRIS_POINTS:].reshape(-1, 3 * LID_POINTS)


def export(state: dict, path: Path, check: IrisData | None = None) -> float:
    """Writes the ONNX model the daemon loads (input `input` [1, 3, 64, 64], outputs `iris` [1, 15]
    and `lids` [1, 48])
    and checks ONNX Runtime against PyTorch; refuses to write on a mismatch. Returns max |diff|."""
    import onnx
    import onnxruntime as ort
    net = _Export(load_net(state)).eval()
    path = Path(path)
    tmp = path.with_suffix(".tmp.onnx")
    x = torch.rand(8, 3, SIZE, SIZE) if check is None or len(check) == 0 else check.batch(np.arange(min(8, len(check))))[0]
    torch.onnx.export(net, (x[:1],), str(tmp), input_names=["input"], output_names=["iris", "lids"], opset_version=17, dynamo=False)
    m = onnx.load(str(tmp))
    prov = dict(step=state["step"], train_clips=len(state["train_clips"]), held_out=state["held_out"], val=state["val"],
                macs=state.get("macs"), git=state.get("versions", {}).get("git", ""))
    for k, v in {"puppetcam.contract": CONTRACT, "puppetcam.iris": json.dumps(prov),
                 "puppetcam.data_note": "trained on MediaPipe iris-model answers on crops of research-only talking-head "
                                        "videos (see onnx/README.md)"}.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(tmp))
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for i in range(x.shape[0]):
            for want, got in zip(net(x[i:i + 1]), sess.run(None, {"input": x[i:i + 1].numpy()})):
                worst = max(worst, float(np.abs(want.numpy() - got).max()))
    if worst > 1e-3:
        tmp.unlink()
        raise SystemExit(f"ONNX Runtime differs from PyTorch by {worst} input pixels: not written")
    tmp.replace(path)
    return worst
