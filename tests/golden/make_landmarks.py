"""Writes tests/golden/landmarks_*.json: fixed, synthetic 68-point sets for the raster goldens.

Deterministic (no randomness, no shared data): a parametric cartoon face, then per-case edits.
Coordinates are quantised to 1/128 px so that they are exact in f32, f64 and in JSON text, and a
few are pushed onto exact 1/32 px ties to exercise the floor(v*16 + 0.5) rounding rule.
Run: .venv/bin/python tests/golden/make_landmarks.py  (then PUPPETCAM_BLESS=1 cargo test raster)
"""
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
Q = 128.0


def q(v):
    return round(v * Q) / Q


def arc(cx, cy, rx, ry, a0, a1, n):
    return [(cx + rx * math.cos(a0 + (a1 - a0) * i / (n - 1)),
             cy + ry * math.sin(a0 + (a1 - a0) * i / (n - 1))) for i in range(n)]


def ring(cx, cy, rx, ry, n, phase=math.pi):
    # Starts at the outer corner (left for phase=pi) and goes over the top first, like iBUG.
    return [(cx + rx * math.cos(phase + 2 * math.pi * i / n),
             cy + ry * math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]


def face(mouth_open=0.0):
    pts = []
    # jaw 0..16: lower half-ellipse from the image-left temple through the chin to the right
    pts += [(128 - 74 * math.cos(math.pi * i / 16), 112 + 92 * math.sin(math.pi * i / 16)) for i in range(17)]
    pts += arc(92, 92, 24, 8, math.pi * 1.05, math.pi * 1.9, 5)          # right brow 17..21
    pts += arc(164, 92, 24, 8, math.pi * 1.1, math.pi * 1.95, 5)         # left brow 22..26
    pts += [(128, 104 + 12 * i) for i in range(4)]                       # nose bridge 27..30
    pts += [(128 + 9 * (i - 2), 146 + 3 * (1 - abs(i - 2) / 2)) for i in range(5)]  # nose base
    pts += ring(96, 110, 15, 6, 6)                                       # right eye 36..41
    pts += ring(160, 110, 15, 6, 6)                                      # left eye 42..47
    mo = 14 * mouth_open
    pts += ring(128, 176 + mo / 2, 30, 10 + mo / 2, 12)                  # outer lips 48..59
    pts += ring(128, 176 + mo / 2, 20, 2 + mo / 2, 8)                    # inner lips 60..67
    assert len(pts) == 68
    return pts


def transform(pts, angle_deg=0.0, scale=1.0, dx=0.0, dy=0.0, centre=(128, 128)):
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    out = []
    for x, y in pts:
        x, y = x - centre[0], y - centre[1]
        out.append((centre[0] + scale * (c * x - s * y) + dx, centre[1] + scale * (s * x + c * y) + dy))
    return out


def write(name, desc, pts, iris):
    pts = [[q(x), q(y)] for x, y in pts]
    iris = None if iris is None else [[q(v) for v in i] for i in iris]
    # One point per line keeps diffs readable.
    body = ",\n  ".join(json.dumps(p) for p in pts)
    text = (f'{{\n "description": {json.dumps(desc)},\n "iris": {json.dumps(iris)},\n'
            f' "pts68": [\n  {body}\n ]\n}}\n')
    json.loads(text)
    (HERE / f"landmarks_{name}.json").write_text(text)


def main():
    write("neutral", "centred neutral face, integer-ish coordinates, no irises", face(), None)

    pts = face(mouth_open=1.0)
    write("open_mouth_iris", "open mouth, both irises", pts, [[97.25, 110.5, 5.5], [159.0, 110.03125, 5.53125]])

    tf = dict(angle_deg=17.0, scale=0.83, dx=21.3, dy=-9.7)
    pts = transform(face(0.4), **tf)
    (rx, ry), (lx, ly) = transform([(97.3, 110.6), (158.2, 109.4)], **tf)
    # Exact ties: v*16 + 0.5 lands on an integer (v = (2n+1)/32), where round-half-even differs.
    pts[8] = (pts[8][0] // 1 + 1 / 32, pts[8][1] // 1 + 3 / 32)
    pts[30] = (pts[30][0] // 1 + 5 / 32, pts[30][1] // 1 + 7 / 32)
    pts[48] = (pts[48][0] // 1 + 0.03125, pts[48][1] // 1 + 0.09375)
    write("rotated_subpixel", "rotated 17 deg, scaled, off-centre, sub-pixel with 1/32 ties", pts,
          [[rx // 1 + 13 / 32, ry // 1 + 5 / 32, 4.03125], [q(lx), q(ly), 4.46875]])

    pts = transform(face(0.6), angle_deg=-8.0, scale=1.35, dx=-70.0, dy=62.5)
    write("partly_outside", "large face shifted down-left: jaw, lips and one iris leave the canvas; "
          "the second iris has r < 0.5 and must be skipped", pts,
          [[-3.5, 176.25, 7.75], [88.0, 190.0, 0.4921875]])


if __name__ == "__main__":
    main()
