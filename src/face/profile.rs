//! Where the face stage's time goes, per frame: detector, landmark crop and model, iris crops and
//! model, and the rest (filters, 68-point mapping). The tracker fills one per `process` call; the
//! pipeline adds it to `stats::FaceParts`, and `puppetcam bench` prints the medians, so a change
//! to the face stage is measured part by part, not only as one number (issue 19).
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaceProfile {
    /// Letterbox resize plus detector model; `None` on frames where the track was kept.
    pub detector: Option<Duration>,
    /// Rotated crop, resize and normalisation into the landmark model's 192x192 tensor.
    pub landmark_crop: Duration,
    pub landmark_model: Duration,
    /// Eye crops into the iris model's 64x64 tensors, and the iris model, over the eyes it ran on.
    pub iris_crop: Duration,
    pub iris_model: Duration,
    /// How many eyes the iris model ran on (0..=2), the model whose iris is used.
    pub iris_runs: u8,
    /// Runs of the other iris model that check the distilled one (`iris_audit`), and their time
    /// (not in `iris_model`).
    pub iris_checks: u8,
    pub iris_check_model: Duration,
    /// Everything else in `process`: wrapping the frame, checks, One Euro filters, 468 -> 68.
    pub other: Duration,
}
