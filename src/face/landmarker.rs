//! MediaPipe face-mesh model: a 192x192 crop of the rotated face ROI (values in [0, 1]) gives 468
//! points (x, y, z in crop pixels) and a face-presence logit. Points are projected back to frame
//! pixels through the same ROI (MediaPipe's LandmarkProjectionCalculator).
use super::model;
use super::roi::{crop_to_tensor, rotation_from, Border, RotRect};
use crate::core::landmarks::{bbox, MESH_POINTS};
use crate::error::Result;
use opencv::core::ToInputArray;
use ort::session::Session;
use std::path::Path;

const SIZE: usize = 192;

/// Mesh points whose direction sets the ROI rotation when tracking: the outer eye corners
/// (MediaPipe's face_landmark_landmarks_to_roi).
const ROT_FROM: usize = 33;
const ROT_TO: usize = 263;

/// The next frame's ROI from this frame's mesh: box of all points, 1.5x, rotated so the eye
/// corners are level.
pub fn roi_from_mesh(mesh: &[[f32; 3]], scale: f32) -> Option<RotRect> {
    if mesh.len() < MESH_POINTS {
        return None;
    }
    let pts: Vec<[f32; 2]> = mesh.iter().map(|p| [p[0], p[1]]).collect();
    let b = bbox(&pts)?;
    let r = RotRect::square_around(b, rotation_from(pts[ROT_FROM], pts[ROT_TO]), scale);
    r.is_valid().then_some(r)
}

pub struct Landmarker {
    session: Session,
}

/// Output of one landmark-model run.
pub struct MeshResult {
    /// 468 points in frame pixels; z scaled like x.
    pub mesh: Vec<[f32; 3]>,
    /// Face presence probability.
    pub score: f32,
    /// Time spent building the input tensor (rotated crop, resize, normalisation) and in the
    /// model, for the face stage's profile.
    pub crop_time: std::time::Duration,
    pub model_time: std::time::Duration,
}

impl Landmarker {
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_threads(path, 1)
    }

    /// With `threads` intra-op threads (see `model::load_checked`).
    pub fn load_threads(path: &Path, threads: usize) -> Result<Self> {
        let session = model::load_checked(
            path,
            "face landmark model",
            threads,
            &[1, 3, SIZE as i64, SIZE as i64],
            &[(&[1, 3 * MESH_POINTS as i64, 1, 1], "468 x (x, y, z)"), (&[1, 1, 1, 1], "face flag")],
        )?;
        Ok(Landmarker { session })
    }

    /// Runs the model on `roi` of `img` (RGB).
    pub fn run(&mut self, img: &impl ToInputArray, roi: &RotRect) -> Result<MeshResult> {
        let t0 = std::time::Instant::now();
        let input = crop_to_tensor(img, roi, SIZE, Border::Replicate, 1.0 / 255.0, 0.0, false)?;
        let t1 = std::time::Instant::now();
        let out = model::run(&mut self.session, [1, 3, SIZE, SIZE], &input)?;
        let (crop_time, model_time) = (t1 - t0, t1.elapsed());
        let s = SIZE as f32;
        let mesh = out[0]
            .chunks_exact(3)
            .take(MESH_POINTS)
            .map(|p| {
                let q = roi.to_frame(p[0], p[1], s, s);
                [q[0], q[1], p[2] / s * roi.w]
            })
            .collect();
        let score = 1.0 / (1.0 + (-out[1][0]).exp());
        Ok(MeshResult { mesh, score, crop_time, model_time })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roi_from_mesh_uses_box_and_eye_corners() {
        let mut mesh = vec![[100.0f32, 100.0, 0.0]; MESH_POINTS];
        mesh[0] = [50.0, 60.0, 0.0];
        mesh[1] = [150.0, 140.0, 0.0];
        mesh[ROT_FROM] = [80.0, 100.0, 0.0];
        mesh[ROT_TO] = [120.0, 100.0, 0.0];
        let r = roi_from_mesh(&mesh, 1.5).unwrap();
        assert_eq!((r.cx, r.cy, r.w, r.h), (100.0, 100.0, 150.0, 150.0));
        assert!(r.angle.abs() < 1e-6);
        assert!(roi_from_mesh(&mesh[..10], 1.5).is_none());
        mesh[5] = [f32::NAN, 0.0, 0.0];
        assert!(roi_from_mesh(&mesh, 1.5).is_none());
    }
}
