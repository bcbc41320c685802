//! Head pose: the driver's pose relative to its neutral (roll, log scale, translation in units of
//! the stable points' size, so that it means the same on any face), clamped to the configured
//! limits, optionally smoothed, and re-applied to the portrait about its own stable-point centre.
use super::params::RetargetParams;
use crate::core::geometry::{wrap_angle, Pt, Similarity};
use crate::core::head3d::soft_limit;
use crate::core::types::Iris;

/// Share of the translation and scale limits up to which the driver's pose is passed on as it
/// is; beyond it, eased towards the limit (the same knee as the head's turn).
const LIMIT_KNEE: f64 = 0.7;

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

    /// Limits a pose (the translation limit is a fraction of the crop side `ref_side`; the pose's
    /// translation is in units of the portrait's size `t_size`). Translation and scale are eased
    /// from `LIMIT_KNEE` of their limits on and never pass them, as the head's turn is
    /// (`head3d::TurnLimits`): a hard clamp stopped the head dead at the limit while the driver
    /// kept moving. Roll is clamped (its limit is far beyond what a talking head does).
    pub(super) fn limit(self, params: &RetargetParams, ref_side: f64, t_size: f64) -> Pose {
        let p = self;
        let max_a = (params.max_roll_deg as f64).to_radians();
        let (lo, hi) = ((params.min_scale as f64).ln(), (params.max_scale as f64).ln());
        let ls = if p.log_scale >= 0.0 {
            soft_limit(p.log_scale, hi, LIMIT_KNEE)
        } else {
            -soft_limit(-p.log_scale, -lo, LIMIT_KNEE)
        };
        let max_t = params.max_translation as f64 * ref_side / t_size;
        let n = (p.t[0] * p.t[0] + p.t[1] * p.t[1]).sqrt();
        let t = if n > 0.0 && n.is_finite() {
            let eased = soft_limit(n, max_t, LIMIT_KNEE);
            [p.t[0] * eased / n, p.t[1] * eased / n]
        } else {
            p.t
        };
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

    /// Below 70 % of the limits the pose passes as it is; beyond, it is eased: it keeps moving
    /// with the driver, more slowly, and never passes the limit (a hard clamp stopped it dead).
    #[test]
    fn translation_and_scale_ease_towards_their_limits() {
        use super::{Pose, LIMIT_KNEE};
        let params = RetargetParams { max_translation: 0.2, min_scale: 0.8, max_scale: 1.35, ..no_smoothing() };
        // ref_side = t_size: the translation limit is 0.2 in the pose's units.
        let at = |t: f64, s: f64| Pose { angle: 0.0, log_scale: s.ln(), t: [t * 0.6, -t * 0.8] }.limit(&params, 1.0, 1.0);
        let norm = |p: Pose| (p.t[0] * p.t[0] + p.t[1] * p.t[1]).sqrt();
        assert!((norm(at(0.13, 1.0)) - 0.13).abs() < 1e-12, "below the knee: unchanged");
        assert!((at(1.0, 1.2).log_scale - 1.2f64.ln()).abs() < 1e-12 && (at(1.0, 0.86).log_scale - 0.86f64.ln()).abs() < 1e-12);
        let mut last = 0.0;
        for k in 1..400 {
            let t = k as f64 * 0.005;
            let p = at(t, 1.0);
            let n = norm(p);
            assert!(n > last - 1e-15 && n <= 0.2f32 as f64 + 1e-12 && n <= t + 1e-12, "t {t}: {n}");
            // The direction is the driver's.
            assert!((p.t[0] / n - 0.6).abs() < 1e-9 && (p.t[1] / n + 0.8).abs() < 1e-9);
            if t > 0.2f32 as f64 * LIMIT_KNEE + 1e-9 {
                assert!(n < t, "eased past the knee: {t} -> {n}");
            }
            last = n;
        }
        assert!(norm(at(0.18, 1.0)) > 0.16, "still moving near the limit: {}", norm(at(0.18, 1.0)));
        for s in [1.4, 2.0, 10.0] {
            let ls = at(0.0, s).log_scale;
            assert!(ls <= (1.35f32 as f64).ln() + 1e-12 && ls > 1.25f64.ln(), "{s}: {}", ls.exp());
        }
        for s in [0.75, 0.5, 0.1] {
            let ls = at(0.0, s).log_scale;
            assert!(ls >= (0.8f32 as f64).ln() - 1e-12 && ls < 0.85f64.ln(), "{s}: {}", ls.exp());
        }
        // Degenerate limits: nothing passes.
        let zero = RetargetParams { max_translation: 0.0, min_scale: 1.0, max_scale: 1.0, ..no_smoothing() };
        let p = Pose { angle: 0.0, log_scale: 0.3, t: [0.1, 0.0] }.limit(&zero, 1.0, 1.0);
        assert_eq!((p.t, p.log_scale), ([0.0, 0.0], 0.0));
    }

    /// The defaults, eased, pass on (within 0.5 %) every pose the former hard limits (0.12 of the
    /// crop, scale 0.85-1.2) passed on, and keep following a little beyond them.
    #[test]
    fn default_limits_pass_on_what_the_former_clamps_did() {
        use super::Pose;
        let params = no_smoothing();
        let at = |t: f64, s: f64| Pose { angle: 0.0, log_scale: s.ln(), t: [t, 0.0] }.limit(&params, 1.0, 1.0);
        for k in 0..=120 {
            let t = k as f64 * 0.001;
            assert!(at(t, 1.0).t[0] >= 0.995 * t, "{t}: {}", at(t, 1.0).t[0]);
        }
        assert!(at(0.3, 1.0).t[0] > 0.13 && at(1.0, 1.0).t[0] <= 0.15 + 1e-6);
        for s in [0.85, 0.9, 1.1, 1.2] {
            let got = at(0.0, s).log_scale.exp();
            assert!((got / s - 1.0).abs() <= 0.005, "{s}: {got}");
        }
        assert!(at(0.0, 1.4).log_scale.exp() > 1.21 && at(0.0, 0.7).log_scale.exp() < 0.84);
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
