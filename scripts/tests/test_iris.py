"""The distilled iris model's toolkit (puppetcam_train/iris.py) on synthetic eyes: it learns to
find a dark disc, its export answers what PyTorch answers, and the data loader refuses files that
do not belong together. No shared data: the crops are drawn here."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from puppetcam_train import checkpoint as ckpt
from puppetcam_train import iris as I

ROOT = Path(__file__).resolve().parents[2]


def synthetic_eyes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Skin-coloured crops with a white almond (open by a random amount, down to shut) and a dark
    iris disc at a random place; labels in the layout examples/iris_data.rs writes (10 iris and 32
    lid point coordinates, crop side, inter-ocular distance, eye)."""
    import cv2
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        im = np.zeros((64, 64, 3), np.uint8)
        im[:] = rng.integers(120, 220, 3)
        c = rng.uniform(22, 42, 2)
        r = rng.uniform(4, 7)
        h = rng.uniform(0.5, 8)                    # half the lid opening
        cv2.ellipse(im, (int(c[0] * 16), int(c[1] * 16)), (int(16 * 14), int(16 * h)), 0, 0, 360, (235, 235, 235), -1, cv2.LINE_AA, 4)
        cv2.circle(im, (int(c[0] * 16), int(c[1] * 16)), int(r * 16), (40, 30, 20), -1, cv2.LINE_AA, 4)
        cv2.ellipse(im, (int(c[0] * 16), int(c[1] * 16)), (int(16 * 14), int(16 * h)), 0, 0, 360, (60, 40, 40), 1, cv2.LINE_AA, 4)
        pts = [c, c + (r, 0), c + (0, r), c - (r, 0), c - (0, r)]
        # Lid contour in the iris model's order: corner, 7 on the lower lid, corner, 7 on the upper.
        dx = np.linspace(-14, 14, 9)[1:-1]
        dy = h * np.sqrt(1 - (dx / 14) ** 2)
        lids = [c - (14, 0), *(c + np.c_[dx, dy]), c + (14, 0), *(c + np.c_[dx, -dy])]
        xs.append(im.transpose(2, 0, 1))
        ys.append(np.r_[np.ravel(pts), np.ravel(lids), 64.0, 100.0, 0.0].astype(np.float32))
    return np.stack(xs), np.stack(ys)


def write_clip(root: Path, name: str, n: int, seed: int):
    x, y = synthetic_eyes(n, seed)
    x.tofile(root / f"{name}.u8")
    y.astype("<f4").tofile(root / f"{name}.f32")


def test_student_learns_to_find_the_iris_and_exports(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_clip(data, f"train{i}", 200, i)
    write_clip(data, "val", 100, 9)
    cfg = I.IrisConfig(data=str(data), out=str(tmp_path / "run"), exclude=(), val_ids=("val",), width=16, batch=32,
                       steps=300, lr=3e-3, val_every=100, log_every=100, threads=1, glasses=0.3)
    val = I.IrisData(data, include={"val"})
    untrained = I.errors(I.predict(I.IrisNet(16), val), val.y)
    before = untrained["centre_mean"]
    res = I.train(cfg, progress=False)
    state = ckpt.load(tmp_path / "run" / "best.pt")
    after = I.errors(I.predict(I.load_net(state), val), val.y)
    # A disc 4-7 px across, anywhere in the middle third: untrained, the answer is ~10 px (0.1 of
    # this "inter-ocular distance") off; trained, under 2 px.
    assert before > 0.05, before
    assert after["centre_mean"] < 0.02 and res["best_score"] == pytest.approx(after["centre_mean"] + after["lid_mean"], rel=1e-4), (before, after)
    # The lids: their opening (0.04-0.57 of the eye's width here) is learned too.
    assert after["opening_mean"] < 0.1 * untrained["opening_mean"] and after["opening_mean"] < 0.1, (untrained, after)
    assert state["kind"] == "puppetcam-iris" and state["train_clips"] == ["train0", "train1", "train2"]
    assert 0 < state["macs"] < 3e6
    worst = I.export(state, tmp_path / "iris.onnx", val)
    assert worst < 1e-3
    import onnx
    import onnxruntime as ort
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "iris.onnx")).metadata_props}
    assert meta["puppetcam.contract"] == I.CONTRACT and json.loads(meta["puppetcam.iris"])["step"] == state["step"]
    s = ort.InferenceSession(str(tmp_path / "iris.onnx"), providers=["CPUExecutionProvider"])
    assert [o.shape for o in s.get_outputs()] == [[1, 15], [1, 48]] and s.get_inputs()[0].shape == [1, 3, 64, 64]
    iris, lids = s.run(None, {"input": val.batch(np.arange(1))[0].numpy()})
    out, lids = iris.reshape(5, 3), lids.reshape(16, 3)
    assert np.all(out[:, 2] == 0) and np.hypot(*(out[0, :2] - val.y[0, :2])) < 3
    assert np.all(lids[:, 2] == 0) and np.hypot(*(lids[0, :2] - val.y[0, 10:12])) < 4


def test_glasses_keep_the_crop_valid_and_leave_some_bare():
    x = torch.from_numpy(synthetic_eyes(64, 1)[0]).float() / 255
    rng = np.random.default_rng(0)
    g = I.draw_glasses(x, rng, 0.5)
    assert g.shape == x.shape and g.min() >= 0 and g.max() <= 1
    changed = (g - x).abs().flatten(1).amax(1) > 0.05
    assert 16 < int(changed.sum()) < 48, int(changed.sum())
    assert torch.equal(I.draw_glasses(x, rng, 0.0), x)


def test_mismatched_files_are_refused(tmp_path):
    write_clip(tmp_path, "a", 10, 0)
    (tmp_path / "a.u8").write_bytes((tmp_path / "a.u8").read_bytes()[:-1])
    with pytest.raises(SystemExit, match="labels but"):
        I.IrisData(tmp_path)


def test_cli_help_lists_every_option():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/train_iris.py"), "train", "--help"], capture_output=True, text=True, check=True).stdout
    for f in ("--glasses", "--centre-weight", "--exclude", "--val-ids"):
        assert f in out
