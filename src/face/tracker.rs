//! `FaceTracker`: MediaPipe's face-mesh pipeline for one face. Detect only when not tracking;
//! otherwise crop around the previous frame's landmarks. A presence score below the threshold
//! drops the track (that frame reports no face, the next one detects again), and resets the
//! One Euro filters so a re-found face does not glide in from its old position. The iris model
//! (MediaPipe's, or the distilled one on both eyes every frame) runs on the eyes `iris_schedule`
//! picks; each call leaves a `FaceProfile` of where its time went.
use super::detector::Detector;
use super::iris::{eye_openness, eye_roi_in, write_lids, EyeIris, IrisKind, IrisModel, IrisTiming, Lids};
use super::iris_audit::IrisAudit;
use super::iris_schedule::{IrisPlanner, CLOSED_BELOW};
use super::profile::FaceProfile;
use super::landmarker::{roi_from_mesh, Landmarker};
use super::roi::{frame_mat, RotRect};
use super::{FaceModels, TrackerConfig, IRIS_FAST_FILE};
use crate::core::geometry::dist;
use crate::core::landmarks::to68;
use crate::core::one_euro::OneEuroBank;
use crate::core::types::{FaceLandmarks, Frame, Iris};
use opencv::core::ToInputArray;
use crate::error::Result;
use std::time::Instant;

/// Both irises (when both eyes have one) and each eye's lid contour (where the model answers it).
type EyeReadings = (Option<[Iris; 2]>, [Option<Lids>; 2]);

pub struct FaceTracker {
    cfg: TrackerConfig,
    detector: Detector,
    landmarker: Landmarker,
    /// The iris model whose answer is used: the distilled one when `student` is set.
    iris: Option<IrisModel>,
    /// With the distilled model: MediaPipe's model that checks it and stands in for it.
    student: Option<Student>,
    /// ROI for the next frame when tracking.
    track: Option<RotRect>,
    mesh_filter: Option<OneEuroBank>,
    iris_filter: Option<OneEuroBank>,
    /// Whether the last `process` call ran the detector (for stats and tests).
    last_detected: bool,
    iris_plan: IrisPlanner,
    profile: FaceProfile,
}

/// The distilled iris model and, when its file is there, MediaPipe's model that checks it, with
/// the record of how far the two agree on this face.
struct Student {
    checker: Option<(IrisModel, IrisAudit)>,
}

impl Student {
    /// Whether the distilled model answers this frame (no checker: always).
    fn trusted(&self) -> bool {
        self.checker.as_ref().map_or(true, |(_, a)| a.trusted())
    }
}

/// Runs `other` on the crop (`roi`, `input`) that `answer` came from, counts it as a check in
/// `profile`, and returns how far apart the two irises are, over the inter-ocular distance `iod`.
fn disagreement(other: &mut IrisModel, roi: &RotRect, input: &[f32], k: usize, answer: &EyeIris, iod: f32, profile: &mut FaceProfile) -> Result<f32> {
    let mut t = IrisTiming::default();
    let o = other.run_input(roi, input, k, &mut t)?;
    profile.iris_checks += 1;
    profile.iris_check_model += t.model;
    Ok(dist([answer.iris.cx, answer.iris.cy], [o.iris.cx, o.iris.cy]) as f32 / iod)
}

impl FaceTracker {
    /// Loads the models (CPU, one thread each). The iris model is optional: without it (file
    /// absent or `cfg.iris` false) landmarks come without irises.
    pub fn new(models: &FaceModels, cfg: TrackerConfig) -> Result<Self> {
        cfg.validate()?;
        let detector = Detector::load(&models.detector)?;
        // The detector runs only when the track is lost: one thread is enough.
        let landmarker = Landmarker::load_threads(&models.landmarks, cfg.threads)?;
        // The distilled model costs a twentieth of MediaPipe's, so it runs on both eyes every
        // frame (no iris carried, no gaze lag), checked now and then by MediaPipe's, which takes
        // over on a face where they disagree (`iris_audit`). Without the distilled file,
        // MediaPipe's model alone, on the configured schedule.
        let load_mp = |p: &std::path::Path| IrisModel::load_threads(p, cfg.threads);
        let (iris, student) = match (cfg.iris, cfg.iris_kind, &models.iris_fast, &models.iris) {
            (false, ..) => (None, None),
            (true, IrisKind::Distilled, Some(fast), mp) => {
                let checker = mp.as_deref().map(load_mp).transpose()?.map(|t| (t, IrisAudit::new()));
                (Some(IrisModel::load_kind(fast, IrisKind::Distilled, cfg.threads)?), Some(Student { checker }))
            }
            (true, kind, _, Some(p)) => {
                if kind == IrisKind::Distilled {
                    log::warn!("{IRIS_FAST_FILE} not found next to {}: MediaPipe's iris model runs instead ({:?} schedule, slower)", p.display(), cfg.iris_schedule);
                }
                (Some(load_mp(p)?), None)
            }
            (true, ..) => (None, None),
        };
        let mesh_filter = cfg.filter.map(OneEuroBank::new);
        let iris_filter = cfg.filter.map(OneEuroBank::new);
        // MediaPipe's model runs on the configured schedule, alone or while it stands in for the
        // distilled one.
        let iris_plan = IrisPlanner::new(cfg.iris_schedule);
        Ok(FaceTracker {
            cfg,
            detector,
            landmarker,
            iris,
            student,
            track: None,
            mesh_filter,
            iris_filter,
            last_detected: false,
            iris_plan,
            profile: FaceProfile::default(),
        })
    }

    /// Forgets the current face (e.g. after a seek or a source change).
    pub fn reset(&mut self) {
        self.track = None;
        self.iris_plan.reset();
        if let Some((_, a)) = self.student.as_mut().and_then(|s| s.checker.as_mut()) {
            a.reset();
        }
        if let Some(f) = &mut self.mesh_filter {
            f.reset();
        }
        if let Some(f) = &mut self.iris_filter {
            f.reset();
        }
    }

    pub fn is_tracking(&self) -> bool {
        self.track.is_some()
    }

    /// Whether the last `process` call ran the face detector.
    pub fn last_detected(&self) -> bool {
        self.last_detected
    }

    pub fn has_iris(&self) -> bool {
        self.iris.is_some()
    }

    /// Whether the lids come from the iris model (`iris_lids` on, and the model answering the
    /// irises answers lids too).
    pub fn has_iris_lids(&self) -> bool {
        self.cfg.iris_lids && self.iris.as_ref().is_some_and(|m| m.has_lids())
    }

    /// With the distilled iris model: whether it answers now (`Some(false)`: MediaPipe's model
    /// stands in, the two disagreed on this face). `None` without the distilled model.
    pub fn distilled_iris_trusted(&self) -> Option<bool> {
        self.student.as_ref().map(Student::trusted)
    }

    /// Where the last `process` call spent its time.
    pub fn profile(&self) -> FaceProfile {
        self.profile
    }

    /// Landmarks of the face in `frame`, or `None` when there is none (or it was just lost).
    pub fn process(&mut self, frame: &Frame) -> Result<Option<FaceLandmarks>> {
        let t0 = Instant::now();
        self.profile = FaceProfile::default();
        let r = self.process_inner(frame);
        // `other` is what no part claimed: the total minus the timed parts.
        let p = &mut self.profile;
        let parts = p.detector.unwrap_or_default() + p.landmark_crop + p.landmark_model + p.iris_crop + p.iris_model + p.iris_check_model;
        p.other = t0.elapsed().saturating_sub(parts);
        r
    }

    /// Both irises of the face with raw mesh `mesh` (inter-ocular distance `iod`), from whichever
    /// model answers this frame, and each eye's lid contour where that model answers it.
    fn irises(&mut self, img: &impl ToInputArray, mesh: &[[f32; 3]], iod: f32) -> Result<EyeReadings> {
        let Some(m) = self.iris.as_mut() else { return Ok((None, [None, None])) };
        let mut t = IrisTiming::default();
        let mut both = [None, None];
        let mut lids = [None, None];
        let open = [0, 1].map(|k| eye_openness(mesh, k).map_or(true, |o| o >= CLOSED_BELOW));
        match self.student.as_mut() {
            Some(st) if st.trusted() => {
                // The distilled model on both eyes; MediaPipe's on the same input when a check is due.
                let check = st.checker.as_mut().and_then(|(_, a)| a.due(open));
                for (k, slot) in both.iter_mut().enumerate() {
                    let Some((roi, input)) = IrisModel::eye_input(img, mesh, k, &mut t)? else { continue };
                    let eye = m.run_input(&roi, &input, k, &mut t)?;
                    self.profile.iris_runs += 1;
                    if let Some((teacher, audit)) = st.checker.as_mut().filter(|_| check == Some(k)) {
                        let err = disagreement(teacher, &roi, &input, k, &eye, iod, &mut self.profile)?;
                        if audit.record(err) == Some(false) {
                            log::info!(
                                "the distilled iris model disagrees with MediaPipe's on this face ({:.1} % of the inter-ocular distance): MediaPipe's iris model answers until they agree",
                                100.0 * err
                            );
                            // Its schedule starts afresh: both eyes on the next frame.
                            self.iris_plan.reset();
                        }
                    }
                    *slot = Some(eye.iris);
                    lids[k] = eye.lids;
                }
            }
            student => {
                // MediaPipe's model on its schedule (alone, or standing in for the distilled one,
                // which then runs beside it on the same inputs so that it can be trusted again).
                let (model, mut beside) = match student.and_then(|st| st.checker.as_mut()) {
                    Some((teacher, audit)) => (teacher, Some((&mut *m, audit))),
                    None => (&mut *m, None),
                };
                let run = self.iris_plan.plan(mesh);
                for (k, slot) in both.iter_mut().enumerate() {
                    *slot = match run[k].then(|| IrisModel::eye_input(img, mesh, k, &mut t)).transpose()?.flatten() {
                        Some((roi, input)) if self.iris_plan.needs_model(k, &input) => {
                            self.profile.iris_runs += 1;
                            let eye = model.run_input(&roi, &input, k, &mut t)?;
                            self.iris_plan.remember(k, &eye);
                            if let Some((student, audit)) = beside.as_mut().filter(|_| open[k]) {
                                let err = disagreement(student, &roi, &input, k, &eye, iod, &mut self.profile)?;
                                if audit.record(err) == Some(true) {
                                    log::info!("the distilled iris model agrees with MediaPipe's on this face again: it answers");
                                }
                            }
                            lids[k] = eye.lids;
                            Some(eye.iris)
                        }
                        Some((roi, _)) => {
                            lids[k] = self.iris_plan.carried_lids(k, &roi);
                            self.iris_plan.carried(k, &roi)
                        }
                        None if run[k] => None,
                        None => eye_roi_in(mesh, k).and_then(|roi| {
                            lids[k] = self.iris_plan.carried_lids(k, &roi);
                            self.iris_plan.carried(k, &roi)
                        }),
                    };
                }
            }
        }
        (self.profile.iris_crop, self.profile.iris_model) = (t.crop, t.model);
        let both = match both {
            [Some(a), Some(b)] => Some([a, b]),
            _ => None,
        };
        Ok((both, lids))
    }

    fn process_inner(&mut self, frame: &Frame) -> Result<Option<FaceLandmarks>> {
        let img = frame_mat(frame)?;
        self.last_detected = false;
        let roi = match self.track.filter(|_| self.cfg.track) {
            Some(r) => r,
            None => {
                self.last_detected = true;
                let td = Instant::now();
                let dets = self.detector.detect(frame, self.cfg.min_detection_score)?;
                self.profile.detector = Some(td.elapsed());
                match dets.first() {
                    Some(d) => {
                        let r = d.roi();
                        if !r.is_valid() {
                            self.reset();
                            return Ok(None);
                        }
                        r
                    }
                    None => {
                        self.reset();
                        return Ok(None);
                    }
                }
            }
        };
        let res = self.landmarker.run(&img, &roi)?;
        (self.profile.landmark_crop, self.profile.landmark_model) = (res.crop_time, res.model_time);
        // NaN scores count as lost.
        let present = res.score.is_finite() && res.score >= self.cfg.min_presence_score;
        if !present || res.mesh.iter().any(|p| !p.iter().all(|v| v.is_finite())) {
            self.reset();
            return Ok(None);
        }
        // The next ROI comes from the raw (unfiltered) mesh, as in MediaPipe: filtering is for
        // display, the crop must follow the face without lag.
        self.track = roi_from_mesh(&res.mesh, self.cfg.roi_scale);
        // Outer eye corners 33 and 263 of the raw mesh: the unit of the iris checks' disagreement
        // and of the filters' speeds.
        let iod = dist([res.mesh[33][0], res.mesh[33][1]], [res.mesh[263][0], res.mesh[263][1]]) as f32;
        let (iris, lids) = self.irises(&img, &res.mesh, iod)?;
        let t = frame.pts.as_secs_f64();
        let mut mesh = res.mesh;
        // The iris model's lids replace the mesh's (see `write_lids`): blinks are read from them.
        if self.cfg.iris_lids {
            for (k, l) in lids.iter().enumerate() {
                if let Some(l) = l {
                    write_lids(&mut mesh, k, l);
                }
            }
        }
        // Speeds in inter-ocular distances per second: the same smoothing for a small face far
        // away and a large one close up.
        let speed_scale = if iod > 1.0 { 1.0 / iod } else { 1.0 };
        if let Some(f) = &mut self.mesh_filter {
            let flat: &mut [f32] = mesh.as_flattened_mut();
            f.filter_scaled(flat, t, speed_scale);
        }
        let iris = iris.map(|mut ir| {
            if let Some(f) = &mut self.iris_filter {
                let mut v = [ir[0].cx, ir[0].cy, ir[0].r, ir[1].cx, ir[1].cy, ir[1].r];
                f.filter_scaled(&mut v, t, speed_scale);
                ir[0].cx = v[0];
                ir[0].cy = v[1];
                ir[0].r = v[2];
                ir[1].cx = v[3];
                ir[1].cy = v[4];
                ir[1].r = v[5];
            }
            ir
        });
        if iris.is_none() {
            if let Some(f) = &mut self.iris_filter {
                f.reset();
            }
        }
        let pts68 = to68(&mesh)?;
        Ok(Some(FaceLandmarks { mesh, pts68, iris, score: res.score }))
    }
}
