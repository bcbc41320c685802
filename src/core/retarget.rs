//! Identity-preserving retargeting: turns the driver's 68 landmarks into landmarks of the
//! *portrait's* face (crop coordinates) showing the driver's expression and head pose.
//!
//! Why: the generator draws whatever face shape the raster shows. Feeding it the driver's raw
//! landmarks would morph the portrait into the driver. So we separate, per frame,
//! - head pose: a similarity aligning the driver's stable points (eye corners, nose, upper jaw)
//!   to the driver's own neutral face;
//! - expression: the aligned driver points minus the driver's neutral, rescaled region by region
//!   to the portrait's proportions, and added to the portrait's neutral;
//! - eyes: lid opening transferred as a ratio of the neutral opening (blinks and winks stay
//!   faithful whatever the eye sizes), iris offset in normalised eye coordinates;
//!
//! Then the pose is re-applied (limited and smoothed) around the portrait's face centre.
//! See docs/retargeting.md. Pure: no I/O, never panics on bad input.
use super::geometry::{centroid, dist, fit_similarity, rms_size, smoothstep, wrap_angle, Pt, Similarity};
use super::types::Iris;
use crate::error::{Error, Result};

/// 68 points in the iBUG order.
pub type Pts68 = [[f32; 2]; 68];

/// Side of the landmark crop the generator sees (docs/rasteriser.md).
pub const CROP_SIDE: f32 = 256.0;

/// Points that move with the skull but little with expression: upper jaw (near the ears),
/// nose bridge and base, eye corners. Mouth, brows, lids and chin are excluded on purpose.
pub const STABLE: [usize; 15] = [0, 1, 15, 16, 27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45];

/// Landmarks ready for `core::raster::rasterise`: 68 points and optional irises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape68 {
    pub pts68: Pts68,
    pub iris: Option<[Iris; 2]>,
}

impl Shape68 {
    pub fn is_finite(&self) -> bool {
        self.pts68.iter().all(|p| p[0].is_finite() && p[1].is_finite())
            && self.iris.map_or(true, |ir| ir.iter().all(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite()))
    }
}

/// Openness measures (pure functions of the 68 points), shared by retargeting, calibration and
/// the real-data tests. Both are ratios, hence invariant to the pose and size of the face.
pub mod openness {
    use super::{dist, Pts68};

    /// Which eye: the subject's right (image left, points 36..41) or left (42..47).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Eye {
        Right,
        Left,
    }

    impl Eye {
        /// (corner a, corner b, upper lid a-side, upper lid b-side, lower lid b-side, lower lid a-side)
        pub const fn indices(self) -> [usize; 6] {
            match self {
                Eye::Right => [36, 39, 37, 38, 40, 41],
                Eye::Left => [42, 45, 43, 44, 46, 47],
            }
        }
        pub const BOTH: [Eye; 2] = [Eye::Right, Eye::Left];
    }

    fn ratio(num: f64, den: f64) -> Option<f32> {
        let r = num / den;
        (num.is_finite() && den > 1e-9 && r.is_finite()).then_some(r as f32)
    }

    /// Mouth openness: mean inner-lip gap (61-67, 62-66, 63-65) over the outer mouth width
    /// (48-54). About 0 closed, 0.3-0.6 wide open. `None` on degenerate/non-finite input.
    pub fn mouth(p: &Pts68) -> Option<f32> {
        let gap = (dist(p[61], p[67]) + dist(p[62], p[66]) + dist(p[63], p[65])) / 3.0;
        ratio(gap, dist(p[48], p[54]))
    }

    /// Eye aspect ratio (Soukupová & Čech 2016): mean lid distance over the corner distance.
    /// About 0.25-0.35 open, below 0.1 closed.
    pub fn eye(p: &Pts68, eye: Eye) -> Option<f32> {
        let [a, b, u1, u2, l2, l1] = eye.indices();
        ratio((dist(p[u1], p[l1]) + dist(p[u2], p[l2])) / 2.0, dist(p[a], p[b]))
    }

    /// Inter-ocular distance: between the centres of the two eye contours.
    pub fn iod(p: &Pts68) -> Option<f32> {
        let c = |r: std::ops::RangeInclusive<usize>| {
            let n = r.clone().count() as f64;
            let (x, y) = r.fold((0.0, 0.0), |(x, y), i| (x + p[i][0] as f64, y + p[i][1] as f64));
            [(x / n) as f32, (y / n) as f32]
        };
        let d = dist(c(36..=41), c(42..=47));
        (d.is_finite() && d > 1e-9).then_some(d as f32)
    }

    /// Head roll in degrees from the outer eye corners (positive: clockwise on screen).
    pub fn roll_deg(p: &Pts68) -> Option<f32> {
        let (dx, dy) = (p[45][0] - p[36][0], p[45][1] - p[36][1]);
        let a = (dy as f64).atan2(dx as f64).to_degrees();
        (a.is_finite() && (dx != 0.0 || dy != 0.0)).then_some(a as f32)
    }

    /// Yaw proxy in -1..1: where the nose tip (30) lies between the jaw sides (0, 16) along the
    /// eye line, 0 when centred (frontal). |value| ~ sin(yaw) for a roughly cylindrical head.
    pub fn yaw_proxy(p: &Pts68) -> Option<f32> {
        let (ax, ay) = ((p[16][0] - p[0][0]) as f64, (p[16][1] - p[0][1]) as f64);
        let len2 = ax * ax + ay * ay;
        if !(len2 > 1e-12) || !len2.is_finite() {
            return None;
        }
        let t = ((p[30][0] - p[0][0]) as f64 * ax + (p[30][1] - p[0][1]) as f64 * ay) / len2;
        let v = 2.0 * t - 1.0;
        v.is_finite().then_some(v.clamp(-1.0, 1.0) as f32)
    }
}

use openness::Eye;

/// Tunables of retargeting (the `[retarget]` config section).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetargetParams {
    /// Largest head roll passed on to the portrait, degrees.
    pub max_roll_deg: f32,
    /// Turn the portrait's 3-D mesh with the driver's head (rendered with depth: the far side
    /// hidden, not folded); false: the 2-D warp of earlier versions, where turns fold.
    pub head_3d: bool,
    /// Largest head yaw and pitch passed on (3-D), degrees; the pose eases towards them.
    pub max_yaw_deg: f32,
    pub max_pitch_deg: f32,
    /// Largest head translation passed on, as a fraction of the crop side.
    pub max_translation: f32,
    /// Head scale range passed on (driver leaning in/out).
    pub min_scale: f32,
    pub max_scale: f32,
    /// Weight of the previous pose in the pose smoothing, 0 (none) ..< 1. Off by default: the
    /// landmarks are already smoothed (One Euro), and a second filter only adds lag (on 27
    /// training clips 0.3 cost 0.07 dB face PSNR and 0.12 dB mouth PSNR, docs/quality.md).
    pub pose_smoothing: f32,
    /// Multiplier of the transferred expression (1 = faithful).
    pub expression_gain: f32,
    /// Mouth opening of the portrait per unit of the driver's, both over their own inter-ocular
    /// distance (1 = the same opening relative to the face; times `expression_gain`). Measured
    /// per face rather than per mouth width: a portrait with a narrow mouth otherwise mumbles
    /// where the driver speaks clearly (issue 17: slope 0.71 on cross-identity pairs).
    pub mouth_gain: f32,
    /// Without a calibration profile: steady frames needed to learn the driver's neutral.
    pub learn_frames: usize,
    /// Without a profile: largest non-rigid landmark motion (RMS / inter-ocular distance)
    /// accepted in the learning window.
    pub learn_max_motion: f32,
}

impl Default for RetargetParams {
    fn default() -> Self {
        RetargetParams {
            max_roll_deg: 30.0,
            head_3d: true,
            max_yaw_deg: 35.0,
            max_pitch_deg: 25.0,
            max_translation: 0.12,
            min_scale: 0.85,
            max_scale: 1.2,
            pose_smoothing: 0.0,
            expression_gain: 1.0,
            mouth_gain: 1.0,
            learn_frames: 30,
            learn_max_motion: 0.03,
        }
    }
}

impl RetargetParams {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::Config { key: format!("retarget.{k}"), msg: m.into() });
        if !(self.max_roll_deg >= 0.0 && self.max_roll_deg <= 90.0) {
            return bad("max_roll_deg", "must be in 0..=90");
        }
        if !(self.max_yaw_deg >= 0.0 && self.max_yaw_deg <= 60.0) {
            return bad("max_yaw_deg", "must be in 0..=60");
        }
        if !(self.max_pitch_deg >= 0.0 && self.max_pitch_deg <= 45.0) {
            return bad("max_pitch_deg", "must be in 0..=45");
        }
        if !(self.max_translation >= 0.0 && self.max_translation <= 1.0) {
            return bad("max_translation", "must be in 0..=1 (fraction of the crop)");
        }
        if !(self.min_scale > 0.0 && self.min_scale <= 1.0) {
            return bad("min_scale", "must be in (0, 1]");
        }
        if !(self.max_scale >= 1.0 && self.max_scale <= 4.0) {
            return bad("max_scale", "must be in [1, 4]");
        }
        if !(self.pose_smoothing >= 0.0 && self.pose_smoothing < 1.0) {
            return bad("pose_smoothing", "must be in [0, 1)");
        }
        if !(self.expression_gain >= 0.0 && self.expression_gain <= 3.0) {
            return bad("expression_gain", "must be in [0, 3]");
        }
        if !(self.mouth_gain >= 0.25 && self.mouth_gain <= 3.0) {
            return bad("mouth_gain", "must be in [0.25, 3]");
        }
        if self.learn_frames < 3 {
            return bad("learn_frames", "must be at least 3");
        }
        if !(self.learn_max_motion > 0.0 && self.learn_max_motion.is_finite()) {
            return bad("learn_max_motion", "must be positive");
        }
        Ok(())
    }
}

/// Where the driver's neutral face comes from; the daemon reports it in its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeutralStatus {
    /// From a calibration profile.
    Profile,
    /// No profile: a provisional neutral (a running estimate over the recent frames, blended in
    /// smoothly) drives the portrait while steady frames are collected (`have` of `need`).
    Learning { have: usize, need: usize },
    /// No profile: learned from the first steady frames.
    Learned,
}

fn check_finite(p: &Pts68, what: &str) -> Result<()> {
    if p.iter().all(|q| q[0].is_finite() && q[1].is_finite()) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{what}: non-finite landmark")))
    }
}

fn stable_pts(p: &Pts68) -> [Pt; STABLE.len()] {
    STABLE.map(|i| p[i])
}

/// Regions with their own expression scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Jaw,
    BrowR,
    BrowL,
    Nose,
    EyeR,
    EyeL,
    Mouth,
}
const REGIONS: usize = 7;

fn region_of(i: usize) -> Region {
    match i {
        0..=16 => Region::Jaw,
        17..=21 => Region::BrowR,
        22..=26 => Region::BrowL,
        27..=35 => Region::Nose,
        36..=41 => Region::EyeR,
        42..=47 => Region::EyeL,
        _ => Region::Mouth,
    }
}

/// Sizes of a face's regions in units of its inter-ocular distance, plus its eye-line frame.
#[derive(Clone, Copy, Debug)]
struct Measures {
    /// Eye-line angle (radians, image coordinates).
    phi: f64,
    iod: f64,
    /// Per region: (extent along the eye line, extent across it), divided by `iod`.
    sizes: [(f64, f64); REGIONS],
}

fn measure(p: &Pts68) -> Result<Measures> {
    check_finite(p, "measure")?;
    let iod = openness::iod(p).ok_or_else(|| Error::Invalid("degenerate face: eyes coincide".into()))? as f64;
    let cr = centroid((36..=41).map(|i| p[i]));
    let cl = centroid((42..=47).map(|i| p[i]));
    let phi = (cl[1] - cr[1]).atan2(cl[0] - cr[0]);
    let cen = |r: std::ops::RangeInclusive<usize>| {
        let c = centroid(r.map(|i| p[i]));
        [c[0] as f32, c[1] as f32]
    };
    let face_w = dist(p[0], p[16]);
    let face_h = dist(p[27], p[8]);
    let brow_r = dist(cen(17..=21), cen(36..=41));
    let brow_l = dist(cen(22..=26), cen(42..=47));
    let nose_w = dist(p[31], p[35]);
    let nose_h = dist(p[27], p[30]);
    let eye_r = dist(p[36], p[39]);
    let eye_l = dist(p[42], p[45]);
    let mouth_w = dist(p[48], p[54]);
    let sizes = [
        (face_w, face_h),
        (face_w, brow_r),
        (face_w, brow_l),
        (nose_w, nose_h),
        (eye_r, eye_r),
        (eye_l, eye_l),
        (mouth_w, mouth_w),
    ]
    .map(|(a, b)| (a / iod, b / iod));
    if sizes.iter().any(|&(a, b)| !(a > 1e-3 && b > 1e-3 && a.is_finite() && b.is_finite())) {
        return Err(Error::Invalid("degenerate face: a facial region has zero size".into()));
    }
    Ok(Measures { phi, iod, sizes })
}

/// Point expressed in an eye's frame: origin at corner a, x along a->b, units of the eye width.
fn to_eye(p: &Pts68, eye: Eye, q: [f64; 2]) -> Option<[f64; 2]> {
    let [a, b, ..] = eye.indices();
    let (ax, ay) = (p[a][0] as f64, p[a][1] as f64);
    let (ex, ey) = (p[b][0] as f64 - ax, p[b][1] as f64 - ay);
    let w2 = ex * ex + ey * ey;
    if !(w2 > 1e-12) || !w2.is_finite() {
        return None;
    }
    let (dx, dy) = (q[0] - ax, q[1] - ay);
    // x: along the eye axis; y: along the axis rotated +90 degrees, both divided by the width.
    Some([(dx * ex + dy * ey) / w2, (-dx * ey + dy * ex) / w2])
}

fn from_eye(p: &Pts68, eye: Eye, uv: [f64; 2]) -> [f64; 2] {
    let [a, b, ..] = eye.indices();
    let (ax, ay) = (p[a][0] as f64, p[a][1] as f64);
    let (ex, ey) = (p[b][0] as f64 - ax, p[b][1] as f64 - ay);
    [ax + uv[0] * ex - uv[1] * ey, ay + uv[0] * ey + uv[1] * ex]
}

/// A face's eyes in eye coordinates: its lid points (the topology's, in order) and the iris
/// (centre, radius / width).
#[derive(Clone, Debug)]
struct EyeModel {
    lids: Vec<[f64; 2]>,
    iris: Option<([f64; 2], f64)>,
    ear: f64,
}

fn eye_model(topo: &Topology, all: &[Pt], iris: Option<&[Iris; 2]>, eye: Eye) -> Result<EyeModel> {
    let p = topo.sub(all);
    let [a, b, ..] = eye.indices();
    let err = || Error::Invalid("degenerate face: eye corners coincide".into());
    let lids = topo.lids[eye as usize]
        .iter()
        .map(|&i| to_eye(&p, eye, [all[i][0] as f64, all[i][1] as f64]).ok_or_else(err))
        .collect::<Result<Vec<_>>>()?;
    let width = dist(p[a], p[b]);
    let iris = iris.and_then(|ir| {
        let i = ir[eye as usize];
        let c = to_eye(&p, eye, [i.cx as f64, i.cy as f64])?;
        (i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite() && i.r >= 0.0).then_some((c, i.r as f64 / width))
    });
    let ear = openness::eye(&p, eye).ok_or_else(err)? as f64;
    Ok(EyeModel { lids, iris, ear })
}

/// The driver's neutral face and everything derived from it.
#[derive(Clone, Debug)]
struct DriverModel {
    /// The 68-point subset.
    pts: Pts68,
    /// All points of the topology.
    all: Vec<Pt>,
    iris: Option<[Iris; 2]>,
    measures: Measures,
    eyes: [EyeModel; 2],
    centre: [f64; 2],
    size: f64,
    /// Per region: the canonical anisotropic ratio (target / driver) of region sizes.
    ratios: [(f64, f64); REGIONS],
}

/// Smoothed pose in normalised units: roll (radians), ln(scale), translation / stable-point size.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pose {
    angle: f64,
    log_scale: f64,
    t: [f64; 2],
}

/// A neutral face estimated from several frames.
#[derive(Clone, Debug, PartialEq)]
pub struct NeutralEstimate {
    /// Per-coordinate median of the frames after aligning them (stable points) to each other,
    /// in the coordinates of the first frame.
    pub pts68: Pts68,
    /// Median irises, aligned the same way; `None` unless every frame had irises.
    pub iris: Option<[Iris; 2]>,
    /// Inter-ocular distance of `pts68`.
    pub iod: f32,
    /// Raw landmark motion: RMS over points of the per-coordinate standard deviation, / IOD.
    pub motion: f32,
    /// Non-rigid motion (expression changes): RMS residual after pose alignment, / IOD.
    pub nonrigid: f32,
}

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// A neutral estimated in any topology (see [`estimate_neutral`]).
struct PointsEstimate {
    pts: Vec<Pt>,
    iris: Option<[Iris; 2]>,
    nonrigid: f32,
    iod: f32,
}

/// Estimates a neutral face from frames of (supposedly) a still, neutral face. Two rounds of
/// generalised Procrustes on the stable points make the median immune to small head motion.
pub fn estimate_neutral(frames: &[Pts68], irises: &[Option<[Iris; 2]>]) -> Result<NeutralEstimate> {
    if frames.len() < 2 {
        return Err(Error::Invalid(format!("neutral estimate needs at least 2 frames, got {}", frames.len())));
    }
    let all: Vec<Vec<Pt>> = frames.iter().map(|f| f.to_vec()).collect();
    let est = estimate_points(&Topology::ibug68(), &all, irises)?;
    let n = frames.len();
    // Raw motion: std of raw coordinates (includes head motion), relative to the face size.
    let mut var = 0.0f64;
    for i in 0..68 {
        for c in 0..2 {
            let mean = frames.iter().map(|f| f[i][c] as f64).sum::<f64>() / n as f64;
            var += frames.iter().map(|f| (f[i][c] as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        }
    }
    let motion = ((var / 68.0).sqrt() / est.iod as f64) as f32;
    let mut pts68 = [[0f32; 2]; 68];
    pts68.copy_from_slice(&est.pts);
    Ok(NeutralEstimate { pts68, iris: est.iris, iod: est.iod, motion, nonrigid: est.nonrigid })
}

fn estimate_points(topo: &Topology, frames: &[Vec<Pt>], irises: &[Option<[Iris; 2]>]) -> Result<PointsEstimate> {
    if frames.len() < 2 {
        if let (Some(f), true) = (frames.first(), frames.len() == 1) {
            let iod = openness::iod(&topo.sub(f)).ok_or_else(|| Error::Invalid("neutral estimate: degenerate face".into()))?;
            return Ok(PointsEstimate { pts: f.clone(), iris: irises.first().copied().flatten(), nonrigid: 0.0, iod });
        }
        return Err(Error::Invalid(format!("neutral estimate needs at least 2 frames, got {}", frames.len())));
    }
    let np = topo.len();
    for f in frames {
        if f.len() != np || f.iter().any(|q| !(q[0].is_finite() && q[1].is_finite())) {
            return Err(Error::Invalid("neutral estimate: non-finite landmark or wrong point count".into()));
        }
    }
    let n = frames.len();
    let mut reference = frames[0].clone();
    let mut aligned = vec![vec![[0f32; 2]; np]; n];
    let mut transforms = vec![Similarity::IDENTITY; n];
    for _round in 0..2 {
        let rs = stable_pts(&topo.sub(&reference));
        for (k, f) in frames.iter().enumerate() {
            let t = fit_similarity(&stable_pts(&topo.sub(f)), &rs, None)?;
            transforms[k] = t;
            for i in 0..np {
                aligned[k][i] = t.apply(f[i]);
            }
        }
        // The shape is the median over the frames whose mouth is closest to closed (the lowest
        // quarter by opening, at least 2): a person at rest has a closed mouth, and a driver who
        // talks from the first frame would otherwise get a half-open "neutral" from which every
        // opening is measured (r3_May_5s: rendered mouth gain 0.5).
        let gaps: Vec<f32> = aligned.iter().map(|a| openness::mouth(&topo.sub(a)).unwrap_or(f32::INFINITY)).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| gaps[a].total_cmp(&gaps[b]));
        let keep = &order[..(n / 4).max(2).min(n)];
        let mut sub = vec![0f32; keep.len()];
        for i in 0..np {
            for c in 0..2 {
                for (j, &k) in keep.iter().enumerate() {
                    sub[j] = aligned[k][i][c];
                }
                reference[i][c] = median(&mut sub);
            }
        }
    }
    let iod = openness::iod(&topo.sub(&reference)).ok_or_else(|| Error::Invalid("neutral estimate: degenerate face".into()))?;
    // Non-rigid: residual of each aligned frame from the median (68-point subset, so that the
    // figure means the same in every topology).
    let mut acc = 0.0f64;
    for a in &aligned {
        for &i in &topo.sub68 {
            acc += dist(a[i], reference[i]).powi(2);
        }
    }
    let nonrigid = ((acc / (n * 68) as f64).sqrt() / iod as f64) as f32;
    let iris = if irises.len() == n && irises.iter().all(|i| i.is_some()) {
        let mut out = [Iris::default(); 2];
        for e in 0..2 {
            let mut vals = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
            for k in 0..n {
                let i = irises[k].expect("checked above")[e];
                let c = transforms[k].apply([i.cx, i.cy]);
                vals[0][k] = c[0];
                vals[1][k] = c[1];
                vals[2][k] = i.r * transforms[k].scale as f32;
            }
            out[e] = Iris { cx: median(&mut vals[0]), cy: median(&mut vals[1]), r: median(&mut vals[2]) };
        }
        out.iter().all(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite()).then_some(out)
    } else {
        None
    };
    Ok(PointsEstimate { pts: reference, iris, nonrigid, iod })
}

/// Frame checks shared by calibration and on-line learning: is this a plausible neutral face?
/// Returns `Err(reason)` naming the first failed check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NeutralLimits {
    pub max_mouth_open: f32,
    pub min_eye_open: f32,
    pub max_roll_deg: f32,
    pub max_yaw: f32,
}

impl Default for NeutralLimits {
    fn default() -> Self {
        NeutralLimits { max_mouth_open: 0.12, min_eye_open: 0.15, max_roll_deg: 15.0, max_yaw: 0.3 }
    }
}

/// Why a frame is not a usable neutral.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NotNeutral {
    Degenerate,
    MouthOpen(f32),
    EyesClosed(f32),
    Roll(f32),
    Yaw(f32),
}

impl std::fmt::Display for NotNeutral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotNeutral::Degenerate => write!(f, "degenerate landmarks"),
            NotNeutral::MouthOpen(v) => write!(f, "mouth open (openness {v:.2})"),
            NotNeutral::EyesClosed(v) => write!(f, "eyes closed (eye aspect ratio {v:.2})"),
            NotNeutral::Roll(v) => write!(f, "head tilted ({v:.0} degrees roll)"),
            NotNeutral::Yaw(v) => write!(f, "head turned (yaw proxy {v:.2})"),
        }
    }
}

impl NeutralLimits {
    pub fn check(&self, p: &Pts68) -> std::result::Result<(), NotNeutral> {
        let m = openness::mouth(p).ok_or(NotNeutral::Degenerate)?;
        let er = openness::eye(p, Eye::Right).ok_or(NotNeutral::Degenerate)?;
        let el = openness::eye(p, Eye::Left).ok_or(NotNeutral::Degenerate)?;
        let roll = openness::roll_deg(p).ok_or(NotNeutral::Degenerate)?;
        let yaw = openness::yaw_proxy(p).ok_or(NotNeutral::Degenerate)?;
        if m > self.max_mouth_open {
            return Err(NotNeutral::MouthOpen(m));
        }
        if er.min(el) < self.min_eye_open {
            return Err(NotNeutral::EyesClosed(er.min(el)));
        }
        if roll.abs() > self.max_roll_deg {
            return Err(NotNeutral::Roll(roll));
        }
        if yaw.abs() > self.max_yaw {
            return Err(NotNeutral::Yaw(yaw));
        }
        Ok(())
    }
}

/// Which point set a [`Retargeter`] works on: the 68 iBUG points, or MediaPipe's 468-point
/// mesh. Either way the measures, the head pose and the eye frames come from the 68-point
/// subset, so both topologies retarget the same face the same way; the mesh only adds points.
#[derive(Clone, Debug)]
pub struct Topology {
    n: usize,
    /// Index of each iBUG point in this point set.
    sub68: [usize; 68],
    /// Expression-scaling region of each point.
    region: Vec<Region>,
    /// Lid points (corners excluded) of each eye, subject's right then left.
    lids: [Vec<usize>; 2],
    /// Inner-lip pairs (upper, lower) facing each other.
    lip_pairs: Vec<(usize, usize)>,
    /// Inner mouth corners.
    mouth_axis: (usize, usize),
}

impl Topology {
    /// The 68 iBUG points themselves.
    pub fn ibug68() -> Topology {
        let sub68: [usize; 68] = std::array::from_fn(|i| i);
        Topology {
            n: 68,
            sub68,
            region: (0..68).map(region_of).collect(),
            lids: Eye::BOTH.map(|e| {
                let [_, _, u1, u2, l2, l1] = e.indices();
                vec![u1, u2, l2, l1]
            }),
            lip_pairs: LIP_PAIRS.to_vec(),
            mouth_axis: (60, 64),
        }
    }

    /// MediaPipe's 468-point mesh. `neutral` is the mesh of the face the topology is used with:
    /// each point takes the region of its nearest 68-point landmark there (contours are fixed).
    pub fn mesh468(neutral: &[Pt]) -> Result<Topology> {
        use super::landmarks::{MESH_POINTS, MP468_TO_68};
        use super::mesh;
        if neutral.len() != MESH_POINTS {
            return Err(Error::Invalid(format!("face mesh has {} points, expected {MESH_POINTS}", neutral.len())));
        }
        if neutral.iter().any(|p| !(p[0].is_finite() && p[1].is_finite())) {
            return Err(Error::Invalid("face mesh: non-finite point".into()));
        }
        let mut region: Vec<Region> = neutral
            .iter()
            .map(|&p| {
                let k = (0..68)
                    .min_by(|&a, &b| dist(p, neutral[MP468_TO_68[a]]).total_cmp(&dist(p, neutral[MP468_TO_68[b]])))
                    .unwrap_or(0);
                region_of(k)
            })
            .collect();
        for &i in mesh::EYE_R.iter() {
            region[i] = Region::EyeR;
        }
        for &i in mesh::EYE_L.iter() {
            region[i] = Region::EyeL;
        }
        for &i in mesh::INNER_LIPS.iter().chain(mesh::OUTER_LIPS.iter()) {
            region[i] = Region::Mouth;
        }
        let lids = [0, 1].map(|e| {
            let c = mesh::eye_contour(e);
            mesh::LID_SLOTS.filter(|&s| s != 8).map(|s| c[s]).collect()
        });
        Ok(Topology {
            n: MESH_POINTS,
            sub68: MP468_TO_68,
            region,
            lids,
            lip_pairs: mesh::LIP_PAIRS.to_vec(),
            mouth_axis: mesh::MOUTH_CORNERS,
        })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The 68-point subset of `pts` (which must have `len()` points).
    pub fn sub(&self, pts: &[Pt]) -> Pts68 {
        self.sub68.map(|i| pts[i])
    }
}

/// A driver's neutral face in a topology's point set (any pixel coordinates: only shape matters).
#[derive(Clone, Debug, PartialEq)]
pub struct DriverNeutral {
    pub pts: Vec<Pt>,
    pub iris: Option<[Iris; 2]>,
}

/// One retargeted frame: the portrait's points showing the driver's expression and head pose,
/// and the head pose itself (a similarity in the portrait's coordinates; the warp moves the
/// hair and neck with it).
#[derive(Clone, Debug, PartialEq)]
pub struct Posed {
    pub pts: Vec<Pt>,
    pub iris: Option<[Iris; 2]>,
    pub pose: Similarity,
}

/// Largest number of recent frames the provisional neutral is estimated from.
const PROVISIONAL_WINDOW: usize = 45;
/// The provisional estimate is refreshed every this many frames (after the first few).
const PROVISIONAL_EVERY: usize = 5;
/// Per-frame fraction by which the neutral in use moves towards a new estimate: changes of the
/// neutral reach the output over ~10 frames instead of as a jump.
const NEUTRAL_BLEND: f32 = 0.25;

/// Transfers driver expressions and head pose onto the portrait's face.
#[derive(Clone, Debug)]
pub struct Retargeter {
    params: RetargetParams,
    topo: Topology,
    /// Side of the reference crop in target units (translation limit is a fraction of it).
    ref_side: f64,
    target: Shape68,
    target_all: Vec<Pt>,
    tm: Measures,
    t_eyes: [EyeModel; 2],
    t_centre: [f64; 2],
    t_size: f64,
    /// The driver neutral in use and the model derived from it.
    driver: Option<DriverModel>,
    /// Where the neutral in use is heading (a newer estimate); `None` once reached.
    goal: Option<DriverNeutral>,
    status: NeutralStatus,
    learn_pts: Vec<Vec<Pt>>,
    learn_iris: Vec<Option<[Iris; 2]>>,
    recent: std::collections::VecDeque<(Vec<Pt>, Option<[Iris; 2]>)>,
    since_estimate: usize,
    pose: Option<Pose>,
    rejected: u64,
}

impl Retargeter {
    /// `target`: the portrait's neutral landmarks in crop coordinates (avatar metadata).
    /// `driver_neutral`: from a calibration profile (any coordinates: only shape matters);
    /// `None` starts from a provisional neutral and learns it from the first `learn_frames`
    /// steady neutral frames.
    pub fn new(target: Shape68, driver_neutral: Option<Shape68>, params: RetargetParams) -> Result<Self> {
        let dn = driver_neutral.map(|d| DriverNeutral { pts: d.pts68.to_vec(), iris: d.iris });
        Self::with_topology(Topology::ibug68(), target.pts68.to_vec(), target.iris, dn, params, CROP_SIDE as f64)
    }

    /// A retargeter on any topology. `target`: the portrait's neutral points (any pixel
    /// coordinates); `ref_side`: the side of the portrait's face crop in those units.
    pub fn with_topology(
        topo: Topology,
        target: Vec<Pt>,
        target_iris: Option<[Iris; 2]>,
        driver_neutral: Option<DriverNeutral>,
        params: RetargetParams,
        ref_side: f64,
    ) -> Result<Self> {
        params.validate()?;
        if target.len() != topo.len() {
            return Err(Error::Invalid(format!("avatar neutral has {} points, expected {}", target.len(), topo.len())));
        }
        if !(ref_side > 0.0 && ref_side.is_finite()) {
            return Err(Error::Invalid("retarget: reference crop side must be positive".into()));
        }
        let t68 = Shape68 { pts68: topo.sub(&target), iris: target_iris };
        if !t68.is_finite() || target.iter().any(|p| !(p[0].is_finite() && p[1].is_finite())) {
            return Err(Error::Invalid("avatar neutral landmarks are not finite".into()));
        }
        let tm = measure(&t68.pts68).map_err(|e| Error::Invalid(format!("avatar neutral landmarks: {e}")))?;
        let t_eyes = [eye_model(&topo, &target, target_iris.as_ref(), Eye::Right)?, eye_model(&topo, &target, target_iris.as_ref(), Eye::Left)?];
        let ts = stable_pts(&t68.pts68);
        let t_centre = centroid(ts);
        let t_size = rms_size(&ts);
        let mut r = Retargeter {
            status: NeutralStatus::Learning { have: 0, need: params.learn_frames },
            learn_pts: Vec::with_capacity(params.learn_frames),
            learn_iris: Vec::with_capacity(params.learn_frames),
            recent: Default::default(),
            since_estimate: 0,
            params,
            topo,
            ref_side,
            target: t68,
            target_all: target,
            tm,
            t_eyes,
            t_centre,
            t_size,
            driver: None,
            goal: None,
            pose: None,
            rejected: 0,
        };
        if let Some(d) = driver_neutral {
            r.driver = Some(r.driver_model(&d)?);
            r.status = NeutralStatus::Profile;
        }
        Ok(r)
    }

    fn driver_model(&self, d: &DriverNeutral) -> Result<DriverModel> {
        if d.pts.len() != self.topo.len() {
            return Err(Error::Invalid(format!("driver neutral has {} points, expected {}", d.pts.len(), self.topo.len())));
        }
        let s = Shape68 { pts68: self.topo.sub(&d.pts), iris: d.iris };
        if !s.is_finite() || d.pts.iter().any(|p| !(p[0].is_finite() && p[1].is_finite())) {
            return Err(Error::Invalid("driver neutral landmarks are not finite".into()));
        }
        let m = measure(&s.pts68).map_err(|e| Error::Invalid(format!("driver neutral landmarks: {e}")))?;
        let eyes = [eye_model(&self.topo, &d.pts, d.iris.as_ref(), Eye::Right)?, eye_model(&self.topo, &d.pts, d.iris.as_ref(), Eye::Left)?];
        let ds = stable_pts(&s.pts68);
        let size = rms_size(&ds);
        if !(size > 1e-6) {
            return Err(Error::Invalid("driver neutral landmarks: stable points coincide".into()));
        }
        let mut ratios = [(1.0, 1.0); REGIONS];
        for k in 0..REGIONS {
            // Clamped: a mis-detected region should not amplify motion wildly.
            ratios[k] = ((self.tm.sizes[k].0 / m.sizes[k].0).clamp(0.5, 2.0), (self.tm.sizes[k].1 / m.sizes[k].1).clamp(0.5, 2.0));
        }
        // The mouth opens across by the face's scale (inter-ocular distance, already in `k`)
        // times the mouth gain, not by the mouths' width ratio (see `mouth_gain`).
        ratios[Region::Mouth as usize].1 = self.params.mouth_gain as f64;
        Ok(DriverModel { pts: s.pts68, all: d.pts.clone(), iris: d.iris, measures: m, eyes, centre: centroid(ds), size, ratios })
    }

    pub fn status(&self) -> NeutralStatus {
        self.status
    }

    /// The topology this retargeter works on.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Driver frames rejected so far (non-finite or degenerate landmarks).
    pub fn rejected_frames(&self) -> u64 {
        self.rejected
    }

    /// The portrait's neutral shape (68 points; what the face-lost easer rests on).
    pub fn target_neutral(&self) -> &Shape68 {
        &self.target
    }

    /// The driver neutral (68-point subset) the retargeter is using or heading to, if any.
    pub fn driver_neutral(&self) -> Option<Pts68> {
        match &self.goal {
            Some(g) => Some(self.topo.sub(&g.pts)),
            None => self.driver.as_ref().map(|d| d.pts),
        }
    }

    /// Forgets a learned neutral and starts learning again (no effect with a profile).
    pub fn relearn(&mut self) {
        if self.status != NeutralStatus::Profile {
            self.relearn_now();
        }
    }

    /// "Neutral now" (control API): forgets the neutral in use, a profile's too, and learns it
    /// again from the next steady frames; the provisional neutral drives the portrait meanwhile.
    pub fn relearn_now(&mut self) {
        self.driver = None;
        self.goal = None;
        self.learn_pts.clear();
        self.learn_iris.clear();
        self.recent.clear();
        self.since_estimate = 0;
        self.pose = None;
        self.status = NeutralStatus::Learning { have: 0, need: self.params.learn_frames };
    }

    /// Pipeline convenience: `None` (face lost) or a rejected frame give `None`, to be fed to
    /// [`FaceLostEaser::update`].
    pub fn step(&mut self, driver: Option<(&Pts68, Option<&[Iris; 2]>)>) -> Option<Shape68> {
        let (p, i) = driver?;
        if self.topo.len() != 68 {
            self.rejected += 1;
            return None;
        }
        let posed = self.step_points(Some((p, i)))?;
        Some(Shape68 { pts68: self.topo.sub(&posed.pts), iris: posed.iris })
    }

    /// [`Self::step`] for any topology.
    pub fn step_points(&mut self, driver: Option<(&[Pt], Option<&[Iris; 2]>)>) -> Option<Posed> {
        let (p, i) = driver?;
        match self.retarget_points(p, i) {
            Ok(s) => Some(s),
            Err(_) => {
                self.rejected += 1;
                None
            }
        }
    }

    /// Without a profile: the steady-frame window (the final, learned neutral) and the running
    /// provisional estimate (so that the portrait moves from the first frame).
    fn observe(&mut self, p: &[Pt], iris: Option<&[Iris; 2]>) -> Result<()> {
        if self.status == NeutralStatus::Profile {
            return Ok(());
        }
        let need = self.params.learn_frames;
        if self.status != NeutralStatus::Learned {
            if NeutralLimits::default().check(&self.topo.sub(p)).is_err() {
                // Learning wants consecutive neutral frames: start over.
                self.learn_pts.clear();
                self.learn_iris.clear();
            } else {
                self.learn_pts.push(p.to_vec());
                self.learn_iris.push(iris.copied());
                if self.learn_pts.len() >= need {
                    match estimate_points(&self.topo, &self.learn_pts, &self.learn_iris) {
                        Ok(est) if est.nonrigid <= self.params.learn_max_motion => {
                            self.set_goal(DriverNeutral { pts: est.pts, iris: est.iris })?;
                            self.learn_pts = Vec::new();
                            self.learn_iris = Vec::new();
                            self.recent.clear();
                            self.status = NeutralStatus::Learned;
                            return Ok(());
                        }
                        _ => {
                            // Too much expression change: keep the newer half and keep collecting.
                            self.learn_pts.drain(..need / 2);
                            self.learn_iris.drain(..need / 2);
                        }
                    }
                }
            }
            self.status = NeutralStatus::Learning { have: self.learn_pts.len(), need };
            // Provisional: a robust running estimate over the recent frames, whatever their
            // expression (the per-coordinate median of a talking face is close to its rest).
            self.recent.push_back((p.to_vec(), iris.copied()));
            if self.recent.len() > PROVISIONAL_WINDOW {
                self.recent.pop_front();
            }
            self.since_estimate += 1;
            if self.driver.is_none() {
                self.driver = Some(self.driver_model(&DriverNeutral { pts: p.to_vec(), iris: iris.copied() })?);
                self.since_estimate = 0;
            } else if self.since_estimate >= PROVISIONAL_EVERY || self.recent.len() <= PROVISIONAL_EVERY {
                self.since_estimate = 0;
                let (pts, irs): (Vec<Vec<Pt>>, Vec<Option<[Iris; 2]>>) = self.recent.iter().cloned().unzip();
                if let Ok(est) = estimate_points(&self.topo, &pts, &irs) {
                    self.set_goal(DriverNeutral { pts: est.pts, iris: est.iris })?;
                }
            }
        }
        Ok(())
    }

    fn set_goal(&mut self, g: DriverNeutral) -> Result<()> {
        self.driver_model(&g)?; // validate now, not when blending
        if self.driver.is_none() {
            self.driver = Some(self.driver_model(&g)?);
        } else {
            self.goal = Some(g);
        }
        Ok(())
    }

    /// Moves the neutral in use a step towards the goal (the new estimate is aligned to the
    /// neutral in use first, so that only its shape blends in, not the head pose it was seen in).
    fn advance_neutral(&mut self) -> Result<()> {
        let (Some(goal), Some(cur)) = (self.goal.as_ref(), self.driver.as_ref()) else { return Ok(()) };
        let t = fit_similarity(&stable_pts(&self.topo.sub(&goal.pts)), &stable_pts(&cur.pts), None)?;
        let a = NEUTRAL_BLEND;
        let mut done = true;
        let tol = 1e-3 * cur.measures.iod as f32;
        let pts: Vec<Pt> = cur
            .all
            .iter()
            .zip(&goal.pts)
            .map(|(c, g)| {
                let g = t.apply(*g);
                let d = [g[0] - c[0], g[1] - c[1]];
                if d[0].abs() > tol || d[1].abs() > tol {
                    done = false;
                    [c[0] + a * d[0], c[1] + a * d[1]]
                } else {
                    g
                }
            })
            .collect();
        let iris = match (cur.iris, goal.iris) {
            (Some(c), Some(g)) => Some([0, 1].map(|k| {
                let q = t.apply([g[k].cx, g[k].cy]);
                let r = g[k].r * t.scale as f32;
                Iris { cx: c[k].cx + a * (q[0] - c[k].cx), cy: c[k].cy + a * (q[1] - c[k].cy), r: c[k].r + a * (r - c[k].r) }
            })),
            (_, g) => g.map(|g| g.map(|i| t.apply_iris(i))),
        };
        self.driver = Some(self.driver_model(&DriverNeutral { pts, iris })?);
        if done {
            self.goal = None;
        }
        Ok(())
    }

    /// Retargets one driver frame of 68 points (68-point topology only).
    pub fn retarget(&mut self, pts: &Pts68, iris: Option<&[Iris; 2]>) -> Result<Shape68> {
        if self.topo.len() != 68 {
            return Err(Error::Invalid("retarget: this retargeter works on the face mesh, not 68 points".into()));
        }
        let p = self.retarget_points(pts, iris)?;
        Ok(Shape68 { pts68: self.topo.sub(&p.pts), iris: p.iris })
    }

    /// Retargets one driver frame (points of this topology in any pixel coordinates, irises in
    /// the same) onto the portrait.
    pub fn retarget_points(&mut self, pts: &[Pt], iris: Option<&[Iris; 2]>) -> Result<Posed> {
        if pts.len() != self.topo.len() {
            return Err(Error::Invalid(format!("driver landmarks: {} points, expected {}", pts.len(), self.topo.len())));
        }
        if pts.iter().any(|q| !(q[0].is_finite() && q[1].is_finite())) {
            return Err(Error::Invalid("driver landmarks: non-finite landmark".into()));
        }
        let p68 = self.topo.sub(pts);
        measure(&p68)?;
        let iris = iris.filter(|ir| ir.iter().all(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite()));
        self.observe(pts, iris)?;
        self.advance_neutral()?;
        let d = self.driver.as_ref().ok_or_else(|| Error::Invalid("retarget: no driver neutral".into()))?;
        // Pose: T maps the frame onto the driver's neutral.
        let t = fit_similarity(&stable_pts(&p68), &stable_pts(&d.pts), None)?;
        let pose_inv = t.inverse().ok_or_else(|| Error::Invalid("driver landmarks: degenerate pose".into()))?;

        // Expression in the driver's neutral frame, moved to the target region by region:
        // canonical = rotate by -phi_d, / iod_d; scale per region; back with phi_t, * iod_t.
        let gain = self.params.expression_gain as f64;
        let (cd, sd) = ((-d.measures.phi).cos(), (-d.measures.phi).sin());
        let (ct, st) = (self.tm.phi.cos(), self.tm.phi.sin());
        let k = gain * self.tm.iod / d.measures.iod;
        let mut out = self.target_all.clone();
        for i in 0..self.topo.len() {
            let a = t.apply_f64([pts[i][0] as f64, pts[i][1] as f64]);
            let e = [a[0] - d.all[i][0] as f64, a[1] - d.all[i][1] as f64];
            let c = [cd * e[0] - sd * e[1], sd * e[0] + cd * e[1]];
            let (rx, ry) = d.ratios[self.topo.region[i] as usize];
            let c = [c[0] * rx * k, c[1] * ry * k];
            let v = [ct * c[0] - st * c[1], st * c[0] + ct * c[1]];
            out[i] = [(self.target_all[i][0] as f64 + v[0]) as f32, (self.target_all[i][1] as f64 + v[1]) as f32];
        }

        // Lips cannot pass through each other: when the driver presses its lips together harder
        // than in its neutral and the portrait's neutral mouth is already closed, the transferred
        // displacement would push the lower inner lip above the upper one (and the gap measure
        // would read that as opening). Meet in the middle instead.
        uncross_lips(&mut out, &self.topo.lip_pairs, self.topo.mouth_axis);

        // Eyes: lids from the target's own lid shape scaled by the driver's opening ratio, iris
        // offset from the driver's neutral iris position in eye coordinates.
        let mut out_iris = self.target.iris;
        for eye in Eye::BOTH {
            let e = eye as usize;
            let dn = &d.eyes[e];
            let tm = &self.t_eyes[e];
            let ear = openness::eye(&p68, eye).map(|v| v as f64).unwrap_or(dn.ear);
            let ratio = if dn.ear > 1e-6 { (1.0 + gain * (lid_opening(ear / dn.ear) - 1.0)).clamp(0.0, 1.6) } else { 1.0 };
            let o68 = self.topo.sub(&out);
            for (slot, &idx) in self.topo.lids[e].iter().enumerate() {
                let uv = tm.lids[slot];
                let q = from_eye(&o68, eye, [uv[0], uv[1] * ratio]);
                out[idx] = [q[0] as f32, q[1] as f32];
            }
            if let (Some(ir), Some((tc, tr))) = (out_iris.as_mut(), tm.iris) {
                let delta = match (iris, dn.iris) {
                    (Some(di), Some((dc, _))) => to_eye(&p68, eye, [di[e].cx as f64, di[e].cy as f64])
                        .map(|c| [(gain * (c[0] - dc[0])).clamp(-0.25, 0.25), (gain * (c[1] - dc[1])).clamp(-0.12, 0.12)])
                        .unwrap_or([0.0, 0.0]),
                    _ => [0.0, 0.0],
                };
                let c = from_eye(&o68, eye, [tc[0] + delta[0], tc[1] + delta[1]]);
                let [a, b, ..] = eye.indices();
                ir[e] = Iris { cx: c[0] as f32, cy: c[1] as f32, r: (tr * dist(o68[a], o68[b])) as f32 };
            }
        }

        // Head pose relative to the neutral, about the stable-point centre, normalised by size.
        let moved = pose_inv.apply_f64(d.centre);
        let raw = Pose {
            angle: wrap_angle(pose_inv.angle),
            log_scale: pose_inv.scale.ln(),
            t: [(moved[0] - d.centre[0]) / d.size, (moved[1] - d.centre[1]) / d.size],
        };
        let lim = self.limit(raw);
        let a = self.params.pose_smoothing as f64;
        let pose = match self.pose {
            Some(prev) => Pose {
                angle: prev.angle + (1.0 - a) * wrap_angle(lim.angle - prev.angle),
                log_scale: a * prev.log_scale + (1.0 - a) * lim.log_scale,
                t: [a * prev.t[0] + (1.0 - a) * lim.t[0], a * prev.t[1] + (1.0 - a) * lim.t[1]],
            },
            None => lim,
        };
        self.pose = Some(pose);
        let q = Similarity::about(pose.log_scale.exp(), pose.angle, self.t_centre, [pose.t[0] * self.t_size, pose.t[1] * self.t_size]);
        for p in out.iter_mut() {
            *p = q.apply(*p);
        }
        if let Some(ir) = out_iris.as_mut() {
            for i in ir.iter_mut() {
                let c = q.apply([i.cx, i.cy]);
                *i = Iris { cx: c[0], cy: c[1], r: i.r * q.scale as f32 };
            }
        }
        let finite = out.iter().all(|p| p[0].is_finite() && p[1].is_finite())
            && out_iris.map_or(true, |ir| ir.iter().all(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite()));
        if !finite {
            return Err(Error::Invalid("retargeting produced non-finite landmarks".into()));
        }
        Ok(Posed { pts: out, iris: out_iris, pose: q })
    }

    /// Clamps a pose to the configured limits (translation limit is a fraction of the crop side).
    fn limit(&self, p: Pose) -> Pose {
        let max_a = (self.params.max_roll_deg as f64).to_radians();
        let ls = p.log_scale.clamp((self.params.min_scale as f64).ln(), (self.params.max_scale as f64).ln());
        let max_t = self.params.max_translation as f64 * self.ref_side / self.t_size;
        let n = (p.t[0] * p.t[0] + p.t[1] * p.t[1]).sqrt();
        let t = if n > max_t && n > 0.0 { [p.t[0] * max_t / n, p.t[1] * max_t / n] } else { p.t };
        Pose { angle: p.angle.clamp(-max_a, max_a), log_scale: ls, t }
    }
}

/// A shut eye still reads about this fraction of its open eye-aspect ratio in MediaPipe's 2-D
/// landmarks (lid thickness, lashes).
const CLOSED_EAR_FRACTION: f64 = 0.3;
/// Below this fraction of the neutral opening the lids are remapped (see `lid_opening`).
const LID_REMAP_BELOW: f64 = 0.6;

/// Lid opening to show (fraction of the neutral) for a measured eye-aspect-ratio fraction `x`:
/// the same above `LID_REMAP_BELOW`, and below it stretched so that a shut driver eye (which
/// measures `CLOSED_EAR_FRACTION`, not 0) shuts the portrait's eye. Continuous and increasing.
fn lid_opening(x: f64) -> f64 {
    if x >= LID_REMAP_BELOW {
        x
    } else {
        (LID_REMAP_BELOW * (x - CLOSED_EAR_FRACTION) / (LID_REMAP_BELOW - CLOSED_EAR_FRACTION)).max(0.0)
    }
}

/// Inner-lip pairs (upper, lower) of the 68 points, facing each other across the mouth.
const LIP_PAIRS: [(usize, usize); 3] = [(61, 67), (62, 66), (63, 65)];

/// Moves crossed inner-lip pairs to their common midpoint (in the mouth's own frame: the
/// corner-to-corner axis and its normal, which points down in an upright face).
fn uncross_lips(p: &mut [Pt], pairs: &[(usize, usize)], axis: (usize, usize)) {
    let (ax, ay) = (p[axis.0][0] as f64, p[axis.0][1] as f64);
    let (ex, ey) = (p[axis.1][0] as f64 - ax, p[axis.1][1] as f64 - ay);
    let w2 = ex * ex + ey * ey;
    if !(w2 > 1e-12) || !w2.is_finite() {
        return;
    }
    // Signed distance along the normal (-ey, ex) / |e|: larger is lower on the face.
    let across = |q: [f32; 2]| (-(q[0] as f64 - ax) * ey + (q[1] as f64 - ay) * ex) / w2.sqrt();
    for &(u, l) in pairs {
        if across(p[l]) < across(p[u]) {
            let m = [(p[u][0] + p[l][0]) / 2.0, (p[u][1] + p[l][1]) / 2.0];
            p[u] = m;
            p[l] = m;
        }
    }
}

/// What the face-lost easer can blend: a 68-point shape or a retargeted mesh with its pose.
pub trait Blend: Clone {
    /// `self` moved a fraction `w` of the way to `other`.
    fn blend(&self, other: &Self, w: f32) -> Self;
    fn is_finite(&self) -> bool;
}

fn lerp_iris(a: Option<[Iris; 2]>, b: Option<[Iris; 2]>, w: f32) -> Option<[Iris; 2]> {
    match (a, b) {
        (Some(x), Some(y)) => Some([0, 1].map(|k| Iris {
            cx: x[k].cx + (y[k].cx - x[k].cx) * w,
            cy: x[k].cy + (y[k].cy - x[k].cy) * w,
            r: x[k].r + (y[k].r - x[k].r) * w,
        })),
        _ => b,
    }
}

impl Blend for Shape68 {
    fn blend(&self, b: &Self, w: f32) -> Self {
        let mut pts = self.pts68;
        for (p, q) in pts.iter_mut().zip(b.pts68.iter()) {
            p[0] += (q[0] - p[0]) * w;
            p[1] += (q[1] - p[1]) * w;
        }
        Shape68 { pts68: pts, iris: lerp_iris(self.iris, b.iris, w) }
    }
    fn is_finite(&self) -> bool {
        Shape68::is_finite(self)
    }
}

impl Blend for Posed {
    fn blend(&self, b: &Self, w: f32) -> Self {
        if self.pts.len() != b.pts.len() {
            return b.clone();
        }
        let pts = self.pts.iter().zip(&b.pts).map(|(p, q)| [p[0] + (q[0] - p[0]) * w, p[1] + (q[1] - p[1]) * w]).collect();
        let (x, y) = (self.pose, b.pose);
        let w64 = w as f64;
        let pose = Similarity {
            scale: x.scale + (y.scale - x.scale) * w64,
            angle: x.angle + wrap_angle(y.angle - x.angle) * w64,
            tx: x.tx + (y.tx - x.tx) * w64,
            ty: x.ty + (y.ty - x.ty) * w64,
        };
        Posed { pts, iris: lerp_iris(self.iris, b.iris, w), pose }
    }
    fn is_finite(&self) -> bool {
        self.pts.iter().all(|p| p[0].is_finite() && p[1].is_finite())
            && self.pose.is_finite()
            && self.iris.map_or(true, |ir| ir.iter().all(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite()))
    }
}

/// Phase of the face-lost easing, for status and tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EasePhase {
    /// Passing the retargeted landmarks through.
    Tracking,
    /// Face just lost: holding the last landmarks for a moment (brief tracker drop-outs).
    Holding,
    /// Easing towards the portrait's neutral.
    EasingOut,
    /// Resting at the neutral face.
    Neutral,
    /// Face back: blending from where we were to the live landmarks.
    EasingIn,
}

/// Eases to the portrait's neutral face when the driver's face is lost and back when it
/// returns, so that the output never freezes on a distorted frame nor jumps.
#[derive(Clone, Debug)]
pub struct FaceLostEaser<T: Blend = Shape68> {
    neutral: T,
    hold_s: f32,
    out_s: f32,
    in_s: f32,
    phase: EasePhase,
    t: f32,
    from: T,
    last: T,
}

impl<T: Blend> FaceLostEaser<T> {
    /// `hold_s`: keep the last frame this long before easing (tracker hiccups);
    /// `ease_out_s` / `ease_in_s`: durations of the smoothstep blends (0.3-0.5 s is natural).
    pub fn new(neutral: T, hold_s: f32, ease_out_s: f32, ease_in_s: f32) -> Self {
        let pos = |v: f32| if v.is_finite() { v.max(0.0) } else { 0.0 };
        FaceLostEaser {
            neutral: neutral.clone(),
            hold_s: pos(hold_s),
            out_s: pos(ease_out_s),
            in_s: pos(ease_in_s),
            phase: EasePhase::Neutral,
            t: 0.0,
            from: neutral.clone(),
            last: neutral,
        }
    }

    pub fn phase(&self) -> EasePhase {
        self.phase
    }

    /// Advances by `dt` seconds with this frame's retargeted landmarks (`None`: no face).
    pub fn update(&mut self, input: Option<&T>, dt: f32) -> T {
        let dt = if dt.is_finite() { dt.max(0.0) } else { 0.0 };
        let input = input.filter(|s| Blend::is_finite(*s));
        let out = match (input, self.phase) {
            (Some(s), EasePhase::Tracking | EasePhase::Holding) => {
                self.phase = EasePhase::Tracking;
                s.clone()
            }
            (Some(s), EasePhase::EasingOut | EasePhase::Neutral) => {
                self.phase = EasePhase::EasingIn;
                self.from = self.last.clone();
                self.t = 0.0;
                self.blend_in(s)
            }
            (Some(s), EasePhase::EasingIn) => {
                self.t += dt;
                self.blend_in(s)
            }
            (None, EasePhase::Tracking) => {
                self.phase = EasePhase::Holding;
                self.t = 0.0;
                self.from = self.last.clone();
                self.hold_or_ease()
            }
            (None, EasePhase::EasingIn) => {
                self.phase = EasePhase::EasingOut;
                self.t = 0.0;
                self.from = self.last.clone();
                self.hold_or_ease()
            }
            (None, EasePhase::Holding | EasePhase::EasingOut) => {
                self.t += dt;
                self.hold_or_ease()
            }
            (None, EasePhase::Neutral) => self.neutral.clone(),
        };
        self.last = out.clone();
        out
    }

    fn blend_in(&mut self, s: &T) -> T {
        if self.in_s <= 0.0 || self.t >= self.in_s {
            self.phase = EasePhase::Tracking;
            return s.clone();
        }
        self.from.blend(s, smoothstep(self.t / self.in_s))
    }

    fn hold_or_ease(&mut self) -> T {
        if self.phase == EasePhase::Holding {
            if self.t < self.hold_s {
                return self.from.clone();
            }
            self.phase = EasePhase::EasingOut;
            self.t -= self.hold_s;
        }
        if self.out_s <= 0.0 || self.t >= self.out_s {
            self.phase = EasePhase::Neutral;
            return self.neutral.clone();
        }
        self.from.blend(&self.neutral, smoothstep(self.t / self.out_s))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::pearson;

    /// A parametric synthetic face (crop-like coordinates): `fw`, `fh` half face width / height,
    /// `ew` eye width, `eh` half eye opening, `mw` mouth width, `gap` inner-lip gap.
    #[derive(Clone, Copy)]
    pub(crate) struct Face {
        pub cx: f32,
        pub cy: f32,
        pub fw: f32,
        pub fh: f32,
        pub ew: f32,
        pub eh: [f32; 2],
        pub mw: f32,
        pub gap: f32,
        pub brow: f32,
    }

    impl Face {
        pub(crate) fn neutral() -> Self {
            Face { cx: 128.0, cy: 130.0, fw: 60.0, fh: 75.0, ew: 24.0, eh: [5.0, 5.0], mw: 44.0, gap: 0.0, brow: 0.0 }
        }
        pub(crate) fn other() -> Self {
            // A different identity: narrower, longer face, small eyes, wide mouth.
            Face { cx: 300.0, cy: 260.0, fw: 80.0, fh: 120.0, ew: 26.0, eh: [6.0, 6.0], mw: 70.0, gap: 0.0, brow: 0.0 }
        }
        pub(crate) fn pts(&self) -> Pts68 {
            let mut p = [[0f32; 2]; 68];
            let (cx, cy, fw, fh) = (self.cx, self.cy, self.fw, self.fh);
            for i in 0..17 {
                let th = std::f32::consts::PI * (1.0 - i as f32 / 16.0);
                let drop = if (5..=11).contains(&i) { self.gap * 0.8 } else { 0.0 };
                p[i] = [cx + fw * th.cos(), cy + fh * th.sin() + drop];
            }
            for k in 0..5 {
                let x = 0.8 - 0.15 * k as f32;
                let arch = [0.0, 3.0, 4.0, 3.0, 0.0][k];
                p[17 + k] = [cx - x * fw, cy - 0.55 * fh - arch - self.brow];
                p[26 - k] = [cx + x * fw, cy - 0.55 * fh - arch - self.brow];
            }
            for k in 0..4 {
                p[27 + k] = [cx, cy - 0.42 * fh + 0.12 * fh * k as f32];
            }
            for k in 0..5 {
                p[31 + k] = [cx - 0.2 * fw + 0.1 * fw * k as f32, cy + 0.05 * fh + if k == 2 { 2.0 } else { 0.0 }];
            }
            let ey = cy - 0.35 * fh;
            for (e, sign) in [(0usize, -1.0f32), (1, 1.0)] {
                let ec = cx + sign * 0.42 * fw;
                let (w, h) = (self.ew, self.eh[e]);
                let (o, inner) = (ec + sign * w / 2.0, ec - sign * w / 2.0);
                // Right eye (e=0): 36 outer (image left) .. 39 inner; left eye: 42 inner .. 45 outer.
                let (a, b) = if e == 0 { (o, inner) } else { (inner, o) };
                let base = 36 + 6 * e;
                let lerp = |t: f32| a + (b - a) * t;
                p[base] = [a, ey];
                p[base + 1] = [lerp(1.0 / 3.0), ey - h];
                p[base + 2] = [lerp(2.0 / 3.0), ey - h];
                p[base + 3] = [b, ey];
                p[base + 4] = [lerp(2.0 / 3.0), ey + h];
                p[base + 5] = [lerp(1.0 / 3.0), ey + h];
            }
            let my = cy + 0.4 * fh;
            let hw = self.mw / 2.0;
            let g = self.gap;
            // Outer lips: 48 corner, 49-53 upper, 54 corner, 55-59 lower (right to left).
            p[48] = [cx - hw, my];
            for k in 1..6 {
                let x = cx - hw + self.mw * k as f32 / 6.0;
                p[48 + k] = [x, my - 6.0 - if k == 3 { 1.0 } else { 0.0 }];
            }
            p[54] = [cx + hw, my];
            for k in 1..6 {
                let x = cx + hw - self.mw * k as f32 / 6.0;
                p[54 + k] = [x, my + 7.0 + g];
            }
            // Inner lips: 60 corner, 61-63 upper, 64 corner, 65-67 lower.
            p[60] = [cx - hw * 0.8, my];
            for k in 1..4 {
                p[60 + k] = [cx - hw * 0.8 + hw * 1.6 * k as f32 / 4.0, my - 1.0];
            }
            p[64] = [cx + hw * 0.8, my];
            for k in 1..4 {
                p[64 + k] = [cx + hw * 0.8 - hw * 1.6 * k as f32 / 4.0, my + 1.0 + g];
            }
            p
        }
        pub(crate) fn iris(&self, dx: f32, dy: f32) -> [Iris; 2] {
            let ey = self.cy - 0.35 * self.fh;
            [-1.0f32, 1.0].map(|s| Iris { cx: self.cx + s * 0.42 * self.fw + dx, cy: ey + dy, r: self.ew * 0.2 })
        }
        pub(crate) fn shape(&self) -> Shape68 {
            Shape68 { pts68: self.pts(), iris: Some(self.iris(0.0, 0.0)) }
        }
    }

    fn transform(p: &Pts68, t: &Similarity) -> Pts68 {
        p.map(|q| t.apply(q))
    }

    fn max_diff(a: &Pts68, b: &Pts68) -> f32 {
        a.iter().zip(b).map(|(p, q)| (p[0] - q[0]).abs().max((p[1] - q[1]).abs())).fold(0.0, f32::max)
    }

    fn no_smoothing() -> RetargetParams {
        RetargetParams { pose_smoothing: 0.0, ..Default::default() }
    }

    fn retargeter() -> Retargeter {
        Retargeter::new(Face::neutral().shape(), Some(Face::other().shape()), no_smoothing()).unwrap()
    }


    #[test]
    fn openness_measures() {
        let f = Face::neutral();
        assert!(openness::mouth(&f.pts()).unwrap() < 0.1);
        let open = Face { gap: 20.0, ..f }.pts();
        let m = openness::mouth(&open).unwrap();
        assert!((m - 22.0 / 44.0).abs() < 0.02, "{m}");
        let ear = openness::eye(&f.pts(), Eye::Right).unwrap();
        assert!((ear - 10.0 / 24.0).abs() < 1e-4, "{ear}");
        let wink = Face { eh: [0.5, 5.0], ..f }.pts();
        assert!(openness::eye(&wink, Eye::Right).unwrap() < 0.05);
        assert!((openness::eye(&wink, Eye::Left).unwrap() - ear).abs() < 1e-4);
        assert!((openness::iod(&f.pts()).unwrap() - 0.84 * 60.0).abs() < 1e-3);
        assert!(openness::roll_deg(&f.pts()).unwrap().abs() < 1e-3);
        assert!(openness::yaw_proxy(&f.pts()).unwrap().abs() < 1e-3);
        let rot = transform(&f.pts(), &Similarity::about(1.0, 0.2, [128.0, 128.0], [0.0, 0.0]));
        assert!((openness::roll_deg(&rot).unwrap() - 0.2f32.to_degrees()).abs() < 1e-2);
        // Invariance to pose and size.
        let t = Similarity::new(2.3, 0.7, 40.0, -9.0);
        assert!((openness::mouth(&transform(&open, &t)).unwrap() - m).abs() < 1e-4);
        let mut turned = f.pts();
        turned[30][0] += 30.0;
        assert!(openness::yaw_proxy(&turned).unwrap() > 0.4);
        // Degenerate input gives None, not a panic or NaN.
        let zero = [[0.0f32; 2]; 68];
        assert!(openness::mouth(&zero).is_none() && openness::eye(&zero, Eye::Left).is_none());
        assert!(openness::iod(&zero).is_none() && openness::roll_deg(&zero).is_none() && openness::yaw_proxy(&zero).is_none());
        let mut nan = f.pts();
        nan[61][1] = f32::NAN;
        assert!(openness::mouth(&nan).is_none());
    }

    #[test]
    fn driver_at_neutral_gives_target_neutral() {
        let mut r = retargeter();
        assert_eq!(r.status(), NeutralStatus::Profile);
        let d = Face::other();
        let out = r.retarget(&d.pts(), Some(&d.iris(0.0, 0.0))).unwrap();
        let tn = Face::neutral().shape();
        assert!(max_diff(&out.pts68, &tn.pts68) < 1e-3, "{}", max_diff(&out.pts68, &tn.pts68));
        let (oi, ti) = (out.iris.unwrap(), tn.iris.unwrap());
        for k in 0..2 {
            assert!((oi[k].cx - ti[k].cx).abs() < 1e-3 && (oi[k].cy - ti[k].cy).abs() < 1e-3 && (oi[k].r - ti[k].r).abs() < 1e-3);
        }
    }

    #[test]
    fn driver_shape_does_not_leak_into_output() {
        // Whatever the driver's face shape (in any pose the limits allow), a neutral
        // expression gives the target's shape: scale/offset of the driver frame only move it.
        for (k, d) in [Face::other(), Face { fw: 50.0, fh: 90.0, ew: 20.0, mw: 40.0, ..Face::neutral() }].iter().enumerate() {
            let mut r = Retargeter::new(Face::neutral().shape(), Some(d.shape()), no_smoothing()).unwrap();
            let moved = transform(&d.pts(), &Similarity::about(1.05, 0.1, [d.cx as f64, d.cy as f64], [3.0, -2.0]));
            let out = r.retarget(&moved, None).unwrap();
            let dist_t = crate::core::geometry::procrustes_distance(&out.pts68, &Face::neutral().pts()).unwrap();
            let dist_d = crate::core::geometry::procrustes_distance(&out.pts68, &d.pts()).unwrap();
            assert!(dist_t < 1e-4, "case {k}: {dist_t}");
            assert!(dist_d > 0.02, "case {k}: {dist_d}");
        }
    }

    #[test]
    fn head_rotation_rotates_target() {
        let mut r = retargeter();
        let d = Face::other();
        let dc = centroid(stable_pts(&d.pts()));
        for deg in [-20.0f64, -5.0, 10.0, 25.0] {
            let rot = Similarity::about(1.0, deg.to_radians(), dc, [0.0, 0.0]);
            let out = r.retarget(&transform(&d.pts(), &rot), None).unwrap();
            let tn = Face::neutral().pts();
            let tc = centroid(stable_pts(&tn));
            let expect = transform(&tn, &Similarity::about(1.0, deg.to_radians(), tc, [0.0, 0.0]));
            assert!(max_diff(&out.pts68, &expect) < 1e-2, "{deg}: {}", max_diff(&out.pts68, &expect));
        }
    }

    #[test]
    fn head_translation_and_scale_transfer_in_proportion() {
        let mut r = retargeter();
        let d = Face::other();
        let dn = d.pts();
        let dc = centroid(stable_pts(&dn));
        let d_size = rms_size(&stable_pts(&dn));
        let tn = Face::neutral().pts();
        let t_size = rms_size(&stable_pts(&tn));
        let shift = [0.05 * d_size, -0.08 * d_size];
        let out = r.retarget(&transform(&dn, &Similarity::about(1.1, 0.0, dc, shift)), None).unwrap();
        let tc = centroid(stable_pts(&tn));
        let expect = transform(&tn, &Similarity::about(1.1, 0.0, tc, [0.05 * t_size, -0.08 * t_size]));
        assert!(max_diff(&out.pts68, &expect) < 1e-2, "{}", max_diff(&out.pts68, &expect));
    }

    #[test]
    fn pose_limits_clamp() {
        let params = RetargetParams { max_roll_deg: 10.0, max_translation: 0.05, min_scale: 0.9, max_scale: 1.1, ..no_smoothing() };
        let mut r = Retargeter::new(Face::neutral().shape(), Some(Face::other().shape()), params).unwrap();
        let d = Face::other();
        let dc = centroid(stable_pts(&d.pts()));
        let tn = Face::neutral().pts();
        let tc = centroid(stable_pts(&tn));
        // 40 degrees roll, 1.5x scale, a big shift.
        let out = r.retarget(&transform(&d.pts(), &Similarity::about(1.5, 40f64.to_radians(), dc, [200.0, 0.0])), None).unwrap();
        let fit = fit_similarity(&stable_pts(&tn), &stable_pts(&out.pts68), None).unwrap();
        assert!((fit.angle.to_degrees() - 10.0).abs() < 0.01, "{}", fit.angle.to_degrees());
        assert!((fit.scale - 1.1).abs() < 1e-4, "{}", fit.scale);
        let moved = fit.apply_f64(tc);
        let shift = ((moved[0] - tc[0]).powi(2) + (moved[1] - tc[1]).powi(2)).sqrt();
        assert!((shift - 0.05 * 256.0).abs() < 0.01, "{shift}");
        // Opposite direction clamps symmetrically.
        let out = r.retarget(&transform(&d.pts(), &Similarity::about(0.5, -40f64.to_radians(), dc, [0.0, 0.0])), None).unwrap();
        let fit = fit_similarity(&stable_pts(&tn), &stable_pts(&out.pts68), None).unwrap();
        assert!((fit.angle.to_degrees() + 10.0).abs() < 0.01 && (fit.scale - 0.9).abs() < 1e-4, "{fit:?}");
    }

    #[test]
    fn pose_smoothing_lags_then_converges() {
        let params = RetargetParams { pose_smoothing: 0.5, ..Default::default() };
        let mut r = Retargeter::new(Face::neutral().shape(), Some(Face::other().shape()), params).unwrap();
        let d = Face::other();
        let dc = centroid(stable_pts(&d.pts()));
        let tn = Face::neutral().pts();
        r.retarget(&d.pts(), None).unwrap();
        let rolled = transform(&d.pts(), &Similarity::about(1.0, 0.2, dc, [0.0, 0.0]));
        let mut angles = vec![];
        for _ in 0..20 {
            let out = r.retarget(&rolled, None).unwrap();
            angles.push(fit_similarity(&stable_pts(&tn), &stable_pts(&out.pts68), None).unwrap().angle);
        }
        assert!((angles[0] - 0.1).abs() < 1e-3, "{}", angles[0]);
        assert!(angles.windows(2).all(|w| w[1] >= w[0] - 1e-9));
        assert!((angles[19] - 0.2).abs() < 1e-4);
    }

    /// Inner-lip gap over the inter-ocular distance.
    fn gap_iod(p: &Pts68) -> f64 {
        LIP_PAIRS.iter().map(|&(u, l)| dist(p[u], p[l])).sum::<f64>() / 3.0 / openness::iod(p).unwrap() as f64
    }

    #[test]
    fn mouth_opening_transfers_proportionally() {
        // A driver with a much wider mouth than the portrait's: the opening still transfers
        // with gain 1 relative to each face's eye distance (not shrunk by the mouth widths).
        for gain in [1.0f32, 1.5] {
            let mut r = Retargeter::new(Face::neutral().shape(), Some(Face::other().shape()), RetargetParams { mouth_gain: gain, ..no_smoothing() }).unwrap();
            let (mut dm, mut tm) = (vec![], vec![]);
            for gap in [0.0f32, 5.0, 10.0, 20.0, 30.0, 40.0] {
                let d = Face { gap, ..Face::other() };
                let out = r.retarget(&d.pts(), None).unwrap();
                dm.push(gap_iod(&d.pts()));
                tm.push(gap_iod(&out.pts68));
            }
            // Both neutrals have (nearly) closed mouths, so the openings match up to the gain.
            for (a, b) in dm.iter().zip(&tm) {
                assert!((gain as f64 * a - b).abs() < 0.01 + 0.05 * a, "gain {gain}: driver {a} target {b}");
            }
            assert!(pearson(&dm, &tm) > 0.999, "{dm:?} {tm:?}");
            assert!(tm[5] > tm[1] * 4.0);
        }
    }

    #[test]
    fn pressed_lips_do_not_cross() {
        // Driver's neutral mouth is slightly open, the portrait's closed: pressing the lips
        // together must give a closed mouth, not lips passed through each other.
        let mut r = Retargeter::new(Face::neutral().shape(), Some(Face { gap: 6.0, ..Face::other() }.shape()), no_smoothing()).unwrap();
        let out = r.retarget(&Face::other().pts(), None).unwrap();
        for (u, l) in LIP_PAIRS {
            assert!(out.pts68[l][1] >= out.pts68[u][1] - 1e-4, "{u}/{l}: {:?} {:?}", out.pts68[u], out.pts68[l]);
        }
        assert!(openness::mouth(&out.pts68).unwrap() < 0.01);
        // Opening from there still opens.
        let out = r.retarget(&Face { gap: 26.0, ..Face::other() }.pts(), None).unwrap();
        assert!(openness::mouth(&out.pts68).unwrap() > 0.2);
    }

    #[test]
    fn blink_and_wink_transfer_as_ratio() {
        let mut r = retargeter();
        let tn = Face::neutral().pts();
        let t_ear = [Eye::Right, Eye::Left].map(|e| openness::eye(&tn, e).unwrap());
        for (eh_r, eh_l) in [(6.0f32, 6.0f32), (3.0, 6.0), (0.0, 6.0), (6.0, 1.5), (1.0, 1.0)] {
            let d = Face { eh: [eh_r, eh_l], ..Face::other() };
            let out = r.retarget(&d.pts(), None).unwrap();
            for (e, eh) in [(Eye::Right, eh_r), (Eye::Left, eh_l)] {
                let got = openness::eye(&out.pts68, e).unwrap();
                let want = t_ear[e as usize] * lid_opening(eh as f64 / 6.0) as f32;
                assert!((got - want).abs() < 1e-3, "{e:?} {eh}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn a_shut_driver_eye_shuts_the_portrait_eye_and_the_remap_is_continuous() {
        assert_eq!(lid_opening(1.0), 1.0);
        assert_eq!(lid_opening(0.6), 0.6);
        assert_eq!(lid_opening(CLOSED_EAR_FRACTION), 0.0);
        assert_eq!(lid_opening(0.1), 0.0);
        let mut prev = -1.0;
        for k in 0..=200 {
            let v = lid_opening(k as f64 / 100.0);
            assert!(v >= prev && (v - prev) < 0.03 || k == 0, "{k}: {prev} -> {v}");
            prev = v;
        }
        // A driver eye at 30 % of its neutral opening (shut, as MediaPipe sees it) shuts the target's.
        let mut r = retargeter();
        let d = Face { eh: [1.8, 6.0], ..Face::other() };
        let out = r.retarget(&d.pts(), None).unwrap();
        assert!(openness::eye(&out.pts68, Eye::Right).unwrap() < 1e-3);
    }

    #[test]
    fn brow_raise_moves_target_brows_up_only() {
        let mut r = retargeter();
        let d = Face { brow: 8.0, ..Face::other() };
        let out = r.retarget(&d.pts(), None).unwrap();
        let tn = Face::neutral().pts();
        for i in 17..=26 {
            assert!(out.pts68[i][1] < tn[i][1] - 1.0, "{i}");
        }
        for i in (0..17).chain(27..68) {
            assert!((out.pts68[i][1] - tn[i][1]).abs() < 1e-2, "{i}");
        }
    }

    #[test]
    fn gaze_transfers_in_eye_coordinates() {
        let mut r = retargeter();
        let d = Face::other();
        // Driver looks right by a quarter of its eye width... clamped to 0.25 width.
        let out = r.retarget(&d.pts(), Some(&d.iris(0.1 * d.ew, 0.0))).unwrap();
        let t = Face::neutral();
        let ti = t.iris(0.0, 0.0);
        let oi = out.iris.unwrap();
        for k in 0..2 {
            let moved = (oi[k].cx - ti[k].cx) / t.ew;
            assert!((moved - 0.1).abs() < 1e-3, "{moved}");
            assert!((oi[k].cy - ti[k].cy).abs() < 1e-3);
        }
        // A wild iris position is clamped, not passed on.
        let out = r.retarget(&d.pts(), Some(&d.iris(5.0 * d.ew, 0.0))).unwrap();
        assert!(((out.iris.unwrap()[0].cx - ti[0].cx) / t.ew - 0.25).abs() < 1e-3);
    }

    #[test]
    fn target_without_iris_gives_no_iris() {
        let target = Shape68 { pts68: Face::neutral().pts(), iris: None };
        let mut r = Retargeter::new(target, Some(Face::other().shape()), no_smoothing()).unwrap();
        let d = Face::other();
        assert!(r.retarget(&d.pts(), Some(&d.iris(1.0, 0.0))).unwrap().iris.is_none());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut r = retargeter();
        let mut p = Face::other().pts();
        p[30][0] = f32::NAN;
        assert!(r.retarget(&p, None).is_err());
        assert!(r.retarget(&[[0.0; 2]; 68], None).is_err());
        assert!(r.retarget(&[[f32::INFINITY; 2]; 68], None).is_err());
        assert!(r.step(Some((&p, None))).is_none());
        assert_eq!(r.rejected_frames(), 1);
        assert!(r.step(None).is_none());
        // A NaN iris is ignored, not propagated.
        let d = Face::other();
        let mut ir = d.iris(0.0, 0.0);
        ir[0].cx = f32::NAN;
        assert!(r.retarget(&d.pts(), Some(&ir)).unwrap().is_finite());
        // Still works afterwards.
        assert!(r.retarget(&d.pts(), None).is_ok());
        // Degenerate neutrals are refused at construction.
        assert!(Retargeter::new(Shape68 { pts68: [[1.0; 2]; 68], iris: None }, None, no_smoothing()).is_err());
        assert!(Retargeter::new(Face::neutral().shape(), Some(Shape68 { pts68: [[1.0; 2]; 68], iris: None }), no_smoothing()).is_err());
        let mut nan = Face::neutral().shape();
        nan.pts68[3][1] = f32::NAN;
        assert!(Retargeter::new(nan, None, no_smoothing()).is_err());
        assert!(Retargeter::new(Face::neutral().shape(), None, RetargetParams { pose_smoothing: 1.0, ..Default::default() }).is_err());
    }

    #[test]
    fn learns_neutral_from_steady_frames() {
        let params = RetargetParams { learn_frames: 10, ..no_smoothing() };
        let mut r = Retargeter::new(Face::neutral().shape(), None, params).unwrap();
        let d = Face::other();
        let tn = Face::neutral().pts();
        assert_eq!(r.status(), NeutralStatus::Learning { have: 0, need: 10 });
        // Provisional neutral from the first frame: the same face again gives the target neutral.
        for k in 0..6 {
            let jitter = Similarity::about(1.0, 0.01 * (k % 3) as f64, [d.cx as f64, d.cy as f64], [k as f64 * 0.5, 0.0]);
            let out = r.retarget(&transform(&d.pts(), &jitter), None).unwrap();
            assert!(procrustes(&out.pts68, &tn) < 1e-3, "provisional neutral at frame {k}");
        }
        assert_eq!(r.status(), NeutralStatus::Learning { have: 6, need: 10 });
        // An open mouth does not count towards learning and restarts the window, but the
        // portrait already follows it (it does not wait for the learned neutral).
        let out = r.retarget(&Face { gap: 30.0, ..d }.pts(), None).unwrap();
        assert!(openness::mouth(&out.pts68).unwrap() > 0.3, "mouth follows while provisional");
        assert_eq!(r.status(), NeutralStatus::Learning { have: 0, need: 10 });
        for k in 0..10 {
            let jitter = Similarity::about(1.0, 0.01 * (k % 3) as f64, [d.cx as f64, d.cy as f64], [k as f64 * 0.5, 0.0]);
            r.retarget(&transform(&d.pts(), &jitter), Some(&d.iris(0.0, 0.0))).unwrap();
        }
        assert_eq!(r.status(), NeutralStatus::Learned);
        let learned = r.driver_neutral().unwrap();
        assert!(crate::core::geometry::procrustes_distance(&learned, &d.pts()).unwrap() < 1e-4);
        // And now it retargets: a neutral driver frame gives the target neutral (once the
        // learned neutral has blended in, over a few frames).
        for _ in 0..20 {
            r.retarget(&d.pts(), None).unwrap();
        }
        let out = r.retarget(&d.pts(), None).unwrap();
        assert!(max_diff(&out.pts68, &tn) < 1e-2);
        r.relearn();
        assert_eq!(r.status(), NeutralStatus::Learning { have: 0, need: 10 });
    }

    fn procrustes(a: &Pts68, b: &Pts68) -> f64 {
        crate::core::geometry::procrustes_distance(a, b).unwrap()
    }

    #[test]
    fn provisional_neutral_moves_without_jumps_and_never_waits() {
        // A talking driver that is never steady: the output follows from the first frame, and
        // when the provisional estimate is refined the output changes smoothly.
        let params = RetargetParams { learn_frames: 30, ..no_smoothing() };
        let mut r = Retargeter::new(Face::neutral().shape(), None, params).unwrap();
        let d = Face::other();
        let mut prev: Option<Pts68> = None;
        let mut moved = 0;
        let mut worst_step = 0.0f32;
        for k in 0..120 {
            let gap = 12.0 * ((k as f32 * 0.7).sin() * 0.5 + 0.5);
            let out = r.retarget(&Face { gap, ..d }.pts(), None).unwrap();
            assert!(matches!(r.status(), NeutralStatus::Learning { .. }));
            if openness::mouth(&out.pts68).unwrap() > 0.1 {
                moved += 1;
            }
            if let Some(p) = prev {
                // Brows and eyes do not move in the driver: any change there comes from the
                // neutral estimate, and must be gradual.
                let s = (17..48).map(|i| (out.pts68[i][1] - p[i][1]).abs()).fold(0.0, f32::max);
                worst_step = worst_step.max(s);
            }
            prev = Some(out.pts68);
        }
        assert!(moved > 30, "mouth opened in {moved} of 120 frames");
        assert!(worst_step < 0.5, "largest frame-to-frame jump of still features: {worst_step} px");
    }

    #[test]
    fn learning_rejects_a_moving_face() {
        let params = RetargetParams { learn_frames: 10, learn_max_motion: 0.01, ..no_smoothing() };
        let mut r = Retargeter::new(Face::neutral().shape(), None, params).unwrap();
        let d = Face::other();
        // Talking: the mouth moves within the "neutral" openness limit, brows move a lot.
        for k in 0..30 {
            let f = Face { gap: (k % 2) as f32 * 6.0, brow: (k % 3) as f32 * 6.0, ..d };
            r.retarget(&f.pts(), None).unwrap();
            assert!(matches!(r.status(), NeutralStatus::Learning { .. }), "{k}");
        }
    }

    #[test]
    fn estimate_neutral_median_and_motion() {
        let d = Face::other();
        let frames: Vec<Pts68> = (0..9)
            .map(|k| transform(&d.pts(), &Similarity::about(1.0 + 0.01 * k as f64, 0.02 * k as f64, [300.0, 260.0], [k as f64, 0.0])))
            .collect();
        let irises: Vec<_> = frames.iter().map(|_| None).collect();
        let est = estimate_neutral(&frames, &irises).unwrap();
        assert!(est.nonrigid < 1e-4, "{}", est.nonrigid);
        assert!(est.motion > 0.02, "{}", est.motion);
        assert!(crate::core::geometry::procrustes_distance(&est.pts68, &d.pts()).unwrap() < 1e-4);
        assert!(est.iris.is_none());
        // One outlier frame with an open mouth does not move the median.
        let mut frames2 = vec![d.pts(); 5];
        frames2.push(Face { gap: 30.0, ..d }.pts());
        let est2 = estimate_neutral(&frames2, &[Some(d.iris(0.0, 0.0)); 6]).unwrap();
        assert!(openness::mouth(&est2.pts68).unwrap() < 0.05);
        assert!(est2.nonrigid > 0.01);
        assert!((est2.iris.unwrap()[0].cx - d.iris(0.0, 0.0)[0].cx).abs() < 1e-3);
        assert!(estimate_neutral(&frames[..1], &irises[..1]).is_err());
        let mut bad = frames.clone();
        bad[2][5][0] = f32::NAN;
        assert!(estimate_neutral(&bad, &irises).is_err());
    }

    #[test]
    fn a_talking_driver_gets_a_closed_mouth_neutral() {
        // Mouth open in 10 of 12 frames (a driver who talks from the first frame): the neutral
        // takes the mouth from the most closed frames, not a half-open median.
        let d = Face::other();
        let gaps = [20.0f32, 25.0, 0.0, 22.0, 18.0, 1.0, 24.0, 21.0, 19.0, 26.0, 23.0, 20.0];
        let frames: Vec<Pts68> = gaps.iter().map(|&gap| Face { gap, ..d }.pts()).collect();
        let est = estimate_neutral(&frames, &vec![None; frames.len()]).unwrap();
        let m = openness::mouth(&est.pts68).unwrap();
        assert!(m < 0.05, "neutral mouth openness {m}");
        let median = openness::mouth(&Face { gap: 21.0, ..d }.pts()).unwrap();
        assert!(median > 0.15, "{median}");
    }

    #[test]
    fn neutral_limits_name_the_problem() {
        let l = NeutralLimits::default();
        let d = Face::other();
        assert!(l.check(&d.pts()).is_ok());
        assert!(matches!(l.check(&Face { gap: 30.0, ..d }.pts()), Err(NotNeutral::MouthOpen(_))));
        assert!(matches!(l.check(&Face { eh: [1.0, 1.0], ..d }.pts()), Err(NotNeutral::EyesClosed(_))));
        let rolled = transform(&d.pts(), &Similarity::about(1.0, 0.5, [300.0, 260.0], [0.0, 0.0]));
        assert!(matches!(l.check(&rolled), Err(NotNeutral::Roll(_))));
        let mut turned = d.pts();
        turned[30][0] += 40.0;
        assert!(matches!(l.check(&turned), Err(NotNeutral::Yaw(_))));
        assert_eq!(l.check(&[[0.0; 2]; 68]), Err(NotNeutral::Degenerate));
        assert!(NotNeutral::MouthOpen(0.3).to_string().contains("mouth"));
    }

    #[test]
    fn params_validation_names_the_field() {
        assert!(RetargetParams::default().validate().is_ok());
        let e = RetargetParams { max_roll_deg: f32::NAN, ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("retarget.max_roll_deg"), "{e}");
        assert!(RetargetParams { min_scale: 1.5, ..Default::default() }.validate().is_err());
        assert!(RetargetParams { learn_frames: 1, ..Default::default() }.validate().is_err());
        let p: RetargetParams = toml::from_str("max_roll_deg = 12.0").unwrap();
        assert_eq!(p.max_roll_deg, 12.0);
        assert_eq!(p.learn_frames, RetargetParams::default().learn_frames);
        assert!(toml::from_str::<RetargetParams>("max_rol_deg = 12.0").is_err());
    }

    fn shape_at(v: f32) -> Shape68 {
        Shape68 { pts68: [[v, v]; 68], iris: Some([Iris { cx: v, cy: v, r: 2.0 }; 2]) }
    }

    #[test]
    fn easer_eases_to_neutral_and_back() {
        let neutral = shape_at(0.0);
        let mut e = FaceLostEaser::new(neutral, 0.1, 0.4, 0.3);
        let live = shape_at(10.0);
        let dt = 1.0 / 30.0;
        // Starts at neutral, blends in when a face appears.
        assert_eq!(e.update(None, dt), neutral);
        let first = e.update(Some(&live), dt);
        assert_eq!(e.phase(), EasePhase::EasingIn);
        assert!(first.pts68[0][0] < 1.0);
        let mut prev = first.pts68[0][0];
        for _ in 0..12 {
            let o = e.update(Some(&live), dt);
            assert!(o.pts68[0][0] >= prev - 1e-6);
            prev = o.pts68[0][0];
        }
        assert_eq!(e.phase(), EasePhase::Tracking);
        assert_eq!(e.update(Some(&live), dt), live);
        // Lost: hold for 0.1 s, then ease monotonically to neutral within ~0.4 s, and stay.
        let mut xs = vec![];
        for _ in 0..25 {
            xs.push(e.update(None, dt).pts68[0][0]);
        }
        assert_eq!(xs[0], 10.0);
        assert_eq!(xs[1], 10.0);
        assert!(xs.windows(2).all(|w| w[1] <= w[0] + 1e-6), "{xs:?}");
        let neutral_at = xs.iter().position(|&x| x == 0.0).unwrap();
        assert!(neutral_at >= 14 && neutral_at <= 17, "{neutral_at} {xs:?}");
        assert_eq!(e.phase(), EasePhase::Neutral);
        // The middle of the ease is a blend, not a jump.
        assert!(xs.iter().any(|&x| x > 2.0 && x < 8.0));
        assert_eq!(e.update(None, dt), neutral);
        // Face back mid-ease: continues from where it was (no jump).
        let mut e = FaceLostEaser::new(neutral, 0.0, 0.4, 0.3);
        e.update(Some(&live), 1.0);
        e.update(Some(&live), dt);
        e.update(None, 0.2);
        let mid = e.update(None, 0.0).pts68[0][0];
        assert!(mid > 0.0 && mid < 10.0, "{mid}");
        let back = e.update(Some(&live), 0.0).pts68[0][0];
        assert!((back - mid).abs() < 1e-4, "{back} vs {mid}");
    }

    #[test]
    fn easer_ignores_non_finite_input_and_bad_dt() {
        let neutral = shape_at(0.0);
        let mut e = FaceLostEaser::new(neutral, f32::NAN, -1.0, 0.3);
        let mut bad = shape_at(5.0);
        bad.pts68[0][0] = f32::NAN;
        let o = e.update(Some(&bad), f32::NAN);
        assert!(o.is_finite());
        assert_eq!(o, neutral);
        // Zero durations jump straight to the destination.
        let mut e = FaceLostEaser::new(neutral, 0.0, 0.0, 0.0);
        assert_eq!(e.update(Some(&shape_at(3.0)), 0.0), shape_at(3.0));
        assert_eq!(e.update(None, 0.0), neutral);
    }
}
