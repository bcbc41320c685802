"""Two-step meta-training smoke run and exact save/resume equality (tiny preset, synthetic data)."""
import dataclasses

import torch

from puppetcam_train import checkpoint as ckpt
from puppetcam_train.train import TrainConfig, Trainer, run


def cfg_for(cache, out):
    return TrainConfig(data=str(cache), out=str(out), preset="tiny", exclude=(), k=2, batch=2,
                       steps=2, threads=1, log_every=1, ckpt_every=1, sample_every=1)


def test_two_steps_and_resume(tiny_cache, tmp_path):
    cfg = cfg_for(tiny_cache, tmp_path / "a")
    a = run(cfg)
    assert a.step == 2 and (tmp_path / "a" / "stats.jsonl").read_text().count("\n") == 2
    s = ckpt.load(tmp_path / "a" / "latest.pt")
    assert s["step"] == 2 and s["config"]["preset"] == "tiny" and s["net"]["emb_dim"] == 16
    assert s["landmark_backend"] == "mediapipe" and "torch" in s["versions"]
    assert "feature matching" in s["content_loss"]

    cfg_b = dataclasses.replace(cfg, out=str(tmp_path / "b"))
    run(cfg_b, max_steps=1)
    b = run(cfg_b, resume=str(tmp_path / "b" / "latest.pt"))
    assert b.step == 2
    assert b.history == [dict(until_step=1, data=str(tiny_cache), landmark_backend="mediapipe")]
    for name in ("E", "G", "D"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name}.{k} differs after resume"


def test_losses_move_parameters(tiny_cache, tmp_path):
    tr = Trainer(cfg_for(tiny_cache, tmp_path))
    before = {k: v.clone() for k, v in tr.G.state_dict().items()}
    stats = tr.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert any(not torch.equal(before[k], v) for k, v in tr.G.state_dict().items())
