"""Personalised generator -> ONNX file following docs/generator-contract.md (version 1).

The graph has one input `landmarks` float32 [1,3,256,256] and one output `image` float32
[1,3,256,256]; fp16 models cast inside the graph. Before anything is written, ONNX Runtime runs
the model on random and real rasters and its output is compared with PyTorch's; a mismatch
raises ExportMismatch and leaves no file behind.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch

from . import raster as R
from .networks import bake_spectral_norm

CONTRACT = "1"
# max |ORT - torch| on [-1, 1] outputs. Not 1e-5 for fp32: a real raster is mostly constant, and
# instance norm over a near-constant channel divides rounding noise by ~sqrt(eps) (x300); random
# untrained models reach ~1.5e-3 that way. A wrong graph is off by 0.1..1.
TOLERANCE = {"fp32": 5e-3, "fp16": 6e-2}


class ExportMismatch(RuntimeError):
    pass


def portrait_metadata(portrait_rgb: np.ndarray, lm68, iris=None, max_side: int = 1024) -> dict:
    """Contract keys describing the portrait: the image (<= max_side px) and, in its pixels, the
    crop box; the neutral landmarks/irises in 256x256 crop coordinates.
    lm68/iris are in the pixels of portrait_rgb as given."""
    h, w = portrait_rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    img = portrait_rgb if s == 1.0 else cv2.resize(portrait_rgb, (round(w * s), round(h * s)),
                                                    interpolation=cv2.INTER_AREA)
    pts = np.asarray(lm68, np.float64) * s
    box = R.crop_box_from_68(pts)
    neutral = R.to_crop(pts, box)
    niris = None
    if iris is not None:
        ir = np.asarray(iris, np.float64)
        niris = np.concatenate([R.to_crop(ir[:, :2] * s, box), ir[:, 2:] * s * 256.0 / box[2]], 1)
    ok, png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return {
        "puppetcam.crop_box": json.dumps([round(v, 4) for v in box]),
        "puppetcam.neutral_landmarks": json.dumps(np.round(neutral, 4).tolist()),
        "puppetcam.neutral_iris": json.dumps(None if niris is None else np.round(niris, 4).tolist()),
        "puppetcam.portrait_png_b64": base64.b64encode(png.tobytes()).decode("ascii"),
    }


def _to_onnx(model: torch.nn.Module, path: Path, opset: int):
    dummy = torch.zeros(1, 3, 256, 256)
    torch.onnx.export(model, (dummy,), str(path), input_names=["landmarks"], output_names=["image"],
                      opset_version=opset, do_constant_folding=True, dynamo=False)


def ort_run(model_bytes: bytes, x: np.ndarray, threads: int = 1) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(["image"], {"landmarks": x.astype(np.float32)})[0]


def export(pg: torch.nn.Module, out: Path, metadata: dict, precision: str = "fp32",
           check_inputs: list[np.ndarray] = (), opset: int = 17, tolerance: float | None = None) -> dict:
    """Writes `out` only if ORT matches torch on random + given [1,3,256,256] inputs.

    metadata must hold the portrait keys (portrait_metadata) plus name/provenance; returns the
    comparison report."""
    if precision not in TOLERANCE:
        raise ValueError(f"precision must be fp32 or fp16, got {precision}")
    tol = TOLERANCE[precision] if tolerance is None else tolerance
    model = bake_spectral_norm(pg).eval()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "g.onnx"
        _to_onnx(model, tmp, opset)
        m = onnx.load(str(tmp))
    if precision == "fp16":
        from onnxconverter_common import float16
        m = float16.convert_float_to_float16(m, keep_io_types=True)  # float32 I/O, casts inside
    meta = {"puppetcam.contract": CONTRACT, "puppetcam.resolution": "256",
            "puppetcam.precision": precision, **metadata}
    for k in ("puppetcam.name", "puppetcam.crop_box", "puppetcam.neutral_landmarks",
              "puppetcam.portrait_png_b64", "puppetcam.provenance"):
        if k not in meta:
            raise ValueError(f"missing metadata key {k}")
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))
    onnx.checker.check_model(m)
    data = m.SerializeToString()

    # ORT vs torch on random rasters (uniform in [-1,1]) and the given real ones.
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32)] + \
             [np.asarray(x, np.float32).reshape(1, 3, 256, 256) for x in check_inputs]
    diffs = []
    for x in inputs:
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = ort_run(data, x)
        if got.shape != (1, 3, 256, 256) or got.dtype != np.float32:
            raise ExportMismatch(f"ORT output {got.shape} {got.dtype}, want (1,3,256,256) float32")
        diffs.append(float(np.abs(got - ref).max()))
    report = dict(precision=precision, max_abs_diff=max(diffs), tolerance=tol, n_inputs=len(inputs))
    if not max(diffs) <= tol:
        raise ExportMismatch(f"ONNX Runtime differs from PyTorch by {max(diffs):.3g} > {tol:.3g} "
                             f"({precision}); refusing to write {out}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(out.suffix + ".tmp")
    tmp_out.write_bytes(data)
    os.replace(tmp_out, out)
    return report


def bench(path: Path, threads: int = 2, n: int = 30) -> float:
    """Median ONNX Runtime CPU latency per frame in ms (after 3 warm-up runs)."""
    import time
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = {"landmarks": np.zeros((1, 3, 256, 256), np.float32)}
    times = []
    for i in range(n + 3):
        t = time.perf_counter()
        sess.run(["image"], x)
        if i >= 3:
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def read_metadata(path: Path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
