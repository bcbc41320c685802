"""Few-shot personalisation (paper, section 3.3): from 1..32 images or frames of a new person,
initialise psi' = P e_new and w' = w0 + e_new, then fine-tune G (with psi') and D (with w') on the
shots with the content + adversarial losses. The result is a PersonalisedGenerator (raster in,
image out) plus the portrait data that export.py needs for the ONNX metadata.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, asdict

import cv2
import numpy as np
import torch
import torch.nn as nn

from . import checkpoint as ckpt
from . import dataset as DS
from . import landmarks as L
from . import losses as LS
from . import raster as R
from .networks import NetConfig, Embedder, Generator, Discriminator, PersonalisedGenerator


@dataclass
class FinetuneConfig:
    steps: int = 100          # optimiser steps over the shots
    batch: int = 1            # shots per step
    lr_g: float = 5e-5        # paper: same rates as meta-learning
    lr_d: float = 2e-4
    w_adv: float = 1.0
    w_fm: float = 10.0
    w_l1: float = 10.0
    threads: int = 1          # see TrainConfig.threads
    seed: int = 0


@dataclass
class Shots:
    """K face crops with their rasters and landmarks (crop pixels)."""
    imgs: np.ndarray      # (K,256,256,3) uint8
    rasters: np.ndarray   # (K,256,256,3) uint8
    lm68: np.ndarray      # (K,68,2)
    iris: list            # K x ((2,3) array or None)
    boxes: list           # K x (x0, y0, side) in source pixels
    source: str
    backend: str


def shots_from_images(images_rgb: list[np.ndarray], backend="auto", source="images") -> Shots:
    """Stills: each image gets its own crop box (the face crop rule)."""
    backend = L.resolve_backend(backend)
    out = dict(imgs=[], rasters=[], lm68=[], iris=[], boxes=[])
    for img in images_rgb:
        r = L.landmarks_for_image(img, backend)
        if r is None:
            continue  # no face: skipped
        pts, irs, _ = r
        box = R.crop_box_from_68(pts)
        lm = R.to_crop(pts, box).astype(np.float32)
        ic = None
        if irs is not None:
            ic = np.concatenate([R.to_crop(irs[:, :2], box), irs[:, 2:] * 256.0 / box[2]], 1)
        out["imgs"].append(R.warp_to_crop(img, box))
        out["rasters"].append(R.rasterise(lm, ic))
        out["lm68"].append(lm)
        out["iris"].append(ic)
        out["boxes"].append(box)
    if not out["imgs"]:
        raise ValueError("no face found in any shot image")
    return Shots(np.stack(out["imgs"]), np.stack(out["rasters"]), np.stack(out["lm68"]),
                 out["iris"], out["boxes"], source, backend)


def shots_from_cache(arrays: dict, idx, source: str, backend: str, box) -> Shots:
    """Shots taken from a prepared clip (video frames share the clip's median box)."""
    iris = [None if np.isnan(i).any() else np.asarray(i) for i in arrays["iris"][idx]]
    return Shots(np.asarray(arrays["frames"][idx]), np.asarray(arrays["rasters"][idx]),
                 np.asarray(arrays["lm68"][idx]), iris, [tuple(box)] * len(idx), source, backend)


def load_meta(path) -> tuple[dict, Embedder, Generator, Discriminator]:
    s = ckpt.load(path)
    ncfg = NetConfig(**{**s["net"], "g_channels": tuple(s["net"]["g_channels"]),
                        "d_channels": tuple(s["net"]["d_channels"])})
    E, G, D = Embedder(ncfg), Generator(ncfg), Discriminator(ncfg, len(s["videos"]))
    E.load_state_dict(s["E"]), G.load_state_dict(s["G"]), D.load_state_dict(s["D"])
    return s, E.eval(), G.eval(), D.eval()  # eval: spectral norms fixed (no power iteration)


class PersonalDiscriminator(nn.Module):
    """D with its projection vector replaced by a free w' (initialised to w0 + e_new)."""

    def __init__(self, D: Discriminator, e_new: torch.Tensor):
        super().__init__()
        self.D = D
        self.w = nn.Parameter((D.w0 + e_new.reshape(-1)).detach().clone())

    def forward(self, img, raster):
        return self.D.score_with(img, raster, self.w.expand(img.shape[0], -1))


def init_personal(E, G, D, shots: Shots):
    """The paper's initialisation: e_new = mean_k E(x_k, y_k); psi' = P e_new; w' = w0 + e_new."""
    imgs, rasters = DS.to_tensor(shots.imgs)[None], DS.to_tensor(shots.rasters)[None]
    with torch.no_grad():
        e_new = E(imgs, rasters)[0]
        psi = G.adain_params(e_new[None])[0]
    return PersonalisedGenerator(copy.deepcopy(G), psi), PersonalDiscriminator(copy.deepcopy(D), e_new), e_new


def finetune(meta_ckpt: str, shots: Shots, cfg: FinetuneConfig, log=print):
    """Returns (PersonalisedGenerator in eval mode, provenance dict)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    s, E, G, D = load_meta(meta_ckpt)
    PG, PD, e_new = init_personal(E, G, D, shots)
    opt_g = torch.optim.Adam(PG.parameters(), lr=cfg.lr_g, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(PD.parameters(), lr=cfg.lr_d, betas=(0.0, 0.999))
    imgs, rasters = DS.to_tensor(shots.imgs), DS.to_tensor(shots.rasters)
    rng = np.random.default_rng(cfg.seed)
    PG.train(), PD.train()
    for step in range(cfg.steps):
        j = rng.integers(0, len(imgs), cfg.batch)
        x, y = imgs[j], rasters[j]
        fake = PG(y)
        score, feats = PD(torch.cat([x, fake]), torch.cat([y, y]))
        n = len(j)
        adv = LS.g_hinge(score[n:])
        fm = LS.feature_matching([f[n:] for f in feats], [f[:n] for f in feats])
        l1 = LS.l1(fake, x)
        loss_g = cfg.w_adv * adv + cfg.w_fm * fm + cfg.w_l1 * l1
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        score, _ = PD(torch.cat([x, fake.detach()]), torch.cat([y, y]))
        loss_d = LS.d_hinge(score[:n], score[n:])
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        if log and ((step + 1) % 10 == 0 or step + 1 == cfg.steps):
            log(f"finetune {step + 1}/{cfg.steps} loss_g={loss_g.item():.4f} l1={l1.item():.4f} "
                f"fm={fm.item():.4f} adv={adv.item():.4f} loss_d={loss_d.item():.4f}")
    prov = dict(meta_checkpoint=str(meta_ckpt), meta_step=s["step"], meta_config=s["config"],
                net=s["net"], meta_landmark_backend=s.get("landmark_backend"),
                content_loss=s.get("content_loss"), shots=len(imgs), shots_source=shots.source,
                shots_landmark_backend=shots.backend, finetune=asdict(cfg),
                meta_versions=s.get("versions"))
    return PG.eval(), prov


def portrait_rgb(spec: str) -> np.ndarray:
    """An image file, or 'skimage:astronaut' (public-domain NASA photo shipped with scikit-image)."""
    if spec.startswith("skimage:"):
        import skimage.data
        return np.ascontiguousarray(getattr(skimage.data, spec.split(":", 1)[1])()[..., :3])
    bgr = cv2.imread(spec, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(spec)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
