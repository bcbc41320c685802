"""Embedder E, generator G and projection discriminator D of Zakharov et al. 2019, plus the
personalised generator (AdaIN parameters baked in) that export.py turns into ONNX.

Spectral norm on every conv/linear of all three networks, as in the paper. Widths come from a
NetConfig preset: `small` (~1.4 GFLOP per 256 px frame, real time on a 2-core CPU through ONNX
Runtime) and `paper` (64..512 channels, the paper's depth).
"""
from __future__ import annotations

from dataclasses import dataclass, field, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


@dataclass
class NetConfig:
    preset: str = "small"
    resolution: int = 256                 # raster and image side (the ONNX contract fixes 256)
    g_channels: tuple = (8, 16, 32, 64, 128)  # G: stem width, then after each downsampling block
    g_res_blocks: int = 2                 # AdaIN residual blocks at the bottleneck
    g_attn_res: int = 16                  # G self-attention at this resolution (0: none)
    d_channels: tuple = (8, 16, 32, 64, 128, 256)  # E and D: stem width, then after each down block
    d_attn_res: int = 32                  # E/D self-attention resolution (0: none)
    emb_dim: int = 512                    # embedding size (the paper's N = 512)

    @staticmethod
    def preset_config(name: str, **over) -> "NetConfig":
        presets = {
            "small": dict(),
            # The paper: 64..512 channels, 5 AdaIN residual blocks, attention at 64x64.
            "paper": dict(g_channels=(64, 128, 256, 512, 512), g_res_blocks=5, g_attn_res=64,
                          d_channels=(64, 128, 256, 512, 512, 512, 512), d_attn_res=64),
            # Only for the unit tests: a few channels, still 256 px so real rasters fit.
            "tiny": dict(g_channels=(4, 8, 16), g_res_blocks=1, g_attn_res=64,
                         d_channels=(4, 8, 16, 32), d_attn_res=32, emb_dim=16),
        }
        return NetConfig(preset=name, **{**presets[name], **over})


_USE_SN = [True]  # switched off only while bake_spectral_norm builds a plain twin


def SN(m: nn.Module) -> nn.Module:
    return spectral_norm(m) if _USE_SN[0] else m


def conv(cin, cout, k=3):
    return SN(nn.Conv2d(cin, cout, k, padding=k // 2))


class AdaIN(nn.Module):
    """Instance norm whose scale/shift come from the embedding (psi = P e), not from weights.

    Uses (1 + gamma) so that a fresh P (psi ~ 0) starts as plain instance norm rather than
    multiplying every activation by ~0.
    """

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, p):  # p: [B, 2c]
        gamma, beta = p[:, : self.c, None, None], p[:, self.c:, None, None]
        return F.instance_norm(x) * (1 + gamma) + beta


class SelfAttention(nn.Module):
    """SAGAN self-attention; gamma starts at 0 so the block starts as identity."""

    def __init__(self, c):
        super().__init__()
        self.q, self.k, self.v = conv(c, max(c // 8, 1), 1), conv(c, max(c // 8, 1), 1), conv(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)               # [B, HW, c']
        k = self.k(x).flatten(2)                               # [B, c', HW]
        a = torch.softmax(torch.bmm(q, k), dim=-1)             # [B, HW, HW]
        o = torch.bmm(self.v(x).flatten(2), a.transpose(1, 2))  # [B, c, HW]
        return x + self.gamma * o.view(b, c, h, w)


class ResDown(nn.Module):
    """Downsampling residual block. Pools first so both convs run at the lower resolution (4x
    cheaper, which is what makes the small preset real time on a CPU)."""

    def __init__(self, cin, cout, norm: bool):
        super().__init__()
        self.n1 = nn.InstanceNorm2d(cin, affine=True) if norm else nn.Identity()
        self.n2 = nn.InstanceNorm2d(cout, affine=True) if norm else nn.Identity()
        self.c1, self.c2, self.skip = conv(cin, cout), conv(cout, cout), conv(cin, cout, 1)

    def forward(self, x):
        h = self.c1(F.avg_pool2d(F.relu(self.n1(x)), 2))
        h = self.c2(F.relu(self.n2(h)))
        return h + self.skip(F.avg_pool2d(x, 2))


class ResAdaIN(nn.Module):
    """Constant-resolution residual block with AdaIN (the generator's bottleneck)."""

    def __init__(self, c):
        super().__init__()
        self.n1, self.n2 = AdaIN(c), AdaIN(c)
        self.c1, self.c2 = conv(c, c), conv(c, c)

    def forward(self, x, ps):
        h = self.c1(F.relu(self.n1(x, next(ps))))
        return x + self.c2(F.relu(self.n2(h, next(ps))))


class ResUp(nn.Module):
    """Upsampling residual block with AdaIN; the first conv runs before the 2x upsampling (cost)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.n1, self.n2 = AdaIN(cin), AdaIN(cout)
        self.c1, self.c2, self.skip = conv(cin, cout), conv(cout, cout), conv(cin, cout, 1)

    def forward(self, x, ps):
        h = F.interpolate(self.c1(F.relu(self.n1(x, next(ps)))), scale_factor=2, mode="nearest")
        h = self.c2(F.relu(self.n2(h, next(ps))))
        return h + F.interpolate(self.skip(x), scale_factor=2, mode="nearest")


class Generator(nn.Module):
    """G(raster, psi): down blocks (instance norm) -> attention -> AdaIN res blocks -> AdaIN up
    blocks -> tanh. psi = P e is split over the AdaIN layers in forward order."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.g_channels
        self.stem = conv(3, ch[0])
        self.down = nn.ModuleList(ResDown(a, b, norm=True) for a, b in zip(ch[:-1], ch[1:]))
        self.down_attn = nn.ModuleDict()
        self.up_attn = nn.ModuleDict()
        res = cfg.resolution
        for i, c in enumerate(ch[1:]):
            res //= 2
            if res == cfg.g_attn_res:
                self.down_attn[str(i)] = SelfAttention(c)
                self.up_attn[str(len(ch) - 2 - i)] = SelfAttention(c)
        self.body = nn.ModuleList(ResAdaIN(ch[-1]) for _ in range(cfg.g_res_blocks))
        rev = ch[::-1]
        self.up = nn.ModuleList(ResUp(a, b) for a, b in zip(rev[:-1], rev[1:]))
        self.out_norm = AdaIN(ch[0])
        self.out = conv(ch[0], 3)
        self.adain_sizes = [2 * m.c for m in self.modules() if isinstance(m, AdaIN)]
        self.psi_dim = sum(self.adain_sizes)
        # P: the projection from embeddings to AdaIN parameters (psi = P e).
        self.P = SN(nn.Linear(cfg.emb_dim, self.psi_dim, bias=False))

    def adain_params(self, e):
        return self.P(e)

    def forward(self, raster, psi=None, e=None):
        """psi [B, psi_dim], or e [B, emb] (psi = P e inside forward, so DDP sees P used)."""
        if psi is None:
            psi = self.P(e)
        # modules() order == forward order: body, up (n1, n2 each), out_norm.
        ps = iter(torch.split(psi, self.adain_sizes, dim=1))
        x = self.stem(raster)
        for i, blk in enumerate(self.down):
            x = blk(x)
            if str(i) in self.down_attn:
                x = self.down_attn[str(i)](x)
        for blk in self.body:
            x = blk(x, ps)
        for i, blk in enumerate(self.up):
            if str(i) in self.up_attn:
                x = self.up_attn[str(i)](x)
            x = blk(x, ps)
        return torch.tanh(self.out(F.relu(self.out_norm(x, next(ps)))))


class Trunk(nn.Module):
    """Shared body of E and D: 6-channel stem -> down blocks (no norm) -> attention."""

    def __init__(self, cfg: NetConfig, extra_block: bool):
        super().__init__()
        ch = cfg.d_channels
        self.stem = conv(6, ch[0])
        self.blocks = nn.ModuleList()
        res = cfg.resolution
        for a, b in zip(ch[:-1], ch[1:]):
            res //= 2
            blk = [ResDown(a, b, norm=False)]
            if res == cfg.d_attn_res:
                blk.append(SelfAttention(b))
            self.blocks.append(nn.Sequential(*blk))
        self.extra = nn.Sequential(nn.ReLU(), conv(ch[-1], ch[-1]), nn.ReLU(), conv(ch[-1], ch[-1])) \
            if extra_block else None
        self.out_ch = ch[-1]

    def forward(self, img, raster):
        x = self.stem(torch.cat([img, raster], 1))
        feats = []
        for blk in self.blocks:
            x = blk(x)
            feats.append(x)
        if self.extra is not None:
            x = x + self.extra(x)
            feats.append(x)
        return x, feats


class Embedder(nn.Module):
    """E(frame, raster) -> 512-d embedding; K shots are averaged."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.trunk = Trunk(cfg, extra_block=False)
        self.fc = SN(nn.Linear(self.trunk.out_ch, cfg.emb_dim))

    def forward(self, img, raster):
        """[B, 3, H, W] -> [B, emb]; or K shots [B, K, 3, H, W] -> their mean embedding [B, emb]."""
        if img.dim() == 5:
            b, k = img.shape[:2]
            return self(img.flatten(0, 1), raster.flatten(0, 1)).view(b, k, -1).mean(1)
        x, _ = self.trunk(img, raster)
        return self.fc(F.relu(x).sum(dim=(2, 3)))  # global sum pooling, as in the paper


class Discriminator(nn.Module):
    """Projection D: score = v(x, y) . (W_i + w0) + b; returns score and the block features."""

    def __init__(self, cfg: NetConfig, num_videos: int):
        super().__init__()
        self.trunk = Trunk(cfg, extra_block=True)
        self.fc = SN(nn.Linear(self.trunk.out_ch, cfg.emb_dim))
        self.W = nn.Parameter(torch.randn(num_videos, cfg.emb_dim) * 0.02)  # one row per video
        self.w0 = nn.Parameter(torch.zeros(cfg.emb_dim))
        self.b = nn.Parameter(torch.zeros(1))

    def w_for(self, video_idx):
        return self.W[video_idx] + self.w0

    def score_with(self, img, raster, w):
        """Score with an explicit projection vector w [B, emb] (fine-tuning uses w')."""
        x, feats = self.trunk(img, raster)
        v = self.fc(F.relu(x).sum(dim=(2, 3)))
        return (v * w).sum(1) + self.b, feats

    def forward(self, img, raster, video):
        """Meta-training: w = W_i + w0 of each sample's video; returns (score, feats, w)."""
        w = self.w_for(video)
        return (*self.score_with(img, raster, w), w)


class PersonalisedGenerator(nn.Module):
    """G with its AdaIN parameters fixed (psi), so it takes only the raster (the exported model)."""

    def __init__(self, G: Generator, psi: torch.Tensor):
        super().__init__()
        self.G = G
        self.psi = nn.Parameter(psi.detach().reshape(1, -1).clone())

    def forward(self, raster):
        return self.G(raster, self.psi.expand(raster.shape[0], -1))


def bake_spectral_norm(pg: PersonalisedGenerator) -> PersonalisedGenerator:
    """A plain twin of pg (no parametrizations) holding its current normalised weights, for export.

    (copy.deepcopy + remove_parametrizations would share the parametrized classes with the
    original and break it, hence the rebuild.)"""
    was = pg.training
    pg.eval()  # eval: W / sigma from the stored u, v, without a power-iteration step
    sd = {}
    with torch.no_grad():
        for name, mod in pg.named_modules():
            if parametrize.is_parametrized(mod):
                for t in mod.parametrizations:
                    sd[f"{name}.{t}"] = getattr(mod, t).detach().clone()
        sd.update({k: v.clone() for k, v in pg.state_dict().items() if ".parametrizations." not in k})
    pg.train(was)
    _USE_SN[0] = False
    try:
        plain = PersonalisedGenerator(Generator(pg.G.cfg), pg.psi)
    finally:
        _USE_SN[0] = True
    plain.load_state_dict(sd)
    return plain.eval()


def count_flops(module: nn.Module, *inputs) -> int:
    """FLOPs of one forward (torch's FlopCounterMode: 2 per multiply-add, convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:  # (no_grad upsets its module tracker)
        module(*inputs)
    return fc.get_total_flops()


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def build(cfg: NetConfig, num_videos: int):
    return Embedder(cfg), Generator(cfg), Discriminator(cfg, num_videos)


__all__ = ["NetConfig", "Generator", "Embedder", "Discriminator", "PersonalisedGenerator",
           "bake_spectral_norm", "count_flops", "count_params", "build", "asdict", "field"]
