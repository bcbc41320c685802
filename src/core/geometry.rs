//! 2-D similarity transforms (scale, rotation, translation) and weighted least-squares
//! (Umeyama / Procrustes) alignment of point sets. Pure; used by retargeting and calibration.
//!
//! Maths is done in f64 (landmarks are f32) so that composing and inverting transforms does not
//! accumulate visible error. Reflections are never produced: a mirrored face is not a pose.
use crate::error::{Error, Result};

/// A 2-D point as landmarks carry it.
pub type Pt = [f32; 2];

/// `p' = scale * R(angle) * p + (tx, ty)`, angle in radians (counter-clockwise in a y-up frame,
/// i.e. clockwise on screen where y points down).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Similarity {
    pub scale: f64,
    pub angle: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Default for Similarity {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Similarity {
    pub const IDENTITY: Similarity = Similarity { scale: 1.0, angle: 0.0, tx: 0.0, ty: 0.0 };

    pub fn new(scale: f64, angle: f64, tx: f64, ty: f64) -> Self {
        Similarity { scale, angle, tx, ty }
    }

    /// The transform `p -> s R (p - c) + c + t`: scale and rotate about `c`, then translate.
    pub fn about(scale: f64, angle: f64, c: [f64; 2], t: [f64; 2]) -> Self {
        let (a, b) = (scale * angle.cos(), scale * angle.sin());
        let tx = c[0] - (a * c[0] - b * c[1]) + t[0];
        let ty = c[1] - (b * c[0] + a * c[1]) + t[1];
        Similarity { scale, angle, tx, ty }
    }

    /// Linear part as `(a, b)` with the matrix `[[a, -b], [b, a]]`.
    fn ab(&self) -> (f64, f64) {
        (self.scale * self.angle.cos(), self.scale * self.angle.sin())
    }

    pub fn is_finite(&self) -> bool {
        self.scale.is_finite() && self.angle.is_finite() && self.tx.is_finite() && self.ty.is_finite()
    }

    pub fn apply_f64(&self, p: [f64; 2]) -> [f64; 2] {
        let (a, b) = self.ab();
        [a * p[0] - b * p[1] + self.tx, b * p[0] + a * p[1] + self.ty]
    }

    pub fn apply(&self, p: Pt) -> Pt {
        let q = self.apply_f64([p[0] as f64, p[1] as f64]);
        [q[0] as f32, q[1] as f32]
    }

    /// An iris carried by the transform: centre moved, radius scaled.
    pub fn apply_iris(&self, i: super::types::Iris) -> super::types::Iris {
        let c = self.apply([i.cx, i.cy]);
        super::types::Iris { cx: c[0], cy: c[1], r: i.r * self.scale as f32 }
    }

    /// Applies only the linear part (for displacement vectors).
    pub fn apply_vec(&self, v: [f64; 2]) -> [f64; 2] {
        let (a, b) = self.ab();
        [a * v[0] - b * v[1], b * v[0] + a * v[1]]
    }

    /// The inverse transform; `None` when the scale is zero or not finite.
    pub fn inverse(&self) -> Option<Similarity> {
        if !self.is_finite() || self.scale.abs() < 1e-12 {
            return None;
        }
        let s = 1.0 / self.scale;
        let angle = -self.angle;
        let (a, b) = (s * angle.cos(), s * angle.sin());
        let tx = -(a * self.tx - b * self.ty);
        let ty = -(b * self.tx + a * self.ty);
        Some(Similarity { scale: s, angle, tx, ty })
    }

    /// `self ∘ other`: applies `other` first, then `self`.
    pub fn compose(&self, other: &Similarity) -> Similarity {
        let t = self.apply_f64([other.tx, other.ty]);
        Similarity { scale: self.scale * other.scale, angle: wrap_angle(self.angle + other.angle), tx: t[0], ty: t[1] }
    }
}

/// Wraps an angle into `(-pi, pi]`.
pub fn wrap_angle(a: f64) -> f64 {
    let two_pi = std::f64::consts::TAU;
    let mut r = a % two_pi;
    if r <= -std::f64::consts::PI {
        r += two_pi;
    } else if r > std::f64::consts::PI {
        r -= two_pi;
    }
    r
}

/// Least-squares similarity mapping `src` onto `dst` (Umeyama 1991, 2-D closed form), minimising
/// `sum w_i |T(src_i) - dst_i|^2` over scale > 0, rotation and translation (no reflection).
///
/// Errors (never panics) on: length mismatch, fewer than two points with positive weight,
/// non-finite coordinates or weights, negative weights, coincident source points (no scale can
/// be recovered) or a collapsed destination (the fit would have scale 0 and no inverse).
pub fn fit_similarity(src: &[Pt], dst: &[Pt], weights: Option<&[f32]>) -> Result<Similarity> {
    if src.len() != dst.len() {
        return Err(Error::Invalid(format!("similarity fit: {} source vs {} destination points", src.len(), dst.len())));
    }
    if let Some(w) = weights {
        if w.len() != src.len() {
            return Err(Error::Invalid(format!("similarity fit: {} weights for {} points", w.len(), src.len())));
        }
    }
    let weight = |i: usize| weights.map_or(1.0, |w| w[i] as f64);
    let (mut wsum, mut ms, mut md, mut used) = (0.0f64, [0.0f64; 2], [0.0f64; 2], 0usize);
    for i in 0..src.len() {
        let w = weight(i);
        let finite = src[i].iter().chain(dst[i].iter()).all(|v| v.is_finite());
        if !w.is_finite() || w < 0.0 || !finite {
            return Err(Error::Invalid(format!("similarity fit: point {i} or its weight is not finite/non-negative")));
        }
        if w > 0.0 {
            used += 1;
            wsum += w;
            for k in 0..2 {
                ms[k] += w * src[i][k] as f64;
                md[k] += w * dst[i][k] as f64;
            }
        }
    }
    if used < 2 || wsum <= 0.0 {
        return Err(Error::Invalid("similarity fit: fewer than two weighted points".into()));
    }
    for k in 0..2 {
        ms[k] /= wsum;
        md[k] /= wsum;
    }
    let (mut var_s, mut var_d, mut sa, mut sb) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..src.len() {
        let w = weight(i);
        if w <= 0.0 {
            continue;
        }
        let (xs, ys) = (src[i][0] as f64 - ms[0], src[i][1] as f64 - ms[1]);
        let (xd, yd) = (dst[i][0] as f64 - md[0], dst[i][1] as f64 - md[1]);
        var_s += w * (xs * xs + ys * ys);
        var_d += w * (xd * xd + yd * yd);
        sa += w * (xs * xd + ys * yd);
        sb += w * (xs * yd - ys * xd);
    }
    // Relative thresholds: coordinates may be crop pixels (~100) or normalised units (~1).
    let spread = ms[0].abs().max(ms[1].abs()).max(md[0].abs()).max(md[1].abs()).max(1.0);
    let tiny = 1e-10 * spread * spread * wsum;
    if var_s <= tiny {
        return Err(Error::Invalid("similarity fit: source points coincide".into()));
    }
    if var_d <= tiny {
        return Err(Error::Invalid("similarity fit: destination points coincide".into()));
    }
    let norm = (sa * sa + sb * sb).sqrt();
    if norm <= 1e-9 * (var_s * var_d).sqrt() {
        // Uncorrelated configurations: any rotation fits equally badly.
        return Err(Error::Invalid("similarity fit: point sets are unrelated (no defined rotation)".into()));
    }
    let scale = norm / var_s;
    let angle = sb.atan2(sa);
    let (a, b) = (scale * angle.cos(), scale * angle.sin());
    let tx = md[0] - (a * ms[0] - b * ms[1]);
    let ty = md[1] - (b * ms[0] + a * ms[1]);
    Ok(Similarity { scale, angle, tx, ty })
}

/// Root-mean-square distance between `T(src)` and `dst` (weighted like the fit).
pub fn rms_residual(t: &Similarity, src: &[Pt], dst: &[Pt], weights: Option<&[f32]>) -> f64 {
    let (mut acc, mut wsum) = (0.0f64, 0.0f64);
    for (i, (s, d)) in src.iter().zip(dst).enumerate() {
        let w = weights.map_or(1.0, |w| w[i] as f64);
        let q = t.apply_f64([s[0] as f64, s[1] as f64]);
        acc += w * ((q[0] - d[0] as f64).powi(2) + (q[1] - d[1] as f64).powi(2));
        wsum += w;
    }
    if wsum > 0.0 { (acc / wsum).sqrt() } else { f64::NAN }
}

/// RMS distance of points from their centroid (a size measure invariant to rotation/translation).
pub fn rms_size(pts: &[Pt]) -> f64 {
    if pts.is_empty() {
        return 0.0;
    }
    let n = pts.len() as f64;
    let cx = pts.iter().map(|p| p[0] as f64).sum::<f64>() / n;
    let cy = pts.iter().map(|p| p[1] as f64).sum::<f64>() / n;
    (pts.iter().map(|p| (p[0] as f64 - cx).powi(2) + (p[1] as f64 - cy).powi(2)).sum::<f64>() / n).sqrt()
}

/// Procrustes shape distance: the RMS residual after aligning `a` onto `b` by similarity,
/// divided by the RMS size of `b`. 0 for identical shapes, invariant to the pose of either set.
pub fn procrustes_distance(a: &[Pt], b: &[Pt]) -> Result<f64> {
    let t = fit_similarity(a, b, None)?;
    let size = rms_size(b);
    if !(size > 0.0) {
        return Err(Error::Invalid("procrustes distance: reference points coincide".into()));
    }
    Ok(rms_residual(&t, a, b, None) / size)
}

/// Euclidean distance of two points (f64 for accumulation).
pub fn dist(a: Pt, b: Pt) -> f64 {
    ((a[0] as f64 - b[0] as f64).powi(2) + (a[1] as f64 - b[1] as f64).powi(2)).sqrt()
}

/// Mean of the given points (no allocation); `[NaN, NaN]` for an empty slice.
pub fn centroid<I: IntoIterator<Item = Pt>>(pts: I) -> [f64; 2] {
    let (mut x, mut y, mut n) = (0.0, 0.0, 0usize);
    for p in pts {
        x += p[0] as f64;
        y += p[1] as f64;
        n += 1;
    }
    if n == 0 { [f64::NAN, f64::NAN] } else { [x / n as f64, y / n as f64] }
}

/// Whether `p` lies inside the closed polygon `poly` (even-odd rule; points on an edge may go
/// either way). Generic so that f32 and f64 callers keep their own precision.
pub fn inside_polygon<T>(poly: &[[T; 2]], p: [T; 2]) -> bool
where
    T: Copy + PartialOrd + std::ops::Add<Output = T> + std::ops::Sub<Output = T> + std::ops::Mul<Output = T> + std::ops::Div<Output = T>,
{
    let n = poly.len();
    let mut c = false;
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + n - 1) % n]);
        if (a[1] > p[1]) != (b[1] > p[1]) && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0] {
            c = !c;
        }
    }
    c
}

/// Hermite step: 0 below 0, 1 above 1, smooth (zero slope at both ends) in between.
pub fn smoothstep(x: f32) -> f32 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// Deterministic pseudo-random generator (xorshift) so tests need no crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.next()
        }
    }

    fn cloud(rng: &mut Rng, n: usize) -> Vec<Pt> {
        (0..n).map(|_| [rng.range(-50.0, 150.0) as f32, rng.range(-20.0, 220.0) as f32]).collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn apply_matches_definition() {
        let t = Similarity::new(2.0, PI / 2.0, 3.0, -1.0);
        let q = t.apply([1.0, 0.0]);
        assert!(close(q[0] as f64, 3.0, 1e-6) && close(q[1] as f64, 1.0, 1e-6), "{q:?}");
        let q = t.apply([0.0, 1.0]);
        assert!(close(q[0] as f64, 1.0, 1e-6) && close(q[1] as f64, -1.0, 1e-6), "{q:?}");
    }

    #[test]
    fn inverse_and_compose_round_trip() {
        let mut rng = Rng(7);
        for _ in 0..200 {
            let t = Similarity::new(rng.range(0.1, 5.0), rng.range(-PI, PI), rng.range(-100.0, 100.0), rng.range(-100.0, 100.0));
            let u = Similarity::new(rng.range(0.1, 5.0), rng.range(-PI, PI), rng.range(-100.0, 100.0), rng.range(-100.0, 100.0));
            let inv = t.inverse().unwrap();
            let p = [rng.range(-100.0, 100.0), rng.range(-100.0, 100.0)];
            let back = inv.apply_f64(t.apply_f64(p));
            assert!(close(back[0], p[0], 1e-9) && close(back[1], p[1], 1e-9));
            let id = t.compose(&inv);
            assert!(close(id.scale, 1.0, 1e-12) && close(id.angle, 0.0, 1e-12));
            assert!(close(id.tx, 0.0, 1e-9) && close(id.ty, 0.0, 1e-9));
            // compose applies the right operand first.
            let c = t.compose(&u).apply_f64(p);
            let d = t.apply_f64(u.apply_f64(p));
            assert!(close(c[0], d[0], 1e-9) && close(c[1], d[1], 1e-9));
        }
    }

    #[test]
    fn inverse_of_degenerate_is_none() {
        assert!(Similarity::new(0.0, 0.3, 1.0, 1.0).inverse().is_none());
        assert!(Similarity::new(f64::NAN, 0.0, 0.0, 0.0).inverse().is_none());
        assert!(Similarity::new(1.0, 0.0, f64::INFINITY, 0.0).inverse().is_none());
    }

    #[test]
    fn about_rotates_around_centre() {
        let c = [10.0, 20.0];
        let t = Similarity::about(1.5, 0.7, c, [0.0, 0.0]);
        let q = t.apply_f64(c);
        assert!(close(q[0], c[0], 1e-12) && close(q[1], c[1], 1e-12));
        let t = Similarity::about(1.0, 0.0, c, [3.0, 4.0]);
        let q = t.apply_f64([0.0, 0.0]);
        assert!(close(q[0], 3.0, 1e-12) && close(q[1], 4.0, 1e-12));
    }

    #[test]
    fn wrap_angle_range() {
        for k in -10..10 {
            let a = 0.3 + k as f64 * 2.0 * PI;
            assert!(close(wrap_angle(a), 0.3, 1e-9), "{k}");
        }
        assert!(close(wrap_angle(PI), PI, 1e-12));
        assert!(close(wrap_angle(-PI), PI, 1e-12));
    }

    #[test]
    fn fit_recovers_known_transform_exactly() {
        let mut rng = Rng(42);
        for _ in 0..200 {
            let t = Similarity::new(rng.range(0.2, 4.0), rng.range(-3.1, 3.1), rng.range(-200.0, 200.0), rng.range(-200.0, 200.0));
            let n = 3 + (rng.next() * 60.0) as usize;
            let src = cloud(&mut rng, n);
            let dst: Vec<Pt> = src.iter().map(|&p| t.apply(p)).collect();
            let f = fit_similarity(&src, &dst, None).unwrap();
            assert!(close(f.scale, t.scale, 1e-5 * t.scale), "{f:?} vs {t:?}");
            assert!(close(wrap_angle(f.angle - t.angle), 0.0, 1e-5), "{f:?} vs {t:?}");
            assert!(close(f.tx, t.tx, 1e-2) && close(f.ty, t.ty, 1e-2), "{f:?} vs {t:?}");
            assert!(rms_residual(&f, &src, &dst, None) < 1e-3);
        }
    }

    #[test]
    fn two_points_suffice() {
        let src = [[0.0, 0.0], [1.0, 0.0]];
        let dst = [[5.0, 5.0], [5.0, 7.0]];
        let f = fit_similarity(&src, &dst, None).unwrap();
        assert!(close(f.scale, 2.0, 1e-9) && close(f.angle, PI / 2.0, 1e-9));
        assert!(close(f.tx, 5.0, 1e-9) && close(f.ty, 5.0, 1e-9));
    }

    #[test]
    fn reflection_is_not_produced() {
        // dst is src mirrored in x: the best similarity cannot be a reflection, so the fit
        // must leave a residual and keep a positive scale.
        let mut rng = Rng(3);
        let src = cloud(&mut rng, 30);
        let dst: Vec<Pt> = src.iter().map(|p| [-p[0], p[1]]).collect();
        let f = fit_similarity(&src, &dst, None).unwrap();
        assert!(f.scale > 0.0);
        assert!(rms_residual(&f, &src, &dst, None) > 1.0);
        // A genuine reflection-free check: det of the linear part is scale^2 > 0.
        let (a, b) = f.ab();
        assert!(a * a + b * b > 0.0);
    }

    #[test]
    fn weights_select_the_trusted_points() {
        let mut rng = Rng(11);
        let t = Similarity::new(1.3, 0.4, 12.0, -7.0);
        let src = cloud(&mut rng, 20);
        let mut dst: Vec<Pt> = src.iter().map(|&p| t.apply(p)).collect();
        // Corrupt the last five points heavily and give them zero weight.
        for p in dst.iter_mut().skip(15) {
            p[0] += 80.0;
            p[1] -= 60.0;
        }
        let w: Vec<f32> = (0..20).map(|i| if i < 15 { 1.0 } else { 0.0 }).collect();
        let f = fit_similarity(&src, &dst, Some(&w)).unwrap();
        assert!(close(f.scale, 1.3, 1e-5) && close(f.angle, 0.4, 1e-5), "{f:?}");
        // Without weights the corruption moves the fit.
        let g = fit_similarity(&src, &dst, None).unwrap();
        assert!((g.tx - 12.0).abs() > 1.0 || (g.ty + 7.0).abs() > 1.0);
    }

    #[test]
    fn uniform_weights_equal_unweighted() {
        let mut rng = Rng(5);
        let src = cloud(&mut rng, 25);
        let dst = cloud(&mut rng, 25);
        let a = fit_similarity(&src, &dst, None).unwrap();
        let b = fit_similarity(&src, &dst, Some(&[3.5; 25])).unwrap();
        assert!(close(a.scale, b.scale, 1e-9) && close(a.angle, b.angle, 1e-9));
        assert!(close(a.tx, b.tx, 1e-6) && close(a.ty, b.ty, 1e-6));
    }

    #[test]
    fn fit_is_equivariant() {
        // Transforming the destination by U changes the fit to U ∘ T.
        let mut rng = Rng(9);
        let src = cloud(&mut rng, 15);
        let dst = cloud(&mut rng, 15);
        let t = fit_similarity(&src, &dst, None).unwrap();
        let u = Similarity::new(0.5, -1.2, 30.0, 4.0);
        let dst2: Vec<Pt> = dst.iter().map(|&p| u.apply(p)).collect();
        let t2 = fit_similarity(&src, &dst2, None).unwrap();
        let expect = u.compose(&t);
        assert!(close(t2.scale, expect.scale, 1e-5) && close(wrap_angle(t2.angle - expect.angle), 0.0, 1e-5));
        assert!(close(t2.tx, expect.tx, 1e-2) && close(t2.ty, expect.ty, 1e-2));
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        let p = [[1.0, 2.0], [3.0, 4.0], [5.0, 1.0]];
        assert!(fit_similarity(&p, &p[..2], None).is_err());
        assert!(fit_similarity(&p[..1], &p[..1], None).is_err());
        assert!(fit_similarity(&[], &[], None).is_err());
        let same = [[2.0, 2.0]; 3];
        assert!(fit_similarity(&same, &p, None).is_err());
        assert!(fit_similarity(&p, &same, None).is_err());
        let mut nan = p;
        nan[1][0] = f32::NAN;
        assert!(fit_similarity(&nan, &p, None).is_err());
        assert!(fit_similarity(&p, &nan, None).is_err());
        let mut inf = p;
        inf[2][1] = f32::INFINITY;
        assert!(fit_similarity(&p, &inf, None).is_err());
        assert!(fit_similarity(&p, &p, Some(&[1.0, -1.0, 1.0])).is_err());
        assert!(fit_similarity(&p, &p, Some(&[1.0, f32::NAN, 1.0])).is_err());
        assert!(fit_similarity(&p, &p, Some(&[1.0, 0.0, 0.0])).is_err());
        assert!(fit_similarity(&p, &p, Some(&[1.0, 1.0])).is_err());
    }

    #[test]
    fn procrustes_distance_is_pose_invariant() {
        let mut rng = Rng(21);
        let a = cloud(&mut rng, 20);
        let b = cloud(&mut rng, 20);
        let d0 = procrustes_distance(&a, &b).unwrap();
        assert!(d0 > 0.1);
        let u = Similarity::new(2.5, 0.9, -40.0, 17.0);
        let a2: Vec<Pt> = a.iter().map(|&p| u.apply(p)).collect();
        let d1 = procrustes_distance(&a2, &b).unwrap();
        assert!(close(d0, d1, 1e-4), "{d0} {d1}");
        let b2: Vec<Pt> = b.iter().map(|&p| u.apply(p)).collect();
        let d2 = procrustes_distance(&a, &b2).unwrap();
        assert!(close(d0, d2, 1e-4), "{d0} {d2}");
        assert!(procrustes_distance(&a, &a2).unwrap() < 1e-5);
    }

    #[test]
    fn centroid_and_size() {
        let pts = [[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]];
        assert_eq!(centroid(pts), [1.0, 1.0]);
        assert!(close(rms_size(&pts), 2f64.sqrt(), 1e-12));
        assert!(centroid(std::iter::empty::<Pt>())[0].is_nan());
        assert_eq!(rms_size(&[]), 0.0);
        assert!(close(dist([0.0, 0.0], [3.0, 4.0]), 5.0, 1e-12));
    }
}
