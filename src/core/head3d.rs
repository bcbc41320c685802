//! Head pose in 3-D: rotations, a rigid fit of two 3-D point sets (Horn's quaternion method),
//! Euler angles with soft limits, and lifting a 2-D mesh to 3-D. Pure, no I/O.
//!
//! Why: a head turn is a rotation out of the image plane. Moving the portrait's 2-D triangles to
//! follow it folds the far side of the face and smears it; rotating the portrait's 3-D mesh and
//! drawing it with depth hides the far side behind the nose instead (`core::warp`, depth mode).
//!
//! Frame: image pixels, x right, y down, z away from the camera (MediaPipe's convention, in the
//! same units as x). It is right-handed. Projection is orthographic (a head is small against its
//! distance from a webcam).
use super::geometry::Pt;

/// A 3-D point (x, y in pixels, z in the same scale, away from the camera).
pub type P3 = [f32; 3];

/// Mesh points that move with the skull and hardly with expression: forehead, nose bridge and
/// tip, the eyes' corners, cheekbones and temples (no lips, jaw, lids or brows). The head's
/// rotation is fitted on them.
pub const STABLE_MESH: [usize; 52] = [
    10, 151, 9, 8, 108, 337, 109, 338, 67, 297, 69, 299, // forehead
    168, 6, 197, 195, 5, 4, 1, 98, 327, 129, 358, 64, 294, // nose
    33, 133, 362, 263, 130, 359, // eye corners
    116, 345, 117, 346, 50, 280, 123, 352, 118, 347, // cheekbones
    127, 356, 162, 389, 21, 251, 54, 284, 103, 332, 234, // temples and beside the ears
];

/// A 3x3 rotation matrix (row-major), f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rot3(pub [[f64; 3]; 3]);

impl Default for Rot3 {
    fn default() -> Self {
        Rot3::IDENTITY
    }
}

/// Euler angles of a head rotation, radians: `yaw` about the vertical (y) axis, `pitch` about the
/// horizontal (x) axis, `roll` in the image plane (z). [`Rot3::from_euler`] composes them as
/// `Rz(roll) Ry(yaw) Rx(pitch)`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Euler {
    pub yaw: f64,
    pub pitch: f64,
    pub roll: f64,
}

impl Euler {
    pub const ZERO: Euler = Euler { yaw: 0.0, pitch: 0.0, roll: 0.0 };
    pub fn is_finite(&self) -> bool {
        self.yaw.is_finite() && self.pitch.is_finite() && self.roll.is_finite()
    }
    /// `self` moved a fraction `w` of the way to `b` (angles stay small here: no wrapping issue
    /// within the limits).
    pub fn lerp(&self, b: &Euler, w: f64) -> Euler {
        Euler { yaw: self.yaw + (b.yaw - self.yaw) * w, pitch: self.pitch + (b.pitch - self.pitch) * w, roll: self.roll + (b.roll - self.roll) * w }
    }
    pub fn degrees(&self) -> [f64; 3] {
        [self.yaw.to_degrees(), self.pitch.to_degrees(), self.roll.to_degrees()]
    }
}

impl Rot3 {
    pub const IDENTITY: Rot3 = Rot3([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);

    pub fn from_euler(e: Euler) -> Rot3 {
        let (sa, ca) = e.pitch.sin_cos();
        let (sb, cb) = e.yaw.sin_cos();
        let (sc, cc) = e.roll.sin_cos();
        let rx = Rot3([[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]]);
        let ry = Rot3([[cb, 0.0, sb], [0.0, 1.0, 0.0], [-sb, 0.0, cb]]);
        let rz = Rot3([[cc, -sc, 0.0], [sc, cc, 0.0], [0.0, 0.0, 1.0]]);
        rz.mul(&ry).mul(&rx)
    }

    /// The angles that [`Rot3::from_euler`] turns back into `self`.
    pub fn euler(&self) -> Euler {
        let m = &self.0;
        let yaw = (-m[2][0]).clamp(-1.0, 1.0).asin();
        let pitch = m[2][1].atan2(m[2][2]);
        let roll = m[1][0].atan2(m[0][0]);
        Euler { yaw, pitch, roll }
    }

    pub fn mul(&self, b: &Rot3) -> Rot3 {
        let mut r = [[0.0; 3]; 3];
        for (i, row) in r.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| self.0[i][k] * b.0[k][j]).sum();
            }
        }
        Rot3(r)
    }

    pub fn transpose(&self) -> Rot3 {
        let m = &self.0;
        Rot3([[m[0][0], m[1][0], m[2][0]], [m[0][1], m[1][1], m[2][1]], [m[0][2], m[1][2], m[2][2]]])
    }

    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let m = &self.0;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2],
            m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2],
            m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2],
        ]
    }

    /// Rotation angle (radians) away from the identity.
    pub fn angle(&self) -> f64 {
        let tr = self.0[0][0] + self.0[1][1] + self.0[2][2];
        ((tr - 1.0) / 2.0).clamp(-1.0, 1.0).acos()
    }

    pub fn is_finite(&self) -> bool {
        self.0.iter().flatten().all(|v| v.is_finite())
    }

    /// From a unit quaternion (w, x, y, z).
    fn from_quat(q: [f64; 4]) -> Rot3 {
        let n = (q.iter().map(|v| v * v).sum::<f64>()).sqrt();
        let [w, x, y, z] = q.map(|v| v / n);
        Rot3([
            [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
            [2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x)],
            [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)],
        ])
    }
}

/// `b ≈ scale * rot * (a - ca) + cb`: a rigid motion with scale between two point sets, about
/// their centroids.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RigidFit {
    pub rot: Rot3,
    pub scale: f64,
    /// Centroids of the fitted points in `a` and in `b`.
    pub ca: [f64; 3],
    pub cb: [f64; 3],
    /// RMS residual of the fit, in `b`'s units.
    pub rms: f64,
}

/// Eigen-decomposition of a symmetric 4x4 matrix by cyclic Jacobi rotations: (eigenvalues,
/// eigenvectors as columns). Robust for the small, well-conditioned matrices of Horn's method.
fn jacobi4(mut a: [[f64; 4]; 4]) -> ([f64; 4], [[f64; 4]; 4]) {
    let mut v = [[0.0; 4]; 4];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..50 {
        let off: f64 = (0..4).flat_map(|i| (0..4).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i][j] * a[i][j]).sum();
        if off < 1e-24 {
            break;
        }
        for p in 0..3 {
            for q in p + 1..4 {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..4 {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..4 {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2], a[3][3]], v)
}

/// Least-squares rigid motion with scale mapping points `idx` of `a` onto the same points of `b`
/// (Horn 1987, closed form via the quaternion of largest eigenvalue). `None` for fewer than three
/// points, non-finite input or a degenerate set.
pub fn fit_rigid(a: &[P3], b: &[P3], idx: &[usize]) -> Option<RigidFit> {
    let pts: Vec<([f64; 3], [f64; 3])> = idx
        .iter()
        .filter(|&&i| i < a.len() && i < b.len())
        .map(|&i| (a[i].map(|v| v as f64), b[i].map(|v| v as f64)))
        .collect();
    if pts.len() < 3 || pts.iter().any(|(p, q)| p.iter().chain(q).any(|v| !v.is_finite())) {
        return None;
    }
    let n = pts.len() as f64;
    let mut ca = [0.0; 3];
    let mut cb = [0.0; 3];
    for (p, q) in &pts {
        for k in 0..3 {
            ca[k] += p[k] / n;
            cb[k] += q[k] / n;
        }
    }
    let mut s = [[0.0; 3]; 3];
    let mut saa = 0.0;
    let mut sbb = 0.0;
    for (p, q) in &pts {
        let (x, y) = ([p[0] - ca[0], p[1] - ca[1], p[2] - ca[2]], [q[0] - cb[0], q[1] - cb[1], q[2] - cb[2]]);
        for i in 0..3 {
            for j in 0..3 {
                s[i][j] += x[i] * y[j];
            }
            saa += x[i] * x[i];
            sbb += y[i] * y[i];
        }
    }
    if !(saa > 1e-9 && sbb > 1e-9) {
        return None;
    }
    let [[sxx, sxy, sxz], [syx, syy, syz], [szx, szy, szz]] = s;
    let nm = [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
    ];
    let (vals, vecs) = jacobi4(nm);
    let best = (0..4).max_by(|&i, &j| vals[i].total_cmp(&vals[j]))?;
    let rot = Rot3::from_quat([vecs[0][best], vecs[1][best], vecs[2][best], vecs[3][best]]);
    // Scale: least squares of b on R a.
    let mut num = 0.0;
    for (p, q) in &pts {
        let x = rot.apply([p[0] - ca[0], p[1] - ca[1], p[2] - ca[2]]);
        num += x[0] * (q[0] - cb[0]) + x[1] * (q[1] - cb[1]) + x[2] * (q[2] - cb[2]);
    }
    let scale = num / saa;
    if !(scale > 1e-9) || !rot.is_finite() {
        return None;
    }
    let mut err = 0.0;
    for (p, q) in &pts {
        let x = rot.apply([p[0] - ca[0], p[1] - ca[1], p[2] - ca[2]]);
        err += (0..3).map(|k| (scale * x[k] + cb[k] - q[k]).powi(2)).sum::<f64>();
    }
    Some(RigidFit { rot, scale, ca, cb, rms: (err / n).sqrt() })
}

/// Eases `x` towards `±max` instead of clamping it: the identity up to `knee * max`, then a
/// smooth (C1) saturation that never exceeds `max`. Poses past the limit stay drawable and
/// still respond a little, without a visible stop.
pub fn soft_limit(x: f64, max: f64, knee: f64) -> f64 {
    if !(max > 0.0) || !x.is_finite() {
        return 0.0;
    }
    let k = knee.clamp(0.0, 0.99) * max;
    let a = x.abs();
    if a <= k {
        return x;
    }
    let room = max - k;
    x.signum() * (k + room * ((a - k) / room).tanh())
}

/// Limits of the head's rotation that the portrait follows (degrees), eased past `knee`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TurnLimits {
    pub yaw_deg: f64,
    pub pitch_deg: f64,
    pub roll_deg: f64,
    pub knee: f64,
}

impl Default for TurnLimits {
    /// ±35° yaw, ±25° pitch (beyond that the portrait never showed enough of the head), roll as
    /// the 2-D retargeter allows by default; easing starts at 70 % of each.
    fn default() -> Self {
        TurnLimits { yaw_deg: 35.0, pitch_deg: 25.0, roll_deg: 30.0, knee: 0.7 }
    }
}

impl TurnLimits {
    pub fn apply(&self, e: Euler) -> Euler {
        Euler {
            yaw: soft_limit(e.yaw, self.yaw_deg.to_radians(), self.knee),
            pitch: soft_limit(e.pitch, self.pitch_deg.to_radians(), self.knee),
            roll: soft_limit(e.roll, self.roll_deg.to_radians(), self.knee),
        }
    }
}

/// Depth of a 2-D mesh when none was measured (avatar files before version 3, neutrals known only
/// in 2-D): the mean face's depth profile, `template` (468 points, any pixel scale, z away from
/// the camera), fitted to `mesh` by a 2-D similarity on the stable points and scaled with it.
pub fn lift_with_template(mesh: &[Pt], template: &[P3]) -> Option<Vec<f32>> {
    if mesh.len() != template.len() {
        return None;
    }
    let src: Vec<Pt> = STABLE_MESH.iter().map(|&i| [template[i][0], template[i][1]]).collect();
    let dst: Vec<Pt> = STABLE_MESH.iter().map(|&i| mesh[i]).collect();
    let s = super::geometry::fit_similarity(&src, &dst, None).ok()?;
    let mean_z = STABLE_MESH.iter().map(|&i| template[i][2] as f64).sum::<f64>() / STABLE_MESH.len() as f64;
    let z: Vec<f32> = template.iter().map(|p| ((p[2] as f64 - mean_z) * s.scale) as f32).collect();
    z.iter().all(|v| v.is_finite()).then_some(z)
}

/// Joins 2-D points and their depths.
pub fn with_depth(mesh: &[Pt], depth: &[f32]) -> Vec<P3> {
    mesh.iter().zip(depth).map(|(p, &z)| [p[0], p[1], z]).collect()
}

/// The head's pivot for a mesh with depth: the stable points' centre in the image plane, at the
/// depth of the face outline beside the ears (a head turns about its neck, behind the face).
pub fn pivot(mesh3: &[P3]) -> Option<[f64; 3]> {
    if mesh3.len() < super::landmarks::MESH_POINTS {
        return None;
    }
    let n = STABLE_MESH.len() as f64;
    let (mut x, mut y) = (0.0, 0.0);
    for &i in &STABLE_MESH {
        x += mesh3[i][0] as f64 / n;
        y += mesh3[i][1] as f64 / n;
    }
    let ears = &super::warp::EAR_SIDES;
    let z = ears.iter().map(|&i| mesh3[i][2] as f64).sum::<f64>() / ears.len() as f64;
    let p = [x, y, z];
    p.iter().all(|v| v.is_finite()).then_some(p)
}

/// `p` rotated by `r` about `c`.
pub fn rotate_about(r: &Rot3, c: [f64; 3], p: [f64; 3]) -> [f64; 3] {
    let q = r.apply([p[0] - c[0], p[1] - c[1], p[2] - c[2]]);
    [q[0] + c[0], q[1] + c[1], q[2] + c[2]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// A face-like cloud: points on a half-ellipsoid (z towards the camera at the centre).
    fn cloud() -> Vec<P3> {
        (0..468)
            .map(|i| {
                let t = i as f32 * 2.399_963;
                let r = ((i as f32 + 0.5) / 468.0).sqrt();
                let (x, y) = (80.0 * r * t.cos(), 100.0 * r * t.sin());
                let z = -60.0 * (1.0 - r * r).max(0.0).sqrt();
                [200.0 + x, 150.0 + y, z]
            })
            .collect()
    }

    #[test]
    fn euler_round_trip_and_composition() {
        for e in [Euler { yaw: 0.3, pitch: -0.2, roll: 0.1 }, Euler { yaw: -0.6, pitch: 0.4, roll: -0.5 }, Euler::ZERO] {
            let r = Rot3::from_euler(e);
            let back = r.euler();
            assert!(close(back.yaw, e.yaw, 1e-12) && close(back.pitch, e.pitch, 1e-12) && close(back.roll, e.roll, 1e-12), "{back:?}");
            let i = r.mul(&r.transpose());
            for a in 0..3 {
                for b in 0..3 {
                    assert!(close(i.0[a][b], if a == b { 1.0 } else { 0.0 }, 1e-12));
                }
            }
        }
        // Yaw turns the face (a point in front of the pivot, z < 0) sideways: positive yaw moves
        // it towards -x... whichever way, a pure yaw keeps y.
        let p = Rot3::from_euler(Euler { yaw: 0.5, ..Euler::ZERO }).apply([0.0, 3.0, -10.0]);
        assert!(close(p[1], 3.0, 1e-12) && p[0].abs() > 4.0);
        assert!(close(Rot3::from_euler(Euler { yaw: 0.4, ..Euler::ZERO }).angle(), 0.4, 1e-12));
    }

    #[test]
    fn rigid_fit_recovers_rotation_scale_and_translation() {
        let a = cloud();
        let all: Vec<usize> = (0..468).collect();
        for e in [Euler { yaw: 0.35, pitch: 0.1, roll: -0.05 }, Euler { yaw: -0.6, pitch: -0.4, roll: 0.3 }, Euler::ZERO] {
            let r = Rot3::from_euler(e);
            let b: Vec<P3> = a
                .iter()
                .map(|p| {
                    let q = r.apply([p[0] as f64 - 200.0, p[1] as f64 - 150.0, p[2] as f64]);
                    [(1.3 * q[0] + 40.0) as f32, (1.3 * q[1] - 7.0) as f32, (1.3 * q[2] + 5.0) as f32]
                })
                .collect();
            let f = fit_rigid(&a, &b, &all).unwrap();
            let got = f.rot.euler();
            assert!(close(got.yaw, e.yaw, 1e-5) && close(got.pitch, e.pitch, 1e-5) && close(got.roll, e.roll, 1e-5), "{got:?} vs {e:?}");
            assert!(close(f.scale, 1.3, 1e-5), "{}", f.scale);
            assert!(f.rms < 1e-3, "{}", f.rms);
            // Equivariance: fitting against a rotated copy gives the rotation composed.
            let f2 = fit_rigid(&b, &a, &all).unwrap();
            assert!(f2.rot.mul(&f.rot).angle() < 1e-6);
        }
        // Degenerate input: errors, not panics.
        assert!(fit_rigid(&a, &a, &[1, 2]).is_none());
        assert!(fit_rigid(&vec![[1.0, 1.0, 1.0]; 468], &a, &all).is_none());
        let mut nan = a.clone();
        nan[3][2] = f32::NAN;
        assert!(fit_rigid(&nan, &a, &all).is_none());
    }

    #[test]
    fn soft_limit_is_identity_below_the_knee_and_never_passes_the_limit() {
        assert_eq!(soft_limit(0.3, 1.0, 0.7), 0.3);
        assert_eq!(soft_limit(-0.69, 1.0, 0.7), -0.69);
        let mut prev = 0.0;
        for k in 1..400 {
            let x = k as f64 * 0.01;
            let y = soft_limit(x, 1.0, 0.7);
            assert!(y < 1.0 && y >= prev, "{x} -> {y}");
            assert!(close(soft_limit(-x, 1.0, 0.7), -y, 1e-12));
            prev = y;
        }
        // C1 at the knee.
        let d = (soft_limit(0.7 + 1e-6, 1.0, 0.7) - soft_limit(0.7, 1.0, 0.7)) / 1e-6;
        assert!(close(d, 1.0, 1e-3));
        assert_eq!(soft_limit(f64::NAN, 1.0, 0.7), 0.0);
        let lim = TurnLimits::default().apply(Euler { yaw: 1.2, pitch: -0.9, roll: 0.05 });
        assert!(lim.yaw < 35f64.to_radians() && lim.pitch > -25f64.to_radians() && lim.roll == 0.05);
    }

    #[test]
    fn template_lift_follows_the_mesh_scale() {
        let t = cloud();
        let mesh: Vec<Pt> = t.iter().map(|p| [p[0] * 2.0 + 10.0, p[1] * 2.0 - 3.0]).collect();
        let z = lift_with_template(&mesh, &t).unwrap();
        let mean_t = STABLE_MESH.iter().map(|&i| t[i][2]).sum::<f32>() / STABLE_MESH.len() as f32;
        for i in [0, 100, 467] {
            assert!((z[i] - 2.0 * (t[i][2] - mean_t)).abs() < 1e-2, "{} vs {}", z[i], t[i][2]);
        }
        assert!(lift_with_template(&mesh[..10], &t).is_none());
        let p = pivot(&t).unwrap();
        assert!(p[2].is_finite());
        let q = rotate_about(&Rot3::from_euler(Euler { yaw: 0.3, ..Euler::ZERO }), p, p);
        assert_eq!(q, p);
    }
}
