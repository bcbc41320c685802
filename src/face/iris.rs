//! MediaPipe iris model on the two eye crops: 64x64 crops (values in [0, 1]) around each eye's
//! corners, 2.3x their span, rotated level; the model was trained on one eye orientation, so the
//! eye at mesh 362/263 is mirrored before and after (MediaPipe's iris_landmark_left_and_right).
use super::model;
use super::roi::{crop_to_tensor, rotation_from, Border, RotRect};
use crate::core::landmarks::MESH_POINTS;
use crate::core::types::Iris;
use crate::error::Result;
use opencv::core::ToInputArray;
use ort::session::Session;
use std::path::Path;

const SIZE: usize = 64;
const EYE_SCALE: f32 = 2.3;
/// Eye corner pairs (from, to) in the mesh: subject's right eye (image left), then left eye.
const EYES: [(usize, usize, bool); 2] = [(33, 133, false), (362, 263, true)];

/// The crop rect of one eye from its two corners.
pub fn eye_roi(p0: [f32; 2], p1: [f32; 2]) -> RotRect {
    let b = [p0[0].min(p1[0]), p0[1].min(p1[1]), p0[0].max(p1[0]), p0[1].max(p1[1])];
    RotRect::square_around(b, rotation_from(p0, p1), EYE_SCALE)
}

/// Centre and radius from the model's 5 iris points (centre, then 4 on the rim) in frame pixels.
pub fn iris_from_points(pts: &[[f32; 2]; 5]) -> Iris {
    let c = pts[0];
    let r = pts[1..].iter().map(|p| ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)).sqrt()).sum::<f32>() / 4.0;
    Iris { cx: c[0], cy: c[1], r }
}

pub struct IrisModel {
    session: Session,
}

impl IrisModel {
    pub fn load(path: &Path) -> Result<Self> {
        let session = model::load_checked(
            path,
            "iris model",
            &[1, 3, SIZE as i64, SIZE as i64],
            &[(&[1, 213], "71 eye-contour points"), (&[1, 15], "5 iris points")],
        )?;
        Ok(IrisModel { session })
    }

    /// Both irises of the face whose 468-point mesh (frame pixels) is `mesh`; `None` when the eye
    /// crops are degenerate (e.g. a collapsed mesh).
    pub fn run(&mut self, img: &impl ToInputArray, mesh: &[[f32; 3]]) -> Result<Option<[Iris; 2]>> {
        if mesh.len() < MESH_POINTS {
            return Ok(None);
        }
        let mut out = [Iris::default(); 2];
        for (k, &(a, b, flip)) in EYES.iter().enumerate() {
            let roi = eye_roi([mesh[a][0], mesh[a][1]], [mesh[b][0], mesh[b][1]]);
            if !roi.is_valid() {
                return Ok(None);
            }
            let input = crop_to_tensor(img, &roi, SIZE, Border::Replicate, 1.0 / 255.0, 0.0, flip)?;
            let res = model::run(&mut self.session, [1, 3, SIZE, SIZE], &input)?;
            let s = SIZE as f32;
            let mut pts = [[0.0f32; 2]; 5];
            for (i, p) in pts.iter_mut().enumerate() {
                let (mut u, v) = (res[1][3 * i], res[1][3 * i + 1]);
                if flip {
                    u = s - u;
                }
                *p = roi.to_frame(u, v, s, s);
            }
            out[k] = iris_from_points(&pts);
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radius_is_mean_rim_distance() {
        let i = iris_from_points(&[[10.0, 10.0], [13.0, 10.0], [10.0, 15.0], [7.0, 10.0], [10.0, 6.0]]);
        assert_eq!((i.cx, i.cy), (10.0, 10.0));
        assert!((i.r - 3.75).abs() < 1e-6);
    }

    #[test]
    fn eye_roi_spans_corners() {
        let r = eye_roi([100.0, 50.0], [120.0, 50.0]);
        assert_eq!((r.cx, r.cy), (110.0, 50.0));
        assert!((r.w - 46.0).abs() < 1e-4 && r.angle.abs() < 1e-6);
    }
}
