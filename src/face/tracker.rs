//! `FaceTracker`: MediaPipe's face-mesh pipeline for one face. Detect only when not tracking;
//! otherwise crop around the previous frame's landmarks. A presence score below the threshold
//! drops the track (that frame reports no face, the next one detects again), and resets the
//! One Euro filters so a re-found face does not glide in from its old position. The iris model
//! runs on the eyes `iris_schedule` picks; each call leaves a `FaceProfile` of where its time went.
use super::detector::Detector;
use super::iris::{eye_roi_in, IrisModel, IrisTiming};
use super::iris_schedule::IrisPlanner;
use super::profile::FaceProfile;
use super::landmarker::{roi_from_mesh, Landmarker};
use super::roi::{frame_mat, RotRect};
use super::{FaceModels, TrackerConfig};
use crate::core::geometry::dist;
use crate::core::landmarks::to68;
use crate::core::one_euro::OneEuroBank;
use crate::core::types::{FaceLandmarks, Frame};
use crate::error::Result;
use std::time::Instant;

pub struct FaceTracker {
    cfg: TrackerConfig,
    detector: Detector,
    landmarker: Landmarker,
    iris: Option<IrisModel>,
    /// ROI for the next frame when tracking.
    track: Option<RotRect>,
    mesh_filter: Option<OneEuroBank>,
    iris_filter: Option<OneEuroBank>,
    /// Whether the last `process` call ran the detector (for stats and tests).
    last_detected: bool,
    iris_plan: IrisPlanner,
    profile: FaceProfile,
}

impl FaceTracker {
    /// Loads the models (CPU, one thread each). The iris model is optional: without it (file
    /// absent or `cfg.iris` false) landmarks come without irises.
    pub fn new(models: &FaceModels, cfg: TrackerConfig) -> Result<Self> {
        cfg.validate()?;
        let detector = Detector::load(&models.detector)?;
        // The detector runs only when the track is lost: one thread is enough.
        let landmarker = Landmarker::load_threads(&models.landmarks, cfg.threads)?;
        let iris = match (&models.iris, cfg.iris) {
            (Some(p), true) => Some(IrisModel::load_threads(p, cfg.threads)?),
            _ => None,
        };
        let mesh_filter = cfg.filter.map(OneEuroBank::new);
        let iris_filter = cfg.filter.map(OneEuroBank::new);
        let iris_plan = IrisPlanner::new(cfg.iris_schedule);
        Ok(FaceTracker {
            cfg,
            detector,
            landmarker,
            iris,
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
        let parts = p.detector.unwrap_or_default() + p.landmark_crop + p.landmark_model + p.iris_crop + p.iris_model;
        p.other = t0.elapsed().saturating_sub(parts);
        r
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
        let iris = match &mut self.iris {
            Some(m) => {
                let run = self.iris_plan.plan(&res.mesh);
                let mut t = IrisTiming::default();
                let mut both = [None, None];
                for (k, slot) in both.iter_mut().enumerate() {
                    *slot = match run[k].then(|| IrisModel::eye_input(&img, &res.mesh, k, &mut t)).transpose()?.flatten() {
                        Some((roi, input)) if self.iris_plan.needs_model(k, &input) => {
                            self.profile.iris_runs += 1;
                            let eye = m.run_input(&roi, &input, k, &mut t)?;
                            self.iris_plan.remember(k, &eye);
                            Some(eye.iris)
                        }
                        Some((roi, _)) => self.iris_plan.carried(k, &roi),
                        None if run[k] => None,
                        None => eye_roi_in(&res.mesh, k).and_then(|roi| self.iris_plan.carried(k, &roi)),
                    };
                }
                (self.profile.iris_crop, self.profile.iris_model) = (t.crop, t.model);
                match both {
                    [Some(a), Some(b)] => Some([a, b]),
                    _ => None,
                }
            }
            None => None,
        };
        let t = frame.pts.as_secs_f64();
        let mut mesh = res.mesh;
        // Speeds in inter-ocular distances per second (outer eye corners 33 and 263): the same
        // smoothing for a small face far away and a large one close up.
        let iod = dist([mesh[33][0], mesh[33][1]], [mesh[263][0], mesh[263][1]]) as f32;
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
