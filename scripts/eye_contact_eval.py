"""Eye-contact measurement: render held-out clips onto portraits with [retarget] eye_contact off and
on, re-detect the output with `puppetcam landmarks`, and compare the rendered iris offset from the eye
centre with the driver's.

Usage: scripts/eye_contact_eval.py CLIPS PORTRAITS (comma-separated names), e.g. lp_d5,sh_video lp_s9,lp_d12.
Clips and portraits come from $PUPPETCAM_DATA (else ../shared/data beside the checkout)."""
import json, subprocess, sys, os
from pathlib import Path
import numpy as np, cv2
sys.path.insert(0, os.path.dirname(__file__))
from eyecoords import eye_coords
ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("PUPPETCAM_BIN", str(ROOT / "target/release/puppetcam"))
DATA = Path(os.environ.get("PUPPETCAM_DATA") or ROOT.parent / "shared" / "data")
W = Path(os.environ.get("EYE_CONTACT_WORK", "/tmp/eye_contact")); W.mkdir(exist_ok=True)
BIAS = np.array([[-0.024, -0.030], [0.024, -0.030]])  # frontal gaze rel. to the opening centre, per eye (x along a->b)
def run(*a):
    r = subprocess.run([BIN, *map(str, a)], capture_output=True, text=True, env={**os.environ, "RUST_LOG": "warn"})
    if r.returncode: raise RuntimeError(" ".join(map(str, a)) + r.stderr[-600:])
def marks(path, out):
    if not Path(out).exists(): run("landmarks", path, "--out", out, "-q")
    res = {}
    for line in Path(out).read_text().splitlines():
        r = json.loads(line)
        o = eye_coords(r.get("lm68"), r.get("iris"))
        if o is not None:
            lm = np.array(r["lm68"]); ear = np.mean([(np.linalg.norm(lm[37]-lm[41])+np.linalg.norm(lm[38]-lm[40]))/2/np.linalg.norm(lm[36]-lm[39]),
                                                    (np.linalg.norm(lm[43]-lm[47])+np.linalg.norm(lm[44]-lm[46]))/2/np.linalg.norm(lm[42]-lm[45])])
            res[int(r["frame"])] = (o, ear)
    return res
clips = sys.argv[1].split(",")
portraits = sys.argv[2].split(",")
results = {}
for c in clips:
    clip = DATA / "videos" / f"{c}.mp4"
    drv = marks(clip, W / f"{c}.jsonl")
    cap = cv2.VideoCapture(str(clip)); ok, f0 = cap.read(); cap.release()
    neutral = W / f"{c}_frame0.png"; cv2.imwrite(str(neutral), f0)
    for p in portraits:
        img = cv2.imread(str(DATA / "portraits" / f"{p}.jpg")); h, w = img.shape[:2]; s = min(1.0, 512 / max(h, w))
        size = f"{int(w*s)//2*2}x{int(h*s)//2*2}"
        av = W / f"{p}.pcav"
        if not av.exists(): run("avatar", "create", DATA / "portraits" / f"{p}.jpg", "-o", av, "-q", "--no-refiner")
        for ec in ("off", "on"):
            tag = f"{c}_{p}_{ec}"
            cfg = W / f"ec_{ec}.toml"; cfg.write_text(f"[retarget]\neye_contact = {'true' if ec == 'on' else 'false'}\n")
            vid = W / f"{tag}.mp4"
            if not vid.exists():
                d = W / tag; d.mkdir(exist_ok=True)
                run("run", "--config", cfg, "--avatar", av, "--source", f"file:{clip}", "--output", f"png:{d}", "--size", size, "--cpu", "-q", "--neutral", neutral)
                subprocess.run(["ffmpeg", "-v", "error", "-y", "-framerate", "30", "-pattern_type", "glob", "-i", f"{d}/*.png", "-c:v", "libx264", "-crf", "8", "-pix_fmt", "yuv444p", str(vid)], check=True)
            out = marks(vid, W / f"{tag}.jsonl")
            results[tag] = (drv, out)
def stats(drv, out, c):
    ks = sorted(set(drv) & set(out))
    d = np.array([drv[k][0] for k in ks]); o = np.array([out[k][0] for k in ks]); ear = np.array([drv[k][1] for k in ks])
    open_ = ear > 0.6 * np.median(ear)
    screen = np.median(d[open_], 0)                              # the driver's most frequent gaze
    dep = np.linalg.norm(d - screen, axis=2).mean(1)             # departure from it, both eyes
    sg = open_ & (dep < 0.04); gl = open_ & (dep > 0.07)
    off_c = np.linalg.norm(o, axis=2).mean(1)                    # rendered offset from the eye centre
    off_f = np.linalg.norm(o - BIAS, axis=2).mean(1)             # ... from the frontal-gaze point
    dd = (d - screen)[..., 0].mean(1); oo = o[..., 0].mean(1)
    r = np.corrcoef(dd[open_], oo[open_])[0, 1] if open_.sum() > 3 else np.nan
    return dict(frames=len(ks), screen_frames=int(sg.sum()), glance_frames=int(gl.sum()),
                driver_centre=float(np.linalg.norm(d, axis=2).mean(1)[sg].mean()),
                centre=float(off_c[sg].mean()), frontal=float(off_f[sg].mean()), r_x=float(r),
                glance_move=float(np.abs(oo[gl] - np.median(oo[sg])).mean()) if gl.any() else np.nan,
                driver_glance=float(np.abs(dd[gl]).mean()) if gl.any() else np.nan)
table = {}
for tag, (drv, out) in results.items():
    table[tag] = stats(drv, out, tag)
    print(tag, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in table[tag].items()}, flush=True)
json.dump(table, open(W / "table.json", "w"), indent=1)
