//! Real-data acceptance of retargeting (issue 4): a portrait driven by a video of a different
//! person keeps the portrait's face shape while mouth opening and eye closure track the driver.
//!
//! Landmarks come from the real face tracker (`face::extract`), on the shared data set
//! (`$PUPPETCAM_DATA`, default ../shared/data next to the repository, see tests/common). Without
//! the data the test says so and is skipped on a developer machine, and fails under CI=true; with
//! it, the thresholds are asserted.
//! `PUPPETCAM_REAL_FRAMES` limits the driver frames (default: the whole video).
use std::path::{Path, PathBuf};

use puppetcam::calibrate::{assess, CaptureLimits, Sample};
use puppetcam::core::geometry::{fit_similarity, procrustes_distance, Pt};
use puppetcam::core::raster::crop_box_from_68;
use puppetcam::stats::pearson;
use puppetcam::core::retarget::{estimate_neutral, openness, openness::Eye, NeutralLimits, Pts68, RetargetParams, Retargeter, Shape68};
use puppetcam::core::types::Iris;
use puppetcam::face::extract::{extract_with, ExtractArgs, FrameRecord};

/// Identity-bearing points: jaw, nose, eye corners (no mouth, brows or lids, which carry expression).
const IDENTITY: [usize; 30] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45,
];

mod common;

fn data_dir() -> Option<PathBuf> {
    common::data("videos").map(|_| common::data_root())
}

fn to_pts(v: &[[f32; 2]]) -> Pts68 {
    let mut p = [[0f32; 2]; 68];
    p.copy_from_slice(&v[..68]);
    p
}

fn to_iris(v: [[f32; 3]; 2]) -> [Iris; 2] {
    v.map(|[cx, cy, r]| Iris { cx, cy, r })
}

fn landmarks(path: &Path, smooth: bool, max_frames: Option<u64>) -> puppetcam::Result<Vec<FrameRecord>> {
    let mut args = ExtractArgs::new(path);
    args.smooth = smooth;
    args.max_frames = max_frames;
    let mut out = Vec::new();
    extract_with(&args, |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

fn identity_pts(p: &Pts68) -> Vec<Pt> {
    IDENTITY.iter().map(|&i| p[i]).collect()
}


fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

struct Report {
    frames: usize,
    /// Shape distances of the time-averaged (Procrustes mean) identity configurations.
    mean_out_target: f64,
    mean_out_driver: f64,
    mean_driver_target: f64,
    neutral_from: &'static str,
    d_out_target: f64,
    d_out_driver: f64,
    d_driver_target: f64,
    /// Per-frame deviation of the driver from its own neutral (pose + expression).
    d_driver_neutral: f64,
    closer_to_target: f64,
    mouth_r: f64,
    eye_r: [f64; 2],
    mouth_range: (f64, f64),
    eye_range: (f64, f64),
}

/// Each driver frame's 68 points and irises (`None`: no face in that frame).
fn samples(driver: &[FrameRecord]) -> Vec<Sample> {
    driver.iter().map(|r| r.lm68.as_ref().map(|l| (to_pts(l), r.iris.map(to_iris)))).collect()
}

/// The portrait's shape (in crop coordinates) and the driver's neutral, as `run` sets them up:
/// calibration of the first 3 s, or the median of neutral-looking frames when that fails.
/// `samples` are `driver`'s (see [`samples`]).
fn portrait_and_neutral(portrait: &Path, driver: &[FrameRecord], samples: &[Sample]) -> (Shape68, Shape68, &'static str) {
    let prec = landmarks(portrait, false, None).expect("portrait landmarks");
    let plm = prec[0].lm68.as_ref().expect("a face in the portrait");
    let ppts = to_pts(plm);
    let crop = crop_box_from_68(&ppts).unwrap();
    let target = Shape68 {
        pts68: ppts.map(|p| crop.to_crop(p)),
        iris: prec[0].iris.map(|ir| {
            to_iris(ir).map(|i| {
                let c = crop.to_crop([i.cx, i.cy]);
                Iris { cx: c[0], cy: c[1], r: (i.r as f64 * 256.0 / crop.side) as f32 }
            })
        }),
    };

    // Driver neutral as `puppetcam calibrate` would record it from the first 3 s; an expressive
    // clip may fail that check, then: the median of all frames that pass the neutral checks.
    let first3: Vec<Sample> = driver.iter().zip(samples).filter(|(r, _)| r.t_ms < 3000.0).map(|(_, s)| *s).collect();
    let (neutral, neutral_from) = match assess(&first3, &CaptureLimits::default(), "test", (driver[0].width, driver[0].height)) {
        Ok(p) => (p.shape(), "calibration of the first 3 s"),
        Err(e) => {
            eprintln!("  first 3 s not a usable calibration ({e}); using the median of neutral-looking frames");
            let good: Vec<(Pts68, Option<[Iris; 2]>)> =
                samples.iter().flatten().filter(|(p, _)| NeutralLimits::default().check(p).is_ok()).copied().collect();
            let pts: Vec<Pts68> = good.iter().map(|g| g.0).collect();
            let ir: Vec<Option<[Iris; 2]>> = good.iter().map(|g| g.1).collect();
            let est = estimate_neutral(&pts, &ir).expect("enough neutral-looking frames");
            (Shape68 { pts68: est.pts68, iris: est.iris }, "median of neutral-looking frames")
        }
    };
    (target, neutral, neutral_from)
}

fn run_pair(portrait: &Path, driver: &[FrameRecord]) -> Report {
    let samples = samples(driver);
    let (target, neutral, neutral_from) = portrait_and_neutral(portrait, driver, &samples);
    let mut r = Retargeter::new(target, Some(neutral), RetargetParams::default()).unwrap();
    let t_id = identity_pts(&target.pts68);
    let (mut d_ot, mut d_od, mut d_dt, mut d_dn, mut closer) = (vec![], vec![], vec![], vec![], 0usize);
    let dn_id = identity_pts(&neutral.pts68);
    let (mut dm, mut om) = (vec![], vec![]);
    // Procrustes means: every frame aligned to the portrait's neutral, then averaged.
    let (mut sum_out, mut sum_drv) = (vec![[0f64; 2]; IDENTITY.len()], vec![[0f64; 2]; IDENTITY.len()]);
    let accumulate = |sum: &mut Vec<[f64; 2]>, pts: &[Pt]| {
        let t = fit_similarity(pts, &t_id, None).unwrap();
        for (acc, p) in sum.iter_mut().zip(pts) {
            let q = t.apply(*p);
            acc[0] += q[0] as f64;
            acc[1] += q[1] as f64;
        }
    };
    let (mut de, mut oe) = ([vec![], vec![]], [vec![], vec![]]);
    for s in samples.iter().flatten() {
        let out = r.retarget(&s.0, s.1.as_ref()).expect("real landmarks retarget");
        let o_id = identity_pts(&out.pts68);
        let d_id = identity_pts(&s.0);
        let a = procrustes_distance(&o_id, &t_id).unwrap();
        let b = procrustes_distance(&o_id, &d_id).unwrap();
        d_ot.push(a);
        d_od.push(b);
        d_dt.push(procrustes_distance(&d_id, &t_id).unwrap());
        d_dn.push(procrustes_distance(&d_id, &dn_id).unwrap());
        closer += (a < b) as usize;
        accumulate(&mut sum_out, &o_id);
        accumulate(&mut sum_drv, &d_id);
        dm.push(openness::mouth(&s.0).unwrap() as f64);
        om.push(openness::mouth(&out.pts68).unwrap() as f64);
        for e in Eye::BOTH {
            de[e as usize].push(openness::eye(&s.0, e).unwrap() as f64);
            oe[e as usize].push(openness::eye(&out.pts68, e).unwrap() as f64);
        }
    }
    let n = d_ot.len();
    let range = |v: &[f64]| (v.iter().cloned().fold(f64::INFINITY, f64::min), v.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    let er = range(&de[0]);
    let to_mean = |sum: &[[f64; 2]]| -> Vec<Pt> { sum.iter().map(|a| [(a[0] / n as f64) as f32, (a[1] / n as f64) as f32]).collect() };
    let (mean_out, mean_drv) = (to_mean(&sum_out), to_mean(&sum_drv));
    Report {
        frames: n,
        mean_out_target: procrustes_distance(&mean_out, &t_id).unwrap(),
        mean_out_driver: procrustes_distance(&mean_out, &mean_drv).unwrap(),
        mean_driver_target: procrustes_distance(&mean_drv, &t_id).unwrap(),
        neutral_from,
        d_out_target: mean(&d_ot),
        d_out_driver: mean(&d_od),
        d_driver_target: mean(&d_dt),
        d_driver_neutral: mean(&d_dn),
        closer_to_target: closer as f64 / n as f64,
        mouth_r: pearson(&dm, &om),
        eye_r: [pearson(&de[0], &oe[0]), pearson(&de[1], &oe[1])],
        mouth_range: range(&dm),
        eye_range: er,
    }
}

#[test]
fn portrait_keeps_its_shape_and_follows_the_driver() {
    let Some(data) = data_dir() else { return };
    // The face models ship in onnx/: not finding them is a failure, not a skip.
    puppetcam::face::FaceModels::locate().expect("face models (onnx/ or PUPPETCAM_MODEL_DIR)");
    let max: u64 = std::env::var("PUPPETCAM_REAL_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let video = data.join("videos/lp_d3.mp4");
    // The daemon smooths landmarks with the One Euro filter; do the same here.
    let driver = landmarks(&video, true, (max > 0).then_some(max)).expect("driver landmarks");
    let faces = driver.iter().filter(|r| r.face).count();
    assert!(faces as f64 > 0.9 * driver.len() as f64, "face found in {faces} of {} driver frames", driver.len());
    for portrait in ["lp_s9.jpg", "lp_d30.jpg"] {
        let rep = run_pair(&data.join("portraits").join(portrait), &driver);
        println!(
            "{portrait} driven by lp_d3 ({} frames, neutral: {}):\n  mean identity shape (Procrustes distance of time-averaged jaw+nose+eye corners): output-portrait {:.4}, output-driver {:.4}, driver-portrait {:.4}\n  per-frame identity shape distance (Procrustes, jaw+nose+eye corners): output-portrait {:.4}, output-driver {:.4}, driver-portrait {:.4}, driver-own neutral {:.4}; output closer to the portrait in {:.1}% of frames\n  Pearson r driver vs output: mouth openness {:.3} (driver range {:.3}..{:.3}), eye openness right {:.3} / left {:.3} (driver right EAR {:.3}..{:.3})",
            rep.frames,
            rep.neutral_from,
            rep.mean_out_target,
            rep.mean_out_driver,
            rep.mean_driver_target,
            rep.d_out_target,
            rep.d_out_driver,
            rep.d_driver_target,
            rep.d_driver_neutral,
            rep.closer_to_target * 100.0,
            rep.mouth_r,
            rep.mouth_range.0,
            rep.mouth_range.1,
            rep.eye_r[0],
            rep.eye_r[1],
            rep.eye_range.0,
            rep.eye_range.1,
        );
        // The face shape over time is the portrait's, not the driver's.
        assert!(rep.mean_out_target < 0.35 * rep.mean_out_driver, "{portrait}: mean shape {:.4} vs {:.4}", rep.mean_out_target, rep.mean_out_driver);
        // Frame by frame: the output departs from the portrait's neutral as much as the driver
        // departs from its own (pose and expression are transferred, head turns deform the 2-D
        // jaw line on purpose), and stays nearer the portrait than the driver.
        let transfer = (rep.d_out_target - rep.d_driver_neutral).abs() / rep.d_driver_neutral;
        assert!(transfer < 0.25, "{portrait}: output deviation {:.4} vs driver deviation {:.4}", rep.d_out_target, rep.d_driver_neutral);
        assert!(rep.d_out_target < rep.d_out_driver, "{portrait}: shape {:.4} vs {:.4}", rep.d_out_target, rep.d_out_driver);
        assert!(rep.mouth_r > 0.9, "{portrait}: mouth r {:.3}", rep.mouth_r);
        assert!(rep.eye_r[0] > 0.9 && rep.eye_r[1] > 0.9, "{portrait}: eye r {:?}", rep.eye_r);
    }
}

/// A real blink shuts the portrait's eye, and open eyes stay open (issue 17). MediaPipe reads a
/// shut eye at about half of its open eye-aspect ratio, not 0.3 as the lid remap once assumed;
/// with that remap this clip's blinks left the portrait's eye 16-46 % open (the "blinks do not
/// reach the portrait" of the issue) and this test failed. lp_d10 blinks several times; it is
/// one of the refiner's validation identities, not an evaluation clip.
#[test]
fn a_real_blink_shuts_the_portraits_eye_and_open_eyes_stay_open() {
    let Some(data) = data_dir() else { return };
    puppetcam::face::FaceModels::locate().expect("face models (onnx/ or PUPPETCAM_MODEL_DIR)");
    let driver = landmarks(&data.join("videos/lp_d10.mp4"), true, None).expect("driver landmarks");
    let samples = samples(&driver);
    let (target, neutral, _) = portrait_and_neutral(&data.join("portraits/lp_s9.jpg"), &driver, &samples);
    let ear = |p: &Pts68| Eye::BOTH.map(|e| openness::eye(p, e).unwrap() as f64);
    // What a viewer sees: the lids' distance across the corner line, over the eye's width (the
    // EAR does not reach 0 on a shut eye: its lid pairs are not vertically above each other).
    let gap = |p: &Pts68| {
        Eye::BOTH.map(|e| {
            let [a, b, u1, u2, l2, l1] = e.indices();
            let (ax, ay) = (p[b][0] - p[a][0], p[b][1] - p[a][1]);
            let w = ax.hypot(ay);
            let across = |u: usize, l: usize| ((p[u][0] - p[l][0]) * -ay + (p[u][1] - p[l][1]) * ax).abs() / w;
            ((across(u1, l1) + across(u2, l2)) / 2.0 / w) as f64
        })
    };
    let (t_gap, n_ear) = (gap(&target.pts68), ear(&neutral.pts68));
    let mut r = Retargeter::new(target, Some(neutral), RetargetParams::default()).unwrap();
    let (mut shut, mut open) = (vec![], vec![]);
    for (p, iris) in samples.iter().flatten() {
        let out = r.retarget(p, iris.as_ref()).expect("real landmarks retarget");
        let (d, o) = (ear(p), gap(&out.pts68));
        let driven = (d[0] / n_ear[0] + d[1] / n_ear[1]) / 2.0;
        let shown = (o[0] / t_gap[0] + o[1] / t_gap[1]) / 2.0;
        if driven < 0.56 {
            shut.push((driven, shown));
        } else if driven > 0.85 {
            open.push(shown);
        }
    }
    println!("lp_s9 driven by lp_d10: blink frames (driven, shown) {shut:.3?}; {} open frames", open.len());
    assert!(shut.len() >= 2, "lp_d10 has blinks: {shut:?}");
    let worst = shut.iter().map(|s| s.1).fold(0.0, f64::max);
    assert!(worst < 0.25, "a blink shows the portrait's eye {:.0} % open: {shut:.3?}", 100.0 * worst);
    open.sort_by(f64::total_cmp);
    let median = open[open.len() / 2];
    assert!(median > 0.8, "open driver eyes show the portrait's {:.0} % open", 100.0 * median);
}
