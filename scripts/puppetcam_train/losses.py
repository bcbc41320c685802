"""Losses of the paper: hinge adversarial, D feature matching, embedding match, content.

Content = L1 + perceptual (VGG19 / VGGFace) when their weights exist locally; torchvision cannot
download them here, so without weights the content term is L1 + D feature matching only, and
`Perceptual.describe()` says which one is used (train.py logs it and stores it in checkpoints).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


def d_hinge(real_score, fake_score):
    """Discriminator hinge loss: max(0, 1 - D(real)) + max(0, 1 + D(fake))."""
    return F.relu(1.0 - real_score).mean() + F.relu(1.0 + fake_score).mean()


def g_hinge(fake_score):
    """Generator adversarial term: -D(fake)."""
    return -fake_score.mean()


def feature_matching(fake_feats, real_feats):
    """Mean L1 between D's block features on fake and (detached) real images."""
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats)) / len(fake_feats)


def embedding_match(e_hat, w):
    """L_MCH: L1 between the video's discriminator row W_i and the embedder's mean embedding."""
    return F.l1_loss(e_hat, w)


def l1(fake, real):
    return F.l1_loss(fake, real)


class VGGFeatures(nn.Module):
    """relu1_1..relu5_1 of a torchvision VGG (features only), from a local state_dict file."""

    LAYERS = {"vgg19": (1, 6, 11, 20, 29), "vggface": (1, 6, 11, 18, 25)}  # vggface is a VGG16

    def __init__(self, kind: str, path: Path):
        super().__init__()
        import torchvision
        net = torchvision.models.vgg19() if kind == "vgg19" else torchvision.models.vgg16()
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k.split("features.", 1)[1]: v for k, v in sd.items() if "features." in k}
        net.features.load_state_dict(sd)
        self.features = net.features[: self.LAYERS[kind][-1] + 1].eval().requires_grad_(False)
        self.taps = self.LAYERS[kind]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):  # x in [-1, 1]
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class Perceptual(nn.Module):
    """Weighted VGG19 + VGGFace L1 feature loss; empty (0) when no weight file is available."""

    def __init__(self, vgg19_path: str = "", vggface_path: str = "", w_vgg19: float = 1e-2,
                 w_vggface: float = 2e-3):
        super().__init__()
        self.nets, self.weights = nn.ModuleDict(), {}
        for kind, p, w in (("vgg19", vgg19_path, w_vgg19), ("vggface", vggface_path, w_vggface)):
            if p and Path(p).is_file():
                self.nets[kind] = VGGFeatures(kind, Path(p))
                self.weights[kind] = w

    def describe(self) -> str:
        if not self.nets:
            return "none (no local VGG19/VGGFace weights): content = L1 + D feature matching"
        return "perceptual " + " + ".join(f"{k} x{self.weights[k]}" for k in self.nets) + \
            " + L1 + D feature matching"

    def forward(self, fake, real):
        loss = fake.new_zeros(())
        for kind, net in self.nets.items():
            ff, fr = net(fake), net(real)
            loss = loss + self.weights[kind] * sum(F.l1_loss(a, b.detach()) for a, b in zip(ff, fr))
        return loss
