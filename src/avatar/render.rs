//! Renders a warp avatar at the output size: the portrait letterboxed once into a cached canvas,
//! then per frame only the face's region of interest is redrawn: dense warp, then the mouth and
//! eye regions from the best-matching shots (K > 1), then the eye and mouth fallbacks.
//!
//! Everything happens in canvas (output) pixels: when `--size` equals the portrait's size the
//! canvas *is* the portrait, pixel for pixel (no letterbox, crop or resample).
use super::file::WarpAvatar;
use crate::core::features::{render_eyes, render_mouth, Cavity, FeatureSource};
use crate::core::geometry::{Pt, Similarity};
use crate::core::mesh::{INNER_LIPS, MOUTH_CORNERS, OUTER_LIPS};
use crate::core::raster::crop_box_from_68;
use crate::core::types::{Frame, Iris};
use crate::core::head3d::Rot3;
use crate::core::warp::{raster_triangle, sample_bilinear, WarpModel};
use crate::core::warp3d::DepthModel;
use crate::error::{Error, Result};

/// Cross-fade time when the mouth source changes between shots.
pub const SHOT_FADE_S: f32 = 0.1;
/// A new shot must be this much closer (relative) than the current one to take over (avoids
/// flicker between two near-equal shots).
const SWITCH_MARGIN: f32 = 0.8;

/// Letterbox geometry: portrait pixel `p` lands at `scale * p + offset` on the canvas.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub offset: [f32; 2],
}

impl Letterbox {
    pub fn fit(w: u32, h: u32, out_w: u32, out_h: u32) -> Letterbox {
        let s = (out_w as f64 / w as f64).min(out_h as f64 / h as f64);
        let (sw, sh) = ((w as f64 * s).round(), (h as f64 * s).round());
        Letterbox { scale: s as f32, offset: [((out_w as f64 - sw) / 2.0).floor() as f32, ((out_h as f64 - sh) / 2.0).floor() as f32] }
    }
    pub fn apply(&self, p: Pt) -> Pt {
        [p[0] * self.scale + self.offset[0], p[1] * self.scale + self.offset[1]]
    }
    pub fn apply_iris(&self, i: Iris) -> Iris {
        let c = self.apply([i.cx, i.cy]);
        Iris { cx: c[0], cy: c[1], r: i.r * self.scale }
    }
}

/// The portrait letterboxed into an `out_w` x `out_h` canvas (bars black).
pub fn letterbox(img: &Frame, out_w: u32, out_h: u32) -> Result<(Frame, Letterbox)> {
    let lb = Letterbox::fit(img.width, img.height, out_w, out_h);
    if img.width == out_w && img.height == out_h {
        return Ok((Frame { pts: Default::default(), seq: 0, ..img.clone() }, lb));
    }
    let (sw, sh) = ((img.width as f32 * lb.scale).round().max(1.0) as i32, (img.height as f32 * lb.scale).round().max(1.0) as i32);
    let scaled = crate::pipeline::compose::resize(img, sw, sh)?;
    let mut canvas = Frame::black(out_w, out_h);
    crate::pipeline::compose::blit(&mut canvas, &scaled, lb.offset[0] as i32, lb.offset[1] as i32);
    Ok((canvas, lb))
}

/// Points `idx` of `mesh` in the frame of the segment `a` -> `b` (origin at `a`, x towards `b`,
/// unit = its length): a shape with pose and size taken out. `None` for a degenerate segment.
fn in_segment_frame(mesh: &[Pt], a: usize, b: usize, idx: impl Iterator<Item = usize>) -> Option<Vec<[f32; 2]>> {
    let (a, b) = (mesh[a], mesh[b]);
    let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
    let w2 = ex * ex + ey * ey;
    if !(w2 > 1e-6) {
        return None;
    }
    Some(
        idx.map(|i| {
            let (dx, dy) = (mesh[i][0] - a[0], mesh[i][1] - a[1]);
            [(dx * ex + dy * ey) / w2, (-dx * ey + dy * ex) / w2]
        })
        .collect(),
    )
}

/// Mouth shape descriptor: outer and inner lip points in the mouth's own frame (inner corner
/// to inner corner). Invariant to pose and size.
pub fn mouth_descriptor(mesh: &[Pt]) -> Option<Vec<[f32; 2]>> {
    in_segment_frame(mesh, MOUTH_CORNERS.0, MOUTH_CORNERS.1, OUTER_LIPS.iter().chain(INNER_LIPS.iter()).copied())
}

/// Eye shape descriptor: both eye contours in their own eye frames (corner to corner): lid
/// opening and shape, invariant to pose and size.
pub fn eye_descriptor(mesh: &[Pt]) -> Option<Vec<[f32; 2]>> {
    let mut out = Vec::with_capacity(32);
    for e in 0..2 {
        let c = crate::core::mesh::eye_contour(e);
        out.extend(in_segment_frame(mesh, c[0], c[8], c.iter().copied())?);
    }
    Some(out)
}

fn descriptor_distance(a: &[[f32; 2]], b: &[[f32; 2]]) -> f32 {
    let s: f32 = a.iter().zip(b).map(|(p, q)| (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sum();
    (s / a.len().max(1) as f32).sqrt()
}

/// An extra shot prepared for drawing its mouth or eye region onto the canvas.
struct ShotPatch {
    image: Frame,
    /// Mesh in `image` pixels.
    mesh: Vec<Pt>,
    features: FeatureSource,
    /// Per-channel gains matching the shot's colours to the portrait's: lips (mouth region)
    /// and skin at the mesh points (eye region).
    gain: [[f32; 3]; 2],
}

/// Which face region a patch covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegionKind {
    Mouth,
    Eyes,
}

/// A face region that is drawn from whichever source (portrait or extra shot) matches the live
/// shape best, cross-fading when the choice changes.
struct PatchRegion {
    kind: RegionKind,
    /// Triangles touching the region's points, and per-vertex blend weights (1 on the region's
    /// points, 0 one ring out: the patch feathers into the warp).
    tris: Vec<usize>,
    vertex_weight: Vec<f32>,
    /// Shape descriptor of each source (index 0: the portrait).
    descriptors: Vec<Option<Vec<[f32; 2]>>>,
    /// Cross-fade weight of each source.
    weights: Vec<f32>,
    selected: usize,
}

impl PatchRegion {
    fn new(kind: RegionKind, model: &WarpModel, points: &[usize], descriptors: Vec<Option<Vec<[f32; 2]>>>) -> PatchRegion {
        let set: std::collections::HashSet<usize> = points.iter().copied().collect();
        let tris = (0..model.triangles().len()).filter(|&k| model.triangles()[k].iter().any(|&v| set.contains(&(v as usize)))).collect();
        let vertex_weight = (0..model.rest().len()).map(|i| if set.contains(&i) { 1.0 } else { 0.0 }).collect();
        let mut weights = vec![0.0; descriptors.len()];
        weights[0] = 1.0;
        PatchRegion { kind, tris, vertex_weight, descriptors, weights, selected: 0 }
    }

    fn describe(&self, mesh: &[Pt]) -> Option<Vec<[f32; 2]>> {
        match self.kind {
            RegionKind::Mouth => mouth_descriptor(mesh),
            RegionKind::Eyes => eye_descriptor(mesh),
        }
    }

    /// Picks the source nearest to `mesh` (with hysteresis) and advances the cross-fade.
    fn select(&mut self, mesh: &[Pt], dt: f32) {
        if self.weights.len() < 2 {
            return;
        }
        if let Some(d) = self.describe(mesh) {
            let dists: Vec<f32> =
                self.descriptors.iter().map(|s| s.as_ref().map(|s| descriptor_distance(s, &d)).unwrap_or(f32::INFINITY)).collect();
            let best = (0..dists.len()).min_by(|&a, &b| dists[a].total_cmp(&dists[b])).unwrap_or(0);
            if best != self.selected && dists[best] < SWITCH_MARGIN * dists[self.selected] {
                self.selected = best;
            }
        }
        let step = if dt > 0.0 && dt.is_finite() { (dt / SHOT_FADE_S).min(1.0) } else { 1.0 };
        for (k, w) in self.weights.iter_mut().enumerate() {
            let goal = if k == self.selected { 1.0 } else { 0.0 };
            *w = if goal > *w { (*w + step).min(goal) } else { (*w - step).max(goal) };
        }
    }
}

/// Mean colour of `img` at the mesh points (a robust skin/face colour for gain matching).
fn mesh_colour(img: &Frame, mesh: &[Pt]) -> [f32; 3] {
    let mut acc = [0.0f64; 3];
    for p in mesh {
        let c = sample_bilinear(img, p[0] as f64, p[1] as f64);
        for k in 0..3 {
            acc[k] += c[k] as f64;
        }
    }
    acc.map(|v| (v / mesh.len().max(1) as f64) as f32)
}

/// Per-avatar, per-output-size renderer.
pub struct WarpRenderer {
    canvas: Frame,
    model: WarpModel,
    /// The portrait's mesh and irises in canvas pixels.
    neutral: Vec<Pt>,
    neutral_iris: Option<[Iris; 2]>,
    features: FeatureSource,
    shots: Vec<ShotPatch>,
    /// Mouth and eye regions drawn from the best-matching shot.
    regions: [PatchRegion; 2],
    /// Eye and mouth fallbacks (off when a refiner does that job).
    fallbacks: bool,
    /// The mouth fallback's shading (only without the mouth prior).
    cavity: Cavity,
    /// The portrait's skin colour for the mouth-interior prior (`core::mouth_interior`); `None`
    /// when the mesh gives no colour (the fallback's cavity is drawn instead).
    mouth_skin: Option<[f32; 3]>,
    /// Side of the portrait's face crop in canvas pixels (the retargeter's reference size).
    crop_side: f32,
    /// The portrait's mesh depth in canvas pixels (measured, or a template's for old files) and
    /// the warp's depth mode built on it.
    neutral_depth: Vec<f32>,
    depth_measured: bool,
    depth: DepthModel,
    /// The mesh and irises of the last rendered frame (turned and projected when the head turns).
    posed: Vec<Pt>,
    posed_iris: Option<[Iris; 2]>,
}

impl WarpRenderer {
    pub fn new(av: &WarpAvatar, out_w: u32, out_h: u32) -> Result<WarpRenderer> {
        Self::with_fit(av, out_w, out_h, crate::core::fit::Fit::Contain)
    }

    /// [`WarpRenderer::new`] with the portrait placed on the canvas as `fit` says
    /// (`core::fit`: black bars, cropped around the face, or over its own blurred copy).
    pub fn with_fit(av: &WarpAvatar, out_w: u32, out_h: u32, fit: crate::core::fit::Fit) -> Result<WarpRenderer> {
        av.validate().map_err(|m| Error::Invalid(format!("avatar `{}`: {m}", av.name)))?;
        if out_w == 0 || out_h == 0 {
            return Err(Error::Invalid(format!("output size {out_w}x{out_h}")));
        }
        let p = &av.shots[0];
        let face = crate::core::fit::face_box(&p.mesh);
        let (canvas, placed) = crate::core::fit::canvas(&p.image, out_w, out_h, fit, face)?;
        let lb = Letterbox { scale: placed.scale, offset: placed.offset };
        let neutral: Vec<Pt> = p.mesh.iter().map(|&q| lb.apply(q)).collect();
        let neutral_iris = p.iris.map(|ir| ir.map(|i| lb.apply_iris(i)));
        let model = WarpModel::with_triangles(out_w, out_h, &neutral, av.triangles.clone())?;
        let features = FeatureSource::measure(&canvas, &neutral, neutral_iris.as_ref())?;
        let crop_side = crop_box_from_68(&crate::core::landmarks::to68_2d(&neutral)?)?.side;
        let (neutral_depth, depth_measured) = match &p.depth {
            Some(d) => (d.iter().map(|z| z * lb.scale).collect(), true),
            None => (
                crate::core::head3d::lift_with_template(&neutral, &crate::core::face_template::FACE_TEMPLATE)
                    .ok_or_else(|| Error::Invalid(format!("avatar `{}`: no depth can be fitted to its mesh", av.name)))?,
                false,
            ),
        };
        let depth = DepthModel::new(&model, &neutral_depth)?;
        // Extra shots: scaled so that their mouth is as wide as the portrait's on the canvas
        // (sampling them at about 1:1 keeps them sharp and unaliased).
        let pw = crate::core::geometry::dist(neutral[MOUTH_CORNERS.0], neutral[MOUTH_CORNERS.1]) as f32;
        let mut shots = Vec::new();
        for s in &av.shots[1..] {
            let sw = crate::core::geometry::dist(s.mesh[MOUTH_CORNERS.0], s.mesh[MOUTH_CORNERS.1]) as f32;
            let k = if sw > 1.0 { (pw / sw).clamp(0.1, 4.0) } else { 1.0 };
            let (w, h) = (((s.image.width as f32 * k).round() as i32).max(1), ((s.image.height as f32 * k).round() as i32).max(1));
            let image = crate::pipeline::compose::resize(&s.image, w, h)?;
            let kx = w as f32 / s.image.width as f32;
            let ky = h as f32 / s.image.height as f32;
            let mesh: Vec<Pt> = s.mesh.iter().map(|q| [q[0] * kx, q[1] * ky]).collect();
            let iris = s.iris.map(|ir| ir.map(|i| Iris { cx: i.cx * kx, cy: i.cy * ky, r: i.r * kx }));
            let Ok(fs) = FeatureSource::measure(&image, &mesh, iris.as_ref()) else { continue };
            let lips = [0, 1, 2].map(|c| (features.lip_colour[c] as f32 + 1.0) / (fs.lip_colour[c] as f32 + 1.0)).map(|g| g.clamp(0.6, 1.6));
            let (pc, sc) = (mesh_colour(&canvas, &neutral), mesh_colour(&image, &mesh));
            let skin = [0, 1, 2].map(|c| ((pc[c] + 1.0) / (sc[c] + 1.0)).clamp(0.6, 1.6));
            shots.push(ShotPatch { image, mesh, features: fs, gain: [lips, skin] });
        }
        let lips: Vec<usize> = OUTER_LIPS.iter().chain(INNER_LIPS.iter()).copied().collect();
        let eyes: Vec<usize> = crate::core::mesh::EYE_R.iter().chain(crate::core::mesh::EYE_L.iter()).copied().collect();
        let descs = |f: fn(&[Pt]) -> Option<Vec<[f32; 2]>>| -> Vec<Option<Vec<[f32; 2]>>> {
            std::iter::once(f(&neutral)).chain(shots.iter().map(|s| f(&s.mesh))).collect()
        };
        let regions = [
            PatchRegion::new(RegionKind::Mouth, &model, &lips, descs(mouth_descriptor)),
            PatchRegion::new(RegionKind::Eyes, &model, &eyes, descs(eye_descriptor)),
        ];
        let mouth_skin = crate::core::mouth_interior::skin_colour(&canvas, &neutral);
        let posed0 = neutral.clone();
        Ok(WarpRenderer {
            canvas,
            model,
            neutral,
            neutral_iris,
            features,
            shots,
            regions,
            fallbacks: true,
            cavity: Cavity::default(),
            mouth_skin,
            crop_side: crop_side as f32,
            posed: posed0,
            posed_iris: neutral_iris,
            neutral_depth,
            depth_measured,
            depth,
        })
    }

    /// The cached canvas: the portrait at rest (idle frame).
    pub fn canvas(&self) -> &Frame {
        &self.canvas
    }
    /// The portrait's mesh in canvas pixels (the retargeter's target).
    pub fn neutral(&self) -> &[Pt] {
        &self.neutral
    }
    pub fn neutral_iris(&self) -> Option<[Iris; 2]> {
        self.neutral_iris
    }
    pub fn crop_side(&self) -> f32 {
        self.crop_side
    }
    /// The portrait's mesh depth in canvas pixels, and whether it was measured (else fitted from
    /// a template: avatar files before version 3).
    pub fn neutral_depth(&self) -> (&[f32], bool) {
        (&self.neutral_depth, self.depth_measured)
    }
    /// The warp's depth mode (head turns).
    pub fn depth(&self) -> &DepthModel {
        &self.depth
    }
    /// The mesh and irises of the last rendered frame, as drawn (turned, projected).
    pub fn posed(&self) -> (&[Pt], Option<[Iris; 2]>) {
        (&self.posed, self.posed_iris)
    }
    pub fn model(&self) -> &WarpModel {
        &self.model
    }
    /// Number of extra shots usable for the mouth.
    pub fn extra_shots(&self) -> usize {
        self.shots.len()
    }
    /// The shot currently chosen for the mouth (0: the portrait).
    pub fn selected_shot(&self) -> usize {
        self.regions[0].selected
    }
    /// The shot currently chosen for the eyes (0: the portrait).
    pub fn selected_eye_shot(&self) -> usize {
        self.regions[1].selected
    }
    /// How hair, ears and neck follow the head (see [`crate::core::warp::RingMotion`]).
    pub fn set_ring_motion(&mut self, m: crate::core::warp::RingMotion) {
        self.model.set_ring_motion(m);
    }
    /// How the mouth fallback shades an opening.
    pub fn set_cavity(&mut self, c: Cavity) {
        self.cavity = c;
    }
    /// Turns the deterministic eye and mouth fallbacks on or off.
    pub fn set_fallbacks(&mut self, on: bool) {
        self.fallbacks = on;
    }

    /// Picks the mouth and eye sources for `mesh` (canvas pixels) and advances the cross-fades.
    fn select(&mut self, mesh: &[Pt], dt: f32) {
        for r in self.regions.iter_mut() {
            r.select(mesh, dt);
        }
    }

    /// One output frame for the retargeted mesh / irises / head pose (canvas pixels); `dt` is
    /// the time since the previous frame (cross-fades).
    pub fn render(&mut self, mesh: &[Pt], iris: Option<&[Iris; 2]>, pose: &Similarity, dt: f32) -> Result<Frame> {
        self.render_turned(mesh, iris, pose, None, dt)
    }

    /// [`Self::render`] with the head turned by `turn` (relative to the portrait) in 3-D: `mesh`
    /// and `iris` are then the retargeted face seen from the front (carrying `pose`), and the
    /// portrait's mesh is turned, projected and drawn with depth (`core::warp3d`). `None`: the 2-D
    /// warp.
    pub fn render_turned(&mut self, mesh: &[Pt], iris: Option<&[Iris; 2]>, pose: &Similarity, turn: Option<&Rot3>, dt: f32) -> Result<Frame> {
        let mut out = self.canvas.clone();
        let (dst, facing) = match turn {
            Some(rot) => {
                let t = self.depth.targets(&self.model, mesh, pose, rot);
                crate::core::warp3d::render(&self.model, &self.canvas, &t, &mut out)?;
                (t.pts, true)
            }
            None => {
                let dst = self.model.targets(mesh, pose);
                if log::log_enabled!(log::Level::Trace) {
                    log::trace!("warp: {:?} triangles flipped (regular, sliver/opening) after repair", self.model.count_flipped_any(&dst));
                }
                self.model.render(&self.canvas, &dst, &mut out)?;
                (dst, false)
            }
        };
        let n_mesh = self.model.n_mesh();
        let live = &dst[..n_mesh];
        // Irises turn with their eye (at the eye contour's depth).
        let iris_turned: Option<[Iris; 2]> = match (turn, iris) {
            (Some(rot), Some(ir)) => Some([0, 1].map(|e| {
                let c = crate::core::mesh::eye_contour(e);
                let z = c.iter().map(|&i| self.neutral_depth[i]).sum::<f32>() / c.len() as f32;
                let q = self.depth.turn_point(pose, rot, [ir[e].cx, ir[e].cy], z);
                Iris { cx: q[0] as f32, cy: q[1] as f32, r: ir[e].r }
            })),
            _ => iris.copied(),
        };
        let iris = iris_turned.as_ref();
        self.select(live, dt);
        let mut gap_src = self.features.gap;
        for (ri, region) in self.regions.iter().enumerate() {
            for k in 1..region.weights.len() {
                let w = region.weights[k];
                if w <= 0.0 {
                    continue;
                }
                let shot = &self.shots[k - 1];
                draw_patch(region, shot, self.model.triangles(), facing.then(|| self.model.rest_areas()), self.model.roi(), &dst, w, shot.gain[ri], &mut out);
                if region.kind == RegionKind::Mouth {
                    gap_src = gap_src + (shot.features.gap - gap_src) * w;
                }
            }
        }
        // The opening beyond what the mouth's source shows: the prior's teeth, tongue and shadow
        // (the refiner, when there is one, sharpens and blends them), else the fallback's cavity.
        // Drawn before the refiner, not after it: on three training clips (lp_d6, sk_2,
        // sm_dafoe, K = 1) before scored 19.38 dB mouth-open PSNR and 0.229 teeth-share error,
        // after 19.17 dB and 0.238, none 19.01 dB and 0.315 (docs/quality.md).
        if let Some(skin) = self.mouth_skin {
            // Rounded lips ("o", "u") against the portrait's rest mouth: shadow and tongue, no teeth.
            let width = crate::core::mouth_interior::inner_width_iod(&self.neutral);
            crate::core::mouth_interior::paint_opening(&mut out, live, skin, gap_src, width);
        }
        if self.fallbacks {
            render_eyes(&self.canvas, &self.features, live, iris, &mut out, 1.0);
            if self.mouth_skin.is_none() {
                let fs = FeatureSource { gap: gap_src, ..self.features.clone() };
                render_mouth(&fs, live, &self.cavity, &mut out);
            }
        }
        self.posed.clear();
        self.posed.extend_from_slice(live);
        self.posed_iris = iris.copied();
        Ok(out)
    }

}

/// Draws `region` of `shot` warped to `dst`, colour-matched by `gain`, blended by the region's
/// per-vertex weights times `w`. With `facing` (the rest areas, depth mode), triangles that the
/// head's turn shows from behind are skipped.
#[allow(clippy::too_many_arguments)]
fn draw_patch(region: &PatchRegion, shot: &ShotPatch, tris: &[[u32; 3]], facing: Option<&[f64]>, roi: [u32; 4], dst: &[Pt], w: f32, gain: [f32; 3], out: &mut Frame) {
    let width = out.width as usize;
    for &k in &region.tris {
        let t = tris[k];
        let (i0, i1, i2) = (t[0] as usize, t[1] as usize, t[2] as usize);
        if let Some(a0) = facing.map(|f| f[k]) {
            let (p, q, r) = (dst[i0], dst[i1], dst[i2]);
            let a = (q[0] - p[0]) as f64 * (r[1] - p[1]) as f64 - (r[0] - p[0]) as f64 * (q[1] - p[1]) as f64;
            if a0 != 0.0 && a * a0 <= 0.0 {
                continue;
            }
        }
        // Only mesh vertices have a position in the shot.
        if i0 >= shot.mesh.len() || i1 >= shot.mesh.len() || i2 >= shot.mesh.len() {
            continue;
        }
        let d = [dst[i0], dst[i1], dst[i2]];
        let s = [shot.mesh[i0], shot.mesh[i1], shot.mesh[i2]];
        let wv = [region.vertex_weight[i0], region.vertex_weight[i1], region.vertex_weight[i2]];
        // Mapping the triangle onto the unit basis gives each pixel's barycentric coordinates
        // (u, v, 1 - u - v); the shot position and the blend weight follow from them.
        let unit = [[1.0f32, 0.0], [0.0, 1.0], [0.0, 0.0]];
        raster_triangle(d, unit, roi, |x, y, u, v| {
            let l = [u, v, 1.0 - u - v];
            let a = (wv[0] as f64 * l[0] + wv[1] as f64 * l[1] + wv[2] as f64 * l[2]) as f32 * w;
            if a <= 0.0 {
                return;
            }
            let sx = s[0][0] as f64 * l[0] + s[1][0] as f64 * l[1] + s[2][0] as f64 * l[2];
            let sy = s[0][1] as f64 * l[0] + s[1][1] as f64 * l[1] + s[2][1] as f64 * l[2];
            let c = sample_bilinear(&shot.image, sx, sy);
            let o = 3 * (y as usize * width + x as usize);
            for ch in 0..3 {
                let v = c[ch] as f32 * gain[ch];
                let cur = out.data[o + ch] as f32;
                out.data[o + ch] = (cur + (v - cur) * a).round().clamp(0.0, 255.0) as u8;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avatar::file::tests::sample_avatar;

    #[test]
    fn letterbox_and_alignment() {
        let lb = Letterbox::fit(100, 200, 400, 400);
        assert_eq!(lb, Letterbox { scale: 2.0, offset: [100.0, 0.0] });
        let av = sample_avatar(1);
        let p = &av.shots[0].image;
        // Same size: the canvas is the portrait, and neutral landmarks are the portrait's.
        let r = WarpRenderer::new(&av, p.width, p.height).unwrap();
        assert_eq!(r.canvas().data, p.data);
        assert_eq!(r.neutral(), &av.shots[0].mesh[..]);
        // At rest the rendered frame is the portrait (apart from the eye fallback's white ring).
        let mut r = r;
        r.set_fallbacks(false);
        let f = r.render(&av.shots[0].mesh, None, &Similarity::IDENTITY, 0.04).unwrap();
        assert_eq!(f.data, p.data);
        assert!(WarpRenderer::new(&av, 0, 10).is_err());
    }

    #[test]
    fn mouth_source_switches_with_hysteresis_and_fades() {
        let mut av = sample_avatar(3);
        // Shot 1 has shut eyes (lids on the corner line), shot 2 an open mouth.
        for e in 0..2 {
            let c = crate::core::mesh::eye_contour(e);
            let (a, b) = (av.shots[1].mesh[c[0]], av.shots[1].mesh[c[8]]);
            for (k, &i) in c.iter().enumerate() {
                let t = if k <= 8 { k as f32 / 8.0 } else { (16 - k) as f32 / 8.0 };
                av.shots[1].mesh[i] = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])];
            }
        }
        let open = &mut av.shots[2].mesh;
        for &(_, l) in crate::core::mesh::LIP_PAIRS.iter() {
            open[l][1] += 8.0;
        }
        let (w, h) = (av.shots[0].image.width, av.shots[0].image.height);
        let mut r = WarpRenderer::new(&av, w, h).unwrap();
        assert_eq!(r.extra_shots(), 2);
        let mut target = av.shots[0].mesh.clone();
        for &(_, l) in crate::core::mesh::LIP_PAIRS.iter() {
            target[l][1] += 7.0;
        }
        // (Selection is tested on the mesh itself: the synthetic mesh's scattered points fold
        // under such lip motion, and the fold repair would undo it before drawing.)
        r.select(&target, 0.04);
        assert_eq!(r.selected_shot(), 2);
        assert!((r.regions[0].weights[2] - 0.4).abs() < 1e-4, "{:?}", r.regions[0].weights);
        r.select(&target, 0.04);
        r.select(&target, 0.04);
        assert_eq!(r.regions[0].weights, vec![0.0, 0.0, 1.0]);
        r.render(&target, None, &Similarity::IDENTITY, 0.04).unwrap();
        // The eyes choose on their own: a target with shut lids takes the shut-eyed shot 1.
        assert_eq!(r.selected_eye_shot(), 0);
        r.select(&av.shots[0].mesh, 1.0);
        assert_eq!(r.selected_shot(), 0);
        assert_eq!(r.regions[0].weights, vec![1.0, 0.0, 0.0]);
        let mut shut = av.shots[0].mesh.clone();
        for e in 0..2 {
            let c = crate::core::mesh::eye_contour(e);
            for &i in c.iter() {
                shut[i] = av.shots[1].mesh[i];
            }
        }
        r.select(&shut, 1.0);
        assert_eq!((r.selected_eye_shot(), r.selected_shot()), (1, 0));
        assert_eq!(r.regions[1].weights, vec![0.0, 1.0, 0.0]);
    }
}
