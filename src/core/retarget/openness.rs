//! Openness measures (pure functions of the 68 points), shared by retargeting, calibration and
//! the real-data tests. Both are ratios, hence invariant to the pose and size of the face.
use super::Pts68;
use crate::core::geometry::dist;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::Similarity;
    use crate::core::retarget::openness;
    use crate::core::retarget::tests::{transform, Face};

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

}
