//! The driver's neutral face: where it comes from (`NeutralStatus`), its robust estimate from
//! several frames (generalised Procrustes on the stable points, then the median over the most
//! closed-mouth frames), and the checks a frame must pass to count as neutral.
use super::expression::Region;
use super::openness::{self, Eye};
use super::topology::Topology;
use super::{stable_pts, Pts68};
use crate::core::geometry::{dist, fit_similarity, Pt, Similarity};
use crate::core::types::Iris;
use crate::error::{Error, Result};

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
    let n = v.len();
    let (lo, &mut hi, _) = v.select_nth_unstable_by(n / 2, |a, b| a.total_cmp(b));
    if n % 2 == 1 { hi } else { (lo.iter().copied().fold(f32::NEG_INFINITY, f32::max) + hi) / 2.0 }
}

/// A neutral estimated in any topology (see [`estimate_neutral`]).
pub(super) struct PointsEstimate {
    pub(super) pts: Vec<Pt>,
    pub(super) iris: Option<[Iris; 2]>,
    pub(super) nonrigid: f32,
    pub(super) iod: f32,
}

/// Estimates a neutral face from frames of (supposedly) a still, neutral face. Two rounds of
/// generalised Procrustes on the stable points make the median immune to small head motion.
pub fn estimate_neutral(frames: &[Pts68], irises: &[Option<[Iris; 2]>]) -> Result<NeutralEstimate> {
    if frames.len() < 2 {
        return Err(Error::Invalid(format!("neutral estimate needs at least 2 frames, got {}", frames.len())));
    }
    let all: Vec<Vec<Pt>> = frames.iter().map(|f| f.to_vec()).collect();
    let est = estimate_points(&Topology::ibug68(), &all, irises, CLOSED_SHARE_STEADY)?;
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

/// Share of a steady window's frames, the most closed-mouth ones, whose median is the neutral.
pub(super) const CLOSED_SHARE_STEADY: f32 = 0.25;

/// `closed_share`: the neutral shape is the median over this share of the frames (at least 2),
/// those with the most closed mouths.
pub(super) fn estimate_points(topo: &Topology, frames: &[Vec<Pt>], irises: &[Option<[Iris; 2]>], closed_share: f32) -> Result<PointsEstimate> {
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
        // `closed_share` by opening, at least 2): a person at rest has a closed mouth, and a
        // driver who talks from the first frame would otherwise get a half-open "neutral" from
        // which every opening is measured (r3_May_5s: rendered mouth gain 0.5).
        let gaps: Vec<f32> = aligned.iter().map(|a| openness::mouth(&topo.sub(a)).unwrap_or(f32::INFINITY)).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| gaps[a].total_cmp(&gaps[b]));
        let keep = &order[..((n as f32 * closed_share) as usize).max(2).min(n)];
        // Only the mouth and jaw need the closed-mouth frames; the rest of the face (eyes,
        // brows, nose) takes the median of all of them, which a blink or a smile in the few
        // closed-mouth frames cannot move.
        let mut sub = vec![0f32; n];
        for i in 0..np {
            let from: &[usize] = if matches!(topo.region[i], Region::Mouth | Region::Jaw) { keep } else { &order };
            for c in 0..2 {
                for (j, &k) in from.iter().enumerate() {
                    sub[j] = aligned[k][i][c];
                }
                reference[i][c] = median(&mut sub[..from.len()]);
            }
        }
    }
    // The shape is in the first frame's pose; the neutral's pose is the frames' median one (where
    // the driver usually is), else a driver who leaned in or away in the first frame would drive
    // the portrait scaled and moved for as long as this estimate holds (sk_3: the portrait at the
    // 1.2 scale limit for a whole clip). Each frame's pose: the inverse of its alignment above
    // (the estimate's stable points to its own); the median of each parameter, about the stable
    // points' centre.
    let c = crate::core::geometry::centroid(stable_pts(&topo.sub(&reference)).iter().copied());
    let mut params = [Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n)];
    for t in &transforms {
        let t = t.inverse().ok_or_else(|| Error::Invalid("neutral estimate: degenerate frame pose".into()))?;
        let m = t.apply_f64(c);
        for (v, x) in params.iter_mut().zip([t.scale.ln(), crate::core::geometry::wrap_angle(t.angle), m[0] - c[0], m[1] - c[1]]) {
            v.push(x as f32);
        }
    }
    let [ls, an, tx, ty] = params.map(|mut v| median(&mut v) as f64);
    let to_median = Similarity::about(ls.exp(), an, c, [tx, ty]);
    for p in reference.iter_mut() {
        *p = to_median.apply(*p);
    }
    for t in transforms.iter_mut() {
        *t = to_median.compose(t);
    }
    for a in aligned.iter_mut() {
        for p in a.iter_mut() {
            *p = to_median.apply(*p);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::retarget::tests::{transform, Face};

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

}
