"""The whole-face refiner experiment (scripts/puppetcam_train/face_refiner.py): the crop box, the
network's ranges, a short training run that learns a synthetic fill, compositing back into the
frame, and the ONNX export check. Synthetic data only; the measurement itself is in
docs/quality.md."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from face_refiner_data import face_box  # noqa: E402
from puppetcam_train import face_refiner as FR  # noqa: E402

TINY = dict(size=32, ch=(8, 8, 8), body=1, batch=8)


def test_face_box_is_a_square_around_the_face_inside_the_frame():
    mesh = np.array([[100, 80], [140, 80], [120, 150]], np.float32)
    x, y, s = face_box(mesh, 640, 480, scale=1.5)
    assert s == round(70 * 1.5)
    assert abs((x + s / 2) - 120) <= 1 and abs((y + s / 2) - 115) <= 1
    # Near the frame's edge the box moves inside instead of shrinking.
    x, y, s = face_box(mesh - [90, 70], 640, 480, scale=1.5)
    assert (x, y, s) == (0, 0, round(70 * 1.5))


def test_outputs_are_rgb_in_minus_one_one_and_alpha_in_zero_one():
    net = FR.FaceRefiner(FR.FaceRefinerConfig(**TINY))
    out = net(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert out.shape == (2, 4, 32, 32)
    assert out[:, :3].abs().max() <= 1 and out[:, 3].min() >= 0 and out[:, 3].max() <= 1


def _pairs(root: Path, n=64, seed=0):
    """Renders with a hole (grey where the 'real' frame has a red patch): what a fill learns."""
    rng = np.random.default_rng(seed)
    # Smooth faces: a random colour and a horizontal ramp each.
    ramp = np.linspace(-20, 20, 32)[None, None, :, None]
    real = np.clip(rng.integers(90, 170, (n, 1, 1, 3)) + ramp + np.zeros((n, 32, 32, 3)), 0, 255).astype(np.uint8)
    real[:, 8:20, 4:14] = (200, 40, 40)
    render = real.copy()
    render[:, 8:20, 4:14] = 128
    np.savez(root / "clip_00000.npz", render=render, real=real, box=np.array([0, 0, 32]),
             frames=np.arange(n), yaw=np.where(np.arange(n) % 2 == 0, 0.3, 0.0).astype(np.float32))
    return root / "clip_00000.npz"


def test_a_short_run_learns_to_fill_and_exports(tmp_path):
    torch.set_num_threads(1)
    f = _pairs(tmp_path)
    data = FR.Pairs([f])
    assert data.turned.sum() == 32
    cfg = FR.FaceRefinerConfig(**TINY, max_steps=300, minutes=5, lr=1e-3)
    x, y = FR.to_t(data.render), FR.to_t(data.real)
    net0 = FR.FaceRefiner(cfg)
    torch.manual_seed(cfg.seed)
    net0 = FR.FaceRefiner(cfg).eval()
    with torch.no_grad():
        before = float((FR.composite(x, net0(x)) - y)[:, :, 8:20, 4:14].abs().mean())
    state = FR.train(cfg, [f], tmp_path / "run", log=lambda *a: None)
    net = FR.load(state)
    with torch.no_grad():
        out = net(x)
        after = float((FR.composite(x, out) - y)[:, :, 8:20, 4:14].abs().mean())
        outside = float(out[:, 3, 24:, 20:].mean())
    assert after < 0.5 * before, (before, after)
    assert outside < float(out[:, 3, 8:20, 4:14].mean())  # it paints the hole, not the rest
    assert FR.export(net, 32, tmp_path / "f.onnx") < 1e-3
    assert (tmp_path / "run" / "stats.jsonl").read_text().count("\n") == 6


def test_apply_full_changes_only_the_box():
    net = FR.FaceRefiner(FR.FaceRefinerConfig(**TINY)).eval()
    frame = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    out = FR.apply_full(net, frame, (10, 5, 40), 32)
    mask = np.zeros(frame.shape[:2], bool)
    mask[5:45, 10:50] = True
    assert np.array_equal(out[~mask], frame[~mask])
    assert not np.array_equal(out[mask], frame[mask])


def test_empty_training_set_is_an_error():
    with pytest.raises(ValueError):
        FR.Pairs([])
