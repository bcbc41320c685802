//! Landmarks of a still image (a portrait or a shot for an avatar, a neutral-face photo): detect
//! every face, keep the largest, refine the mesh with a second pass on its own ROI (as the
//! tracker does from frame to frame), then the irises. No temporal filter: there is one frame.
use super::detector::Detector;
use super::iris::IrisModel;
use super::landmarker::{roi_from_mesh, Landmarker};
use super::roi::frame_mat;
use super::FaceModels;
use crate::core::landmarks::to68;
use crate::core::types::{FaceLandmarks, Frame};
use crate::error::Result;

/// Detection score for stills: paintings score lower than photos, and there is no tracking to
/// fall back on, so be a little more permissive than the live default.
pub const STILL_MIN_SCORE: f32 = 0.4;

/// The result for one image.
#[derive(Clone, Debug)]
pub struct StillFace {
    pub landmarks: FaceLandmarks,
    /// How many faces the detector found (the largest was used).
    pub faces_found: usize,
}

/// Models for still images, loaded once and reused for several images.
pub struct StillLandmarker {
    detector: Detector,
    landmarker: Landmarker,
    iris: Option<IrisModel>,
}

impl StillLandmarker {
    pub fn new(models: &FaceModels) -> Result<Self> {
        super::ort_env::ensure_ort_loaded()?;
        Ok(StillLandmarker {
            detector: Detector::load(&models.detector)?,
            landmarker: Landmarker::load(&models.landmarks)?,
            iris: match &models.iris {
                Some(p) => Some(IrisModel::load(p)?),
                None => None,
            },
        })
    }

    /// The largest face of `frame`, or `None` when there is none.
    pub fn landmarks(&mut self, frame: &Frame) -> Result<Option<StillFace>> {
        let dets = self.detector.detect(frame, STILL_MIN_SCORE)?;
        let area = |b: &[f32; 4]| (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
        let Some(best) = dets.iter().max_by(|a, b| area(&a.bbox).total_cmp(&area(&b.bbox))) else { return Ok(None) };
        let roi = best.roi();
        if !roi.is_valid() {
            return Ok(None);
        }
        let img = frame_mat(frame)?;
        let mut res = self.landmarker.run(&img, &roi)?;
        // Second pass from the mesh's own ROI, as the tracker would on the next frame.
        if let Some(r2) = roi_from_mesh(&res.mesh, 1.5) {
            let again = self.landmarker.run(&img, &r2)?;
            if again.score.is_finite() && again.score >= res.score.min(0.5) {
                res = again;
            }
        }
        if !(res.score.is_finite() && res.score >= 0.5) || res.mesh.iter().any(|p| !p.iter().all(|v| v.is_finite())) {
            return Ok(None);
        }
        let iris = match &mut self.iris {
            Some(m) => m.run(&img, &res.mesh)?,
            None => None,
        };
        let pts68 = to68(&res.mesh)?;
        Ok(Some(StillFace { landmarks: FaceLandmarks { mesh: res.mesh, pts68, iris, score: res.score }, faces_found: dets.len() }))
    }
}
