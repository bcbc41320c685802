//! Training data for the distilled iris model (scripts/train_iris.py): the daemon's own eye crops
//! of a clip, cut exactly as the live face stage cuts them (`face::iris::eye_input`, from the raw
//! per-frame mesh), plus randomly jittered crops (shift, scale, rotation: the spread of crops a
//! jittering mesh and a moving head give), each labelled with MediaPipe's iris model's 5 iris
//! points and 16 lid points on that very crop. The labels are the teacher's answer on the student's exact input,
//! so no geometry has to be re-implemented in Python.
//!
//! Writes `OUT/STEM.u8` (N x 3 x 64 x 64 bytes, the model input times 255) and `OUT/STEM.f32`
//! (N x 45 floats: 10 teacher iris point coordinates in input pixels, 32 lid-contour point
//! coordinates (the teacher's first 16 eye-contour points, `face::iris::LID_CONTOUR`), the crop's
//! side in frame pixels, the inter-ocular distance in frame pixels, the eye index).
//! Usage: cargo run --release --example iris_data -- CLIP.mp4 OUT [JITTERED_PER_EYE] [SEED]
use puppetcam::core::geometry::dist;
use puppetcam::face::iris::{eye_roi_in, IrisModel, IrisTiming};
use puppetcam::face::roi::{crop_to_tensor, frame_mat, Border, RotRect};
use puppetcam::face::{FaceModels, FaceTracker, TrackerConfig};
use puppetcam::source::{open_source, SourceSpec};
use std::io::Write;
use std::path::PathBuf;

/// A small deterministic generator (xorshift64*): the data set is reproducible from its seed.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (clip, out) = match (args.get(1), args.get(2)) {
        (Some(c), Some(o)) => (PathBuf::from(c), PathBuf::from(o)),
        _ => return Err("usage: iris_data CLIP.mp4 OUT [JITTERED_PER_EYE] [SEED]".into()),
    };
    let jittered: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let seed: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let models = FaceModels::locate()?;
    let iris_path = models.iris.clone().ok_or("iris_landmarks.onnx not found")?;
    let mut teacher = IrisModel::load(&iris_path)?;
    // The raw mesh, as the live stage crops from it (filtering is for display only).
    let mut tracker = FaceTracker::new(&models, TrackerConfig { iris: false, filter: None, ..Default::default() })?;
    let mut src = open_source(&SourceSpec::File { path: clip.clone(), looping: false, realtime: false })?;
    std::fs::create_dir_all(&out)?;
    let stem = clip.file_stem().ok_or("clip has no name")?.to_string_lossy().to_string();
    let mut px = std::io::BufWriter::new(std::fs::File::create(out.join(format!("{stem}.u8")))?);
    let mut lab = std::io::BufWriter::new(std::fs::File::create(out.join(format!("{stem}.f32")))?);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stem.bytes().fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64)) | 1);
    let (mut frames, mut n) = (0usize, 0usize);
    while let Some(f) = src.next_frame()? {
        frames += 1;
        let Some(lm) = tracker.process(&f)? else { continue };
        let m = &lm.mesh;
        let iod = dist([m[33][0], m[33][1]], [m[263][0], m[263][1]]) as f32;
        let img = frame_mat(&f)?;
        for k in 0..2 {
            let mut t = IrisTiming::default();
            let Some((roi, input)) = IrisModel::eye_input(&img, m, k, &mut t)? else { continue };
            debug_assert_eq!(Some(roi), eye_roi_in(m, k));
            let mut crops = vec![(roi, input)];
            for _ in 0..jittered {
                let s = roi.w * rng.uniform(0.88, 1.14);
                let r = RotRect {
                    cx: roi.cx + roi.w * rng.uniform(-0.07, 0.07),
                    cy: roi.cy + roi.w * rng.uniform(-0.07, 0.07),
                    w: s,
                    h: s,
                    angle: roi.angle + rng.uniform(-0.12, 0.12),
                };
                crops.push((r, crop_to_tensor(&img, &r, 64, Border::Replicate, 1.0 / 255.0, 0.0, k == 1)?));
            }
            for (r, input) in crops {
                let (pts, lids) = teacher.raw_all(&input)?;
                let lids = lids.ok_or("the teacher has no eye-contour output")?;
                let bytes: Vec<u8> = input.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect();
                px.write_all(&bytes)?;
                let mut row: Vec<f32> = pts.iter().chain(lids.iter()).flatten().copied().collect();
                row.extend([r.w, iod, k as f32]);
                for v in row {
                    lab.write_all(&v.to_le_bytes())?;
                }
                n += 1;
            }
        }
    }
    px.flush()?;
    lab.flush()?;
    println!("{stem}: {frames} frames, {n} eye crops");
    Ok(())
}
