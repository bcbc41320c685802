"""Evaluation helpers on known inputs, and a 2-process DDP (gloo, CPU) step that stays in sync."""
import os

import numpy as np
import torch
import torch.multiprocessing as mp

from conftest import fake_lm68
from puppetcam_train import evaluate as EV


def test_metric_helpers():
    lm = fake_lm68()
    assert EV.nme(lm, lm) == 0.0
    d = np.linalg.norm(lm[36] - lm[45])
    assert abs(EV.nme(lm + [d * 0.1, 0], lm) - 0.1) < 1e-6
    shots = np.stack([fake_lm68(t=0.2), fake_lm68(100, 90, t=0.0), fake_lm68(t=0.1)])
    assert EV.nearest_shot(shots, fake_lm68(t=0.0)) == 1  # position does not matter, shape does
    img = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    same = EV.piecewise_affine(img, lm, lm)
    assert np.abs(same.astype(int) - img).max() <= 1
    moved = EV.piecewise_affine(img, lm, lm + [0, 5])  # whole face 5 px down
    assert np.abs(moved[140:150, 120:136].astype(int) - img[135:145, 120:136]).mean() < 3


def _worker(rank, cache, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", WORLD_SIZE="2", RANK=str(rank))
    from puppetcam_train.train import TrainConfig, run
    torch.set_num_threads(1)
    tr = run(TrainConfig(data=str(cache), out=str(out), preset="tiny", exclude=(), k=1, batch=1,
                         steps=1, threads=1, log_every=1, ckpt_every=1, sample_every=100))
    torch.save({k: v for k, v in tr.G.module.state_dict().items()}, f"{out}/G{rank}.pt")


def test_ddp_two_processes(tiny_cache, tmp_path):
    mp.spawn(_worker, args=(tiny_cache, tmp_path), nprocs=2, join=True)
    g0, g1 = torch.load(tmp_path / "G0.pt"), torch.load(tmp_path / "G1.pt")
    assert all(torch.allclose(g0[k], g1[k]) for k in g0)  # gradients were all-reduced (incl. P)
    assert (tmp_path / "latest.pt").exists()              # rank 0 wrote the checkpoint
