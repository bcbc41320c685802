#!/usr/bin/env python3
"""Writes the fuzzers' seed inputs into fuzz/corpus/<target>/seed-*: small valid avatars made
from onnx/default_avatar.pcav (its 512x512 portrait shrunk, mesh/iris/depth scaled to match, a
tiny stand-in refiner; compact ones with a few triangles), the example calibration profile and config, config snippets from
src/config.rs's tests, and tiny PNG/JPEG/BMP/WebP images. Run with the repo's venv (needs cv2):
    .venv/bin/python fuzz/seeds.py
The committed corpora are these seeds plus what the fuzzers found, minimised (fuzz/README.md)."""
import json
import pathlib
import struct

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


def png(img):
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return buf.tobytes()


def pcav_seeds():
    b = (ROOT / "onnx" / "default_avatar.pcav").read_bytes()
    version, hlen = struct.unpack("<II", b[8:16])
    h = json.loads(b[16 : 16 + hlen])
    data = b[16 + hlen :]
    s0 = h["shots"][0]
    full = cv2.imdecode(np.frombuffer(data[s0["image"]["offset"] :][: s0["image"]["len"]], np.uint8), cv2.IMREAD_COLOR)

    def shot(side, source, depth=True, iris=True, nd=3):
        k = side / s0["width"]
        r = lambda v: round(v * k, nd) if nd else int(round(v * k))
        img = cv2.resize(full, (side, side), interpolation=cv2.INTER_AREA)
        sh = {
            "source": source,
            "width": side,
            "height": side,
            "image": None,
            "mesh": [[r(x), r(y)] for x, y in s0["mesh"]],
            "iris": [[round(v * k, max(nd, 1)) for v in c] for c in s0["iris"]] if iris else None,
        }
        if depth:
            sh["depth"] = [r(z) for z in s0["depth"]]
        return sh, png(img)

    def avatar(shots, refiner=None, version=3, triangles=None):
        blobs = b""
        heads = []
        for sh, img in shots:
            sh["image"] = {"offset": len(blobs), "len": len(img)}
            blobs += img
            heads.append(sh)
        rf = None
        if refiner is not None:
            rf = {"onnx": {"offset": len(blobs), "len": len(refiner)}, "e_mouth": [0.5, -0.25], "e_eye": [0.125], "info": "seed"}
            blobs += refiner
        head = {
            "format": h["format"],
            "name": "seed",
            "created": h["created"],
            "provenance": "fuzz/seeds.py",
            "shots": heads,
            "triangles": h["triangles"] if triangles is None else h["triangles"][:triangles],
            "refiner": rf,
        }
        j = json.dumps(head, separators=(",", ":")).encode()
        return b"PCAVATAR" + struct.pack("<II", version, len(j)) + j + blobs

    # One realistic avatar (the whole triangulation, ~28 kB) and compact ones (a few triangles
    # and short numbers, 4-8 kB: the header checks accept any consistent triangulation), so
    # that the corpus the fuzzer grows from them stays small.
    write("pcav", "one-shot.pcav", avatar([shot(32, "a.png")]))
    write("pcav", "compact.pcav", avatar([shot(24, "a.png", depth=False, nd=1)], triangles=8))
    write("pcav", "compact-two-shots-refiner.pcav", avatar([shot(28, "a.png", nd=0), shot(20, "b.jpg", depth=False, nd=0)], refiner=b"\x08\x07\x12\x04seed", triangles=4))
    write("pcav", "compact-v1-no-iris.pcav", avatar([shot(24, "c.png", depth=False, iris=False, nd=1)], version=1, triangles=2))


def profile_seeds():
    text = (ROOT / "calibration" / "example.toml").read_text()
    write("profile", "example.toml", text)
    # The same without the optional iris, numbers shortened (smaller for the fuzzer).
    import re

    short = re.sub(r"(\d+\.\d{2})\d+", r"\1", text)
    short = "\n".join(l for l in short.splitlines() if not l.startswith("neutral_iris")) + "\n"
    write("profile", "short-no-iris.toml", short)


CONFIG_SNIPPETS = {
    "full.toml": """[source]
kind = "file"
path = "clip.mp4"
loop = true
[output]
kind = "y4m"
path = "-"
format = "i420"
width = 640
height = 480
fps = 25
[avatar]
path = "a.onnx"
portrait = "me.jpg"
[runtime]
providers = ["cuda", "cpu"]
threads = 4
fp16 = false
allow_cpu_fallback = false
device_id = 1
[face]
min_score = 0.7
iris = false
[face.one_euro]
min_cutoff = 2.0
beta = 10.0
d_cutoff = 1.0
[retarget]
enabled = false
head_3d = true
max_roll_deg = 30.0
max_yaw_deg = 20.0
max_pitch_deg = 15.0
max_translation = 0.3
min_scale = 0.5
max_scale = 2.0
pose_smoothing = 0.5
expression_gain = 1.2
mouth_gain = 1.5
learn_frames = 10
learn_max_motion = 0.1
ease_hold_s = 1.0
ease_out_s = 2.0
ease_in_s = 0.5
profile = "calibration/profile.toml"
[service]
bind = "0.0.0.0:9000"
allow_remote = true
enabled = false
preview_fps = 5.0
max_preview_clients = 2
watch_avatar = false
stall_timeout_s = 2.5
source_lost_timeout_s = 30
""",
    "ipv6-bind.toml": '[service]\nbind = "[::1]:9000"\n',
    "synthetic.toml": '[source]\nkind = "synthetic"\nwidth = 320\nheight = 240\nfps = 15\n',
    "png-out.toml": '[output]\nkind = "png"\nevery = 5\n',
    "removed-key.toml": '[source]\nkind = "file"\npath = "a.mp4"\nrealtime = false\n',
    "dotted-inline.toml": 'face.one_euro = { beta = 0.03 }\noutput.format = "I420"\n',
}


def config_seeds():
    write("config", "example.toml", (ROOT / "puppetcam.example.toml").read_text())
    for name, text in CONFIG_SNIPPETS.items():
        write("config", name, text)


def image_seeds():
    rng = np.random.default_rng(18)
    rgb = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    rgba = rng.integers(0, 256, (2, 3, 4), dtype=np.uint8)

    def enc(ext, img, params=()):
        ok, buf = cv2.imencode(ext, img, list(params))
        assert ok
        return buf.tobytes()

    write("image", "rgb.png", enc(".png", rgb))
    write("image", "gray.png", enc(".png", gray))
    write("image", "rgba.png", enc(".png", rgba))
    write("image", "gray16.png", enc(".png", (gray.astype(np.uint16) * 257)))
    write("image", "baseline.jpg", enc(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 50]))
    write("image", "progressive.jpg", enc(".jpg", gray, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]))
    write("image", "rgb.bmp", enc(".bmp", rgb))
    write("image", "gray.bmp", enc(".bmp", gray))
    write("image", "lossy.webp", enc(".webp", rgb, [cv2.IMWRITE_WEBP_QUALITY, 50]))
    write("image", "lossless.webp", enc(".webp", rgba, [cv2.IMWRITE_WEBP_QUALITY, 101]))


if __name__ == "__main__":
    pcav_seeds()
    profile_seeds()
    config_seeds()
    image_seeds()
