"""The warp avatar's refiner: data loading, a training step that learns, the embedding-match
target, resuming, 2-process DDP, fine-tuning and the ONNX export check (tiny networks on
synthetic crops; the shipped weights are checked by tests/refiner.rs and the evaluation)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from puppetcam_train import refiner as R
from puppetcam_train import checkpoint as ckpt

M, E = R.MOUTH, R.EYE


def _write_clip(root: Path, name: str, n_pairs: int, n_shots: int, seed: int):
    """A clip in `puppetcam refiner-data` layout: the target is the input with a dark 'mouth
    opening' where raster channel 2 is set (what the refiner has to learn to paint)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)

    def region(n, s, lead=()):
        img = rng.integers(90, 200, (n, *lead, s, s, 3), dtype=np.uint8)
        ras = np.zeros((n, *lead, s, s, 3), np.uint8)
        ras[..., s // 3: 2 * s // 3, s // 4: 3 * s // 4, 2] = 255
        gt = img.copy()
        gt[ras[..., 2] > 0] = 20
        return img, ras, gt

    mi, mr, mg = region(n_pairs, M)
    ei, er, eg = region(n_pairs, E, (2,))
    for k, v in dict(mouth_in=mi, mouth_ras=mr, mouth_gt=mg, eyes_in=ei, eyes_ras=er, eyes_gt=eg).items():
        np.save(root / f"{name}.pairs.{k}.npy", v)
    si, sr, _ = region(n_shots, M)
    ti, tr, _ = region(n_shots, E, (2,))
    for k, v in dict(mouth_in=si, mouth_ras=sr, eyes_in=ti, eyes_ras=tr).items():
        np.save(root / f"{name}.shots.{k}.npy", v)


@pytest.fixture
def crops(tmp_path):
    d = tmp_path / "crops"
    for i, n in enumerate(("clip_a", "clip_b", "lp_d5")):
        _write_clip(d, n, 6, 4, i)
    _write_clip(d / "val", "lp_d5", 4, 3, 9)
    return d


def tiny_cfg(crops, out, **over):
    return R.RefinerConfig(**{**dict(data=str(crops), out=str(out), preset="tiny", batch=2, k_max=3, steps=2,
                                     threads=1, log_every=1, val_every=1, ckpt_every=1), **over})


def test_data_excludes_held_out_and_batches_have_the_contract_shapes(crops):
    d = R.RegionData(crops, exclude=R.HELD_OUT)
    assert d.videos == ["clip_a", "clip_b"]           # lp_d5 is held out
    b = d.episode(np.random.default_rng(0), 3, 2)
    assert b["m_in"].shape == (3, 6, M, M) and b["m_gt"].shape == (3, 3, M, M)
    assert b["e_in"].shape == (6, 6, E, E) and b["e_gt"].shape == (6, 3, E, E)
    assert b["sm"].shape == (6, 6, M, M) and b["se"].shape == (12, 6, E, E) and b["k"] == 2
    assert -1 <= b["m_in"][:, :3].min() and b["m_in"][:, :3].max() <= 1
    assert set(torch.unique(b["m_in"][:, 5]).tolist()) <= {0.0, 1.0}


def test_training_learns_the_opening_and_matches_e_to_W_i(crops, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg(crops, tmp_path / "run", w_adv=0.0, w_fm=0.0, lr_g=3e-3)
    tr = R.RefinerTrainer(cfg)
    val = R.RegionData(crops / "val")
    before = tr.validate(val, episodes=8)
    for _ in range(60):
        tr.train_step()
    after = tr.validate(val, episodes=8)
    # The warp leaves the opening bright; the refiner learns to darken it (held-out clip).
    assert after["val_m_open_ref"] > before["val_m_open_ref"] + 3, (before, after)
    assert after["val_m_open_ref"] > after["val_m_open_warp"] + 3, after
    # Embedding match pulls e_hat towards W_i, never towards w0 (shared by all videos).
    N = tr.nets
    N.zero_grad()
    b = tr.data.episode(np.random.default_rng(1), 2, 2)
    em, _ = N.embed(b)
    torch.nn.functional.l1_loss(em, N.Dm.W[b["video"]]).backward()
    assert N.Dm.w0.grad is None and N.Dm.W.grad.abs().sum() > 0


def test_checkpoint_resumes_where_it_stopped(crops, tmp_path):
    out = tmp_path / "run"
    R.train(tiny_cfg(crops, out, steps=2), progress=False)
    s = ckpt.load(out / "latest.pt")
    assert s["step"] == 2 and s["kind"] == "puppetcam-refiner" and s["held_out"] == list(R.HELD_OUT)
    tr = R.train(tiny_cfg(crops, out, steps=3), progress=False)   # resumes from latest.pt
    assert tr.step == 3
    lines = (out / "stats.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "val_m_ref" in lines[-1]


def _ddp_worker(rank, crops, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29547", WORLD_SIZE="2", RANK=str(rank))
    tr = R.train(tiny_cfg(crops, out, steps=2), progress=False)
    torch.save(tr.nets.state_dict(), f"{out}/nets{rank}.pt")


def test_ddp_two_processes_stay_in_sync(crops, tmp_path):
    mp.spawn(_ddp_worker, args=(crops, tmp_path), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "nets0.pt"), torch.load(tmp_path / "nets1.pt")
    assert all(torch.allclose(a[k], b[k]) for k in a)
    assert (tmp_path / "latest.pt").exists()


def test_finetune_export_and_embedder_match_torch(crops, tmp_path):
    out = tmp_path / "run"
    R.train(tiny_cfg(crops, out, steps=2), progress=False)
    R.ship(ckpt.load(out / "latest.pt"), tmp_path / "meta.pt")
    meta = ckpt.load(tmp_path / "meta.pt")
    assert "opt_g" not in meta and meta["kind"] == "puppetcam-refiner-meta"
    d = R.RegionData(crops, only=["clip_a"])
    shots = {k: d.shots[0][k] for k in ("mouth_in", "mouth_ras", "eyes_in", "eyes_ras")}
    pairs = d.pairs[0]
    p0, _ = R.finetune(meta, shots, pairs, steps=0, progress=False)
    p1, info = R.finetune(meta, shots, pairs, steps=3, progress=False)
    assert info["k"] == 4
    assert torch.allclose(p0.em, R.load_nets(meta).embed(R.shots_batch(shots))[0])  # e_new = mean E(shots)
    assert not torch.allclose(p0.Gm.head.weight, p1.Gm.head.weight)                 # G was fine-tuned
    for prec in ("fp32", "fp16"):
        w = R.export_refiner(p1.Gm, p1.Ge, p1.em, p1.ee, tmp_path / f"r_{prec}.onnx", prec)
        assert w <= R.TOLERANCE[prec]
    import onnx
    m = onnx.load(str(tmp_path / "r_fp32.onnx"))
    assert {i.name for i in m.graph.input} == {"mouth", "eyes", "e_mouth", "e_eye"}
    assert {p.key: p.value for p in m.metadata_props}["puppetcam.contract"] == "refiner-1"
    nets = R.load_nets(meta)
    assert R.export_embedder(nets.Em, nets.Ee, tmp_path / "emb.onnx") <= 1e-3


def test_export_refuses_a_graph_that_disagrees_with_torch(crops, tmp_path, monkeypatch):
    nets = R.Nets(2, *R.preset_nets("tiny"))
    real = R.RefinerGraph.forward
    # With no tolerance at all, every export "disagrees": nothing may be written.
    monkeypatch.setattr(R, "TOLERANCE", {"fp32": -1.0, "fp16": -1.0})
    with pytest.raises(R.ExportMismatch):
        R.export_refiner(nets.Gm, nets.Ge, torch.zeros(1, 8), torch.zeros(1, 8), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    assert R.RefinerGraph.forward is real


def test_closing_eyes_and_open_mouths_are_found_and_drawn_more_often(tmp_path):
    """pair_kinds reads the rasters' fill channel; boosts change how often those pairs are drawn."""
    root = tmp_path / "c"
    _write_clip(root, "clip_a", 20, 4, 0)
    er = np.load(root / "clip_a.pairs.eyes_ras.npy")
    mr = np.load(root / "clip_a.pairs.mouth_ras.npy")
    er[:4, ..., 2] = 0                      # pairs 0-3: eyes shut (no opening)
    er[4:6, :, 20:, :, 2] = 0               # pairs 4-5: half open: not a blink (under 0.6? no: ~0.5)
    mr[10:, ..., 2] = 0                     # pairs 10-19: mouth closed
    np.save(root / "clip_a.pairs.eyes_ras.npy", er)
    np.save(root / "clip_a.pairs.mouth_ras.npy", mr)
    blink, open_ = R.pair_kinds(er, mr)
    half = (er[4, ..., 2] >= 128).sum() / (er[8, ..., 2] >= 128).sum()
    assert blink[:4].all() and not blink[6:].any() and bool(blink[4]) == (half < R.BLINK_SHARE)
    assert not open_[10:].any()
    plain = R.RegionData(root)
    boosted = R.RegionData(root, boost_blink=4.0)
    assert np.allclose(plain.prob[0], 1 / 20)
    assert boosted.prob[0][0] == pytest.approx(5 * boosted.prob[0][8])
    # episode() draws the pair with these probabilities: count the shut-eye pairs it returns.
    shut = lambda d: sum(int((d.episode(np.random.default_rng(n), 1, 1)["e_in"][:, 5] > 0).sum() == 0) for n in range(200))
    assert shut(boosted) > 2 * shut(plain) > 0


def test_validation_scores_closing_eyes_and_keeps_the_best_checkpoint(crops, tmp_path):
    """Validation identities come from the training directory and are not trained on; best.pt
    holds the step with the best score."""
    out = tmp_path / "run"
    tr = R.train(tiny_cfg(crops, out, steps=3, val_ids=("clip_b",)), progress=False)
    assert tr.data.videos == ["clip_a"]
    s = ckpt.load(out / "latest.pt")
    assert s["validation"] == ["clip_b"] and "clip_b" not in s["videos"]
    best = ckpt.load(out / "best.pt")
    assert best["best"][1] == best["step"] and 1 <= best["step"] <= 3
    lines = [__import__("json").loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    scores = {x["step"]: x["val_score"] for x in lines}
    assert scores[best["step"]] == max(scores.values())
    v = tr.validate(R.RegionData(crops, only=["clip_b"]))
    assert {"val_e_closed_ref", "val_m_open_ref", "val_score"} <= v.keys()
