//! MediaPipe iris model on the two eye crops: 64x64 crops (values in [0, 1]) around each eye's
//! corners, 2.3x their span, rotated level; the model was trained on one eye orientation, so the
//! eye at mesh 362/263 is mirrored before and after (MediaPipe's iris_landmark_left_and_right).
//! The same crops feed the distilled iris model (`iris_fast.onnx`, scripts/train_iris.py), which
//! answers only the 5 iris points, in the same layout, at a twentieth of the cost.
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
/// Upper and lower lid midpoints of each eye, in the order of `EYES` (MediaPipe's mesh).
const LIDS: [(usize, usize); 2] = [(159, 145), (386, 374)];
/// The mesh points of each eye's lid contour (order of `EYES`), in the order of the first 16 of
/// the iris model's 71 eye-contour points: corner, lower lid, corner, upper lid (MediaPipe's
/// `update_face_landmarks_calculator`, which writes them into the face mesh the same way).
pub const LID_CONTOUR: [[usize; 16]; 2] = [
    [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173],
    [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398],
];
/// Points of the lid contour.
pub const LID_POINTS: usize = 16;
/// The eye corners' places in the lid contour.
pub const LID_CORNERS: [usize; 2] = [0, 8];
/// One eye's lid contour in frame pixels ([`LID_CONTOUR`]'s order).
pub type Lids = [[f32; 2]; LID_POINTS];

/// Writes eye `k`'s lid contour `lids` (frame pixels) into the 468-point `mesh`, as MediaPipe's
/// iris pipeline does: the mesh barely closes its lids in a blink (a shut eye reads about 0.8 of
/// its open height), the iris model's contour closes with the eye. The eye corners stay the
/// mesh's: they are among the stable points the head pose is fitted to, and the contour's
/// corners, re-read from every eye crop, jittered the pose (and the mouth with it) by a pixel.
/// A contour with a non-finite point, a short mesh or an eye index out of range change nothing.
pub fn write_lids(mesh: &mut [[f32; 3]], k: usize, lids: &Lids) {
    let Some(idx) = LID_CONTOUR.get(k) else { return };
    if mesh.len() < MESH_POINTS || !lids.iter().flatten().all(|v| v.is_finite()) {
        return;
    }
    for (j, (&i, p)) in idx.iter().zip(lids).enumerate() {
        if !LID_CORNERS.contains(&j) {
            mesh[i][0] = p[0];
            mesh[i][1] = p[1];
        }
    }
}

/// The crop rect of eye `k` (0: subject's right, 1: left) in the 468-point `mesh`; `None` when
/// the mesh is short or the crop degenerate.
pub fn eye_roi_in(mesh: &[[f32; 3]], k: usize) -> Option<RotRect> {
    let (a, b, _) = *EYES.get(k)?;
    if mesh.len() < MESH_POINTS {
        return None;
    }
    let r = eye_roi([mesh[a][0], mesh[a][1]], [mesh[b][0], mesh[b][1]]);
    r.is_valid().then_some(r)
}

/// Lid opening of eye `k` over its corner-to-corner width: about 0.25-0.35 open, under 0.1
/// closed. `None` for a short mesh or a degenerate eye.
pub fn eye_openness(mesh: &[[f32; 3]], k: usize) -> Option<f32> {
    let ((a, b, _), (up, lo)) = (*EYES.get(k)?, LIDS[k]);
    if mesh.len() < MESH_POINTS {
        return None;
    }
    let d = |i: usize, j: usize| ((mesh[i][0] - mesh[j][0]).powi(2) + (mesh[i][1] - mesh[j][1]).powi(2)).sqrt();
    let w = d(a, b);
    (w.is_finite() && w > 1e-3).then(|| d(up, lo) / w)
}

/// One eye's iris from the model, in frame pixels and relative to the eye's crop (centre in
/// crop units 0..1, radius over the crop's side): the relative form follows the head when the
/// iris is carried to a frame where the model did not run on that eye (`iris_schedule`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EyeIris {
    pub iris: Iris,
    pub rel: [f32; 3],
    /// The lid contour ([`LID_CONTOUR`]'s order) in frame pixels and in crop units (0..1), when
    /// the model answers it.
    pub lids: Option<Lids>,
    pub lids_rel: Option<Lids>,
}

impl EyeIris {
    /// The iris at relative position `rel` in the crop `roi` (the inverse of what `run_eye` stores).
    pub fn place(rel: [f32; 3], roi: &RotRect) -> Iris {
        let c = roi.to_frame(rel[0], rel[1], 1.0, 1.0);
        Iris { cx: c[0], cy: c[1], r: rel[2] * roi.w }
    }

    /// A lid contour in crop units placed in the crop `roi` (frame pixels).
    pub fn place_lids(rel: &Lids, roi: &RotRect) -> Lids {
        rel.map(|[u, v]| roi.to_frame(u, v, 1.0, 1.0))
    }
}

/// Time spent on an iris run: building the input tensor (crop) and the model itself.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IrisTiming {
    pub crop: std::time::Duration,
    pub model: std::time::Duration,
}

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

/// Which iris model answers: MediaPipe's own (eye contours and iris, 107 MFLOP per eye) or the
/// distilled student of it (iris only, about 6 MFLOP; `[face] iris_model`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IrisKind {
    #[default]
    MediaPipe,
    Distilled,
}

pub struct IrisModel {
    session: Session,
    /// Which output holds the 5 iris points (MediaPipe's model puts the eye contours first).
    iris_output: usize,
    /// Which output holds the lid contour (its first 16 points, x y z each), if the model has one
    /// (MediaPipe's: the 71 eye-contour points; a distilled model from before the lids: none).
    lids_output: Option<usize>,
}

impl IrisModel {
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_threads(path, 1)
    }

    /// MediaPipe's model with `threads` intra-op threads (see `model::load_checked`).
    pub fn load_threads(path: &Path, threads: usize) -> Result<Self> {
        Self::load_kind(path, IrisKind::MediaPipe, threads)
    }

    /// A model of `kind`; its shapes are checked against that kind's layout.
    pub fn load_kind(path: &Path, kind: IrisKind, threads: usize) -> Result<Self> {
        let input = [1, 3, SIZE as i64, SIZE as i64];
        let (session, iris_output, lids_output) = match kind {
            IrisKind::MediaPipe => (
                model::load_checked(path, "iris model", threads, &input, &[(&[1, 213], "71 eye-contour points"), (&[1, 15], "5 iris points")])?,
                1,
                Some(0),
            ),
            // The distilled model answers the lids since its second version; the first one
            // (iris only) still loads, without them.
            IrisKind::Distilled => match model::load_checked(path, "distilled iris model", threads, &input, &[(&[1, 15], "5 iris points"), (&[1, 48], "16 lid points")]) {
                Ok(s) => (s, 0, Some(1)),
                Err(_) => (model::load_checked(path, "distilled iris model", threads, &input, &[(&[1, 15], "5 iris points")])?, 0, None),
            },
        };
        Ok(IrisModel { session, iris_output, lids_output })
    }

    /// Both irises of the face whose 468-point mesh (frame pixels) is `mesh`; `None` when the eye
    /// crops are degenerate (e.g. a collapsed mesh).
    pub fn run(&mut self, img: &impl ToInputArray, mesh: &[[f32; 3]]) -> Result<Option<[Iris; 2]>> {
        let mut t = IrisTiming::default();
        let (Some(a), Some(b)) = (self.run_eye(img, mesh, 0, &mut t)?, self.run_eye(img, mesh, 1, &mut t)?) else { return Ok(None) };
        Ok(Some([a.iris, b.iris]))
    }

    /// The iris of eye `k` (0: subject's right, 1: left); `None` when its crop is degenerate.
    /// Adds the time spent to `t`.
    pub fn run_eye(&mut self, img: &impl ToInputArray, mesh: &[[f32; 3]], k: usize, t: &mut IrisTiming) -> Result<Option<EyeIris>> {
        let Some((roi, input)) = Self::eye_input(img, mesh, k, t)? else { return Ok(None) };
        self.run_input(&roi, &input, k, t).map(Some)
    }

    /// The crop rect of eye `k` and the model's input tensor from it; `None` when degenerate.
    pub fn eye_input(img: &impl ToInputArray, mesh: &[[f32; 3]], k: usize, t: &mut IrisTiming) -> Result<Option<(RotRect, Vec<f32>)>> {
        let Some(roi) = eye_roi_in(mesh, k) else { return Ok(None) };
        let t0 = std::time::Instant::now();
        let input = crop_to_tensor(img, &roi, SIZE, Border::Replicate, 1.0 / 255.0, 0.0, EYES[k].2)?;
        t.crop += t0.elapsed();
        Ok(Some((roi, input)))
    }

    /// The model's 5 iris points (centre, then 4 on the rim) on one input, in the input tensor's
    /// own coordinates (0..64, mirrored for eye 1 as the input is): what the distilled iris
    /// model learns from (examples/iris_data.rs).
    pub fn raw_points(&mut self, input: &[f32]) -> Result<[[f32; 2]; 5]> {
        Ok(self.raw_all(input)?.0)
    }

    /// Whether the model answers the lid contour.
    pub fn has_lids(&self) -> bool {
        self.lids_output.is_some()
    }

    /// The 5 iris points and, when the model has them, the 16 lid-contour points
    /// ([`LID_CONTOUR`]'s order), both in the input tensor's own coordinates (see `raw_points`).
    pub fn raw_all(&mut self, input: &[f32]) -> Result<([[f32; 2]; 5], Option<Lids>)> {
        let res = model::run(&mut self.session, [1, 3, SIZE, SIZE], input)?;
        let o = &res[self.iris_output];
        let iris = std::array::from_fn(|i| [o[3 * i], o[3 * i + 1]]);
        let lids = self.lids_output.map(|k| {
            let l = &res[k];
            std::array::from_fn(|i| [l[3 * i], l[3 * i + 1]])
        });
        Ok((iris, lids))
    }

    /// The model on an input made by [`IrisModel::eye_input`] for eye `k` from `roi`.
    pub fn run_input(&mut self, roi: &RotRect, input: &[f32], k: usize, t: &mut IrisTiming) -> Result<EyeIris> {
        let roi = *roi;
        let flip = EYES[k].2;
        let t1 = std::time::Instant::now();
        let (raw, raw_lids) = self.raw_all(input)?;
        t.model += t1.elapsed();
        let s = SIZE as f32;
        // Flip undone: tensor coordinates of the unmirrored crop.
        let unflip = |[u, v]: [f32; 2]| [if flip { s - u } else { u }, v];
        let pts = raw.map(|p| {
            let [u, v] = unflip(p);
            roi.to_frame(u, v, s, s)
        });
        let iris = iris_from_points(&pts);
        // The centre relative to the crop: the model's first point.
        let [u0, v0] = unflip(raw[0]);
        let rel = [u0 / s, v0 / s, iris.r / roi.w];
        let lids_rel = raw_lids.map(|l| {
            l.map(|p| {
                let [u, v] = unflip(p);
                [u / s, v / s]
            })
        });
        let lids = lids_rel.as_ref().map(|r| EyeIris::place_lids(r, &roi));
        Ok(EyeIris { iris, rel, lids, lids_rel })
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
    fn placing_a_relative_iris_inverts_the_crop() {
        // The crop's centre is the rect's centre, whatever its rotation; the radius scales with it.
        let roi = RotRect { cx: 50.0, cy: 40.0, w: 20.0, h: 20.0, angle: 0.4 };
        let i = EyeIris::place([0.5, 0.5, 0.1], &roi);
        assert!((i.cx - 50.0).abs() < 1e-4 && (i.cy - 40.0).abs() < 1e-4 && (i.r - 2.0).abs() < 1e-5);
        let c = roi.to_frame(16.0, 40.0, 64.0, 64.0);
        let j = EyeIris::place([0.25, 0.625, 0.1], &roi);
        assert!((j.cx - c[0]).abs() < 1e-4 && (j.cy - c[1]).abs() < 1e-4);
    }

    #[test]
    fn openness_of_open_and_closed_eyes() {
        let mut mesh = vec![[0.0f32; 3]; MESH_POINTS];
        mesh[33] = [0.0, 0.0, 0.0];
        mesh[133] = [30.0, 0.0, 0.0];
        mesh[159] = [15.0, -5.0, 0.0];
        mesh[145] = [15.0, 4.0, 0.0];
        assert!((eye_openness(&mesh, 0).unwrap() - 0.3).abs() < 1e-6);
        mesh[145] = [15.0, -4.0, 0.0];
        assert!(eye_openness(&mesh, 0).unwrap() < 0.05);
        assert_eq!(eye_openness(&mesh[..10], 0), None);
        assert_eq!(eye_openness(&mesh, 1), None, "a collapsed eye has no openness");
    }

    /// The contour's 14 lid points land on the mesh's lid indices (upper 159 and lower 145 in
    /// the middle), its corners do not, and a contour with a NaN changes nothing.
    #[test]
    fn lids_from_the_contour_replace_the_mesh_lids_but_not_the_corners() {
        let mut mesh = vec![[1.0f32, 2.0, 3.0]; MESH_POINTS];
        let mut lids: Lids = std::array::from_fn(|j| [10.0 + j as f32, 20.0]);
        lids[4] = [15.0, 24.0]; // lower lid, middle (mesh 145)
        lids[12] = [15.0, 16.0]; // upper lid, middle (mesh 159)
        write_lids(&mut mesh, 0, &lids);
        assert_eq!((mesh[159], mesh[145]), ([15.0, 16.0, 3.0], [15.0, 24.0, 3.0]));
        assert_eq!((mesh[33], mesh[133]), ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), "the corners stay the mesh's");
        assert_eq!(mesh[386], [1.0, 2.0, 3.0], "the other eye is untouched");
        let changed = mesh.iter().filter(|p| **p != [1.0, 2.0, 3.0]).count();
        assert_eq!(changed, 14);
        let before = mesh.clone();
        lids[3][1] = f32::NAN;
        write_lids(&mut mesh, 1, &lids);
        write_lids(&mut mesh, 2, &[[0.0; 2]; LID_POINTS]);
        assert_eq!(mesh, before);
    }

    #[test]
    fn eye_roi_spans_corners() {
        let r = eye_roi([100.0, 50.0], [120.0, 50.0]);
        assert_eq!((r.cx, r.cy), (110.0, 50.0));
        assert!((r.w - 46.0).abs() < 1e-4 && r.angle.abs() < 1e-6);
    }
}
