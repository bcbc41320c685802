//! Head turns for warp avatars: measures the driver's head rotation in 3-D against the portrait's
//! 3-D mesh, hands the retargeter the driver's face turned back to the portrait's orientation
//! (so that it transfers expression, not pose), and gives the turn relative to the driver's rest
//! pose for the renderer to apply to the portrait's mesh (`core::warp3d`).
//!
//! Why a reference shape: a rigid fit is equivariant (fitting a rotated copy gives the rotation
//! composed), so the rotation of any frame relative to the driver's rest pose is exact whatever
//! fixed shape the fits are made against, even another person's face. The portrait's own mesh is
//! the natural one: the driver's face turned back by it is in the portrait's orientation.
use crate::core::geometry::Pt;
use crate::core::head3d::{fit_rigid, rotate_about, Euler, Rot3, TurnLimits, P3, STABLE_MESH};
use crate::core::types::Iris;
use std::collections::VecDeque;

/// Frames whose median rotation is the driver's rest pose while it is being learned (10 s at
/// 30 fps: a rest pose is where a person looks most of the time, not the last second's pose).
const REST_WINDOW: usize = 300;

/// The driver's head, measured against the portrait.
#[derive(Clone, Debug)]
pub struct HeadTurn {
    /// The portrait's mesh with depth (canvas pixels): the reference of every fit.
    portrait: Vec<P3>,
    /// The portrait's pivot relative to its stable points' centroid (see `core::head3d::pivot`).
    pivot_offset: [f64; 3],
    limits: TurnLimits,
    /// Rotation (portrait -> driver) of the driver's rest pose, when known (a neutral with depth,
    /// or frozen once learned).
    rest: Option<Rot3>,
    /// While learning: recent rotations, whose per-angle median is the rest pose.
    recent: VecDeque<Euler>,
}

/// A driver frame turned back to the portrait's orientation.
#[derive(Clone, Debug, PartialEq)]
pub struct Frontal {
    pub mesh: Vec<Pt>,
    pub iris: Option<[Iris; 2]>,
    /// Rotation portrait -> driver of this frame.
    pub rot: Rot3,
}

impl HeadTurn {
    /// `portrait`: the portrait's 468 points with depth. `None` when the mesh is unusable.
    pub fn new(portrait: Vec<P3>, limits: TurnLimits) -> Option<HeadTurn> {
        // The pivot lies at the stable points' centre in the image plane (`head3d::pivot`), so
        // only its depth differs from their 3-D centroid.
        let p = crate::core::head3d::pivot(&portrait)?;
        let zc = STABLE_MESH.iter().map(|&i| portrait[i][2] as f64).sum::<f64>() / STABLE_MESH.len() as f64;
        Some(HeadTurn { portrait, pivot_offset: [0.0, 0.0, p[2] - zc], limits, rest: None, recent: VecDeque::new() })
    }

    /// Turns `mesh3` (468 points with depth, any pixel frame) and its irises back to the
    /// portrait's orientation, about the head's pivot. `None` for a degenerate mesh.
    pub fn frontalise(&self, mesh3: &[P3], iris: Option<&[Iris; 2]>) -> Option<Frontal> {
        if mesh3.len() != self.portrait.len() {
            return None;
        }
        let fit = fit_rigid(&self.portrait, mesh3, &STABLE_MESH)?;
        // The portrait's pivot carried onto the driver: a point fixed in the driver's head.
        let o = fit.rot.apply(self.pivot_offset);
        let pv = [fit.cb[0] + fit.scale * o[0], fit.cb[1] + fit.scale * o[1], fit.cb[2] + fit.scale * o[2]];
        let back = fit.rot.transpose();
        let turn = |p: [f64; 3]| rotate_about(&back, pv, p);
        let mesh: Vec<Pt> = mesh3
            .iter()
            .map(|p| {
                let q = turn([p[0] as f64, p[1] as f64, p[2] as f64]);
                [q[0] as f32, q[1] as f32]
            })
            .collect();
        if !mesh.iter().all(|p| p[0].is_finite() && p[1].is_finite()) {
            return None;
        }
        // Irises lie at their eye's depth (the mean of its contour).
        let iris = iris.map(|ir| {
            [0, 1].map(|e| {
                let c = crate::core::mesh::eye_contour(e);
                let z = c.iter().map(|&i| mesh3[i][2] as f64).sum::<f64>() / c.len() as f64;
                let q = turn([ir[e].cx as f64, ir[e].cy as f64, z]);
                Iris { cx: q[0] as f32, cy: q[1] as f32, r: ir[e].r }
            })
        });
        Some(Frontal { mesh, iris, rot: fit.rot })
    }

    /// The rest pose is known from a neutral with depth.
    pub fn set_rest(&mut self, rot: Rot3) {
        self.rest = Some(rot);
        self.recent.clear();
    }

    /// Whether the rest pose is fixed (known or frozen).
    pub fn rest_known(&self) -> bool {
        self.rest.is_some()
    }

    /// Forgets a learned rest pose (the retargeter relearns its neutral).
    pub fn relearn(&mut self) {
        self.rest = None;
        self.recent.clear();
    }

    fn median_rest(&self) -> Option<Rot3> {
        if self.recent.is_empty() {
            return None;
        }
        let med = |f: fn(&Euler) -> f64| {
            let mut v: Vec<f64> = self.recent.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Some(Rot3::from_euler(Euler { yaw: med(|e| e.yaw), pitch: med(|e| e.pitch), roll: med(|e| e.roll) }))
    }

    /// Records this frame's rotation while the rest pose is learned; `freeze`: the retargeter has
    /// learned its neutral, so the rest pose stops moving.
    pub fn observe(&mut self, rot: &Rot3, freeze: bool) {
        if self.rest.is_some() {
            return;
        }
        self.recent.push_back(rot.euler());
        if self.recent.len() > REST_WINDOW {
            self.recent.pop_front();
        }
        if freeze {
            self.rest = self.median_rest();
            self.recent.clear();
        }
    }

    /// The head's turn relative to the rest pose, eased towards the limits.
    pub fn relative(&self, rot: &Rot3) -> Euler {
        let rest = self.rest.or_else(|| self.median_rest()).unwrap_or(*rot);
        let e = rot.mul(&rest.transpose()).euler();
        if e.is_finite() { self.limits.apply(e) } else { Euler::ZERO }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face() -> Vec<P3> {
        let t = &crate::core::face_template::FACE_TEMPLATE;
        t.iter().map(|p| [300.0 + 1.5 * p[0], 250.0 + 1.5 * p[1], 1.5 * p[2]]).collect()
    }

    fn turned(m: &[P3], e: Euler, shift: [f32; 3]) -> Vec<P3> {
        let r = Rot3::from_euler(e);
        m.iter()
            .map(|p| {
                let q = r.apply([p[0] as f64 - 300.0, p[1] as f64 - 250.0, p[2] as f64]);
                [q[0] as f32 + 300.0 + shift[0], q[1] as f32 + 250.0 + shift[1], q[2] as f32 + shift[2]]
            })
            .collect()
    }

    #[test]
    fn frontalising_undoes_the_turn_and_the_relative_turn_is_measured() {
        let p = face();
        let mut ht = HeadTurn::new(p.clone(), TurnLimits::default()).unwrap();
        // The driver: the same face, resting 5° to the side, then turned a further 20°.
        let rest = Euler { yaw: 5f64.to_radians(), ..Euler::ZERO };
        let d_rest = turned(&p, rest, [10.0, 0.0, 0.0]);
        let f = ht.frontalise(&d_rest, None).unwrap();
        ht.set_rest(f.rot);
        let e = Euler { yaw: 25f64.to_radians(), pitch: 8f64.to_radians(), roll: 0.0 };
        let d = turned(&p, e, [30.0, -5.0, 0.0]);
        let f = ht.frontalise(&d, None).unwrap();
        // Turned back, it is the portrait (up to translation).
        let off = [f.mesh[1][0] - p[1][0], f.mesh[1][1] - p[1][1]];
        for i in 0..468 {
            let (dx, dy) = (f.mesh[i][0] - p[i][0] - off[0], f.mesh[i][1] - p[i][1] - off[1]);
            assert!(dx.abs() < 0.05 && dy.abs() < 0.05, "point {i}: {dx} {dy}");
        }
        let rel = ht.relative(&f.rot);
        let want = Rot3::from_euler(e).mul(&Rot3::from_euler(rest).transpose()).euler();
        assert!((rel.yaw - want.yaw).abs() < 1e-4 && (rel.pitch - want.pitch).abs() < 1e-4, "{:?} vs {:?}", rel.degrees(), want.degrees());
        // Far past the limit: eased, never beyond it.
        let big = ht.frontalise(&turned(&p, Euler { yaw: 70f64.to_radians(), ..Euler::ZERO }, [0.0; 3]), None).unwrap();
        let r = ht.relative(&big.rot);
        assert!(r.yaw.abs() < 35f64.to_radians() && r.yaw.abs() > 28f64.to_radians(), "{:?}", r.degrees());
    }

    #[test]
    fn rest_pose_is_learned_as_a_median_and_frozen() {
        let p = face();
        let mut ht = HeadTurn::new(p.clone(), TurnLimits::default()).unwrap();
        // Mostly at 10° yaw, sometimes glancing to 30°.
        for k in 0..60 {
            let y = if k % 4 == 3 { 30.0f64 } else { 10.0 };
            let f = ht.frontalise(&turned(&p, Euler { yaw: y.to_radians(), ..Euler::ZERO }, [0.0; 3]), None).unwrap();
            ht.observe(&f.rot, false);
        }
        assert!(!ht.rest_known());
        let at = |ht: &HeadTurn, y: f64| {
            let f = ht.frontalise(&turned(&p, Euler { yaw: y.to_radians(), ..Euler::ZERO }, [0.0; 3]), None).unwrap();
            ht.relative(&f.rot).yaw.to_degrees()
        };
        assert!(at(&ht, 10.0).abs() < 0.01 && (at(&ht, 30.0) - 20.0).abs() < 0.01);
        let f = ht.frontalise(&turned(&p, Euler { yaw: 10f64.to_radians(), ..Euler::ZERO }, [0.0; 3]), None).unwrap();
        ht.observe(&f.rot, true);
        assert!(ht.rest_known());
        // Frozen: a long look to the side does not move it.
        for _ in 0..400 {
            let f = ht.frontalise(&turned(&p, Euler { yaw: 30f64.to_radians(), ..Euler::ZERO }, [0.0; 3]), None).unwrap();
            ht.observe(&f.rot, false);
        }
        assert!((at(&ht, 30.0) - 20.0).abs() < 0.01);
        ht.relearn();
        assert!(!ht.rest_known());
        assert!(ht.frontalise(&p[..10], None).is_none());
    }
}
