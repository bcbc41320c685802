"""Meta-learning stage (paper, section 3.2): episodes of K frames + 1 target of one video train
E, G (with P) and D together. Single process on CPU, or DDP under torchrun (WORLD_SIZE set).
Resumable: checkpoints hold networks, optimisers, step and config; stats go to stats.jsonl.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoint as ckpt
from . import losses as LS
from .dataset import ClipStore, EpisodeDataset, to_uint8
from .networks import NetConfig, build


@dataclass
class TrainConfig:
    data: str = ".cache/train"           # prepare_data.py cache
    out: str = "runs/meta"               # checkpoints, stats.jsonl, samples
    preset: str = "small"                # NetConfig preset: small | paper
    exclude: tuple = ("lp_d5", "lp_d18")  # held-out identities (evaluation only)
    k: int = 8                           # shots per episode (paper: K = 8)
    batch: int = 2                       # episodes per step per process
    steps: int = 100_000                 # total optimiser steps
    lr_g: float = 5e-5                   # E, G, P (paper: 5e-5)
    lr_d: float = 2e-4                   # D (paper: 2e-4, two time-scale rule)
    beta1: float = 0.0                   # Adam betas usual for spectrally normalised GANs
    beta2: float = 0.999
    w_adv: float = 1.0                   # hinge adversarial
    w_fm: float = 10.0                   # D feature matching (paper: 10)
    w_mch: float = 80.0                  # embedding match ||W_i - e_hat||_1 (paper: 80)
    w_l1: float = 10.0                   # pixel L1: carries the content term without VGG weights
    vgg19_weights: str = ""              # local torchvision VGG19 state_dict (optional)
    vggface_weights: str = ""            # local VGGFace (VGG16 layout) state_dict (optional)
    threads: int = 1                     # torch CPU threads per process (more threads on a
                                         # busy 2-core box spin in OpenMP barriers: 7x slower)
    log_every: int = 10
    ckpt_every: int = 200
    sample_every: int = 200
    seed: int = 0


def is_dist():
    return "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def unwrap(m):
    return m.module if isinstance(m, DDP) else m


def collate(items):
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class Trainer:
    def __init__(self, cfg: TrainConfig, store: ClipStore | None = None):
        self.cfg = cfg
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        torch.manual_seed(cfg.seed)
        self.store = store or ClipStore(Path(cfg.data), exclude_identities=set(cfg.exclude))
        if len(self.store) == 0:
            raise SystemExit(f"no clips in {cfg.data} (run prepare_data.py)")
        self.net_cfg = NetConfig.preset_config(cfg.preset)
        self.E, self.G, self.D = build(self.net_cfg, len(self.store.videos))
        self.opt_g = torch.optim.Adam(list(self.E.parameters()) + list(self.G.parameters()),
                                      lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.perc = LS.Perceptual(cfg.vgg19_weights, cfg.vggface_weights)
        self.data = EpisodeDataset(self.store, cfg.k, length=1 << 62, seed=cfg.seed)
        self.step = 0
        self.history = []  # earlier segments of this run (data, landmark backend, until step)
        if dist.is_initialized():
            self.E, self.G, self.D = (DDP(m) for m in (self.E, self.G, self.D))

    # --- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return dict(kind="puppetcam-meta", step=self.step, config=asdict(self.cfg),
                    net=asdict(self.net_cfg), videos=self.store.videos,
                    identities=sorted({m["identity"] for m in self.store.meta}),
                    landmark_backend=",".join(self.store.backends()), history=self.history,
                    content_loss=self.perc.describe(),
                    E=unwrap(self.E).state_dict(), G=unwrap(self.G).state_dict(),
                    D=unwrap(self.D).state_dict(), opt_g=self.opt_g.state_dict(),
                    opt_d=self.opt_d.state_dict())

    def load_state(self, s: dict):
        if s["videos"] != self.store.videos:  # D's rows W_i are indexed by these
            raise SystemExit(f"checkpoint videos {s['videos']} != data videos {self.store.videos}")
        for name in ("E", "G", "D"):
            unwrap(getattr(self, name)).load_state_dict(s[name])
        self.opt_g.load_state_dict(s["opt_g"])
        self.opt_d.load_state_dict(s["opt_d"])
        self.step = s["step"]
        # A resumed run may use another cache (e.g. landmarks re-extracted with the binary):
        # keep where each stretch of steps came from.
        seg = dict(until_step=s["step"], data=s["config"]["data"], landmark_backend=s.get("landmark_backend"))
        hist = list(s.get("history", []))
        if hist and all(hist[-1][k] == seg[k] for k in ("data", "landmark_backend")):
            hist[-1] = seg
        else:
            hist.append(seg)
        self.history = hist

    # --- one optimiser step ------------------------------------------------------------------
    def batch(self):
        # Deterministic in the step number, so a resumed run sees the same episodes.
        base = (self.step * self.world + self.rank) * self.cfg.batch
        return collate([self.data[base + j] for j in range(self.cfg.batch)])

    def train_step(self) -> dict:
        c, b = self.cfg, self.batch()
        E, G, D = self.E, self.G, self.D
        img, raster, vid = b["img"], b["raster"], b["video"]
        n = img.shape[0]
        # Every parameter is used inside a forward() (DDP's requirement): P in G, W/w0 in D.

        # Generator / embedder step. One D forward on [real; fake] (one forward per backward).
        e_hat = E(b["shots_img"], b["shots_raster"])
        fake = G(raster, e=e_hat)
        score, feats, w = D(torch.cat([img, fake]), torch.cat([raster, raster]), torch.cat([vid, vid]))
        fm = LS.feature_matching([f[n:] for f in feats], [f[:n] for f in feats])
        adv = LS.g_hinge(score[n:])
        l1 = LS.l1(fake, img)
        # L_MCH matches e_hat against the video's own row W_i (the score uses W_i + w0; w0 is
        # shared by all videos, and fine-tuning starts from w' = w0 + e_new).
        W_i = unwrap(D).W[vid]
        mch = LS.embedding_match(e_hat, W_i.detach())  # W moves towards e_hat in the D step
        perc = self.perc(fake, img)
        loss_g = c.w_adv * adv + c.w_fm * fm + c.w_l1 * l1 + c.w_mch * mch + perc
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()

        # Discriminator step (its grads from the G step are discarded).
        score, _, w = D(torch.cat([img, fake.detach()]), torch.cat([raster, raster]), torch.cat([vid, vid]))
        loss_d = LS.d_hinge(score[:n], score[n:]) + c.w_mch * LS.embedding_match(e_hat.detach(), unwrap(D).W[vid])
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.step += 1
        self._last = (b, fake.detach())
        return dict(loss_g=loss_g.item(), adv=adv.item(), fm=fm.item(), l1=l1.item(),
                    mch=mch.item(), perc=float(perc), loss_d=loss_d.item(),
                    d_real=score[:n].mean().item(), d_fake=score[n:].mean().item())

    def save_sample(self, path: Path):
        import cv2
        import numpy as np
        b, fake = self._last
        rows = [np.concatenate([to_uint8(b["shots_img"][i, 0]), to_uint8(b["raster"][i]),
                                to_uint8(fake[i]), to_uint8(b["img"][i])], 1) for i in range(len(fake))]
        cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))


def run(cfg: TrainConfig, resume: str | None = None, max_steps: int | None = None) -> Trainer:
    """Trains until cfg.steps (or max_steps more steps); returns the trainer."""
    if is_dist() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.set_num_threads(cfg.threads)
    tr = Trainer(cfg)
    out = Path(cfg.out)
    if resume:
        tr.load_state(ckpt.load(resume))
    main = tr.rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
        print(f"meta-training {cfg.preset}: {len(tr.store)} clips, videos={len(tr.store.videos)}, "
              f"landmarks={tr.store.backends()}, content loss: {tr.perc.describe()}, from step {tr.step}",
              flush=True)
    stop = cfg.steps if max_steps is None else min(cfg.steps, tr.step + max_steps)
    t0, log = time.time(), open(out / "stats.jsonl", "a") if main else None
    while tr.step < stop:
        stats = tr.train_step()
        if main and (tr.step % cfg.log_every == 0 or tr.step == stop):
            stats.update(step=tr.step, sec_per_step=(time.time() - t0) / cfg.log_every, time=time.time())
            t0 = time.time()
            log.write(json.dumps(stats) + "\n")
            log.flush()
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in stats.items() if k != "time"), flush=True)
        if main and tr.step % cfg.sample_every == 0:
            tr.save_sample(out / f"sample_{tr.step:07d}.jpg")
        if main and (tr.step % cfg.ckpt_every == 0 or tr.step == stop):
            ckpt.save(out / "latest.pt", tr.state())
    if dist.is_initialized():
        dist.destroy_process_group()
    return tr
