//! `Retargeter`: runs the steps of retargeting on each driver frame (pose fit, expression
//! transfer, lips, eyes, pose re-applied) against the driver neutral in use, and holds the state
//! between frames (the neutral being learned, the smoothed pose, the rejected-frame count).
use super::expression::{self, measure, Measures, REGIONS};
use super::eye_contact::{camera_gaze, gaze_sample, Contact, EyeContact};
use super::eyes::{self, eye_model, EyeModel};
use super::mouth::uncross_lips;
use super::neutral::NeutralStatus;
use super::openness::Eye;
use super::params::RetargetParams;
use super::pose::{self, Pose};
use super::topology::Topology;
use super::{stable_pts, Pts68, Shape68, CROP_SIDE};
use crate::core::geometry::{centroid, fit_similarity, rms_size, Pt, Similarity};
use crate::core::types::Iris;
use crate::error::{Error, Result};

/// The driver's neutral face and everything derived from it.
#[derive(Clone, Debug)]
pub(super) struct DriverModel {
    /// The 68-point subset.
    pub(super) pts: Pts68,
    /// All points of the topology.
    pub(super) all: Vec<Pt>,
    pub(super) iris: Option<[Iris; 2]>,
    pub(super) measures: Measures,
    pub(super) eyes: [EyeModel; 2],
    pub(super) centre: [f64; 2],
    pub(super) size: f64,
    /// Per region: the canonical anisotropic ratio (target / driver) of region sizes.
    pub(super) ratios: [(f64, f64); REGIONS],
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

/// Transfers driver expressions and head pose onto the portrait's face.
#[derive(Clone, Debug)]
pub struct Retargeter {
    pub(super) params: RetargetParams,
    pub(super) topo: Topology,
    /// Side of the reference crop in target units (translation limit is a fraction of it).
    pub(super) ref_side: f64,
    pub(super) target: Shape68,
    pub(super) target_all: Vec<Pt>,
    pub(super) tm: Measures,
    pub(super) t_eyes: [EyeModel; 2],
    pub(super) t_centre: [f64; 2],
    pub(super) t_size: f64,
    /// The driver neutral in use and the model derived from it.
    pub(super) driver: Option<DriverModel>,
    /// Where the neutral in use is heading (a newer estimate); `None` once reached.
    pub(super) goal: Option<DriverNeutral>,
    pub(super) status: NeutralStatus,
    pub(super) learn_pts: Vec<Vec<Pt>>,
    pub(super) learn_iris: Vec<Option<[Iris; 2]>>,
    /// The recent driver frames (points, irises, mouth openness), while learning and once
    /// learned: the provisional neutral's window and where the driver's mouth rests.
    pub(super) recent: std::collections::VecDeque<(Vec<Pt>, Option<[Iris; 2]>, Option<f32>)>,
    pub(super) since_estimate: usize,
    pub(super) pose: Option<Pose>,
    pub(super) rejected: u64,
    /// Eye contact's switch and the driver's screen gaze.
    pub(super) eye_contact: EyeContact,
    /// Where the portrait's irises look into the camera, per eye in eye coordinates (`None`:
    /// degenerate eyes, eye contact then does nothing).
    pub(super) t_camera: Option<[[f64; 2]; 2]>,
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
        let eye_contact = params.eye_contact;
        let t_camera = camera_gaze(&t68.pts68, Eye::Right).zip(camera_gaze(&t68.pts68, Eye::Left)).map(|(r, l)| [r, l]);
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
            eye_contact: EyeContact::new(eye_contact),
            t_camera,
        };
        if let Some(d) = driver_neutral {
            r.driver = Some(r.driver_model(&d)?);
            r.status = NeutralStatus::Profile;
        }
        Ok(r)
    }

    pub(super) fn driver_model(&self, d: &DriverNeutral) -> Result<DriverModel> {
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
        let ratios = expression::ratios(&self.tm, &m, self.params.mouth_gain as f64);
        Ok(DriverModel { pts: s.pts68, all: d.pts.clone(), iris: d.iris, measures: m, eyes, centre: centroid(ds), size, ratios })
    }

    pub fn status(&self) -> NeutralStatus {
        self.status
    }

    /// The topology this retargeter works on.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Switches eye contact (control API); the irises glide to their new place over a few frames.
    pub fn set_eye_contact(&mut self, on: bool) {
        self.eye_contact.set(on);
    }

    /// Whether eye contact is switched on.
    pub fn eye_contact(&self) -> bool {
        self.eye_contact.is_on()
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

        // Expression in the driver's neutral frame, moved to the target region by region.
        let gain = self.params.expression_gain as f64;
        let mut out = expression::transfer(&self.topo, pts, &t, d, &self.tm, &self.target_all, gain);
        uncross_lips(&mut out, &self.topo.lip_pairs, self.topo.mouth_axis);

        // Eyes: lids from the target's own lid shape scaled by the driver's opening ratio, iris
        // offset from the driver's neutral iris position in eye coordinates.
        // Eye contact: every open-eye frame is a gaze sample (also while off, so that switching
        // it on has its screen reference at once); the reference is only read while it weighs.
        self.eye_contact.observe(gaze_sample(&p68, iris, &d.eyes));
        let w = self.eye_contact.step();
        let contact = match (w > 0.0, self.t_camera) {
            (true, Some(camera)) => self.eye_contact.screen().map(|screen| Contact { weight: w, screen, camera }),
            _ => None,
        };
        let mut out_iris = self.target.iris;
        eyes::transfer(&self.topo, &mut out, &mut out_iris, &p68, iris, &d.eyes, &self.t_eyes, gain, contact.as_ref());

        // Head pose relative to the neutral, about the stable-point centre, normalised by size;
        // limited, smoothed and re-applied about the portrait's stable-point centre.
        let raw = Pose::relative(&pose_inv, d.centre, d.size);
        let lim = raw.limit(&self.params, self.ref_side, self.t_size);
        let pose = lim.smoothed(self.pose, self.params.pose_smoothing as f64);
        self.pose = Some(pose);
        let q = pose.similarity(self.t_centre, self.t_size);
        pose::apply(&q, &mut out, &mut out_iris);
        let finite = out.iter().all(|p| p[0].is_finite() && p[1].is_finite())
            && out_iris.map_or(true, |ir| ir.iter().all(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite()));
        if !finite {
            return Err(Error::Invalid("retargeting produced non-finite landmarks".into()));
        }
        Ok(Posed { pts: out, iris: out_iris, pose: q })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::retarget::tests::{max_diff, no_smoothing, retargeter, transform, Face};

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

}
