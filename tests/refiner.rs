//! The learned refiner end to end with the shipped weights: `avatar create` gives feed-forward
//! (`--steps 0`) and fine-tuned avatars a refiner, `run` composites it only around the mouth and
//! eyes (the rest of the frame stays the warp's, pixel for pixel), it follows an opening mouth,
//! and broken refiners or missing training extras give clear messages.
use puppetcam::avatar::{Ease, WarpAvatar, WarpStage};
use puppetcam::core::mesh::LIP_PAIRS;
use puppetcam::core::retarget::RetargetParams;
use puppetcam::core::types::FaceLandmarks;
use std::path::{Path, PathBuf};

mod common;

use common::{puppetcam, text};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn ease() -> Ease {
    Ease { hold_s: 0.2, out_s: 0.3, in_s: 0.15 }
}

fn runtime() -> puppetcam::ep::RuntimeOptions {
    puppetcam::ep::RuntimeOptions::cpu()
}

/// The avatar's own mesh (68 points and mesh) with the inner lips parted by `open` pixels.
fn driver(av: &WarpAvatar, open: f32) -> FaceLandmarks {
    let mut mesh: Vec<[f32; 3]> = av.shots[0].mesh.iter().map(|p| [p[0], p[1], 0.0]).collect();
    for &(_, l) in LIP_PAIRS.iter() {
        mesh[l][1] += open;
    }
    let pts68 = puppetcam::core::landmarks::to68(&mesh).unwrap();
    FaceLandmarks { mesh, pts68, iris: av.shots[0].iris, score: 1.0 }
}

fn portrait() -> Option<PathBuf> {
    common::data("portraits/lp_s4.jpg")
}

#[test]
fn feed_forward_avatar_refines_only_the_mouth_and_eyes() {
    let Some(img) = portrait() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ff.pcav");
    let o = puppetcam(&["avatar", "create", &img.display().to_string(), "--steps", "0", "-o", &out.display().to_string()], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("refiner: feed-forward"), "{}", text(&o));
    let av = WarpAvatar::load(&out).unwrap();
    let r = av.refiner.as_ref().expect("a refiner");
    assert!(!r.e_mouth.is_empty() && r.e_mouth.iter().all(|v| v.is_finite()));
    let (w, h) = (av.shots[0].image.width, av.shots[0].image.height);
    let params = RetargetParams { pose_smoothing: 0.0, ..Default::default() };
    let neutral = puppetcam::avatar::MeshNeutral { pts68: driver(&av, 0.0).pts68, mesh: Some(av.shots[0].mesh.clone()), depth: av.shots[0].depth.clone(), iris: av.shots[0].iris };
    let mut refined = WarpStage::with_runtime(av.clone(), w, h, params.clone(), Some(&neutral), ease(), Some(&runtime())).unwrap();
    assert!(refined.refiner_ep().is_some());
    let mut plain_av = av.clone();
    plain_av.refiner = None;
    let mut plain = WarpStage::new(plain_av, w, h, params, Some(&neutral), ease()).unwrap();
    let mut last = None;
    for open in [0.0, 4.0, 10.0, 16.0] {
        let lm = driver(&av, open);
        let (a, _) = refined.frame(Some(&lm), 0.04).unwrap();
        let (b, _) = plain.frame(Some(&lm), 0.04).unwrap();
        last = Some((a, b, lm));
    }
    let (a, b, lm) = last.unwrap();
    let mesh: Vec<[f32; 2]> = lm.mesh.iter().map(|p| [p[0], p[1]]).collect();
    let boxes = puppetcam::core::regions::boxes(&mesh).unwrap();
    let inside = |x: u32, y: u32| {
        boxes.iter().any(|b| {
            let q = b.to_crop([x as f64, y as f64]).unwrap();
            q[0] > -1.0 && q[1] > -1.0 && q[0] < b.size as f64 && q[1] < b.size as f64
        })
    };
    let (mut changed_in, mut changed_out) = (0usize, 0usize);
    for y in 0..h {
        for x in 0..w {
            let o = 3 * (y * w + x) as usize;
            if a.data[o..o + 3] != b.data[o..o + 3] {
                if inside(x, y) {
                    changed_in += 1
                } else {
                    changed_out += 1
                }
            }
        }
    }
    assert!(changed_in > 200, "the refiner changed {changed_in} pixels in its boxes");
    // Outside the boxes, only the fallbacks' own pixels differ (they are off with a refiner):
    // the refined frame keeps the warp there.
    assert!(changed_out < changed_in, "{changed_out} pixels changed outside the boxes vs {changed_in} inside");
}

#[test]
fn fine_tuned_avatar_is_made_with_a_progress_report_or_a_clear_fallback() {
    let Some(img) = portrait() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ft.pcav");
    let o = puppetcam(&["avatar", "create", &img.display().to_string(), "--steps", "3", "-o", &out.display().to_string()], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    let av = WarpAvatar::load(&out).unwrap();
    let info = &av.refiner.as_ref().unwrap().info;
    if t.contains("refiner: fine-tuned") {
        assert!(info.contains("3 steps"), "{info}");
    } else {
        // No PyTorch here: said so, and a feed-forward refiner instead.
        assert!(t.contains("not fine-tuning") && t.contains("feed-forward"), "{t}");
    }
    // Without the training extras (a Python that cannot import torch), it says how to get them.
    let out2 = dir.path().join("ff.pcav");
    let o = puppetcam(
        &["avatar", "create", &img.display().to_string(), "--steps", "3", "-o", &out2.display().to_string()],
        dir.path(),
        &[("PUPPETCAM_PYTHON", std::ffi::OsStr::new("/bin/false")), ("PUPPETCAM_REFINER_DIR", repo("onnx").as_os_str())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("not fine-tuning") && t.contains("setup.sh full") && t.contains("feed-forward"), "{t}");
    assert!(WarpAvatar::load(&out2).unwrap().refiner.unwrap().info.starts_with("feed-forward"));
}

#[test]
fn no_refiner_and_broken_refiners() {
    let Some(img) = portrait() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plain.pcav");
    let o = puppetcam(&["avatar", "create", &img.display().to_string(), "--no-refiner", "-o", &out.display().to_string()], dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut av = WarpAvatar::load(&out).unwrap();
    assert!(av.refiner.is_none());
    // A refiner whose bytes are not a refiner: the avatar refuses to load, naming the refiner.
    av.refiner = Some(puppetcam::avatar::RefinerBlob { onnx: b"not onnx".to_vec(), e_mouth: vec![0.0; 128], e_eye: vec![0.0; 128], info: "x".into() });
    let (w, h) = (av.shots[0].image.width, av.shots[0].image.height);
    let e = WarpStage::with_runtime(av.clone(), w, h, RetargetParams::default(), None, ease(), Some(&runtime())).err().unwrap().to_string();
    assert!(e.contains("refiner"), "{e}");
    // A real ONNX with another contract (the face detector) or wrong embedding sizes: refused.
    av.refiner.as_mut().unwrap().onnx = std::fs::read(repo("onnx/refiner.onnx")).unwrap();
    av.refiner.as_mut().unwrap().e_mouth = vec![0.0; 3];
    let e = WarpStage::with_runtime(av.clone(), w, h, RetargetParams::default(), None, ease(), Some(&runtime())).err().unwrap().to_string();
    assert!(e.contains("refiner"), "{e}");
    let det = std::fs::read_dir(repo("onnx")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().contains("detector")).unwrap();
    av.refiner.as_mut().unwrap().onnx = std::fs::read(det).unwrap();
    av.refiner.as_mut().unwrap().e_mouth = vec![0.0; 128];
    let e = WarpStage::with_runtime(av.clone(), w, h, RetargetParams::default(), None, ease(), Some(&runtime())).err().unwrap().to_string();
    assert!(e.contains("refiner"), "{e}");
    // Without a runtime (unit use) the refiner is ignored and the fallbacks draw.
    assert!(WarpStage::new(av, w, h, RetargetParams::default(), None, ease()).is_ok());
}
