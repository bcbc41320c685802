//! Real-data acceptance of warp avatars (issue 8), in the style of tests/retarget_real.rs:
//! 5 portraits (3 paintings) x 3 held-out driver clips through `WarpStage`, the generator
//! stage's own per-frame code. The retargeted mesh that drives the warp must follow the
//! driver's mouth opening and eye opening (Pearson r >= 0.9 over the clip), and every rendered
//! frame must come out (no fold left in the warp).
//!
//! Data: `$PUPPETCAM_DATA`, else ../shared/data (tests/common); skipped with a message without
//! it on a developer machine, a failure under CI=true.
use puppetcam::avatar::create::create;
use puppetcam::avatar::{Ease, MeshNeutral, WarpStage};
use puppetcam::core::landmarks::{to68, to68_2d};
use puppetcam::core::retarget::{openness, openness::Eye, RetargetParams};
use puppetcam::core::types::{FaceLandmarks, Iris};
use puppetcam::face::extract::{extract_with, ExtractArgs, FrameRecord};
use puppetcam::face::FaceModels;
use puppetcam::stats::pearson;
use std::path::{Path, PathBuf};

mod common;

const PORTRAITS: [&str; 5] = ["lp_s0.jpg", "lp_s3.jpg", "lp_s4.jpg", "lp_s1.jpg", "df_img20.jpg"];
const DRIVERS: [&str; 3] = ["lp_d5.mp4", "lp_d18.mp4", "r3_May_5s.mp4"];

fn driver(path: &Path) -> Vec<FaceLandmarks> {
    let mut args = ExtractArgs::new(path);
    args.smooth = true; // as the live daemon sees its driver
    let mut out: Vec<FrameRecord> = Vec::new();
    extract_with(&args, |r| {
        out.push(r);
        Ok(())
    })
    .unwrap();
    out.into_iter()
        .filter_map(|r| {
            let mesh = r.mesh?;
            let pts68 = to68(&mesh).ok()?;
            Some(FaceLandmarks { mesh, pts68, iris: r.iris.map(|ir| ir.map(|[cx, cy, r]| Iris { cx, cy, r })), score: r.score })
        })
        .collect()
}

fn eye_mean(p: &[[f32; 2]; 68]) -> f64 {
    (openness::eye(p, Eye::Right).unwrap_or(0.0) as f64 + openness::eye(p, Eye::Left).unwrap_or(0.0) as f64) / 2.0
}

#[test]
fn portraits_follow_held_out_drivers_mouth_and_eyes() {
    let Some(root) = common::data("portraits").map(|_| common::data_root()) else { return };
    let models = FaceModels::locate().unwrap();
    let drivers: Vec<(String, Vec<FaceLandmarks>)> =
        DRIVERS.iter().map(|d| (d.to_string(), driver(&root.join("videos").join(d)))).collect();
    let mut worst = (f64::INFINITY, f64::INFINITY);
    let mut lines = Vec::new();
    for p in PORTRAITS {
        let img: PathBuf = root.join("portraits").join(p);
        let (av, _) = create(&[img], p, &models).unwrap();
        let (w, h) = (av.shots[0].image.width / 2 * 2, av.shots[0].image.height / 2 * 2);
        for (name, lms) in &drivers {
            // The driver's neutral: its first frame, as `--neutral` would give it.
            let n = &lms[0];
            let neutral = MeshNeutral { pts68: n.pts68, mesh: Some(n.mesh.iter().map(|q| [q[0], q[1]]).collect()), depth: Some(n.mesh.iter().map(|q| q[2]).collect()), iris: n.iris };
            let ease = Ease { hold_s: 0.2, out_s: 0.3, in_s: 0.15 };
            let mut st = WarpStage::new(av.clone(), w, h, RetargetParams::default(), Some(&neutral), ease).unwrap();
            let (mut m_d, mut m_o, mut e_d, mut e_o) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (k, lm) in lms.iter().enumerate() {
                let (posed, used) = st.drive(Some(lm), 1.0 / 30.0);
                assert!(used, "{p} x {name}: frame {k} rejected");
                // The retargeted face seen from the front (the head turn is applied when drawing).
                let o68 = to68_2d(&posed.posed.pts).unwrap();
                m_d.push(openness::mouth(&lm.pts68).unwrap_or(0.0) as f64);
                m_o.push(openness::mouth(&o68).unwrap_or(0.0) as f64);
                e_d.push(eye_mean(&lm.pts68));
                e_o.push(eye_mean(&o68));
                if k % 40 == 0 {
                    // Rendering works on every kind of frame, and leaves no fold behind.
                    let (f, _) = st.frame(Some(lm), 1.0 / 30.0).unwrap();
                    assert_eq!((f.width, f.height), (w, h));
                }
            }
            let (rm, re) = (pearson(&m_d, &m_o), pearson(&e_d, &e_o));
            lines.push(format!("{p} x {name}: {} frames, mouth r {rm:.3}, eye r {re:.3}", m_d.len()));
            worst = (worst.0.min(rm), worst.1.min(re));
        }
    }
    for l in &lines {
        eprintln!("{l}");
    }
    assert!(worst.0 >= 0.9, "mouth-open correlation below 0.9:\n{}", lines.join("\n"));
    assert!(worst.1 >= 0.9, "eye-open correlation below 0.9:\n{}", lines.join("\n"));
}
