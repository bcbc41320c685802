"""The warp avatar's learned refiner, trained the paper's way (Zakharov et al. 2019) on what the
warp cannot make: mouth (96 px crop) and eyes (48 px crops, the left one mirrored).

- networks: embedder E (K shots -> e), generator G (warped crop + landmark raster, AdaIN with
  psi = P e -> RGB + alpha), projection discriminator D (score = v(x, y) . (W_i + w0) + b);
- losses: hinge adversarial, D feature matching, embedding match |W_i - e_i|, L1 weighted up
  inside the mouth / eye opening, Laplacian-pyramid L1 (weight-free sharpness term; no
  perceptual network installs from a registry without a run-time download);
- data: `.npy` crops written by `puppetcam refiner-data` (the daemon's own warp and crop code);
- meta-training (resumable, DDP under torchrun, progress bar, stats.jsonl), fine-tuning on an
  avatar's shots (paper section 3.3: G and D from the embedding, w' = w0 + e), export to ONNX
  contract "refiner-1" (docs/refiner.md) with an ORT-versus-torch check.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, asdict, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from . import checkpoint as ckpt

MOUTH, EYE = 96, 48
CONTRACT = "refiner-1"
# Identities never trained on: the evaluation clips of docs/quality.md.
HELD_OUT = ("lp_d5", "lp_d18", "r3_May_5s", "sh_video")
# Identities kept apart from both training and evaluation, to choose the checkpoint to ship (the
# step-1000 weights once beat the shipped step-3000 ones on the evaluation clips, and choosing on
# those would tune on them). Picked by rule, not by eye: every 11th of the 44 other clips in
# sorted order, from the 6th.
VALIDATION = ("lp_d10", "lp_d9", "sk_4", "sp_W040_level_3_happy_029")
# A pair's target eye is "closing" below this share of its clip's median eye-opening area, and its
# mouth "open" above this quantile of the clip's mouth-opening areas (the rasters' fill channel).
BLINK_SHARE = 0.6
OPEN_QUANTILE = 0.75


# ---------------------------------------------------------------------------------------------
# Networks
@dataclass
class RefinerNet:
    """Widths of one region's networks (mouth and eyes each have their own E, G, D)."""
    size: int = MOUTH                  # crop side
    g_ch: tuple = (24, 48, 64)         # G widths at size/2 (after the pixel-unshuffle stem), /4, /8
    g_body: int = 2                    # AdaIN residual blocks at size/8
    d_ch: tuple = (32, 64, 128, 128)   # E and D widths at size/2, /4, /8, /16
    emb: int = 128                     # embedding size


def preset_nets(name: str):
    """(mouth, eye) widths of a preset: `default` (shipped), `tiny` (unit tests)."""
    if name == "tiny":
        t = dict(g_ch=(8, 8, 8), g_body=1, d_ch=(8, 8, 8), emb=8)
        return mouth_net(**t), eye_net(**t)
    if name != "default":
        raise ValueError(f"unknown refiner preset {name!r}")
    return mouth_net(), eye_net()


def mouth_net(**over) -> RefinerNet:
    return RefinerNet(**{**dict(size=MOUTH), **over})


def eye_net(**over) -> RefinerNet:
    return RefinerNet(**{**dict(size=EYE, g_ch=(16, 32, 48), d_ch=(24, 48, 96)), **over})


class AdaIN(nn.Module):
    """Instance norm with scale/shift from psi; (1 + gamma) so a fresh P starts as plain IN."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, p):
        g, b = p[:, : self.c, None, None], p[:, self.c:, None, None]
        return F.instance_norm(x) * (1 + g) + b


class ConvAdaIN(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(cin, cout, 3, padding=1), AdaIN(cout)

    def forward(self, x, ps):
        return F.relu(self.norm(self.conv(x), next(ps)))


class ResAdaIN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.n1, self.n2 = AdaIN(c), AdaIN(c)

    def forward(self, x, ps):
        h = F.relu(self.n1(self.c1(x), next(ps)))
        return x + self.n2(self.c2(h), next(ps))


class Generator(nn.Module):
    """G(x, e): a small U-Net over [warped crop, raster] (6 channels). The stem works at half
    resolution (pixel unshuffle) and the head returns to full resolution (pixel shuffle), which
    keeps it at ~0.1-0.3 GFLOP; the skip connections carry the warp's detail. AdaIN at the
    bottleneck and in the decoder takes psi = P e. Returns RGB in [-1, 1] and alpha in [0, 1]."""

    def __init__(self, n: RefinerNet):
        super().__init__()
        self.n = n
        c0, c1, c2 = n.g_ch
        self.stem = nn.Conv2d(24, c0, 3, padding=1)
        self.e1a, self.e1b = nn.Conv2d(c0, c1, 3, padding=1), nn.Conv2d(c1, c1, 3, padding=1)
        self.e2a, self.e2b = nn.Conv2d(c1, c2, 3, padding=1), nn.Conv2d(c2, c2, 3, padding=1)
        self.body = nn.ModuleList(ResAdaIN(c2) for _ in range(n.g_body))
        self.d2 = ConvAdaIN(c2 + c1, c1)
        self.d1 = ConvAdaIN(c1 + c0, c0)
        self.head = nn.Conv2d(c0, 16, 3, padding=1)
        self.adain_sizes = [2 * m.c for m in self.modules() if isinstance(m, AdaIN)]
        self.P = nn.Linear(n.emb, sum(self.adain_sizes), bias=False)
        nn.init.normal_(self.P.weight, std=0.01)

    def forward(self, x, e):
        ps = iter(torch.split(self.P(e), self.adain_sizes, dim=1))
        s0 = F.relu(self.stem(F.pixel_unshuffle(x, 2)))                    # size/2
        s1 = F.relu(self.e1b(F.relu(self.e1a(F.avg_pool2d(s0, 2)))))        # size/4
        h = F.relu(self.e2b(F.relu(self.e2a(F.avg_pool2d(s1, 2)))))         # size/8
        for blk in self.body:
            h = blk(h, ps)
        h = self.d2(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), s1], 1), ps)
        h = self.d1(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), s0], 1), ps)
        out = F.pixel_shuffle(self.head(h), 2)
        return torch.tanh(out[:, :3]), torch.sigmoid(out[:, 3:4] - 2.0)  # alpha starts near 0.12


_USE_SN = [True]  # off only while _plain() builds an exportable twin


def SN(m):
    return spectral_norm(m) if _USE_SN[0] else m


def _plain(module: nn.Module, build) -> nn.Module:
    """A twin of `module` without spectral-norm parametrizations (ONNX has no vdot), holding
    the current normalised weights (eval: sigma from the stored u, v)."""
    from torch.nn.utils import parametrize
    was = module.training
    module.eval()
    sd = {}
    with torch.no_grad():
        for name, mod in module.named_modules():
            if parametrize.is_parametrized(mod):
                for t in mod.parametrizations:
                    sd[f"{name}.{t}" if name else t] = getattr(mod, t).detach().clone()
        sd.update({k: v.clone() for k, v in module.state_dict().items() if ".parametrizations." not in k})
    module.train(was)
    _USE_SN[0] = False
    try:
        twin = build()
    finally:
        _USE_SN[0] = True
    twin.load_state_dict(sd)
    return twin.eval()


class Trunk(nn.Module):
    """E and D body: pixel-unshuffle stem, then average-pooled conv blocks; returns features."""

    def __init__(self, n: RefinerNet, cin: int):
        super().__init__()
        ch = n.d_ch
        self.stem = SN(nn.Conv2d(4 * cin, ch[0], 3, padding=1))
        self.blocks = nn.ModuleList(SN(nn.Conv2d(a, b, 3, padding=1)) for a, b in zip(ch[:-1], ch[1:]))
        self.out_ch = ch[-1]

    def forward(self, x):
        h = F.leaky_relu(self.stem(F.pixel_unshuffle(x, 2)), 0.2)
        feats = [h]
        for b in self.blocks:
            h = F.leaky_relu(b(F.avg_pool2d(h, 2)), 0.2)
            feats.append(h)
        return h, feats


class Embedder(nn.Module):
    """E(shot crop, its raster) -> e; K shots are averaged (the paper's e_hat)."""

    def __init__(self, n: RefinerNet):
        super().__init__()
        self.n = n
        self.trunk = Trunk(n, 6)
        self.fc = SN(nn.Linear(self.trunk.out_ch, n.emb))

    def forward(self, x):  # [N, 6, S, S] -> [N, emb]
        h, _ = self.trunk(x)
        return self.fc(h.sum(dim=(2, 3)) / h.shape[2])

    def mean(self, x, k):  # [B*K, 6, S, S] -> [B, emb]
        e = self(x)
        return e.view(-1, k, e.shape[1]).mean(1)


class Discriminator(nn.Module):
    """Projection D over (image, raster): score = v . (W_i + w0) + b, with one row W_i per
    training video; fine-tuning replaces W_i + w0 by w' = w0 + e_new."""

    def __init__(self, n: RefinerNet, videos: int):
        super().__init__()
        self.trunk = Trunk(n, 6)
        self.fc = SN(nn.Linear(self.trunk.out_ch, n.emb))
        self.W = nn.Parameter(torch.randn(videos, n.emb) * 0.02)
        self.w0 = nn.Parameter(torch.zeros(n.emb))
        self.b = nn.Parameter(torch.zeros(1))

    def forward(self, img, ras, w):
        h, feats = self.trunk(torch.cat([img, ras], 1))
        v = self.fc(h.sum(dim=(2, 3)) / h.shape[2])
        return (v * w).sum(1) + self.b, feats


# ---------------------------------------------------------------------------------------------
# Losses
def d_hinge(real, fake):
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def feature_matching(ff, fr):
    return sum(F.l1_loss(a, b.detach()) for a, b in zip(ff, fr)) / len(ff)


def laplacian_l1(a, b, levels: int = 3):
    """L1 between Laplacian pyramids: weight-free, weighs edges like a perceptual term would."""
    loss = a.new_zeros(())
    for _ in range(levels):
        da, db = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        ua, ub = F.interpolate(da, scale_factor=2.0, mode="bilinear"), F.interpolate(db, scale_factor=2.0, mode="bilinear")
        loss = loss + F.l1_loss(a - ua, b - ub)
        a, b = da, db
    return loss


def weighted_l1(fake, real, ras, inside: float):
    """L1 with the opening (raster channel 2: mouth / eye opening) weighted `1 + inside`."""
    w = 1.0 + inside * ras[:, 2:3]
    return (w * (fake - real).abs()).mean() / w.mean()


def composite(x_in, rgb, alpha):
    return alpha * rgb + (1 - alpha) * x_in[:, :3]


def g_region_loss(cfg, G, D, x_in, gt, e, w):
    """G (and E, through e) loss of one region, for meta-training and fine-tuning alike:
    weighted L1 + Laplacian L1 + mean alpha, plus hinge adversarial and feature matching unless
    `cfg.no_adversarial`. `w` is D's projection per sample (this loss does not train it).
    Returns (loss, composited output, stats)."""
    rgb, alpha = G(x_in, e)
    out = composite(x_in, rgb, alpha)
    ras = x_in[:, 3:]
    l1 = weighted_l1(out, gt, ras, cfg.inside)
    lap = laplacian_l1(out, gt)
    loss = cfg.w_l1 * l1 + cfg.w_lap * lap + cfg.w_alpha * alpha.mean()
    st = dict(l1=l1.item(), lap=lap.item(), alpha=alpha.mean().item())
    if not cfg.no_adversarial:
        n = x_in.shape[0]
        w = w.detach()
        score, feats = D(torch.cat([gt, out]), torch.cat([ras, ras]), torch.cat([w, w]))
        adv = -score[n:].mean()
        fm = feature_matching([f[n:] for f in feats], [f[:n] for f in feats])
        loss = loss + cfg.w_adv * adv + cfg.w_fm * fm
        st.update(adv=adv.item(), fm=fm.item())
    return loss, out, st


def d_region_loss(D, x_in, gt, out, w):
    """D's hinge loss of one region: real `gt` against the (detached) output, projection `w`."""
    n = x_in.shape[0]
    ras = x_in[:, 3:]
    score, _ = D(torch.cat([gt, out.detach()]), torch.cat([ras, ras]), torch.cat([w, w]))
    return d_hinge(score[:n], score[n:])


# ---------------------------------------------------------------------------------------------
# Data
def _u8_to_t(a: np.ndarray) -> torch.Tensor:
    """[..., H, W, 3] uint8 -> [..., 3, H, W] float in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(a)).float().div_(127.5).sub_(1.0)
    return t.movedim(-1, -3)


def _ras_to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0).movedim(-1, -3)


class RegionData:
    """All clips of a `refiner-data` directory in memory (uint8): pairs and shots per clip."""

    def __init__(self, root: Path, exclude=(), only=None, boost_blink: float = 0.0, boost_open: float = 0.0):
        self.root = Path(root)
        names = sorted(p.name[: -len(".pairs.mouth_in.npy")] for p in self.root.glob("*.pairs.mouth_in.npy"))
        names = [n for n in names if n not in set(exclude) and (only is None or n in set(only))]
        self.videos, self.pairs, self.shots, self.blink, self.open, self.prob = [], [], [], [], [], []
        for n in names:
            ld = lambda k: np.load(self.root / f"{n}.{k}.npy")
            p = {k: ld(f"pairs.{k}") for k in ("mouth_in", "mouth_ras", "mouth_gt", "eyes_in", "eyes_ras", "eyes_gt")}
            s = {k: ld(f"shots.{k}") for k in ("mouth_in", "mouth_ras", "eyes_in", "eyes_ras")}
            if len(p["mouth_in"]) == 0 or len(s["mouth_in"]) == 0:
                continue
            self.videos.append(n)
            self.pairs.append(p)
            self.shots.append(s)
            blink, open_ = pair_kinds(p["eyes_ras"], p["mouth_ras"])
            w = 1.0 + boost_blink * blink + boost_open * open_
            self.blink.append(blink)
            self.open.append(open_)
            self.prob.append(w / w.sum())

    def __len__(self):
        return len(self.videos)

    def n_pairs(self):
        return sum(len(p["mouth_in"]) for p in self.pairs)

    def episode(self, rng: np.random.Generator, batch: int, k: int) -> dict:
        """`batch` episodes: a video each, k of its shots, one of its pairs (closing eyes and open
        mouths drawn more often when the data was loaded with boosts)."""
        vids = rng.integers(0, len(self.videos), batch)
        items = [(v, int(rng.choice(len(self.prob[v]), p=self.prob[v]))) for v in vids]
        return self.batch(rng, items, k)

    def batch(self, rng: np.random.Generator, items, k: int) -> dict:
        """The episodes of the given (video, pair) items, k random shots each."""
        vids = [v for v, _ in items]
        out = {key: [] for key in ("m_in", "m_ras", "m_gt", "e_in", "e_ras", "e_gt", "sm", "se")}
        for v, i in items:
            p, s = self.pairs[v], self.shots[v]
            js = rng.choice(len(s["mouth_in"]), size=k, replace=len(s["mouth_in"]) < k)
            out["m_in"].append(p["mouth_in"][i]); out["m_ras"].append(p["mouth_ras"][i]); out["m_gt"].append(p["mouth_gt"][i])
            out["e_in"].append(p["eyes_in"][i]); out["e_ras"].append(p["eyes_ras"][i]); out["e_gt"].append(p["eyes_gt"][i])
            out["sm"].append(np.concatenate([s["mouth_in"][js], s["mouth_ras"][js]], -1))
            out["se"].append(np.concatenate([s["eyes_in"][js], s["eyes_ras"][js]], -1))
        return batch_tensors(out, vids)


def pair_kinds(eyes_ras: np.ndarray, mouth_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: is the target's eye closing (both eyes' opening area under BLINK_SHARE of the
    clip's median) and is its mouth open (area above the clip's OPEN_QUANTILE, and not empty)?
    Read from the rasters' fill channel (2), so it needs no landmarks. Float 0/1 arrays."""
    eye = (eyes_ras[..., 2] >= 128).reshape(len(eyes_ras), -1).sum(1).astype(np.float64)
    mouth = (mouth_ras[..., 2] >= 128).reshape(len(mouth_ras), -1).sum(1).astype(np.float64)
    if len(eye) == 0:
        return np.zeros(0), np.zeros(0)
    blink = eye < BLINK_SHARE * np.median(eye)
    open_ = (mouth > np.quantile(mouth, OPEN_QUANTILE)) & (mouth > 0)
    return blink.astype(np.float64), open_.astype(np.float64)


def batch_tensors(out: dict, vids) -> dict:
    st = {k: np.stack(v) for k, v in out.items()}
    b = st["m_in"].shape[0]
    sm = st["sm"].reshape(-1, MOUTH, MOUTH, 6)
    se = st["se"].reshape(-1, EYE, EYE, 6)
    shot = lambda a: torch.cat([_u8_to_t(a[..., :3]), _ras_to_t(a[..., 3:])], -3)
    return dict(
        video=torch.as_tensor(np.asarray(vids), dtype=torch.long),
        m_in=torch.cat([_u8_to_t(st["m_in"]), _ras_to_t(st["m_ras"])], 1), m_gt=_u8_to_t(st["m_gt"]),
        e_in=torch.cat([_u8_to_t(st["e_in"]), _ras_to_t(st["e_ras"])], 2).flatten(0, 1),
        e_gt=_u8_to_t(st["e_gt"]).flatten(0, 1),
        sm=shot(sm), se=shot(se), k=sm.shape[0] // b)


# ---------------------------------------------------------------------------------------------
# Training
@dataclass
class RefinerConfig:
    data: str = ".cache/refiner"           # `puppetcam refiner-data` output (scripts/prepare_refiner.sh)
    val: str = ""                          # held-out clips' refiner-data (default: <data>/val)
    out: str = "runs/refiner"              # checkpoints, stats.jsonl, samples
    exclude: tuple = HELD_OUT              # identities never trained on (evaluation)
    val_ids: tuple = VALIDATION            # never trained on either: validation, checkpoint choice
                                           # (from `data`; none found: <data>/val is validated)
    boost_blink: float = 2.0               # pairs whose target eye is closing drawn (1 + this)x
                                           # as often (blinks are ~5 % of frames; lids were grey)
    boost_open: float = 1.0                # pairs whose target mouth is wide open: (1 + this)x
    preset: str = "default"                # network widths: default | tiny (unit tests only)
    batch: int = 8                         # episodes per step per process
    k_max: int = 8                         # shots per episode: K uniform in 1..k_max (paper: 8)
    steps: int = 3000                      # total optimiser steps
    lr_g: float = 2e-4                     # E, G, P
    lr_d: float = 4e-4                     # D (two time-scale rule)
    betas: tuple = (0.5, 0.999)
    w_l1: float = 10.0                     # pixel L1 (opening weighted up by `inside`)
    inside: float = 4.0                    # extra L1 weight inside the mouth / eye opening
    w_lap: float = 10.0                    # Laplacian-pyramid L1
    w_adv: float = 0.1                     # hinge adversarial
    w_fm: float = 1.0                      # D feature matching
    w_mch: float = 1.0                     # embedding match |W_i - e_hat|
    w_alpha: float = 0.02                  # mean alpha: leave the (sharp) warp alone where it is right
    no_embedder: bool = False              # ablation: e = 0 (no K conditioning)
    no_adversarial: bool = False           # ablation: no D (L1 + Laplacian only)
    threads: int = 1                       # torch threads per process (1 under torchrun on 2 cores)
    log_every: int = 25
    val_every: int = 250
    ckpt_every: int = 100
    val_pairs: int = 12                    # validation: per clip, this many random pairs plus up
                                           # to this many closing-eye and open-mouth pairs each
    snapshots: tuple = ()                  # steps at which to keep a copy (step_N.pt), e.g. to
                                           # compare ablations at equal training time
    seed: int = 0


class Nets(nn.Module):
    """Both regions' E, G, D (one module so checkpoints and DDP see one thing)."""

    def __init__(self, videos: int, m: RefinerNet | None = None, e: RefinerNet | None = None):
        super().__init__()
        self.mn, self.en = m or mouth_net(), e or eye_net()
        self.Em, self.Gm, self.Dm = Embedder(self.mn), Generator(self.mn), Discriminator(self.mn, videos)
        self.Ee, self.Ge, self.De = Embedder(self.en), Generator(self.en), Discriminator(self.en, videos)

    def gen_params(self):
        return [p for n in ("Em", "Gm", "Ee", "Ge") for p in getattr(self, n).parameters()]

    def disc_params(self):
        return [p for n in ("Dm", "De") for p in getattr(self, n).parameters()]

    def embed(self, b, zero=False):
        """Mean embeddings of the batch's shots: (e_mouth [B, D], e_eye [B, D])."""
        k = b["k"]
        em = self.Em.mean(b["sm"], k)
        ee = self.Ee.mean(b["se"], 2 * k)
        if zero:
            em, ee = em * 0, ee * 0
        return em, ee


def _psnr(a, b):
    mse = ((a - b) ** 2).mean().clamp_min(1e-10) * (127.5 ** 2)
    return 10 * math.log10(255 ** 2 / mse.item())


class RefinerTrainer:
    def __init__(self, cfg: RefinerConfig, data: RegionData | None = None, nets: Nets | None = None):
        self.cfg = cfg
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        torch.manual_seed(cfg.seed)
        self.data = data or RegionData(Path(cfg.data), exclude=tuple(cfg.exclude) + tuple(cfg.val_ids),
                                       boost_blink=cfg.boost_blink, boost_open=cfg.boost_open)
        if len(self.data) == 0:
            raise SystemExit(f"no refiner data in {cfg.data} (run scripts/prepare_refiner.sh)")
        # Same seed on every rank: identical initial weights; gradients are averaged by hand
        # (`_allreduce`) because the G and D steps update different parameter sets.
        self.nets = nets or Nets(len(self.data.videos), *preset_nets(cfg.preset))
        self.opt_g = torch.optim.Adam(self.nets.gen_params(), lr=cfg.lr_g, betas=tuple(float(b) for b in cfg.betas))
        self.opt_d = torch.optim.Adam(self.nets.disc_params(), lr=cfg.lr_d, betas=tuple(float(b) for b in cfg.betas))
        self.step = 0
        self.cpu_s = 0.0
        self.best = (-math.inf, 0)   # (validation score, step) of best.pt

    def state(self) -> dict:
        return dict(kind="puppetcam-refiner", contract=CONTRACT, step=self.step, config=asdict(self.cfg),
                    mouth_net=asdict(self.nets.mn), eye_net=asdict(self.nets.en), videos=self.data.videos,
                    held_out=list(self.cfg.exclude), validation=list(self.cfg.val_ids), cpu_seconds=self.cpu_s,
                    content_loss="L1 (opening x%g) + Laplacian-pyramid L1 + D feature matching; no perceptual "
                                 "network (none installs from a registry without a download)" % (1 + self.cfg.inside),
                    best=list(self.best), nets=self.nets.state_dict(), opt_g=self.opt_g.state_dict(), opt_d=self.opt_d.state_dict())

    def load_state(self, s: dict):
        if s["videos"] != self.data.videos:
            raise SystemExit(f"checkpoint videos {s['videos']} != data videos {self.data.videos}")
        self.nets.load_state_dict(s["nets"])
        self.opt_g.load_state_dict(s["opt_g"])
        self.opt_d.load_state_dict(s["opt_d"])
        self.step, self.cpu_s = s["step"], s.get("cpu_seconds", 0.0)
        self.best = tuple(s.get("best", (-math.inf, 0)))

    def train_step(self) -> dict:
        c = self.cfg
        rng = np.random.default_rng((c.seed, self.step, self.rank))
        k = int(rng.integers(1, c.k_max + 1))
        b = self.data.episode(rng, c.batch, k)
        t0 = time.process_time()
        N = self.nets
        vid = b["video"]
        em, ee = N.embed(b, zero=c.no_embedder)
        ee2 = ee.repeat_interleave(2, 0)
        wm, we = N.Dm.W[vid] + N.Dm.w0, N.De.W[vid] + N.De.w0
        lm, out_m, sm = g_region_loss(c, N.Gm, N.Dm, b["m_in"], b["m_gt"], em, wm)
        le, out_e, se = g_region_loss(c, N.Ge, N.De, b["e_in"], b["e_gt"], ee2, we.repeat_interleave(2, 0))
        # Embedding match: e_hat towards the video's row W_i (not W_i + w0: w0 is what all
        # videos share, and fine-tuning starts from w0 + e_new).
        mch = F.l1_loss(em, N.Dm.W[vid].detach()) + F.l1_loss(ee, N.De.W[vid].detach())
        loss_g = lm + le + (0 if c.no_embedder else c.w_mch * mch)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._allreduce(N.gen_params())
        self.opt_g.step()
        stats = {f"m_{k}": v for k, v in sm.items()} | {f"e_{k}": v for k, v in se.items()} | dict(k=k, mch=mch.item())
        if not c.no_adversarial:
            ld = d_region_loss(N.Dm, b["m_in"], b["m_gt"], out_m, N.Dm.W[vid] + N.Dm.w0) \
                + d_region_loss(N.De, b["e_in"], b["e_gt"], out_e, (N.De.W[vid] + N.De.w0).repeat_interleave(2, 0))
            ld = ld + c.w_mch * (F.l1_loss(em.detach(), N.Dm.W[vid]) + F.l1_loss(ee.detach(), N.De.W[vid]))
            self.opt_d.zero_grad(set_to_none=True)
            ld.backward()
            self._allreduce(N.disc_params())
            self.opt_d.step()
            stats["loss_d"] = ld.item()
        self.cpu_s += time.process_time() - t0
        self.step += 1
        self._last = (b, out_m.detach(), out_e.detach())
        return stats

    def _allreduce(self, params):
        """Gradient averaging by hand (the G and D steps use different parameter sets)."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world

    @torch.no_grad()
    def validate(self, val: RegionData, episodes: int | None = None, k: int = 4) -> dict:
        """PSNR of the refined crops and of the warp alone on clips never trained on, over a fixed
        draw of pairs: per clip `episodes` (default cfg.val_pairs) random pairs plus as many
        closing-eye and open-mouth ones. Mouth and eye crops; the mouth opening (raster fill);
        the eye crops of closing-eye pairs. `val_score`, the sum of the refined PSNRs, chooses
        the checkpoint to ship."""
        rng = np.random.default_rng(1234)
        n = episodes or self.cfg.val_pairs
        items, closing = [], []
        for v in range(len(val)):
            m = len(val.prob[v])
            pick = [rng.choice(m, size=min(n, m), replace=False)]
            for kind in (val.blink[v], val.open[v]):
                idx = np.flatnonzero(kind)
                pick.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
            for i in np.concatenate(pick):
                items.append((v, int(i)))
                closing.append(bool(val.blink[v][i]))
        was = self.nets.training
        self.nets.eval()  # no spectral-norm power iteration here (ranks stay in sync)
        se = {key: [0.0, 0.0] for key in ("m_warp", "m_ref", "e_warp", "e_ref", "m_open_warp", "m_open_ref",
                                          "e_closed_warp", "e_closed_ref")}

        def add(key, err, weight):
            se[key][0] += float(err.sum())
            se[key][1] += float(weight)

        for c in range(0, len(items), 8):
            b = val.batch(rng, items[c:c + 8], k)
            em, ee = self.nets.embed(b, zero=self.cfg.no_embedder)
            rgb, a = self.nets.Gm(b["m_in"], em)
            om = composite(b["m_in"], rgb, a)
            rgb, a = self.nets.Ge(b["e_in"], ee.repeat_interleave(2, 0))
            oe = composite(b["e_in"], rgb, a)
            mask = b["m_in"][:, 5:6]
            shut = torch.tensor(closing[c:c + 8]).repeat_interleave(2)[:, None, None, None].float()
            for tag, mo, eo in (("warp", b["m_in"][:, :3], b["e_in"][:, :3]), ("ref", om, oe)):
                em2, ee2 = (mo - b["m_gt"]) ** 2, (eo - b["e_gt"]) ** 2
                add(f"m_{tag}", em2, em2.numel())
                add(f"e_{tag}", ee2, ee2.numel())
                add(f"m_open_{tag}", em2 * mask, 3 * mask.sum())
                add(f"e_closed_{tag}", ee2 * shut, shut.sum() * ee2[0].numel())
        self.nets.train(was)
        out = {f"val_{key}": (10 * math.log10(4 / max(e / w, 1e-10)) if w > 0 else float("nan")) for key, (e, w) in se.items()}
        out["val_score"] = sum(out[f"val_{key}_ref"] for key in ("m", "e", "m_open", "e_closed") if math.isfinite(out[f"val_{key}_ref"]))
        return out

    def save_sample(self, path: Path):
        import cv2
        b, om, oe = self._last
        u8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        rows = []
        for i in range(min(6, om.shape[0])):
            eye = lambda t: np.concatenate([cv2.resize(u8(t[2 * i]), (MOUTH, MOUTH)), cv2.resize(u8(t[2 * i + 1]), (MOUTH, MOUTH))], 1)
            rows.append(np.concatenate([u8(b["m_in"][i, :3]), u8(om[i]), u8(b["m_gt"][i]),
                                        eye(b["e_in"][:, :3]), eye(oe), eye(b["e_gt"])], 1))
        cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))


def is_dist():
    return "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def train(cfg: RefinerConfig, resume: str | None = None, max_steps: int | None = None,
          progress: bool = True) -> RefinerTrainer:
    """Meta-trains until cfg.steps (or max_steps more); resumable from `resume` (or out/latest.pt)."""
    if is_dist() and not dist.is_initialized():
        dist.init_process_group("gloo")
    torch.set_num_threads(cfg.threads)
    tr = RefinerTrainer(cfg)
    out = Path(cfg.out)
    latest = out / "latest.pt"
    if resume is None and latest.is_file():
        resume = str(latest)
    if resume:
        tr.load_state(ckpt.load(resume))
    main = tr.rank == 0
    val = None
    vdir = Path(cfg.val) if cfg.val else Path(cfg.data) / "val"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.val:
            val = RegionData(vdir)
        else:
            val = RegionData(Path(cfg.data), only=cfg.val_ids) if cfg.val_ids else None
            if (val is None or len(val) == 0) and vdir.is_dir():
                val = RegionData(vdir)
        print(f"refiner meta-training: {len(tr.data)} clips, {tr.data.n_pairs()} pairs, "
              f"held out {list(cfg.exclude)}, validation {val.videos if val is not None else []}, from step {tr.step}" + (" (DDP x%d)" % tr.world if tr.world > 1 else ""), flush=True)
    stop = cfg.steps if max_steps is None else min(cfg.steps, tr.step + max_steps)
    log = open(out / "stats.jsonl", "a") if main else None
    bar = None
    if main and progress:
        from tqdm import tqdm
        bar = tqdm(total=stop, initial=tr.step, unit="step", dynamic_ncols=True)
    t0 = time.time()
    while tr.step < stop:
        st = tr.train_step()
        if bar:
            bar.update(1)
            bar.set_postfix(l1=f"{st['m_l1']:.3f}", alpha=f"{st['m_alpha']:.2f}")
        if main and (tr.step % cfg.log_every == 0 or tr.step == stop):
            st.update(step=tr.step, sec_per_step=(time.time() - t0) / cfg.log_every, cpu_seconds=tr.cpu_s)
            t0 = time.time()
            if val is not None and len(val) and (tr.step % cfg.val_every == 0 or tr.step == stop):
                st.update(tr.validate(val))
                # The checkpoint to ship: the best validation score so far (best.pt).
                if math.isfinite(st["val_score"]) and st["val_score"] > tr.best[0]:
                    tr.best = (st["val_score"], tr.step)
                    ckpt.save(out / "best.pt", tr.state())
                st["best_step"] = tr.best[1]
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in st.items()}), flush=True)
            log.write(json.dumps(st) + "\n")
            log.flush()
        if main and tr.step % cfg.val_every == 0:
            tr.save_sample(out / f"sample_{tr.step:06d}.png")
        if main and (tr.step % cfg.ckpt_every == 0 or tr.step == stop):
            ckpt.save(latest, tr.state())
        if main and str(tr.step) in {str(x) for x in cfg.snapshots}:
            ckpt.save(out / f"step_{tr.step}.pt", tr.state())
    if bar:
        bar.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    return tr


# ---------------------------------------------------------------------------------------------
# Shipping: the meta-learned weights without optimiser state (onnx/refiner_meta.pt)
def ship(state: dict, path: Path):
    """Writes the weights users fine-tune from: E, G, D, the config and the provenance (no
    optimiser state), fp32."""
    keep = {k: v for k, v in state.items() if k not in ("opt_g", "opt_d")}
    keep["kind"] = "puppetcam-refiner-meta"
    ckpt.save(path, keep)


def load_nets(state: dict) -> Nets:
    n = Nets(len(state["videos"]), RefinerNet(**_tuples(state["mouth_net"])), RefinerNet(**_tuples(state["eye_net"])))
    n.load_state_dict(state["nets"])
    return n.eval()


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


# ---------------------------------------------------------------------------------------------
# Personalisation (avatar create): fine-tune G and D on the avatar's shots
def load_shot_dir(d: Path) -> tuple[dict, dict | None]:
    """Shots and (optional) pairs written by `avatar create` (same layout as refiner-data)."""
    d = Path(d)
    ld = lambda k: np.load(d / f"avatar.{k}.npy")
    shots = {k: ld(f"shots.{k}") for k in ("mouth_in", "mouth_ras", "eyes_in", "eyes_ras")}
    pairs = None
    if (d / "avatar.pairs.mouth_in.npy").is_file():
        pairs = {k: ld(f"pairs.{k}") for k in ("mouth_in", "mouth_ras", "mouth_gt", "eyes_in", "eyes_ras", "eyes_gt")}
    return shots, pairs


def shots_batch(shots: dict) -> dict:
    k = len(shots["mouth_in"])
    out = dict(sm=[np.concatenate([shots["mouth_in"], shots["mouth_ras"]], -1)],
               se=[np.concatenate([shots["eyes_in"], shots["eyes_ras"]], -1)],
               m_in=[shots["mouth_in"][0]], m_ras=[shots["mouth_ras"][0]], m_gt=[shots["mouth_in"][0]],
               e_in=[shots["eyes_in"][0]], e_ras=[shots["eyes_ras"][0]], e_gt=[shots["eyes_in"][0]])
    b = batch_tensors(out, [0])
    assert b["k"] == k
    return b


class Personalised(nn.Module):
    """G_m, G_e and the avatar's embeddings: what goes into the avatar file."""

    def __init__(self, nets: Nets, em: torch.Tensor, ee: torch.Tensor):
        super().__init__()
        self.Gm, self.Ge = nets.Gm, nets.Ge
        self.em, self.ee = nn.Parameter(em.detach().clone()), nn.Parameter(ee.detach().clone())


def finetune(meta: dict, shots: dict, pairs: dict | None, steps: int, lr_g: float = 5e-5, lr_d: float = 2e-4,
             progress: bool = True, seed: int = 0, threads: int = 0) -> tuple[Personalised, dict]:
    """Paper section 3.3: e_new = mean E(shots); G and its AdaIN parameters (through e) start
    from the meta-learned ones, D's projection from w' = w0 + e_new; then G, e and D are trained
    on the avatar's own pairs (each shot warped to each other shot's landmarks, and itself)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = RefinerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
    nets = load_nets(meta)
    sb = shots_batch(shots)
    with torch.no_grad():
        em, ee = nets.embed(sb, zero=cfg.no_embedder)
    pers = Personalised(nets, em, ee)
    info = dict(k=int(sb["k"]), steps=steps, lr_g=lr_g)
    if steps <= 0 or pairs is None or len(pairs["mouth_in"]) == 0:
        return pers.eval(), info
    wm = nn.Parameter((nets.Dm.w0 + em[0]).detach().clone())
    we = nn.Parameter((nets.De.w0 + ee[0]).detach().clone())
    opt_g = torch.optim.Adam(pers.parameters(), lr=lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(list(nets.Dm.parameters()) + list(nets.De.parameters()) + [wm, we], lr=lr_d, betas=(0.5, 0.999))
    rng = np.random.default_rng(seed)
    n = len(pairs["mouth_in"])
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, unit="step", desc="fine-tuning the refiner", dynamic_ncols=True)
    pers.train()
    for step in range(steps):
        idx = rng.integers(0, n, min(8, max(2, n)))
        out = {key: [] for key in ("m_in", "m_ras", "m_gt", "e_in", "e_ras", "e_gt", "sm", "se")}
        for i in idx:
            for key, src in (("m_in", "mouth_in"), ("m_ras", "mouth_ras"), ("m_gt", "mouth_gt"),
                             ("e_in", "eyes_in"), ("e_ras", "eyes_ras"), ("e_gt", "eyes_gt")):
                out[key].append(pairs[src][i])
            out["sm"].append(np.zeros((1, MOUTH, MOUTH, 6), np.uint8))
            out["se"].append(np.zeros((1, 2, EYE, EYE, 6), np.uint8))
        b = batch_tensors(out, np.zeros(len(idx), np.int64))
        loss = 0
        outs = []
        for G, D, x_in, gt, e, w in ((pers.Gm, nets.Dm, b["m_in"], b["m_gt"], pers.em, wm), (pers.Ge, nets.De, b["e_in"], b["e_gt"], pers.ee, we)):
            m = x_in.shape[0]
            lg, o, _ = g_region_loss(cfg, G, D, x_in, gt, e.expand(m, -1), w.expand(m, -1))
            loss = loss + lg
            outs.append((D, x_in, gt, o, w.expand(m, -1)))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if not cfg.no_adversarial:
            ld = sum(d_region_loss(*o) for o in outs)
            opt_d.zero_grad(set_to_none=True)
            ld.backward()
            opt_d.step()
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return pers.eval(), info


# ---------------------------------------------------------------------------------------------
# Export (ONNX contract refiner-1; docs/refiner.md)
class RefinerGraph(nn.Module):
    """The exported refiner: inputs mouth [1,6,96,96], eyes [2,6,48,48], e_mouth [1,D], e_eye
    [1,D]; outputs mouth_out [1,4,96,96], eyes_out [2,4,48,48] (RGB in [-1,1], alpha)."""

    def __init__(self, Gm, Ge, half: bool = False):
        super().__init__()
        self.Gm, self.Ge, self.half_ = Gm, Ge, half

    def forward(self, mouth, eyes, e_mouth, e_eye):
        if self.half_:
            mouth, eyes, e_mouth, e_eye = mouth.half(), eyes.half(), e_mouth.half(), e_eye.half()
        rm, am = self.Gm(mouth, e_mouth)
        re, ae = self.Ge(eyes, e_eye.expand(eyes.shape[0], -1))
        return torch.cat([rm, am], 1).float(), torch.cat([re, ae], 1).float()


class EmbedderGraph(nn.Module):
    """The exported embedder: mouth [K,6,96,96], eyes [2K,6,48,48] -> e_mouth, e_eye [1,D]."""

    def __init__(self, Em, Ee, zero: bool = False):
        super().__init__()
        self.Em, self.Ee, self.zero = Em, Ee, zero

    def forward(self, mouth, eyes):
        em, ee = self.Em(mouth).mean(0, keepdim=True), self.Ee(eyes).mean(0, keepdim=True)
        if self.zero:
            em, ee = em * 0, ee * 0
        return em, ee


class ExportMismatch(RuntimeError):
    pass


TOLERANCE = {"fp32": 2e-3, "fp16": 5e-2}


def _example(seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.cat([torch.rand(1, 3, MOUTH, MOUTH, generator=g) * 2 - 1, (torch.rand(1, 3, MOUTH, MOUTH, generator=g) > 0.8).float()], 1)
    e = torch.cat([torch.rand(2, 3, EYE, EYE, generator=g) * 2 - 1, (torch.rand(2, 3, EYE, EYE, generator=g) > 0.8).float()], 1)
    return m, e


def export_refiner(Gm, Ge, em, ee, path: Path, precision: str = "fp32", meta: dict | None = None,
                   check_inputs=None) -> float:
    """Writes the refiner ONNX after checking ORT against torch; returns the max difference.
    A mismatch raises ExportMismatch and writes nothing."""
    import onnx
    import onnxruntime as ort
    half = precision == "fp16"
    g = RefinerGraph(_copy(Gm, half), _copy(Ge, half), half).eval()
    m, e = _example()
    em, ee = em.detach().reshape(1, -1).float(), ee.detach().reshape(1, -1).float()
    path = Path(path)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(g, (m, e, em, ee), str(tmp), input_names=["mouth", "eyes", "e_mouth", "e_eye"],
                          output_names=["mouth_out", "eyes_out"], opset_version=17, dynamo=False)
    model = onnx.load(str(tmp))
    for k, v in {"puppetcam.contract": CONTRACT, "puppetcam.precision": precision, **(meta or {})}.items():
        p = model.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(model, str(tmp))
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    worst = 0.0
    ref = RefinerGraph(Gm, Ge, False).eval()
    for mi, ei in [(m, e)] + list(check_inputs or []):
        with torch.no_grad():
            tm, te = ref(mi, ei, em, ee)
        om, oe = sess.run(None, {"mouth": mi.numpy(), "eyes": ei.numpy(), "e_mouth": em.numpy(), "e_eye": ee.numpy()})
        worst = max(worst, float(np.abs(om - tm.numpy()).max()), float(np.abs(oe - te.numpy()).max()))
    if not worst <= TOLERANCE[precision]:
        tmp.unlink(missing_ok=True)
        raise ExportMismatch(f"ORT differs from torch by {worst:.3g} (> {TOLERANCE[precision]}) in {precision}")
    os.replace(tmp, path)
    return worst


def export_embedder(Em, Ee, path: Path, zero: bool = False) -> float:
    import onnxruntime as ort
    Em = _plain(Em, lambda: Embedder(Em.n))
    Ee = _plain(Ee, lambda: Embedder(Ee.n))
    g = EmbedderGraph(Em, Ee, zero).eval()
    m, e = _example(1)
    m3, e3 = torch.cat([m, m.flip(3), m * 0.5]), torch.cat([e, e.flip(3), e * 0.5])
    path = Path(path)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(g, (m3, e3), str(tmp), input_names=["mouth", "eyes"], output_names=["e_mouth", "e_eye"],
                          dynamic_axes={"mouth": {0: "k"}, "eyes": {0: "k2"}}, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    worst = 0.0
    for mi, ei in ((m, e), (m3, e3)):
        with torch.no_grad():
            tm, te = g(mi, ei)
        om, oe = sess.run(None, {"mouth": mi.numpy(), "eyes": ei.numpy()})
        worst = max(worst, float(np.abs(om - tm.numpy()).max()), float(np.abs(oe - te.numpy()).max()))
    if not worst <= 1e-3:
        tmp.unlink(missing_ok=True)
        raise ExportMismatch(f"embedder: ORT differs from torch by {worst:.3g}")
    os.replace(tmp, path)
    return worst


def _copy(G: Generator, half: bool) -> Generator:
    import copy
    c = copy.deepcopy(G).eval()
    return c.half() if half else c
