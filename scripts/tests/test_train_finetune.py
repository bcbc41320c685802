"""Few-shot personalisation starts where the paper says: psi' = P e_new, w' = w0 + e_new."""
import numpy as np
import torch

from conftest import fake_iris, fake_lm68
from puppetcam_train import dataset as DS
from puppetcam_train import finetune as FT
from puppetcam_train import raster as R
from puppetcam_train.train import TrainConfig, run


def make_shots(k=3):
    lms = [fake_lm68(128, 130, 50, t=0.02 * i) for i in range(k)]
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (k, 256, 256, 3), dtype=np.uint8)
    rasters = np.stack([R.rasterise(l, fake_iris(l)) for l in lms])
    return FT.Shots(imgs, rasters, np.stack(lms), [fake_iris(l) for l in lms],
                    [(0.0, 0.0, 256.0)] * k, "synthetic", "mediapipe")


def meta_ckpt(tiny_cache, tmp_path):
    run(TrainConfig(data=str(tiny_cache), out=str(tmp_path / "m"), preset="tiny", exclude=(), k=2,
                    batch=1, steps=1, threads=1))
    return tmp_path / "m" / "latest.pt"


def test_init_as_in_paper(tiny_cache, tmp_path):
    path = meta_ckpt(tiny_cache, tmp_path)
    s, E, G, D = FT.load_meta(path)
    shots = make_shots()
    pg, pd, e_new = FT.init_personal(E, G, D, shots)
    with torch.no_grad():
        e_each = E(DS.to_tensor(shots.imgs), DS.to_tensor(shots.rasters))
        assert torch.allclose(e_new, e_each.mean(0), atol=1e-5)           # mean over the K shots
        assert torch.allclose(pg.psi[0], G.P(e_new[None])[0], atol=1e-5)  # psi' = P e_new
        assert torch.allclose(pd.w, D.w0 + e_new, atol=1e-6)              # w' = w0 + e_new
    assert pg.psi.requires_grad and pd.w.requires_grad  # both are then fine-tuned


def test_finetune_runs(tiny_cache, tmp_path):
    path = meta_ckpt(tiny_cache, tmp_path)
    pg, prov = FT.finetune(str(path), make_shots(2), FT.FinetuneConfig(steps=2, threads=1), log=None)
    assert prov["shots"] == 2 and prov["meta_step"] == 1
    with torch.no_grad():
        assert pg(torch.zeros(1, 3, 256, 256)).shape == (1, 3, 256, 256)
