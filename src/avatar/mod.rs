//! Warp avatars: the file format (`file`), creating one from images (`create`), rendering it at
//! the output size (`render`), head turns in 3-D (`turn`), and [`WarpStage`], the generator
//! stage's per-frame work for a warp avatar: measure the head's turn, retarget the driver's dense
//! mesh onto the portrait, ease when the face is lost, render.
pub mod create;
pub mod file;
pub mod render;
pub mod turn;

use crate::core::geometry::{Pt, Similarity};
use crate::core::head3d::{with_depth, Euler, Rot3, TurnLimits};
use crate::core::mesh::Lift68;
use crate::core::retarget::{Blend, DriverNeutral, FaceLostEaser, NeutralStatus, Posed, RetargetParams, Retargeter, Shape68, Topology};
use crate::core::types::{FaceLandmarks, Frame, Iris};
use crate::error::Result;
pub use file::{RefinerBlob, WarpAvatar};
pub use render::WarpRenderer;

/// A driver's neutral face for a warp avatar: the mesh when known (calibration profile with a
/// mesh, `--neutral IMAGE`), else the 68 points (lifted to a mesh).
#[derive(Clone, Debug, PartialEq)]
pub struct MeshNeutral {
    pub pts68: [[f32; 2]; 68],
    pub mesh: Option<Vec<Pt>>,
    /// The mesh's depth, when measured (a neutral photo): its head pose is then known exactly.
    pub depth: Option<Vec<f32>>,
    pub iris: Option<[Iris; 2]>,
}

/// One driven frame: the retargeted face seen from the front (in the portrait's orientation)
/// and the head's turn relative to the driver's rest pose; `turned`: drawn in 3-D (the driver's
/// landmarks had depth and `head_3d` is on).
#[derive(Clone, Debug, PartialEq)]
pub struct Driven {
    pub posed: Posed,
    pub turn: Euler,
    pub turned: bool,
}

impl Blend for Driven {
    fn blend(&self, b: &Self, w: f32) -> Self {
        Driven { posed: self.posed.blend(&b.posed, w), turn: self.turn.lerp(&b.turn, w as f64), turned: self.turned || b.turned }
    }
    fn is_finite(&self) -> bool {
        self.posed.is_finite() && self.turn.is_finite()
    }
}

/// Easing times (seconds) when the face is lost and found again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ease {
    pub hold_s: f32,
    pub out_s: f32,
    pub in_s: f32,
}

/// The generator stage's state for one warp avatar at one output size.
pub struct WarpStage {
    pub avatar: WarpAvatar,
    renderer: WarpRenderer,
    retargeter: Retargeter,
    easer: FaceLostEaser<Driven>,
    /// The driver's head turn in 3-D (`head_3d`).
    turn: Option<turn::HeadTurn>,
    /// Turns 68-point-only driver landmarks into a mesh (template: the portrait).
    lift: Lift68,
    /// A driver neutral known only by its 68 points (a calibration profile): completed into a
    /// mesh with the first live frame's own mesh detail, then handed to the retargeter.
    pending: Option<(MeshNeutral, RetargetParams)>,
    /// The learned refiner (mouth and eyes), when the avatar has one and a runtime was given.
    refiner: Option<crate::refine::Refiner>,
}

/// The retargeter of a warp avatar: the portrait's mesh on the canvas is the target, with the
/// given driver neutral (or none: provisional, then learned).
fn mesh_retargeter(renderer: &WarpRenderer, topo: Topology, dn: Option<DriverNeutral>, params: RetargetParams) -> Result<Retargeter> {
    Retargeter::with_topology(topo, renderer.neutral().to_vec(), renderer.neutral_iris(), dn, params, renderer.crop_side() as f64)
}

impl WarpStage {
    pub fn new(avatar: WarpAvatar, out_w: u32, out_h: u32, params: RetargetParams, neutral: Option<&MeshNeutral>, ease: Ease) -> Result<WarpStage> {
        Self::with_runtime(avatar, out_w, out_h, params, neutral, ease, None)
    }

    /// [`WarpStage::new`], running the avatar's refiner (if it has one) with `runtime`; without a
    /// runtime the refiner is ignored and the fallbacks alone draw the eyes and mouth.
    pub fn with_runtime(
        avatar: WarpAvatar,
        out_w: u32,
        out_h: u32,
        params: RetargetParams,
        neutral: Option<&MeshNeutral>,
        ease: Ease,
        runtime: Option<&crate::ep::RuntimeOptions>,
    ) -> Result<WarpStage> {
        Self::with_fit(avatar, out_w, out_h, params, neutral, ease, runtime, crate::core::fit::Fit::Contain)
    }

    /// [`WarpStage::with_runtime`] with the portrait placed on the output as `fit` says.
    #[allow(clippy::too_many_arguments)]
    pub fn with_fit(
        avatar: WarpAvatar,
        out_w: u32,
        out_h: u32,
        params: RetargetParams,
        neutral: Option<&MeshNeutral>,
        ease: Ease,
        runtime: Option<&crate::ep::RuntimeOptions>,
        fit: crate::core::fit::Fit,
    ) -> Result<WarpStage> {
        let mut renderer = WarpRenderer::with_fit(&avatar, out_w, out_h, fit)?;
        let refiner = match (&avatar.refiner, runtime) {
            (Some(r), Some(rt)) => {
                let refiner = crate::refine::Refiner::from_blob(r, rt)
                    .map_err(|e| crate::error::Error::Invalid(format!("avatar `{}`: its refiner does not load: {e}", avatar.name)))?;
                // The refiner paints eyes and mouth itself, from the plain warp (the mouth-interior
                // prior stays under it). Tried and measured: leaving a closing eye to the warp's
                // own eye (the fallback) instead of the refiner removed the refiner's grey lids,
                // but the eyes then no longer looked closed: cross-identity eye r 0.41 against
                // 0.51 (docs/quality.md).
                renderer.set_fallbacks(false);
                Some(refiner)
            }
            _ => None,
        };
        let target = renderer.neutral().to_vec();
        let lift = Lift68::new(&target)?;
        let topo = Topology::mesh468(&target)?;
        let mut turn = if params.head_3d {
            let limits = TurnLimits { yaw_deg: params.max_yaw_deg as f64, pitch_deg: params.max_pitch_deg as f64, roll_deg: params.max_roll_deg as f64, ..TurnLimits::default() };
            turn::HeadTurn::new(with_depth(&target, renderer.neutral_depth().0), limits)
        } else {
            None
        };
        let pending = neutral.filter(|n| n.mesh.is_none()).map(|n| (n.clone(), params.clone()));
        let dn = neutral.and_then(|n| {
            let pts = n.mesh.clone()?;
            // With head turns, the neutral is handed to the retargeter turned back to the
            // portrait's orientation like every live frame; its own turn is the rest pose (exact
            // when its depth was measured, else from a template's depth).
            if let Some(t) = turn.as_mut() {
                let depth = n.depth.clone().filter(|d| d.len() == pts.len());
                let measured = depth.is_some();
                let z = depth.or_else(|| crate::core::head3d::lift_with_template(&pts, &crate::core::face_template::FACE_TEMPLATE));
                if let Some(f) = z.and_then(|z| t.frontalise(&with_depth(&pts, &z), n.iris.as_ref())) {
                    if measured {
                        t.set_rest(f.rot);
                    }
                    return Some(DriverNeutral { pts: f.mesh, iris: f.iris });
                }
            }
            Some(DriverNeutral { pts, iris: n.iris })
        });
        if let (Some(n), None) = (neutral, &dn) {
            // Validate the 68 points now (a bad profile is an error at load, not mid-stream).
            Retargeter::new(Shape68 { pts68: topo.sub(&target), iris: None }, Some(Shape68 { pts68: n.pts68, iris: None }), params.clone())?;
        }
        let retargeter = mesh_retargeter(&renderer, topo, dn, params)?;
        let rest = Driven { posed: Posed { pts: target, iris: renderer.neutral_iris(), pose: Similarity::IDENTITY }, turn: Euler::ZERO, turned: turn.is_some() };
        let easer = FaceLostEaser::new(rest, ease.hold_s, ease.out_s, ease.in_s);
        Ok(WarpStage { avatar, renderer, retargeter, easer, turn, lift, pending, refiner })
    }

    /// Completes a 68-point driver neutral into a mesh: the live frame's mesh, corrected by the
    /// lifted difference between the neutral's and the frame's 68 points.
    fn complete_neutral(&mut self, frame_mesh: &[Pt], frame68: &[[f32; 2]; 68]) {
        let Some((n, params)) = self.pending.take() else { return };
        // Align the profile's 68 points to this frame first (the profile was recorded elsewhere).
        let st = crate::core::retarget::STABLE;
        let to_frame = crate::core::geometry::fit_similarity(&st.map(|i| n.pts68[i]), &st.map(|i| frame68[i]), None).unwrap_or_default();
        let n68 = n.pts68.map(|p| to_frame.apply(p));
        let (ln, lf) = (self.lift.apply(&n68), self.lift.apply(frame68));
        let pts: Vec<Pt> = frame_mesh.iter().zip(ln.iter().zip(&lf)).map(|(m, (a, b))| [m[0] + a[0] - b[0], m[1] + a[1] - b[1]]).collect();
        let iris = n.iris.map(|ir| ir.map(|i| to_frame.apply_iris(i)));
        match mesh_retargeter(&self.renderer, self.retargeter.topology().clone(), Some(DriverNeutral { pts, iris }), params) {
            Ok(r) => self.retargeter = r,
            Err(e) => log::warn!("driver neutral from the profile is unusable with this face ({e}); learning it instead"),
        }
    }

    /// The idle frame: the portrait at rest on the canvas.
    pub fn idle(&self) -> Frame {
        self.renderer.canvas().clone()
    }

    pub fn status(&self) -> NeutralStatus {
        self.retargeter.status()
    }

    /// "Neutral now": learn the driver's neutral again from the next steady frames (a pending
    /// profile neutral is dropped too).
    pub fn relearn_neutral(&mut self) {
        self.pending = None;
        self.retargeter.relearn_now();
    }

    /// Eye contact on or off (control API); it outlives a profile neutral's completion.
    pub fn set_eye_contact(&mut self, on: bool) {
        if let Some((_, params)) = self.pending.as_mut() {
            params.eye_contact = on;
        }
        self.retargeter.set_eye_contact(on);
    }

    pub fn eye_contact(&self) -> bool {
        self.retargeter.eye_contact()
    }

    pub fn renderer(&self) -> &WarpRenderer {
        &self.renderer
    }

    pub fn renderer_mut(&mut self) -> &mut WarpRenderer {
        &mut self.renderer
    }

    /// The refiner's execution provider, when a refiner runs.
    pub fn refiner_ep(&self) -> Option<&crate::stats::EpStatus> {
        self.refiner.as_ref().map(|r| r.ep_status())
    }

    /// The driver's mesh (2-D) from its landmarks, lifting 68-point-only landmarks.
    pub fn driver_mesh(&self, lm: &FaceLandmarks) -> Vec<Pt> {
        if lm.mesh.len() == crate::core::landmarks::MESH_POINTS {
            lm.mesh.iter().map(|p| [p[0], p[1]]).collect()
        } else {
            self.lift.apply(&lm.pts68)
        }
    }

    /// Whether the head turns in 3-D (`head_3d` on and the portrait's mesh usable for it).
    pub fn turns_in_3d(&self) -> bool {
        self.turn.is_some()
    }

    /// Retargets (when a face is present) and eases; `None` for a lost face or a rejected frame.
    /// Returns what to render and whether the driver's face was used.
    pub fn drive(&mut self, lm: Option<&FaceLandmarks>, dt: f32) -> (Driven, bool) {
        let driven = lm.and_then(|l| {
            // With depth, the driver's face is turned back to the portrait's orientation first,
            // so that the retargeter transfers expression, not the turn.
            let frontal = match (&self.turn, l.mesh.len() == crate::core::landmarks::MESH_POINTS) {
                (Some(t), true) => t.frontalise(&l.mesh, l.iris.as_ref()),
                _ => None,
            };
            let (mesh, iris) = match &frontal {
                Some(f) => (f.mesh.clone(), f.iris),
                None => (self.driver_mesh(l), l.iris),
            };
            if self.pending.is_some() {
                self.complete_neutral(&mesh, &l.pts68);
            }
            let posed = self.retargeter.step_points(Some((&mesh, iris.as_ref())))?;
            if log::log_enabled!(log::Level::Trace) {
                let raw: Vec<crate::core::geometry::Pt> = l.mesh.iter().map(|p| [p[0], p[1]]).collect();
                log::trace!("mouth gap/iod: driver {:?} posed {:?} status {:?} neutral mouth {:?}", crate::core::mouth_interior::gap_iod(&raw), crate::core::mouth_interior::gap_iod(&posed.pts), self.retargeter.status(), self.retargeter.driver_neutral().and_then(|n| crate::core::retarget::openness::mouth(&n)));
                let ear = |p: &crate::core::retarget::Pts68| crate::core::retarget::openness::Eye::BOTH.map(|e| crate::core::retarget::openness::eye(p, e));
                log::trace!("eyes: driver ear {:?} neutral ear {:?} posed ears {:?}", ear(&l.pts68), self.retargeter.driver_neutral().map(|n| ear(&n)), crate::core::retarget::mesh_ears(&posed.pts));
            }
            let learned = !matches!(self.retargeter.status(), NeutralStatus::Learning { .. });
            // A driver without depth (68 points only) is drawn in depth mode too, unturned: one
            // rendering path whatever the frame, so nothing jumps when the face comes and goes.
            let turn = match (self.turn.as_mut(), &frontal) {
                (Some(t), Some(f)) => {
                    t.observe(&f.rot, learned);
                    t.relative(&f.rot)
                }
                _ => Euler::ZERO,
            };
            Some(Driven { posed, turn, turned: self.turn.is_some() })
        });
        let used = driven.is_some();
        (self.easer.update(driven.as_ref(), dt), used)
    }

    /// One frame for a driver face (or none) `dt` seconds after the previous one.
    pub fn frame(&mut self, lm: Option<&FaceLandmarks>, dt: f32) -> Result<(Frame, bool)> {
        let (d, used) = self.drive(lm, dt);
        let rot = d.turned.then(|| Rot3::from_euler(d.turn));
        log::trace!("head turn (yaw, pitch, roll) {:?} deg pose {:?}", d.turn.degrees(), d.posed.pose);
        let p = &d.posed;
        let mut f = self.renderer.render_turned(&p.pts, p.iris.as_ref(), &p.pose, rot.as_ref(), dt)?;
        log::trace!("mouth gap/iod retargeted {:?} drawn {:?}", crate::core::mouth_interior::gap_iod(&p.pts), crate::core::mouth_interior::gap_iod(self.renderer.posed().0));
        if let Some(r) = self.refiner.as_mut() {
            let (mesh, iris) = self.renderer.posed();
            r.refine(&mut f, mesh, iris.as_ref())?;
        }
        Ok((f, used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use file::tests::sample_avatar;

    fn ease() -> Ease {
        Ease { hold_s: 0.2, out_s: 0.3, in_s: 0.15 }
    }

    #[test]
    fn moves_from_the_first_frame_and_follows_the_mouth() {
        let av = sample_avatar(1);
        let (w, h) = (av.shots[0].image.width, av.shots[0].image.height);
        let mut st = WarpStage::new(av.clone(), w, h, RetargetParams { pose_smoothing: 0.0, ..Default::default() }, None, ease()).unwrap();
        assert!(matches!(st.status(), NeutralStatus::Learning { .. }));
        // The driver: the same synthetic face elsewhere in a bigger frame, 68 points only (lifted).
        let drv = |open: f32| {
            let mut mesh: Vec<[f32; 3]> = av.shots[0].mesh.iter().map(|p| [p[0] * 1.5 + 40.0, p[1] * 1.5 + 20.0, 0.0]).collect();
            for &(_, l) in crate::core::mesh::LIP_PAIRS.iter() {
                mesh[l][1] += open;
            }
            let pts68 = crate::core::landmarks::to68(&mesh).unwrap();
            FaceLandmarks { mesh: Vec::new(), pts68, iris: None, score: 1.0 }
        };
        let (f0, used) = st.frame(Some(&drv(0.0)), 0.04).unwrap();
        assert!(used);
        assert_eq!(f0.width, w);
        // Mouth opens on the second frame already (provisional neutral from the first).
        let (p, _) = st.drive(Some(&drv(9.0)), 0.04);
        let gap_out = crate::core::mesh::mouth_gap(&p.posed.pts);
        assert!(gap_out > 0.05, "{gap_out}");
        // Face lost: eases back to the portrait's rest shape.
        for _ in 0..30 {
            st.drive(None, 0.04);
        }
        let (p, used) = st.drive(None, 0.04);
        assert!(!used);
        assert_eq!(p.posed.pts, st.renderer().neutral());
    }

    #[test]
    fn a_turned_driver_turns_the_portrait_in_3d() {
        let av = sample_avatar(1);
        let (w, h) = (av.shots[0].image.width, av.shots[0].image.height);
        let mesh = av.shots[0].mesh.clone();
        let depth = av.shots[0].depth.clone().unwrap();
        // The driver: the portrait's own 3-D mesh, bigger and elsewhere, turned by `yaw` about
        // its pivot.
        let driver = |yaw: f64| {
            let m3 = with_depth(&mesh, &depth);
            let pv = crate::core::head3d::pivot(&m3).unwrap();
            let r = Rot3::from_euler(Euler { yaw: yaw.to_radians(), ..Euler::ZERO });
            let pts: Vec<[f32; 3]> = m3
                .iter()
                .map(|p| {
                    let q = crate::core::head3d::rotate_about(&r, pv, [p[0] as f64, p[1] as f64, p[2] as f64]);
                    [(q[0] * 1.5 + 30.0) as f32, (q[1] * 1.5 + 10.0) as f32, (q[2] * 1.5) as f32]
                })
                .collect();
            let pts68 = crate::core::landmarks::to68(&pts).unwrap();
            FaceLandmarks { mesh: pts, pts68, iris: None, score: 1.0 }
        };
        let rest = driver(0.0);
        let neutral = MeshNeutral {
            pts68: rest.pts68,
            mesh: Some(rest.mesh.iter().map(|p| [p[0], p[1]]).collect()),
            depth: Some(rest.mesh.iter().map(|p| p[2]).collect()),
            iris: None,
        };
        let params = RetargetParams { pose_smoothing: 0.0, ..Default::default() };
        let mut st = WarpStage::new(av.clone(), w, h, params.clone(), Some(&neutral), ease()).unwrap();
        assert!(st.turns_in_3d());
        // (Past the face-found easing first.)
        let mut at_rest = Vec::new();
        for _ in 0..6 {
            let (d, used) = st.drive(Some(&rest), 0.04);
            assert!(used && d.turned && d.turn.yaw.abs() < 1e-3, "{:?}", d.turn.degrees());
            at_rest = d.posed.pts;
        }
        let (d, _) = st.drive(Some(&driver(20.0)), 0.04);
        assert!((d.turn.yaw.to_degrees() - 20.0).abs() < 0.5, "{:?}", d.turn.degrees());
        // Retargeted from the front: the turn is not passed on as an expression (the retargeted
        // mesh is the one of the unturned driver).
        let worst = d.posed.pts.iter().zip(&at_rest).map(|(a, b)| (a[0] - b[0]).abs().max((a[1] - b[1]).abs())).fold(0.0f32, f32::max);
        assert!(worst < 0.05, "frontal mesh moved {worst} px");
        // And the drawn mesh is the portrait turned: its points at different depths moved apart.
        st.frame(Some(&driver(20.0)), 0.04).unwrap();
        let (posed, _) = st.renderer().posed();
        let moved: Vec<f32> = posed.iter().zip(st.renderer().neutral()).map(|(a, b)| a[0] - b[0]).collect();
        let spread = moved.iter().cloned().fold(f32::MIN, f32::max) - moved.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 3.0, "turn spread {spread} px");
        // With head_3d off, the same driver is drawn by the 2-D warp.
        let mut flat = WarpStage::new(av, w, h, RetargetParams { head_3d: false, ..params }, Some(&neutral), ease()).unwrap();
        assert!(!flat.turns_in_3d());
        for _ in 0..6 {
            let (d, _) = flat.drive(Some(&driver(20.0)), 0.04);
            assert!(!d.turned && d.turn == Euler::ZERO);
        }
    }
}
