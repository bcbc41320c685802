//! Fits the warp's free constants on training clips (self-reenactment, as docs/quality.md
//! scores it): portrait = frame 0, driver = the clip with `--neutral` = frame 0, face-box and
//! head-box PSNR over the last 60 % of the frames, for each candidate ring motion.
//!   cargo run --release --example warp_fit -- CONFIGS.jsonl CLIP...
//! CONFIGS.jsonl: one JSON array per line, [inner_up, inner_down, outer_up, outer_down,
//! residual_up, residual_down] and optionally [.., fallbacks 0/1, bypass retargeting 0/1,
//! pose smoothing, cavity opacity, rim, deep]. Prints one line per config: mean face PSNR, head PSNR, mouth
//! PSNR over the clips, then per clip. Use only clips of training identities (docs/quality.md).
use puppetcam::avatar::{Ease, MeshNeutral, WarpStage};
use puppetcam::core::geometry::Pt;
use puppetcam::core::features::Cavity;
use puppetcam::core::retarget::RetargetParams;
use puppetcam::core::types::{FaceLandmarks, Frame};
use puppetcam::core::warp::RingMotion;
use puppetcam::face::{tracker::FaceTracker, FaceModels, TrackerConfig};
use puppetcam::source::FrameSource;

struct Clip {
    name: String,
    frames: Vec<Frame>,
    lms: Vec<Option<FaceLandmarks>>,
    avatar: puppetcam::avatar::WarpAvatar,
    neutral: MeshNeutral,
}

/// The box of `pts` padded by `pad` of its size on each side, clipped to `w` x `h`.
fn bbox(pts: &[Pt], pad: f32, w: u32, h: u32) -> [u32; 4] {
    let [x0, y0, x1, y1] = puppetcam::core::landmarks::bbox(pts).unwrap_or([0.0, 0.0, w as f32, h as f32]);
    let (px, py) = ((x1 - x0) * pad, (y1 - y0) * pad);
    [(x0 - px).floor().max(0.0) as u32, (y0 - py).floor().max(0.0) as u32, ((x1 + px).ceil() as u32).min(w), ((y1 + py).ceil() as u32).min(h)]
}

fn mse(a: &Frame, b: &Frame, r: [u32; 4]) -> f64 {
    let (mut s, mut n) = (0.0f64, 0u64);
    for y in r[1]..r[3] {
        for x in r[0]..r[2] {
            let o = 3 * (y * a.width + x) as usize;
            for k in 0..3 {
                let d = a.data[o + k] as f64 - b.data[o + k] as f64;
                s += d * d;
            }
            n += 3;
        }
    }
    s / n.max(1) as f64
}

fn psnr(m: f64) -> f64 {
    if m <= 0.0 { 99.0 } else { 10.0 * (255.0f64 * 255.0 / m).log10() }
}

fn load(path: &std::path::Path, models: &FaceModels, tmp: &std::path::Path) -> anyhow::Result<Clip> {
    let mut src = puppetcam::source::file::FileSource::open(path, false, false)?;
    let mut frames = Vec::new();
    while let Some(f) = src.next_frame()? {
        frames.push(f);
        if frames.len() >= 200 {
            break;
        }
    }
    let mut tr = FaceTracker::new(models, TrackerConfig::default())?;
    let lms = frames.iter().map(|f| tr.process(f)).collect::<puppetcam::Result<Vec<_>>>()?;
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let png = tmp.join(format!("{name}.png"));
    let f0 = &frames[0];
    let rgb = puppetcam::face::roi::frame_mat(f0)?;
    let mut bgr = opencv::core::Mat::default();
    opencv::imgproc::cvt_color_def(&rgb, &mut bgr, opencv::imgproc::COLOR_RGB2BGR)?;
    opencv::imgcodecs::imwrite_def(png.to_str().unwrap(), &bgr)?;
    let (avatar, _) = puppetcam::avatar::create::create(std::slice::from_ref(&png), &name, models)?;
    let c = puppetcam::pipeline::Calibration::from_neutral(&png, models, true)?;
    let neutral = MeshNeutral { pts68: c.neutral.pts68, mesh: c.mesh.clone(), depth: c.depth.clone(), iris: c.neutral.iris };
    Ok(Clip { name, frames, lms, avatar, neutral })
}

/// `fallbacks`: the eye and mouth fallbacks; `bypass`: the driver's mesh drives the warp as is
/// (no retargeting), as the plain-warp baseline does.
fn score(c: &Clip, m: RingMotion, fallbacks: bool, bypass: bool, params: &RetargetParams, cavity: Cavity) -> anyhow::Result<[f64; 3]> {
    let (w, h) = (c.frames[0].width, c.frames[0].height);
    let ease = Ease { hold_s: 0.2, out_s: 0.3, in_s: 0.15 };
    let mut st = WarpStage::new(c.avatar.clone(), w, h, params.clone(), Some(&c.neutral), ease)?;
    st.renderer_mut().set_ring_motion(m);
    st.renderer_mut().set_fallbacks(fallbacks);
    st.renderer_mut().set_cavity(cavity);
    let first = (0.4 * c.frames.len() as f64).ceil() as usize;
    let mut acc = [0.0f64; 3];
    let mut n = 0;
    for (i, (f, lm)) in c.frames.iter().zip(&c.lms).enumerate() {
        let out = match (bypass, lm) {
            (true, Some(l)) => {
                let mesh: Vec<Pt> = l.mesh.iter().map(|p| [p[0], p[1]]).collect();
                st.renderer_mut().render(&mesh, l.iris.as_ref(), &puppetcam::core::geometry::Similarity::IDENTITY, 1.0 / 30.0)?
            }
            (true, None) => f.clone(),
            _ => st.frame(lm.as_ref(), 1.0 / 30.0)?.0,
        };
        if i < first {
            continue;
        }
        let Some(lm) = lm else { continue };
        let mesh: Vec<Pt> = lm.mesh.iter().map(|p| [p[0], p[1]]).collect();
        let mouth: Vec<Pt> = puppetcam::core::mesh::OUTER_LIPS.iter().map(|&i| mesh[i]).collect();
        for (k, r) in [bbox(&mesh, 0.10, w, h), bbox(&mesh, 0.40, w, h), bbox(&mouth, 0.25, w, h)].into_iter().enumerate() {
            acc[k] += psnr(mse(&out, f, r));
        }
        n += 1;
    }
    Ok(acc.map(|a| a / n.max(1) as f64))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() >= 2, "usage: warp_fit CONFIGS.jsonl CLIP...");
    let models = FaceModels::locate()?;
    let tmp = std::env::temp_dir().join(format!("warp_fit_{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let clips = args[1..].iter().map(|p| load(std::path::Path::new(p), &models, &tmp)).collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!("loaded {} clips", clips.len());
    for line in std::fs::read_to_string(&args[0])?.lines().filter(|l| !l.trim().is_empty()) {
        let v: Vec<f32> = serde_json::from_str(line)?;
        anyhow::ensure!(matches!(v.len(), 6 | 8 | 9 | 12), "config needs 6 numbers (+ fallbacks, bypass, pose smoothing, cavity opacity, rim, deep): {line}");
        let (fb, bypass) = if v.len() >= 8 { (v[6] != 0.0, v[7] != 0.0) } else { (true, false) };
        let mut params = RetargetParams::default();
        if v.len() >= 9 {
            params.pose_smoothing = v[8];
        }
        let cavity = if v.len() == 12 { Cavity { opacity: v[9], rim: v[10], deep: v[11] } } else { Cavity::default() };
        let m = RingMotion { inner_up: v[0], inner_down: v[1], outer_up: v[2], outer_down: v[3], residual_up: v[4], residual_down: v[5] };
        let per: Vec<[f64; 3]> = clips.iter().map(|c| score(c, m, fb, bypass, &params, cavity)).collect::<anyhow::Result<_>>()?;
        let mean = |k: usize| per.iter().map(|p| p[k]).sum::<f64>() / per.len() as f64;
        let detail: Vec<String> = clips.iter().zip(&per).map(|(c, p)| format!("{} {:.2}/{:.2}", c.name, p[0], p[1])).collect();
        println!("{line}\tface {:.3}\thead {:.3}\tmouth {:.3}\t{}", mean(0), mean(1), mean(2), detail.join(" "));
    }
    std::fs::remove_dir_all(&tmp).ok();
    Ok(())
}
