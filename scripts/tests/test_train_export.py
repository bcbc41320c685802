"""ONNX export: contract tensors and metadata, ORT == torch, refusal to write on mismatch."""
import base64
import json

import cv2
import numpy as np
import onnx
import pytest
import torch

from conftest import fake_iris, fake_lm68
from puppetcam_train import export as EX
from puppetcam_train import raster as R
from puppetcam_train.networks import NetConfig, PersonalisedGenerator, build

KEYS = ["puppetcam.contract", "puppetcam.name", "puppetcam.resolution", "puppetcam.crop_box",
        "puppetcam.neutral_landmarks", "puppetcam.neutral_iris", "puppetcam.portrait_png_b64",
        "puppetcam.precision", "puppetcam.provenance"]


def model_and_meta():
    torch.manual_seed(0)
    cfg = NetConfig.preset_config("tiny")
    E, G, D = build(cfg, 1)
    pg = PersonalisedGenerator(G, G.adain_params(torch.randn(1, cfg.emb_dim))).eval()
    portrait = np.random.default_rng(0).integers(0, 255, (1500, 1200, 3), dtype=np.uint8)
    lm = fake_lm68(600, 700, 300)
    meta = EX.portrait_metadata(portrait, lm, fake_iris(lm))
    meta.update({"puppetcam.name": "test", "puppetcam.provenance": json.dumps({"test": True})})
    raster = R.to_input(R.rasterise(R.to_crop(lm / 1.5, json.loads(meta["puppetcam.crop_box"]))))
    return pg, meta, raster


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_round_trip(tmp_path, precision):
    pg, meta, raster = model_and_meta()
    out = tmp_path / "a.onnx"
    rep = EX.export(pg, out, meta, precision, [raster])
    assert rep["max_abs_diff"] <= EX.TOLERANCE[precision] and rep["n_inputs"] == 2
    m = onnx.load(str(out))
    assert m.opset_import[0].version >= 17
    (inp,), (outp,) = m.graph.input, m.graph.output
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert inp.name == "landmarks" and dims(inp) == [1, 3, 256, 256]
    assert outp.name == "image" and dims(outp) == [1, 3, 256, 256]
    assert inp.type.tensor_type.elem_type == outp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    md = EX.read_metadata(out)
    assert all(k in md for k in KEYS) and md["puppetcam.precision"] == precision
    assert md["puppetcam.contract"] == "1" and md["puppetcam.resolution"] == "256"
    png = cv2.imdecode(np.frombuffer(base64.b64decode(md["puppetcam.portrait_png_b64"]), np.uint8), 1)
    assert max(png.shape[:2]) == 1024                       # downscaled from 1500
    x0, y0, side = json.loads(md["puppetcam.crop_box"])     # in the downscaled pixels
    lm = fake_lm68(600, 700, 300) / 1.5 * (1024 / 1000)
    assert np.allclose([x0, y0, side], R.crop_box_from_68(lm), atol=1e-2)
    assert np.array(json.loads(md["puppetcam.neutral_landmarks"])).shape == (68, 2)
    assert np.array(json.loads(md["puppetcam.neutral_iris"])).shape == (2, 3)


def test_refuses_mismatch(tmp_path, monkeypatch):
    pg, meta, raster = model_and_meta()
    real = EX.ort_run
    monkeypatch.setattr(EX, "ort_run", lambda data, x: real(data, x) + 0.01)  # a wrong runtime
    out = tmp_path / "bad.onnx"
    with pytest.raises(EX.ExportMismatch):
        EX.export(pg, out, meta, "fp32", [raster])
    assert not out.exists() and not list(tmp_path.iterdir())


def test_missing_metadata_key(tmp_path):
    pg, meta, _ = model_and_meta()
    del meta["puppetcam.crop_box"]
    with pytest.raises(ValueError, match="crop_box"):
        EX.export(pg, tmp_path / "x.onnx", meta)
