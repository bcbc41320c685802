//! The learned refiner of warp avatars: a small few-shot network that repaints what the warp
//! cannot make (the inside of an opening mouth, lids closing over an eye) on mouth and eye
//! crops, composited back with its own alpha so the portrait keeps its pixels elsewhere.
//!
//! - `Sample`/`SampleSet`, [`pair_sample`] and [`shot_sample`]: the crops and rasters the
//!   network sees, for training data (`data`) and personalisation (`avatar create`);
//! - [`Refiner`]: runs a refiner ONNX on a rendered frame (the generator stage);
//! - [`embed`]: the K-shot embedder ONNX (a feed-forward avatar without PyTorch).
//!
//! ONNX contract "refiner-1" (docs/refiner.md): inputs `mouth` [1, 6, 96, 96] and `eyes`
//! [2, 6, 48, 48] (crop RGB in [-1, 1], then the 3-channel raster in [0, 1]), `e_mouth` [1, D]
//! and `e_eye` [1, D] (the avatar's embeddings); outputs `mouth_out` [1, 4, 96, 96] and
//! `eyes_out` [2, 4, 48, 48] (RGB in [-1, 1], alpha in [0, 1]).
pub mod data;
pub mod personalise;

use crate::core::geometry::{fit_similarity, Pt};
use crate::core::regions::{self, RegionKind, EYE_SIZE, MOUTH_SIZE};
use crate::core::types::{Frame, Iris};
use crate::core::warp::WarpModel;
use crate::ep::RuntimeOptions;
use crate::error::{Error, Result};
use ort::session::Session;
use ort::value::TensorRef;
use std::path::Path;

/// Crops and rasters of the three regions of one image (mouth, right eye, left eye mirrored);
/// `target` holds the ground truth for training pairs.
pub struct Sample {
    pub input: [Vec<u8>; 3],
    pub raster: [Vec<u8>; 3],
    pub target: Option<[Vec<u8>; 3]>,
}

/// The crops of `img` under the three boxes (mouth, right eye, left eye) and their landmark
/// rasters from `mesh` / `iris`: what the network sees of one frame.
fn cut(img: &Frame, bx: &[regions::RegionBox; 3], mesh: &[Pt], iris: Option<&[Iris; 2]>) -> ([Vec<u8>; 3], [Vec<u8>; 3]) {
    let kinds = [RegionKind::Mouth, RegionKind::Eye(0), RegionKind::Eye(1)];
    ([0, 1, 2].map(|k| regions::crop(img, &bx[k])), [0, 1, 2].map(|k| regions::raster(&bx[k], kinds[k], mesh, iris)))
}

/// The regions of `img` at its own landmarks (a shot for the embedder).
pub fn shot_sample(img: &Frame, mesh: &[Pt], iris: Option<&[Iris; 2]>) -> Option<Sample> {
    let (input, raster) = cut(img, &regions::boxes(mesh)?, mesh, iris);
    Some(Sample { input, raster, target: None })
}

/// Landmark points both images' alignment uses: the rigid part of the face (68-point STABLE
/// subset of the mesh: outline by the ears, nose bridge, eye corners).
fn stable_points(mesh: &[Pt]) -> Option<Vec<Pt>> {
    let p68 = crate::core::landmarks::to68_2d(mesh).ok()?;
    Some(crate::core::retarget::STABLE.iter().map(|&i| p68[i]).collect())
}

/// A training pair: `src` (with its `model`) warped to `dst`'s expression and pose, `dst`'s
/// landmarks carried into `src`'s frame by the similarity of their rigid points; the input is
/// the warp with the mouth-interior prior (no other fallback, as in the daemon when a refiner
/// runs), the target `dst` itself under the same boxes.
///
/// `eye_neutral` (the open eye-aspect ratios of `dst`'s person, e.g. their median over a clip)
/// closes `dst`'s lids as the retargeter closes a driver's (`retarget::remap_lids`), so a real
/// blink is learned from the closed-lid warp the daemon feeds the network.
pub fn pair_sample(src: &Frame, src_mesh: &[Pt], model: &WarpModel, dst: &Frame, dst_mesh: &[Pt], dst_iris: Option<&[Iris; 2]>, eye_neutral: Option<[f64; 2]>) -> Option<Sample> {
    let (a, b) = (stable_points(dst_mesh)?, stable_points(src_mesh)?);
    let t = fit_similarity(&a, &b, None).ok().filter(|t| t.is_finite() && t.scale > 0.2 && t.scale < 5.0)?;
    let inv = t.inverse()?;
    let mut moved: Vec<Pt> = dst_mesh.iter().map(|&p| t.apply(p)).collect();
    if let Some(n) = eye_neutral {
        crate::core::retarget::remap_lids(&mut moved, n);
    }
    let iris = dst_iris.map(|ir| ir.map(|i| t.apply_iris(i)));
    let pose = fit_similarity(&b, &stable_points(&moved)?, None).ok()?;
    let dst_pts = model.targets(&moved, &pose);
    let mut warped = src.clone();
    model.render(src, &dst_pts, &mut warped).ok()?;
    paint_mouth_prior(src, src_mesh, &dst_pts, &mut warped);
    let bx = regions::boxes(&moved)?;
    let (input, raster) = cut(&warped, &bx, &moved, iris.as_ref());
    Some(Sample { input, raster, target: Some([0, 1, 2].map(|k| regions::crop(dst, &bx[k].mapped(&inv)))) })
}

/// The mouth-interior prior on a training pair's warp, drawn by the avatar renderer's own call
/// (`mouth_interior::paint_opening`): the opening beyond the source's own gets the prior's
/// teeth, shadow and tongue in the source's skin colour. Without it the network would be trained
/// on inputs it never sees in the daemon (an opening stretched from lip pixels).
fn paint_mouth_prior(src: &Frame, src_mesh: &[Pt], dst_pts: &[Pt], warped: &mut Frame) {
    let n = crate::core::landmarks::MESH_POINTS;
    if src_mesh.len() < n || dst_pts.len() < n {
        return;
    }
    if let Some(skin) = crate::core::mouth_interior::skin_colour(src, &src_mesh[..n]) {
        let width = crate::core::mouth_interior::inner_width_iod(&src_mesh[..n]);
        crate::core::mouth_interior::paint_opening(warped, &dst_pts[..n], skin, crate::core::mesh::mouth_gap(&src_mesh[..n]), width);
    }
}

/// Per-eye median eye-aspect ratio of some faces (their open eyes, when they mostly are): the
/// `eye_neutral` of [`pair_sample`]. `None` when no mesh is usable.
pub fn median_ears<'a>(meshes: impl Iterator<Item = &'a [Pt]>) -> Option<[f64; 2]> {
    let mut v: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for m in meshes {
        if let Some(e) = crate::core::retarget::mesh_ears(m) {
            v[0].push(e[0]);
            v[1].push(e[1]);
        }
    }
    if v[0].is_empty() {
        return None;
    }
    Some(v.map(|mut x| {
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    }))
}

/// Samples stacked for `.npy` output: mouth arrays [N, 96, 96, 3], eye arrays [N, 2, 48, 48, 3].
#[derive(Default)]
pub struct SampleSet {
    n: usize,
    m: [Vec<u8>; 3],
    e: [Vec<u8>; 3],
}

impl SampleSet {
    pub fn push(&mut self, s: Sample) {
        let parts = [Some(&s.input), Some(&s.raster), s.target.as_ref()];
        for (slot, p) in parts.iter().enumerate() {
            if let Some(p) = p {
                self.m[slot].extend_from_slice(&p[0]);
                self.e[slot].extend_from_slice(&p[1]);
                self.e[slot].extend_from_slice(&p[2]);
            }
        }
        self.n += 1;
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Writes `{stem}.{mouth,eyes}_{in,ras[,gt]}.npy` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str, with_target: bool) -> Result<()> {
        let names = ["in", "ras", "gt"];
        for slot in 0..if with_target { 3 } else { 2 } {
            let m = dir.join(format!("{stem}.mouth_{}.npy", names[slot]));
            data::write_npy_u8(&m, &[self.n, MOUTH_SIZE, MOUTH_SIZE, 3], &self.m[slot])?;
            let e = dir.join(format!("{stem}.eyes_{}.npy", names[slot]));
            data::write_npy_u8(&e, &[self.n, 2, EYE_SIZE, EYE_SIZE, 3], &self.e[slot])?;
        }
        Ok(())
    }
}

/// The embeddings a refiner is conditioned on (the mean over the avatar's shots).
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    pub mouth: Vec<f32>,
    pub eye: Vec<f32>,
}

fn model_err(what: &str, msg: impl Into<String>) -> Error {
    Error::Model { path: std::path::PathBuf::from(what), msg: msg.into() }
}

/// Runs a refiner on rendered frames. Owned by the generator thread (one session per thread).
pub struct Refiner {
    session: Session,
    embedding: Embedding,
    mouth: Vec<f32>,
    eyes: Vec<f32>,
    ep: crate::stats::EpStatus,
}

impl Refiner {
    /// A session for `onnx` (bytes) conditioned on `embedding`; checks the contract's shapes
    /// with one dry run so a wrong model fails at load, not mid-stream.
    pub fn new(onnx: &[u8], embedding: Embedding, opts: &RuntimeOptions) -> Result<Refiner> {
        let (session, ep) = crate::ep::build_session_from(crate::ep::ModelBytes::Memory(onnx, "refiner"), opts, "refiner")?;
        let mut r = Refiner { session, embedding, mouth: Vec::new(), eyes: Vec::new(), ep };
        let mouth = vec![0.0f32; 6 * MOUTH_SIZE * MOUTH_SIZE];
        let eyes = vec![0.0f32; 2 * 6 * EYE_SIZE * EYE_SIZE];
        r.run(&mouth, &eyes)?;
        Ok(r)
    }

    /// The refiner stored in an avatar file, with its embeddings.
    pub fn from_blob(blob: &crate::avatar::RefinerBlob, opts: &RuntimeOptions) -> Result<Refiner> {
        Self::new(&blob.onnx, Embedding { mouth: blob.e_mouth.clone(), eye: blob.e_eye.clone() }, opts)
    }

    pub fn ep_status(&self) -> &crate::stats::EpStatus {
        &self.ep
    }

    /// Raw network call: returns (mouth_out [4*96*96], eyes_out [2*4*48*48]).
    pub fn run(&mut self, mouth: &[f32], eyes: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let (dm, de) = (self.embedding.mouth.len(), self.embedding.eye.len());
        let inputs = ort::inputs![
            "mouth" => TensorRef::from_array_view(([1usize, 6, MOUTH_SIZE, MOUTH_SIZE], mouth))?,
            "eyes" => TensorRef::from_array_view(([2usize, 6, EYE_SIZE, EYE_SIZE], eyes))?,
            "e_mouth" => TensorRef::from_array_view(([1usize, dm], self.embedding.mouth.as_slice()))?,
            "e_eye" => TensorRef::from_array_view(([1usize, de], self.embedding.eye.as_slice()))?,
        ];
        let out = self.session.run(inputs).map_err(|e| model_err("refiner", format!("run failed: {e}")))?;
        let take = |name: &str, shape: [i64; 4]| -> Result<Vec<f32>> {
            let v = out.get(name).ok_or_else(|| model_err("refiner", format!("output `{name}` missing")))?;
            let (s, d) = v.try_extract_tensor::<f32>()?;
            if s[..] != shape[..] {
                return Err(model_err("refiner", format!("output `{name}` has shape {s}, expected {shape:?}")));
            }
            Ok(d.iter().map(|x| if x.is_finite() { *x } else { 0.0 }).collect())
        };
        let m = take("mouth_out", [1, 4, MOUTH_SIZE as i64, MOUTH_SIZE as i64])?;
        let e = take("eyes_out", [2, 4, EYE_SIZE as i64, EYE_SIZE as i64])?;
        Ok((m, e))
    }

    /// Refines `frame` (rendered for `mesh` / `iris`, canvas pixels) in place. Returns the number
    /// of pixels changed; 0 (frame untouched) when the mesh gives no usable boxes.
    pub fn refine(&mut self, frame: &mut Frame, mesh: &[Pt], iris: Option<&[Iris; 2]>) -> Result<usize> {
        let Some(bx) = regions::boxes(mesh) else { return Ok(0) };
        let mut mouth = std::mem::take(&mut self.mouth);
        let mut eyes = std::mem::take(&mut self.eyes);
        mouth.clear();
        eyes.clear();
        let (crops, rasters) = cut(frame, &bx, mesh, iris);
        for k in 0..3 {
            regions::push_input(if k == 0 { &mut mouth } else { &mut eyes }, &crops[k], &rasters[k], bx[k].size);
        }
        let res = self.run(&mouth, &eyes);
        self.mouth = mouth;
        self.eyes = eyes;
        let (m, e) = res?;
        let plane = 4 * EYE_SIZE * EYE_SIZE;
        let mut n = regions::paste(frame, &bx[0], &m);
        n += regions::paste(frame, &bx[1], &e[..plane]);
        n += regions::paste(frame, &bx[2], &e[plane..]);
        Ok(n)
    }
}

/// The K-shot embedder ONNX: shots' crops and rasters -> the mean embeddings.
/// Contract: inputs `mouth` [K, 6, 96, 96], `eyes` [2K, 6, 48, 48]; outputs `e_mouth` [1, D],
/// `e_eye` [1, D].
pub fn embed(onnx: &Path, shots: &[Sample], opts: &RuntimeOptions) -> Result<Embedding> {
    if shots.is_empty() {
        return Err(Error::Invalid("refiner embedding: no shot with a usable face".into()));
    }
    let (mut session, _) = crate::ep::build_session(onnx, opts, "refiner embedder")?;
    let (mut mouth, mut eyes) = (Vec::new(), Vec::new());
    for s in shots {
        regions::push_input(&mut mouth, &s.input[0], &s.raster[0], MOUTH_SIZE);
        regions::push_input(&mut eyes, &s.input[1], &s.raster[1], EYE_SIZE);
        regions::push_input(&mut eyes, &s.input[2], &s.raster[2], EYE_SIZE);
    }
    let k = shots.len();
    let out = session.run(ort::inputs![
        "mouth" => TensorRef::from_array_view(([k, 6, MOUTH_SIZE, MOUTH_SIZE], mouth.as_slice()))?,
        "eyes" => TensorRef::from_array_view(([2 * k, 6, EYE_SIZE, EYE_SIZE], eyes.as_slice()))?,
    ])?;
    let take = |name: &str| -> Result<Vec<f32>> {
        let v = out.get(name).ok_or_else(|| Error::Model { path: onnx.to_path_buf(), msg: format!("output `{name}` missing") })?;
        let (s, d) = v.try_extract_tensor::<f32>()?;
        if s.len() != 2 || s[0] != 1 || d.iter().any(|x| !x.is_finite()) {
            return Err(Error::Model { path: onnx.to_path_buf(), msg: format!("output `{name}` has shape {s} or non-finite values; expected [1, D]") });
        }
        Ok(d.to_vec())
    };
    Ok(Embedding { mouth: take("e_mouth")?, eye: take("e_eye")? })
}
