"""Self-reenactment on held-out identities (paper, section 4): shots from the start of a clip,
targets from its second half, driven by the targets' own rasters. Metrics against the real
target frame: SSIM, PSNR, landmark error (the landmark extractor re-run on the output, normalised
by the outer-eye-corner distance) and identity similarity when dlib's recogniser is importable.
Two baselines always run: the nearest shot frame as is, and that shot warped piecewise-affinely
from its landmarks to the target's.
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import PiecewiseAffineTransform, warp

from . import dataset as DS
from . import finetune as FT
from . import landmarks as L


def nme(pred, gt) -> float:
    """Mean point distance / outer-eye-corner distance (iBUG 36, 45)."""
    return float(np.linalg.norm(pred - gt, axis=1).mean() / np.linalg.norm(gt[36] - gt[45]))


def nearest_shot(shot_lm, target_lm) -> int:
    """The shot whose (centred) landmarks are closest to the target's: a fair static baseline."""
    c = lambda p: p - p.mean(0)  # noqa: E731
    return int(np.argmin([np.abs(c(s) - c(target_lm)).mean() for s in shot_lm]))


def piecewise_affine(img, src_lm, dst_lm):
    """Warps img so that its landmarks src_lm move to dst_lm (border anchored)."""
    edge = np.array([[x, y] for x in (0, 128, 255) for y in (0, 128, 255) if (x, y) != (128, 128)], float)
    src, dst = np.vstack([src_lm, edge]), np.vstack([dst_lm, edge])
    # warp() wants the output -> input map, hence (dst, src)
    if hasattr(PiecewiseAffineTransform, "from_estimate"):  # scikit-image >= 0.26
        t = PiecewiseAffineTransform.from_estimate(dst, src)
    else:
        t = PiecewiseAffineTransform()
        t.estimate(dst, src)
    return (warp(img, t, order=1, mode="edge", preserve_range=True)).round().astype(np.uint8)


class IdentityScorer:
    """dlib's face recogniser (face_recognition_models) when importable, else unavailable."""

    def __init__(self):
        try:
            import dlib  # noqa: F401
            import face_recognition_models as frm
            self.det = dlib.get_frontal_face_detector()
            self.sp = dlib.shape_predictor(frm.pose_predictor_model_location())
            self.rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
            self.why = "dlib face_recognition_models"
        except Exception as e:  # noqa: BLE001 - any import/model problem means "not available"
            self.rec, self.why = None, f"not available ({type(e).__name__}: {e})"

    def __call__(self, a, b):
        if self.rec is None:
            return None
        descs = []
        for img in (a, b):
            faces = self.det(img, 1)
            if not faces:
                return None
            descs.append(np.array(self.rec.compute_face_descriptor(img, self.sp(img, faces[0]))))
        return float(1.0 - np.linalg.norm(descs[0] - descs[1]))  # dlib: same person if dist < 0.6


def score(out, target, target_lm, backend, ident):
    r = L.landmarks_for_image(out, backend)
    return dict(ssim=structural_similarity(out, target, channel_axis=2, data_range=255),
                psnr=peak_signal_noise_ratio(target, out, data_range=255),
                nme=None if r is None else nme(np.asarray(r[0]), target_lm), id=ident(out, target))


def evaluate(meta_ckpt: str, cache: str, identities, shots=(1, 8, 32), n_targets=12,
             ft: FT.FinetuneConfig = FT.FinetuneConfig(steps=30), log=print) -> dict:
    """{(K, method): list of per-target metric dicts} over the held-out identities."""
    store = DS.ClipStore(cache, include_identities=set(identities))
    if len(store) == 0:
        raise SystemExit(f"none of {identities} in {cache}")
    ident = IdentityScorer()
    backend = store.backends()[0]  # score with the extractor the targets were annotated with
    res = {}
    for ci in range(len(store)):
        a, meta = store.arrays(ci), store.meta[ci]
        n = len(a["frames"])
        first_target = max(max(shots), n // 2)
        tidx = np.linspace(first_target, n - 1, n_targets).round().astype(int)
        for k in shots:
            sidx = np.arange(min(k, first_target))
            shots_k = FT.shots_from_cache(a, sidx, meta["source"], meta["landmark_backend"], meta["box"])
            _, E, G, D = FT.load_meta(meta_ckpt)
            ff, _, _ = FT.init_personal(E, G, D, shots_k)  # feed-forward: psi = P e_new, no tuning
            pg, _ = FT.finetune(meta_ckpt, shots_k, ft, log=None)
            for t in tidx:
                target, tlm = np.asarray(a["frames"][t]), np.asarray(a["lm68"][t])
                x = DS.to_tensor(np.asarray(a["rasters"][t]))[None]
                j = nearest_shot(shots_k.lm68, tlm)
                with torch.no_grad():
                    outs = {"ours (fine-tuned)": DS.to_uint8(pg(x)[0]),
                            "ours (feed-forward)": DS.to_uint8(ff.eval()(x)[0])}
                outs["baseline: nearest shot"] = shots_k.imgs[j]
                outs["baseline: piecewise-affine warp"] = piecewise_affine(shots_k.imgs[j], shots_k.lm68[j], tlm)
                for name, out in outs.items():
                    res.setdefault((k, name), []).append(score(out, target, tlm, backend, ident))
            if log:
                log(f"{meta['identity']} K={k}: " + ", ".join(
                    f"{m}: ssim={np.mean([r['ssim'] for r in v[-len(tidx):]]):.3f}"
                    for (kk, m), v in res.items() if kk == k))
    res["_identity"] = ident.why
    res["_backend"] = backend
    res["_identities"] = [m["identity"] for m in store.meta]
    return res


def markdown(res: dict) -> str:
    rows = ["| shots | method | SSIM ↑ | PSNR dB ↑ | landmark NME ↓ (found) | identity sim ↑ |",
            "|---|---|---|---|---|---|"]
    for key, v in res.items():
        if not isinstance(key, tuple):
            continue
        k, name = key
        found = [r["nme"] for r in v if r["nme"] is not None]
        ids = [r["id"] for r in v if r["id"] is not None]
        rows.append(f"| {k} | {name} | {np.mean([r['ssim'] for r in v]):.3f} | "
                    f"{np.mean([r['psnr'] for r in v]):.2f} | "
                    f"{(np.mean(found) if found else float('nan')):.3f} ({len(found)}/{len(v)}) | "
                    f"{(f'{np.mean(ids):.3f}' if ids else 'n/a')} |")
    rows.append("")
    rows.append(f"Identities: {', '.join(res['_identities'])}; landmarks: {res['_backend']}; "
                f"identity similarity: {res['_identity']}.")
    return "\n".join(rows)
