//! Head pose: the driver's pose relative to its neutral (roll, log scale, translation in units of
//! the stable points' size, so that it means the same on any face), clamped to the configured
//! limits, optionally smoothed, and re-applied to the portrait about its own stable-point centre.
use super::params::RetargetParams;
use crate::core::geometry::{wrap_angle, Pt, Similarity};
use crate::core::types::Iris;

/// Smoothed pose in normalised units: roll (radians), ln(scale), translation / stable-point size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Pose {
    pub(super) angle: f64,
    pub(super) log_scale: f64,
    pub(super) t: [f64; 2],
}

impl Pose {
    /// The pose of the inverse of the fit frame -> neutral (`pose_inv`), taken about the
    /// neutral's stable-point centre `centre` and normalised by its size.
    pub(super) fn relative(pose_inv: &Similarity, centre: [f64; 2], size: f64) -> Pose {
        let moved = pose_inv.apply_f64(centre);
        Pose {
            angle: wrap_angle(pose_inv.angle),
            log_scale: pose_inv.scale.ln(),
            t: [(moved[0] - centre[0]) / size, (moved[1] - centre[1]) / size],
        }
    }

    /// Clamps a pose to the configured limits (the translation limit is a fraction of the crop
    /// side `ref_side`; the pose's translation is in units of the portrait's size `t_size`).
    pub(super) fn limit(self, params: &RetargetParams, ref_side: f64, t_size: f64) -> Pose {
        let p = self;
        let max_a = (params.max_roll_deg as f64).to_radians();
        let ls = p.log_scale.clamp((params.min_scale as f64).ln(), (params.max_scale as f64).ln());
        let max_t = params.max_translation as f64 * ref_side / t_size;
        let n = (p.t[0] * p.t[0] + p.t[1] * p.t[1]).sqrt();
        let t = if n > max_t && n > 0.0 { [p.t[0] * max_t / n, p.t[1] * max_t / n] } else { p.t };
        Pose { angle: p.angle.clamp(-max_a, max_a), log_scale: ls, t }
    }

    /// Exponential smoothing: `a` is the weight of the previous pose (none on the first frame).
    pub(super) fn smoothed(self, prev: Option<Pose>, a: f64) -> Pose {
        let lim = self;
        match prev {
            Some(prev) => Pose {
                angle: prev.angle + (1.0 - a) * wrap_angle(lim.angle - prev.angle),
                log_scale: a * prev.log_scale + (1.0 - a) * lim.log_scale,
                t: [a * prev.t[0] + (1.0 - a) * lim.t[0], a * prev.t[1] + (1.0 - a) * lim.t[1]],
            },
            None => lim,
        }
    }

    /// The pose as a similarity in the portrait's coordinates, about its stable-point centre.
    pub(super) fn similarity(&self, t_centre: [f64; 2], t_size: f64) -> Similarity {
        Similarity::about(self.log_scale.exp(), self.angle, t_centre, [self.t[0] * t_size, self.t[1] * t_size])
    }
}

/// Moves points and irises by the pose `q`.
pub(super) fn apply(q: &Similarity, pts: &mut [Pt], iris: &mut Option<[Iris; 2]>) {
    for p in pts.iter_mut() {
        *p = q.apply(*p);
    }
    if let Some(ir) = iris.as_mut() {
        for i in ir.iter_mut() {
            let c = q.apply([i.cx, i.cy]);
            *i = Iris { cx: c[0], cy: c[1], r: i.r * q.scale as f32 };
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::core::geometry::{centroid, fit_similarity, rms_size, Similarity};
    use crate::core::retarget::tests::{max_diff, no_smoothing, retargeter, transform, Face};
    use crate::core::retarget::{stable_pts, RetargetParams, Retargeter};

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

}
