//! Face landmarks through ONNX Runtime: MediaPipe face detector, 468-point mesh, irises, tracking.
//! Models are MediaPipe's own, converted by scripts/convert_mediapipe.py (see onnx/README.md).
pub mod detector;
pub mod extract;
pub mod iris;
pub mod iris_audit;
pub mod iris_schedule;
pub mod landmarker;
mod model;
pub mod ort_env;
pub mod profile;
pub mod roi;
pub mod still;
pub mod tracker;

pub use profile::FaceProfile;
pub use tracker::FaceTracker;

use crate::core::one_euro::OneEuroParams;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub const DETECTOR_FILE: &str = "face_detector.onnx";
pub const LANDMARKS_FILE: &str = "face_landmarks.onnx";
pub const IRIS_FILE: &str = "iris_landmarks.onnx";
/// The distilled iris model (scripts/train_iris.py): the live face stage's default.
pub const IRIS_FAST_FILE: &str = "iris_fast.onnx";

/// Paths of the face models.
#[derive(Clone, Debug, PartialEq)]
pub struct FaceModels {
    pub detector: PathBuf,
    pub landmarks: PathBuf,
    /// `None` runs without irises.
    pub iris: Option<PathBuf>,
    /// The distilled iris model, when present (`TrackerConfig::iris_kind`).
    pub iris_fast: Option<PathBuf>,
}

impl FaceModels {
    /// The models under `dir` by their standard names; the iris model is used only if present.
    pub fn from_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        let (iris, fast) = (dir.join(IRIS_FILE), dir.join(IRIS_FAST_FILE));
        FaceModels {
            detector: dir.join(DETECTOR_FILE),
            landmarks: dir.join(LANDMARKS_FILE),
            iris: iris.is_file().then_some(iris),
            iris_fast: fast.is_file().then_some(fast),
        }
    }

    /// Directories searched by [`FaceModels::locate`], in order: `$PUPPETCAM_MODEL_DIR`, then
    /// `onnx/` of the source tree or installed prefix the binary runs from (`crate::paths`).
    pub fn search_dirs() -> Vec<PathBuf> {
        crate::paths::Env::current().face_model_dirs()
    }

    /// The first search directory holding both the detector and the landmark model.
    pub fn locate() -> Result<Self> {
        let dirs = Self::search_dirs();
        for d in &dirs {
            if d.join(DETECTOR_FILE).is_file() && d.join(LANDMARKS_FILE).is_file() {
                return Ok(Self::from_dir(d));
            }
        }
        let tried: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        Err(Error::Model {
            path: PathBuf::from(DETECTOR_FILE),
            msg: format!(
                "face models not found (looked for {DETECTOR_FILE} and {LANDMARKS_FILE} in: {}); set PUPPETCAM_MODEL_DIR",
                tried.join(", ")
            ),
        })
    }
}

/// Face tracker settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackerConfig {
    /// Minimum detector score for a face to be picked up (MediaPipe: min_detection_confidence).
    pub min_detection_score: f32,
    /// Minimum landmark-model presence score to keep tracking (MediaPipe: min_tracking_confidence).
    pub min_presence_score: f32,
    /// ROI side relative to the landmarks' bounding box when tracking (MediaPipe: 1.5).
    pub roi_scale: f32,
    /// Run the iris model when it is available.
    pub iris: bool,
    /// Which iris model: MediaPipe's (the default here: landmark extraction and parity) or the
    /// distilled one (live; both eyes every frame, as cheap as carrying one). Without its file
    /// the tracker falls back to MediaPipe's model on `iris_schedule`.
    pub iris_kind: iris::IrisKind,
    /// On which eyes and frames (`iris_schedule`): both eyes every frame (MediaPipe's pipeline,
    /// the default here: landmark extraction and parity) or one open eye per frame (live).
    pub iris_schedule: iris_schedule::IrisSchedule,
    /// Crop the next frame from this frame's landmarks; false detects on every frame
    /// (independent frames, e.g. unrelated images).
    pub track: bool,
    /// ORT intra-op threads of the landmark and iris models (`[face] threads`).
    pub threads: usize,
    /// One Euro smoothing of the landmarks; `None` returns the raw per-frame model output.
    pub filter: Option<OneEuroParams>,
    /// The iris model's lid contour replaces the mesh's lids where the model answers it
    /// (`[face] iris_lids`): blinks are read from it.
    pub iris_lids: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            min_detection_score: 0.5,
            min_presence_score: 0.5,
            roi_scale: 1.5,
            iris: true,
            iris_kind: iris::IrisKind::MediaPipe,
            iris_schedule: iris_schedule::IrisSchedule::EveryFrame,
            track: true,
            threads: 1,
            filter: Some(OneEuroParams::default()),
            iris_lids: true,
        }
    }
}

impl TrackerConfig {
    pub fn validate(&self) -> Result<()> {
        let unit = |key: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::Config { key: key.into(), msg: format!("must be within 0..=1, got {v}") })
            }
        };
        unit("face.min_detection_score", self.min_detection_score)?;
        unit("face.min_presence_score", self.min_presence_score)?;
        if !(1..=8).contains(&self.threads) {
            return Err(Error::Config { key: "face.threads".into(), msg: format!("must be within 1..=8, got {}", self.threads) });
        }
        if !(self.roi_scale.is_finite() && (1.0..=4.0).contains(&self.roi_scale)) {
            return Err(Error::Config { key: "face.roi_scale".into(), msg: format!("must be within 1..=4, got {}", self.roi_scale) });
        }
        if let Some(f) = &self.filter {
            f.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_dir_uses_standard_names_and_optional_iris() {
        let d = tempfile::tempdir().unwrap();
        let m = FaceModels::from_dir(d.path());
        assert_eq!(m.detector, d.path().join(DETECTOR_FILE));
        assert_eq!(m.iris, None);
        std::fs::write(d.path().join(IRIS_FILE), b"x").unwrap();
        assert_eq!(FaceModels::from_dir(d.path()).iris, Some(d.path().join(IRIS_FILE)));
    }

    #[test]
    fn crate_models_are_found() {
        // The committed onnx/ directory is always among the search paths.
        let m = FaceModels::locate().unwrap();
        assert!(m.detector.is_file() && m.landmarks.is_file());
    }

    #[test]
    fn config_validation() {
        assert!(TrackerConfig::default().validate().is_ok());
        assert!(TrackerConfig { min_presence_score: 1.5, ..Default::default() }.validate().is_err());
        assert!(TrackerConfig { roi_scale: 0.1, ..Default::default() }.validate().is_err());
    }
}
