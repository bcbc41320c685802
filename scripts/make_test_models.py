#!/usr/bin/env python3
"""Builds the tiny generator ONNX fixtures under tests/fixtures/ (docs/generator-contract.md).

The good fixture follows the contract exactly, so the daemon's generator stage, `check` and the
pipeline tests can run without a trained avatar: its `image` output is a fixed mix of the input
raster and a per-channel constant (so a test can tell that the raster really reached the model).
The broken fixtures each violate one rule, so tests can check that the error names it.

Deterministic: running it twice gives byte-identical files. Usage:
    .venv/bin/python scripts/make_test_models.py [--out tests/fixtures]
"""
import argparse
import base64
import json
import os

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# image = MIX * landmarks + (1 - MIX) * BASE[c]  (all in [-1, 1]); documented so tests can
# recompute the expected output from the raster they fed.
MIX = 0.5
BASE = [0.2, -0.1, -0.4]  # a warm skin-ish tone once mapped to u8
PORTRAIT_W, PORTRAIT_H = 320, 384
CROP_BOX = [32.0, 56.0, 256.0]  # x0, y0, side in portrait pixels


def neutral_landmarks():
    """A plausible frontal 68-point face (iBUG order) in 256x256 crop coordinates.

    Built from simple curves so it needs no data; proportions follow the face-crop rule
    (face bbox ~ 1/1.8 of the crop, centred slightly low)."""
    cx, cy = 128.0, 140.0
    pts = []
    # jaw 0..16: lower half ellipse from ear to ear
    for i in range(17):
        t = np.pi * (1.0 - i / 16.0)  # pi .. 0
        pts.append((cx + 68 * np.cos(t), cy - 10 + 70 * np.sin(t)))  # y grows downwards
    # brows 17..21 and 22..26
    for i in range(5):
        pts.append((cx - 55 + 10 * i, cy - 45 - 6 * np.sin(np.pi * i / 4)))
    for i in range(5):
        pts.append((cx + 15 + 10 * i, cy - 45 - 6 * np.sin(np.pi * i / 4)))
    # nose bridge 27..30, nose base 31..35
    for i in range(4):
        pts.append((cx, cy - 30 + 11 * i))
    for i in range(5):
        pts.append((cx - 12 + 6 * i, cy + 12 + 3 * (1 - abs(i - 2) / 2)))
    # eyes 36..41 and 42..47 (corner, top, top, corner, bottom, bottom)
    for ex in (cx - 32, cx + 32):
        pts += [(ex - 13, cy - 25), (ex - 5, cy - 30), (ex + 5, cy - 30),
                (ex + 13, cy - 25), (ex + 5, cy - 21), (ex - 5, cy - 21)]
    # outer lips 48..59, inner lips 60..67
    for i in range(12):
        t = 2 * np.pi * i / 12
        pts.append((cx - 24 * np.cos(t), cy + 38 - 10 * np.sin(t)))
    for i in range(8):
        t = 2 * np.pi * i / 8
        pts.append((cx - 16 * np.cos(t), cy + 38 - 3 * np.sin(t)))
    assert len(pts) == 68
    return [[round(float(x), 2), round(float(y), 2)] for x, y in pts]


def portrait_png():
    """A small synthetic portrait: background gradient with a skin-coloured face ellipse."""
    yy, xx = np.mgrid[0:PORTRAIT_H, 0:PORTRAIT_W]
    img = np.zeros((PORTRAIT_H, PORTRAIT_W, 3), np.uint8)  # BGR for cv2
    img[..., 0] = (120 + 80 * yy / PORTRAIT_H).astype(np.uint8)
    img[..., 1] = 90
    img[..., 2] = (60 + 60 * xx / PORTRAIT_W).astype(np.uint8)
    s = CROP_BOX[2] / 256.0
    centre = (int(CROP_BOX[0] + 128 * s), int(CROP_BOX[1] + 135 * s))
    cv2.ellipse(img, centre, (int(72 * s), int(90 * s)), 0, 0, 360, (150, 180, 225), -1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return buf.tobytes()


def metadata(name, drop=()):
    meta = {
        "puppetcam.contract": "1",
        "puppetcam.name": name,
        "puppetcam.resolution": "256",
        "puppetcam.crop_box": json.dumps(CROP_BOX),
        "puppetcam.neutral_landmarks": json.dumps(neutral_landmarks()),
        "puppetcam.neutral_iris": json.dumps([[96.0, 112.5, 4.0], [160.0, 112.5, 4.0]]),
        "puppetcam.portrait_png_b64": base64.b64encode(portrait_png()).decode("ascii"),
        "puppetcam.precision": "fp32",
        "puppetcam.provenance": json.dumps({"fixture": "scripts/make_test_models.py", "mix": MIX, "base": BASE}),
    }
    return {k: v for k, v in meta.items() if k not in drop}


def generator(name, in_name="landmarks", out_name="image", in_hw=256, drop=()):
    x = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [1, 3, in_hw, in_hw])
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [1, 3, in_hw, in_hw])
    mix = numpy_helper.from_array(np.array(MIX, np.float32), "mix")
    base = numpy_helper.from_array(((1 - MIX) * np.array(BASE, np.float32)).reshape(1, 3, 1, 1), "base")
    nodes = [helper.make_node("Mul", [in_name, "mix"], ["scaled"]),
             helper.make_node("Add", ["scaled", "base"], [out_name])]
    graph = helper.make_graph(nodes, "puppetcam_fixture", [x], [y], [mix, base])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="puppetcam-fixtures")
    model.ir_version = 8  # readable by every onnxruntime the project supports
    for k, v in metadata(name, drop).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    fixtures = {
        "generator_ok.onnx": generator("fixture-avatar"),
        "generator_bad_input_shape.onnx": generator("bad-shape", in_hw=128),
        "generator_missing_crop_box.onnx": generator("no-crop-box", drop=("puppetcam.crop_box",)),
        "generator_bad_output_name.onnx": generator("bad-output", out_name="rgb"),
    }
    for fname, model in fixtures.items():
        path = os.path.join(args.out, fname)
        onnx.save(model, path)
        size = os.path.getsize(path)
        assert size < 200_000, f"{fname} is {size} bytes; fixtures must stay small"
        print(f"wrote {path} ({size} bytes)")


if __name__ == "__main__":
    main()
