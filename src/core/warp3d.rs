//! Depth mode of the dense warp (`core::warp`): the portrait's control sheet (mesh, rings,
//! border) carries a depth per point, turns with the head in 3-D, and is drawn with a z-buffer
//! and back-face culling. Pure, no I/O.
//!
//! Why: when a head turns, the far side of the face must disappear behind the nose and the near
//! side must grow. A 2-D warp can only fold the far side over itself (the repair then shrinks the
//! motion: a smear, and a head that never reaches the driver's angle). Here a triangle that turns
//! away from the camera is not drawn, and what is in front wins the pixel.
//!
//! No holes: the sheet is a disc whose border is fixed, so every pixel of the region of interest
//! is covered by one more front-facing than back-facing triangle, i.e. by at least one that is
//! drawn. Uncovered ground behind the turned head is filled by the stretched rings (hair, ears,
//! background), never by the portrait at rest showing through.
//!
//! The rings (hair and ears around the face) sit at the depth of the head's pivot, so a turn slides
//! the face across them instead of dragging them sideways; each follows the head by its
//! [`super::warp::RingMotion`] weight, as in 2-D.
use super::geometry::{Pt, Similarity};
use super::head3d::{pivot, rotate_about, with_depth, Rot3};
use super::mesh::FACE_OVAL;
use super::types::Frame;
use super::warp::{barycentric, interpolant, raster_triangle, sample_bilinear, signed_area, WarpModel};
use crate::error::{Error, Result};

/// A fold at the rigidly posed sheet only counts where the triangle faces the camera with at
/// least this fraction of its rest area (an edge-on triangle's orientation is noise).
const FACING_MIN: f64 = 0.05;
/// Smoothing passes over the mesh depth where the surface is slanted (each: halfway to the
/// neighbours' mean). The landmark model's depth is noisy at the sides of the face, where the
/// surface is nearly edge-on at rest: there a few pixels of noise give triangles that face
/// inwards, and a turn towards them would show them from behind.
const DEPTH_SMOOTHING: usize = 4;
/// Where the portrait's surface is seen at a slant (the sides of the face, the far side of a
/// turned portrait), a pixel of landmark noise is a long way along the surface, and a turn that
/// shows that surface squarely magnifies it into a zig-zag. So the non-rigid motion of a mesh
/// point is kept in full where its surface normal's component towards the camera is at least
/// `FACING_FULL`, faded out down to `FACING_NONE`, and dropped below (the head's rigid turn still
/// moves it).
const FACING_FULL: f32 = 0.75;
const FACING_NONE: f32 = 0.35;
/// Smoothing passes of the depth the facing is judged on.
const FACING_SMOOTHING: usize = 8;
/// Mirror fill (what a turn shows that the portrait never showed squarely). The far side of a
/// turned portrait is foreshortened: a few pixels of cheek, then the silhouette (hair,
/// background). Turned to face the camera, those pixels were stretched over the cheek as a
/// saw-tooth of hair. The same surface on the near side, mirrored, was seen squarely. So a mesh
/// point whose mirror image covered at least `MIRROR_MARGIN` times its own area in the portrait
/// (fully at `MIRROR_MARGIN + MIRROR_RAMP`) takes its texture from that mirror image while the
/// turn magnifies its own by more than `STRETCH_MARGIN` (fully at `STRETCH_MARGIN +
/// STRETCH_RAMP`). Areas: the mesh triangles around the point. A frontal portrait's sides are
/// alike, so it keeps its own pixels.
const MIRROR_MARGIN: f32 = 1.4;
const MIRROR_RAMP: f32 = 0.8;
const STRETCH_MARGIN: f32 = 1.1;
const STRETCH_RAMP: f32 = 0.3;
/// A mesh triangle that the turn shows from behind (its orientation flipped) is still drawn if
/// the smooth surface around it faces the camera by at least this much (the normals' z, mean of
/// its corners). Why: at the silhouette of a turned portrait the landmark depth is noisy and
/// its triangles overlap; a turn towards the camera flipped every other one, and culling them
/// opened a saw-tooth of holes. Where the smooth surface turns away (the far side), they are
/// culled as before.
const DRAW_FACING: f32 = 0.2;
/// Depth tolerance of the z-buffer (pixels): within it, the later-drawn triangle wins (drawing
/// order puts slivers and openings first, under the rest, as in 2-D).
const Z_TOLERANCE: f32 = 0.5;
/// Depth added to the triangles that touch a ring or the border, so that the face's own surface
/// always wins over them. Why: the rings sit at the pivot's depth, in front of the face's sides
/// (the outline lies near the ears, behind the pivot), so where a turn slid the outline over the
/// band between outline and rings, the band was drawn over the cheek; its triangles alternate
/// with the cheek's along the outline, which showed as a saw-tooth tear (sk_4 at 25 degrees).
/// Hair and background around the face lie behind it at any angle the limits allow; what is in
/// front of the face (fringe, glasses) is part of the mesh.
const BEHIND_FACE: f32 = 1.0e6;

/// The depth of a warp model's control points at rest, and the head's pivot.
#[derive(Clone, Debug)]
pub struct DepthModel {
    rest_z: Vec<f32>,
    pivot: [f64; 3],
    /// Per mesh point: how much of the retargeted (non-rigid) motion it keeps, from how squarely
    /// its surface faces the camera at rest (see [`FACING_FULL`]).
    expression_w: Vec<f32>,
    /// The smooth surface at rest: per mesh point its normal and area, and the mirror fill's
    /// preference (see [`MIRROR_MARGIN`]).
    surface: Surface,
    /// Boundary points that move with the oval (see [`seal_outline`]).
    sealed: Vec<Sealed>,
}

/// Per mesh point: the unit normal of the smoothed surface at rest (oriented so that n_z > 0 is
/// seen from the front), the area of the mesh triangles around it at rest, those triangles, and
/// how much it prefers its mirror image's texture (empty unless the mesh is MediaPipe's 468).
#[derive(Clone, Debug)]
struct Surface {
    normal: Vec<[f64; 3]>,
    area: Vec<f64>,
    around: Vec<Vec<usize>>,
    preference: Vec<f32>,
}

/// Where the control points go for a turned head: image positions and depths; per control point
/// how much of its texture comes from its mirror image (empty: none), and per mesh point how
/// squarely its smoothed surface faces the camera after the turn (empty: unknown).
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    pub pts: Vec<Pt>,
    pub z: Vec<f32>,
    pub fill: Vec<f32>,
    pub facing: Vec<f32>,
}

impl DepthModel {
    /// `mesh_depth`: the portrait's mesh depth (canvas pixels, z away from the camera). Rings get
    /// the pivot's depth, the fixed border lies behind everything.
    pub fn new(model: &WarpModel, mesh_depth: &[f32]) -> Result<DepthModel> {
        let n = model.n_mesh();
        if mesh_depth.len() != n || !mesh_depth.iter().all(|z| z.is_finite()) {
            return Err(Error::Invalid(format!("warp depth: {} depths for {n} mesh points, or not finite", mesh_depth.len())));
        }
        // Where the surface faces the camera (|n_z| high), the measured depth is kept as it is: a
        // smoothed nose would turn less than the driver's. Where it is slanted, it is smoothed.
        let raw3 = with_depth(&model.rest()[..n], mesh_depth);
        // The slant that matters is the face's (its sides, the far side of a turned portrait),
        // not the lips' or the chin's own curvature: judged on a well-smoothed depth, and the
        // weights themselves smoothed, so neighbouring points never differ abruptly (a point that
        // keeps its motion next to one that drops it is a fold, which the repair then fixes by
        // shrinking the whole expression: a turned painting's mouth stayed shut).
        let coarse = with_depth(&model.rest()[..n], &smooth_depth(model, mesh_depth, FACING_SMOOTHING));
        let normal = normals(model, &coarse);
        let rest_facing: Vec<f32> = normal.iter().map(|v| v[2] as f32).collect();
        let w0: Vec<f32> = rest_facing
            .iter()
            .map(|&f| super::geometry::smoothstep(((f - FACING_NONE) / (FACING_FULL - FACING_NONE)).clamp(0.0, 1.0)))
            .collect();
        let mut full_w = smooth_depth(model, &w0, 2);
        // The lips and lids always move: a mouth that cannot open or an eye that cannot blink is
        // worse than any zig-zag (the fade is for the slanted sides of the face).
        if n == super::landmarks::MESH_POINTS {
            for &i in super::mesh::INNER_LIPS.iter().chain(&super::mesh::OUTER_LIPS).chain(&super::mesh::EYE_R).chain(&super::mesh::EYE_L) {
                full_w[i] = 1.0;
            }
        }
        let smooth = smooth_depth(model, mesh_depth, DEPTH_SMOOTHING);
        let mut mesh_depth: Vec<f32> = (0..n).map(|i| smooth[i] + full_w[i] * (mesh_depth[i] - smooth[i])).collect();
        let sealed = seal_outline(model, &mut mesh_depth);
        // The pivot from the measured depth: the driver's turn is measured about the same point
        // (`avatar::turn`), so that the head's translation stays consistent.
        let pivot = pivot(&raw3).ok_or_else(|| Error::Invalid("warp depth: no pivot (mesh too small)".into()))?;
        let zmax = mesh_depth.iter().fold(f32::MIN, |a, &b| a.max(b)).max(pivot[2] as f32);
        let r = model.roi();
        let far = zmax + (r[2] - r[0]).max(r[3] - r[1]) as f32;
        let ring_end = n + 2 * model.n_ring();
        let rest_z = (0..model.rest().len()).map(|i| if i < n { mesh_depth[i] } else if i < ring_end { pivot[2] as f32 } else { far }).collect();
        let expression_w = full_w;
        let surface = Surface::new(model, normal);
        Ok(DepthModel { rest_z, pivot, expression_w, surface, sealed })
    }

    /// Per control point: how much of its texture comes from its mirror image for the targets
    /// `pts` of a pose with scale `scale` (0 for rings and border, and wherever the turn does
    /// not magnify the portrait's own texture).
    fn fill_weights(&self, model: &WarpModel, pts: &[Pt], scale: f64) -> Vec<f32> {
        let f = &self.surface;
        if f.preference.is_empty() {
            return Vec::new();
        }
        let tris = model.triangles();
        let s2 = scale * scale;
        let mut w = vec![0.0f32; pts.len()];
        for (i, wi) in w.iter_mut().enumerate().take(f.preference.len()) {
            let p = f.preference[i];
            if p <= 0.0 || !(f.area[i] > 0.0) {
                continue;
            }
            let now: f64 = f.around[i].iter().map(|&k| tri_area(tris[k].map(|j| pts[j as usize]))).sum();
            let stretch = (now / (f.area[i] * s2)) as f32;
            *wi = p * super::geometry::smoothstep(((stretch - STRETCH_MARGIN) / STRETCH_RAMP).clamp(0.0, 1.0));
        }
        w
    }

    /// Per mesh point: the z of its smoothed surface normal turned by `rot`.
    fn facing_after(&self, rot: &Rot3) -> Vec<f32> {
        self.surface.normal.iter().map(|&v| rot.apply(v)[2] as f32).collect()
    }

    /// The head's pivot at rest (canvas pixels and depth).
    pub fn pivot(&self) -> [f64; 3] {
        self.pivot
    }

    /// Depth of every control point at rest.
    pub fn rest_depth(&self) -> &[f32] {
        &self.rest_z
    }

    /// The pivot carried by the 2-D pose `q` (depth scaled with it).
    fn posed_pivot(&self, q: &Similarity) -> [f64; 3] {
        let c = q.apply_f64([self.pivot[0], self.pivot[1]]);
        [c[0], c[1], self.pivot[2] * q.scale]
    }

    /// A point already carried by the 2-D pose `q` (image position `p`, rest depth `z`), turned by
    /// `rot` about the posed pivot.
    pub fn turn_point(&self, q: &Similarity, rot: &Rot3, p: Pt, z: f32) -> [f64; 3] {
        turn_about(self.posed_pivot(q), q, rot, p, z)
    }

    /// Control-point targets for a retargeted mesh `mesh` seen from the front (canvas pixels,
    /// carrying the 2-D pose `q`: translation, scale, residual roll) and the head's rotation
    /// `rot` relative to the portrait: mesh turned in 3-D, rings turned part-way (their follow
    /// weights) plus part of the outline's own motion, border fixed; folds that the expression
    /// makes on the facing side are repaired towards the rigidly turned sheet.
    pub fn targets(&self, model: &WarpModel, mesh: &[Pt], q: &Similarity, rot: &Rot3) -> Targets {
        let rest = model.rest();
        let n = model.n_mesh();
        let nr = model.n_ring();
        let ok = mesh.len() == n && mesh.iter().all(|p| p[0].is_finite() && p[1].is_finite()) && q.is_finite() && rot.is_finite();
        if !ok {
            return Targets { pts: rest.to_vec(), z: self.rest_z.clone(), fill: Vec::new(), facing: Vec::new() };
        }
        let ring_end = n + 2 * nr;
        let weights = model.ring_weights();
        let c = self.posed_pivot(q);
        // The rigidly turned sheet: what the fold repair falls back to.
        let rigid3: Vec<[f64; 3]> = (0..rest.len())
            .map(|i| {
                let r = [rest[i][0] as f64, rest[i][1] as f64, self.rest_z[i] as f64];
                if i >= ring_end {
                    return r;
                }
                let full = turn_about(c, q, rot, q.apply(rest[i]), self.rest_z[i]);
                let f = if i < n { 1.0 } else { weights[i - n].0 as f64 };
                [r[0] + f * (full[0] - r[0]), r[1] + f * (full[1] - r[1]), r[2] + f * (full[2] - r[2])]
            })
            .collect();
        let mut dst3 = rigid3.clone();
        let expression = |i: usize| {
            let r = q.apply(rest[i]);
            let w = self.expression_w[i];
            [w * (mesh[i][0] - r[0]), w * (mesh[i][1] - r[1])]
        };
        for i in 0..n {
            let r = q.apply(rest[i]);
            let e = expression(i);
            dst3[i] = turn_about(c, q, rot, [r[0] + e[0], r[1] + e[1]], self.rest_z[i]);
        }
        for s in &self.sealed {
            let r = q.apply(rest[s.point]);
            let (a, b) = (expression(s.by[0]), expression(s.by[1]));
            let p = [r[0] + s.w[0] * a[0] + s.w[1] * b[0], r[1] + s.w[0] * a[1] + s.w[1] * b[1]];
            dst3[s.point] = turn_about(c, q, rot, p, self.rest_z[s.point]);
        }
        // Rings also follow part of the outline's own (non-rigid) motion: a jaw dropping.
        if nr == FACE_OVAL.len() {
            for (k, &o) in FACE_OVAL.iter().enumerate() {
                let r = [dst3[o][0] - rigid3[o][0], dst3[o][1] - rigid3[o][1], dst3[o][2] - rigid3[o][2]];
                for j in [k, nr + k] {
                    let (idx, f) = (n + j, weights[j].1 as f64);
                    for c in 0..3 {
                        dst3[idx][c] += f * r[c];
                    }
                }
            }
        }
        let safe: Vec<Pt> = rigid3.iter().map(|p| [p[0] as f32, p[1] as f32]).collect();
        let mut pts: Vec<Pt> = dst3.iter().map(|p| [p[0] as f32, p[1] as f32]).collect();
        // A fold is judged against the rigidly turned sheet: triangles the turn shows edge-on or
        // from behind are hidden by the depth test, not repaired.
        let s2 = q.scale * q.scale;
        let refa: Vec<f64> = model
            .triangles()
            .iter()
            .zip(model.rest_areas())
            .map(|(t, &a0)| {
                if a0 == 0.0 {
                    return 0.0;
                }
                let a = signed_area(safe[t[0] as usize], safe[t[1] as usize], safe[t[2] as usize]);
                if a * a0 > 0.0 && a.abs() > FACING_MIN * a0.abs() * s2 { a } else { 0.0 }
            })
            .collect();
        model.repair_folds(&mut pts, &safe, Some(&refa));
        let z = dst3.iter().map(|p| p[2] as f32).collect();
        let fill = self.fill_weights(model, &pts, q.scale);
        Targets { pts, z, fill, facing: self.facing_after(rot) }
    }
}

/// Mesh points on the sheet's face boundary that are not on the face oval (the triangulation
/// ties the rings to whatever mesh points lie on the mesh's hull; on a turned portrait, points of
/// the far cheek's side project on or outside the oval) take the depth of the oval next to
/// them, so that a turn moves them with the outline. Why: nearer to the camera than the oval,
/// they swung inwards when the far side turned towards the camera and pulled the ring band (hair)
/// into the cheek as notches between the oval's points.
/// Returns, per such point, the two oval points and their weights; its retargeted motion is
/// theirs too (the retargeter's own motion there is the far cheek's landmark noise).
fn seal_outline(model: &WarpModel, depth: &mut [f32]) -> Vec<Sealed> {
    let n = depth.len();
    if n != super::landmarks::MESH_POINTS || model.n_ring() != FACE_OVAL.len() {
        return Vec::new();
    }
    let rest = model.rest();
    let ring = n..n + 2 * model.n_ring();
    let mut sealed = Vec::new();
    for i in 0..n {
        if FACE_OVAL.contains(&i) || !model.neighbours()[i].iter().any(|&j| ring.contains(&(j as usize))) {
            continue;
        }
        // Inverse-distance mean of the two nearest oval points.
        let mut near: Vec<(f64, usize)> = FACE_OVAL.iter().map(|&o| (super::geometry::dist(rest[i], rest[o]), o)).collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (w0, w1) = (1.0 / (near[0].0 + 1e-3), 1.0 / (near[1].0 + 1e-3));
        let w = [(w0 / (w0 + w1)) as f32, (w1 / (w0 + w1)) as f32];
        let by = [near[0].1, near[1].1];
        depth[i] = w[0] * depth[by[0]] + w[1] * depth[by[1]];
        sealed.push(Sealed { point: i, by, w });
    }
    sealed
}

/// A mesh point on the sheet's face boundary that moves with the oval (see [`seal_outline`]).
#[derive(Clone, Debug)]
struct Sealed {
    point: usize,
    by: [usize; 2],
    w: [f32; 2],
}

impl Surface {
    fn new(model: &WarpModel, normal: Vec<[f64; 3]>) -> Surface {
        let n = normal.len();
        let mut around = vec![Vec::new(); n];
        let mut area = vec![0.0f64; n];
        let rest = model.rest();
        for (k, (t, &a0)) in model.triangles().iter().zip(model.rest_areas()).enumerate() {
            if a0 == 0.0 || t.iter().any(|&i| i as usize >= n) {
                continue;
            }
            let a = tri_area(t.map(|i| rest[i as usize]));
            for &i in t {
                around[i as usize].push(k);
                area[i as usize] += a;
            }
        }
        let preference = if n == super::landmarks::MESH_POINTS {
            let mirror = super::mesh::mirror();
            let mut pref: Vec<f32> = (0..n)
                .map(|i| {
                    let ratio = if area[i] > 0.0 { (area[mirror[i]] / area[i]) as f32 } else { 0.0 };
                    super::geometry::smoothstep(((ratio - MIRROR_MARGIN) / MIRROR_RAMP).clamp(0.0, 1.0))
                })
                .collect();
            // Eyes and lips keep their own texture: they carry the expression and the gaze, and
            // the refiner repaints them.
            for &i in super::mesh::INNER_LIPS.iter().chain(&super::mesh::OUTER_LIPS).chain(&super::mesh::EYE_R).chain(&super::mesh::EYE_L) {
                pref[i] = 0.0;
            }
            // Smoothed, so that the seam between own and mirrored texture is a blend.
            smooth_depth(model, &pref, 2)
        } else {
            Vec::new()
        };
        Surface { normal, area, around, preference }
    }
}

/// Unsigned area of a triangle.
fn tri_area(p: [Pt; 3]) -> f64 {
    signed_area(p[0], p[1], p[2]).abs()
}

/// Per mesh point: its unit surface normal at rest, oriented so that n_z > 0 is seen from the
/// front (|n_z| is how squarely it faces the camera), from the area-weighted normals of the
/// warp's triangles among mesh points.
fn normals(model: &WarpModel, mesh3: &[super::head3d::P3]) -> Vec<[f64; 3]> {
    let n = mesh3.len();
    let mut acc = vec![[0.0f64; 3]; n];
    for (t, &a0) in model.triangles().iter().zip(model.rest_areas()) {
        // Slivers and the triangles spanning the eye and mouth openings are not surface: across
        // a closed mouth they join the upper and lower inner lips edge-on, and counting them made
        // the lips look slanted, so the mouth of some portraits never opened.
        if a0 == 0.0 || t.iter().any(|&i| i as usize >= n) {
            continue;
        }
        let [a, b, c] = t.map(|i| mesh3[i as usize].map(|v| v as f64));
        let (u, v) = ([b[0] - a[0], b[1] - a[1], b[2] - a[2]], [c[0] - a[0], c[1] - a[1], c[2] - a[2]]);
        let nrm = [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]];
        // One orientation for all (the triangulation's is consistent in 2-D, so n_z's sign is).
        let s = if nrm[2] < 0.0 { -1.0 } else { 1.0 };
        for &i in t {
            for k in 0..3 {
                acc[i as usize][k] += s * nrm[k];
            }
        }
    }
    acc.iter()
        .map(|v| {
            let l = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            if l > 1e-12 { v.map(|c| c / l) } else { [0.0, 0.0, 1.0] }
        })
        .collect()
}

/// `z` smoothed over the mesh's own edges in the warp's triangulation, `passes` times.
fn smooth_depth(model: &WarpModel, z: &[f32], passes: usize) -> Vec<f32> {
    let n = z.len();
    let nb: Vec<Vec<usize>> = model.neighbours()[..n].iter().map(|v| v.iter().map(|&j| j as usize).filter(|&j| j < n).collect()).collect();
    let mut cur = z.to_vec();
    for _ in 0..passes {
        cur = (0..n)
            .map(|i| if nb[i].is_empty() { cur[i] } else { 0.5 * cur[i] + 0.5 * nb[i].iter().map(|&j| cur[j]).sum::<f32>() / nb[i].len() as f32 })
            .collect();
    }
    cur
}

/// A point carried by the 2-D pose `q` (position `p`, rest depth `z`, scaled with `q`) turned by
/// `rot` about the posed pivot `c`.
fn turn_about(c: [f64; 3], q: &Similarity, rot: &Rot3, p: Pt, z: f32) -> [f64; 3] {
    rotate_about(rot, c, [p[0] as f64, p[1] as f64, z as f64 * q.scale])
}

/// The affine function over triangle `d` that takes the values `z` at its vertices (a depth, a
/// source coordinate, a weight): `z(x, y) = a x + b y + c`.
fn plane(d: [Pt; 3], z: [f32; 3]) -> Option<[f64; 3]> {
    barycentric(d).map(|l| interpolant(&l, z.map(f64::from)))
}

/// Renders the warp of `src` (the canvas) for turned targets `t` into `out` (same size), ROI
/// only, with a z-buffer; triangles facing away (orientation opposite to rest) are not drawn.
/// Returns the number of pixels written.
pub fn render(model: &WarpModel, src: &Frame, t: &Targets, out: &mut Frame) -> Result<usize> {
    if src.width != model.width() || src.height != model.height() || !src.len_ok() {
        return Err(Error::Invalid(format!("warp: canvas is {}x{}, model was built for {}x{}", src.width, src.height, model.width(), model.height())));
    }
    if out.width != model.width() || out.height != model.height() || !out.len_ok() {
        return Err(Error::Invalid("warp: output frame has the wrong size".into()));
    }
    let rest = model.rest();
    if t.pts.len() != rest.len() || t.z.len() != rest.len() || !t.pts.iter().all(|p| p[0].is_finite() && p[1].is_finite()) || !t.z.iter().all(|z| z.is_finite()) {
        return Err(Error::Invalid("warp: target points or depths missing or not finite".into()));
    }
    if !(t.fill.is_empty() || (t.fill.len() == rest.len() && model.n_mesh() == super::landmarks::MESH_POINTS && t.fill.iter().all(|w| (0.0..=1.0).contains(w)))) {
        return Err(Error::Invalid("warp: mirror-fill weights must be one in 0..=1 per point of a 468-point mesh".into()));
    }
    if !(t.facing.is_empty() || (t.facing.len() == model.n_mesh() && t.facing.iter().all(|f| f.is_finite()))) {
        return Err(Error::Invalid("warp: surface facing must be one finite value per mesh point".into()));
    }
    let mirror = super::mesh::mirror();
    let roi = model.roi();
    let rw = (roi[2] - roi[0]) as usize;
    let mut zbuf = vec![f32::INFINITY; rw * (roi[3] - roi[1]) as usize];
    let areas = model.rest_areas();
    let facing = areas.iter().copied().find(|&a| a != 0.0).map_or(1.0, f64::signum);
    let width = model.width() as usize;
    let n_mesh = model.n_mesh() as u32;
    let mut written = 0;
    for &k in model.order() {
        let tri = model.triangles()[k];
        let layer = if tri.iter().any(|&i| i >= n_mesh) { BEHIND_FACE } else { 0.0 };
        let d = tri.map(|i| t.pts[i as usize]);
        let s = tri.map(|i| rest[i as usize]);
        // Openings and slivers (rest area 0) have no facing of their own: always drawn, first.
        // A flipped face triangle is culled unless its smooth surface still faces the camera
        // (see [`DRAW_FACING`]).
        if areas[k] != 0.0 && signed_area(d[0], d[1], d[2]) * facing <= 0.0 {
            let smooth_facing = (layer == 0.0 && !t.facing.is_empty()).then(|| tri.iter().map(|&i| t.facing[i as usize]).sum::<f32>() / 3.0);
            if !smooth_facing.is_some_and(|f| f >= DRAW_FACING) {
                continue;
            }
        }
        let Some(p) = plane(d, tri.map(|i| t.z[i as usize])) else { continue };
        // Mirror fill: the same pixel's place in the mirrored triangle, and the blend weight,
        // both affine over the triangle.
        let fill = (layer == 0.0 && !t.fill.is_empty() && tri.iter().any(|&i| t.fill[i as usize] > 0.0))
            .then(|| {
                let m = tri.map(|i| rest[mirror[i as usize]]);
                Some((plane(d, m.map(|v| v[0]))?, plane(d, m.map(|v| v[1]))?, plane(d, tri.map(|i| t.fill[i as usize]))?))
            })
            .flatten();
        written += raster_triangle(d, s, roi, |x, y, sx, sy| {
            let (xf, yf) = (x as f64, y as f64);
            let z = (p[0] * xf + p[1] * yf + p[2]) as f32 + layer;
            let zi = (y - roi[1]) as usize * rw + (x - roi[0]) as usize;
            if z <= zbuf[zi] + Z_TOLERANCE {
                zbuf[zi] = z;
                let mut px = sample_bilinear(src, sx, sy);
                if let Some((mx, my, mw)) = &fill {
                    let w = (mw[0] * xf + mw[1] * yf + mw[2]).clamp(0.0, 1.0);
                    if w > 1.0 / 512.0 {
                        let q = sample_bilinear(src, mx[0] * xf + mx[1] * yf + mx[2], my[0] * xf + my[1] * yf + my[2]);
                        for k in 0..3 {
                            px[k] = (px[k] as f64 + w * (q[k] as f64 - px[k] as f64)).round() as u8;
                        }
                    }
                }
                let o = 3 * (y as usize * width + x as usize);
                out.data[o..o + 3].copy_from_slice(&px);
            }
        });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::head3d::{pivot, rotate_about, with_depth, Euler};
    use crate::core::warp::tests::{synthetic_mesh, texture};

    fn yaw(deg: f64) -> Rot3 {
        Rot3::from_euler(Euler { yaw: deg.to_radians(), ..Euler::ZERO })
    }

    /// Depth of a face-like dome over the synthetic mesh: 0 at the outline, -`h` at the centre
    /// (towards the camera), plus a nose bump.
    fn dome(mesh: &[Pt], c: Pt, r: f32, h: f32) -> Vec<f32> {
        mesh.iter()
            .map(|p| {
                let (dx, dy) = ((p[0] - c[0]) / (0.8 * r), (p[1] - c[1]) / r);
                let d2 = (dx * dx + dy * dy).min(1.0);
                let nose = 0.6 * h * (-(dx * dx + dy * dy) / 0.02).exp();
                -h * (1.0 - d2).sqrt() - nose
            })
            .collect()
    }

    #[test]
    fn no_turn_is_the_plain_warp_and_rest_is_the_portrait() {
        let img = texture(320, 300);
        let mesh = synthetic_mesh(160.0, 150.0, 80.0);
        let m = WarpModel::new(320, 300, &mesh).unwrap();
        let dm = DepthModel::new(&m, &dome(&mesh, [160.0, 150.0], 80.0, 40.0)).unwrap();
        let t = dm.targets(&m, &mesh, &Similarity::IDENTITY, &Rot3::IDENTITY);
        assert_eq!(t.pts, m.rest());
        let mut out = img.clone();
        render(&m, &img, &t, &mut out).unwrap();
        assert_eq!(out.data, img.data);
    }

    /// A pure rotation of a flat mesh projects to an affine map of the image: the rendered turn
    /// must equal OpenCV's warpAffine with that map (within a grey level) inside the face.
    #[test]
    fn a_turned_flat_face_equals_the_affine_render() {
        use opencv::core::{Mat, Scalar, Size, Vec3b, BORDER_REPLICATE};
        let (w, h) = (360u32, 340u32);
        let mut img = Frame::black(w, h);
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f32, y as f32);
                let o = 3 * (y * w + x) as usize;
                img.data[o] = (128.0 + 60.0 * (xf / 13.0).sin() * (yf / 17.0).cos()) as u8;
                img.data[o + 1] = (128.0 + 70.0 * ((xf + yf) / 19.0).sin()) as u8;
                img.data[o + 2] = (xf * 200.0 / w as f32 + 20.0 * (yf / 9.0).sin()) as u8;
            }
        }
        let mesh = synthetic_mesh(180.0, 170.0, 90.0);
        let m = WarpModel::new(w, h, &mesh).unwrap();
        // Flat face at the pivot's depth (every control point at z = 0).
        let dm = DepthModel::new(&m, &vec![0.0; 468]).unwrap();
        let pv = dm.pivot();
        for (e, q) in [
            (Euler { yaw: 25f64.to_radians(), ..Euler::ZERO }, Similarity::IDENTITY),
            (Euler { yaw: -20f64.to_radians(), pitch: 12f64.to_radians(), roll: 0.1 }, Similarity::about(1.05, 0.0, [180.0, 170.0], [4.0, -3.0])),
        ] {
            let rot = Rot3::from_euler(e);
            let moved: Vec<Pt> = mesh.iter().map(|&p| q.apply(p)).collect();
            let t = dm.targets(&m, &moved, &q, &rot);
            let mut out = img.clone();
            render(&m, &img, &t, &mut out).unwrap();
            // The projected map x -> P(R (q(x) - c) + c) restricted to z = 0 is affine.
            let c = q.apply_f64([pv[0], pv[1]]);
            let r = &rot.0;
            let (a, b) = (q.scale * q.angle.cos(), q.scale * q.angle.sin());
            // q linear part [[a, -b], [b, a]]; then R's top-left 2x2.
            let l = [[r[0][0] * a + r[0][1] * b, -r[0][0] * b + r[0][1] * a], [r[1][0] * a + r[1][1] * b, -r[1][0] * b + r[1][1] * a]];
            let q0 = q.apply_f64([0.0, 0.0]);
            let off = [
                r[0][0] * (q0[0] - c[0]) + r[0][1] * (q0[1] - c[1]) + r[0][2] * (-pv[2] * q.scale) + c[0],
                r[1][0] * (q0[0] - c[0]) + r[1][1] * (q0[1] - c[1]) + r[1][2] * (-pv[2] * q.scale) + c[1],
            ];
            let mm = Mat::from_slice_2d(&[[l[0][0], l[0][1], off[0]], [l[1][0], l[1][1], off[1]]]).unwrap();
            let src = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, &img.data).unwrap();
            let mut cv = Mat::default();
            opencv::imgproc::warp_affine(&src, &mut cv, &mm, Size::new(w as i32, h as i32), opencv::imgproc::INTER_LINEAR, BORDER_REPLICATE, Scalar::default()).unwrap();
            let cvb = {
                use opencv::prelude::MatTraitConstManual;
                cv.data_bytes().unwrap().to_vec()
            };
            // Inside the turned face: mesh points' hull shrunk (the oval's 85 %).
            let centre = [t.pts[..468].iter().map(|p| p[0]).sum::<f32>() / 468.0, t.pts[..468].iter().map(|p| p[1]).sum::<f32>() / 468.0];
            let oval: Vec<Pt> = FACE_OVAL.iter().map(|&i| [centre[0] + 0.8 * (t.pts[i][0] - centre[0]), centre[1] + 0.8 * (t.pts[i][1] - centre[1])]).collect();
            let inside = |x: f32, y: f32| crate::core::geometry::inside_polygon(&oval, [x, y]);
            let (mut worst, mut n) = (0i32, 0);
            for y in 0..h {
                for x in 0..w {
                    if !inside(x as f32, y as f32) {
                        continue;
                    }
                    n += 1;
                    let o = 3 * (y * w + x) as usize;
                    for k in 0..3 {
                        worst = worst.max((out.data[o + k] as i32 - cvb[o + k] as i32).abs());
                    }
                }
            }
            assert!(n > 8_000, "{n}");
            assert!(worst <= 1, "max difference to the affine render inside the turned face: {worst} ({e:?})");
        }
    }

    #[test]
    fn turned_dome_has_no_hole_and_hides_its_far_side() {
        let (w, h) = (400u32, 380u32);
        let img = texture(w, h);
        let (c, r) = ([200.0f32, 190.0], 90.0);
        let mesh = synthetic_mesh(c[0], c[1], r);
        let m = WarpModel::new(w, h, &mesh).unwrap();
        let dm = DepthModel::new(&m, &dome(&mesh, c, r, 60.0)).unwrap();
        for deg in [-35.0, -25.0, 25.0, 35.0] {
            let rot = yaw(deg);
            let t = dm.targets(&m, &mesh, &Similarity::IDENTITY, &rot);
            // Sentinel output: any pixel of the ROI that nothing drew stays magenta.
            let mut out = Frame::black(w, h);
            for px in out.data.chunks_exact_mut(3) {
                px.copy_from_slice(&[255, 0, 255]);
            }
            render(&m, &img, &t, &mut out).unwrap();
            let roi = m.roi();
            for y in roi[1]..roi[3] {
                for x in roi[0]..roi[2] {
                    let o = 3 * (y * w + x) as usize;
                    assert_ne!(&out.data[o..o + 3], &[255, 0, 255], "hole at ({x}, {y}) for yaw {deg}");
                }
            }
            // Some triangles faced away (the far side): they were hidden, not folded over.
            let facing = m.rest_areas().iter().copied().find(|&a| a != 0.0).unwrap().signum();
            let away = m
                .triangles()
                .iter()
                .zip(m.rest_areas())
                .filter(|(tri, &a0)| a0 != 0.0 && signed_area(t.pts[tri[0] as usize], t.pts[tri[1] as usize], t.pts[tri[2] as usize]) * facing < 0.0)
                .count();
            if f64::abs(deg) >= 35.0 {
                assert!(away > 0, "yaw {deg}: a 60-px dome turned this far shows part of its far side from behind");
            }
        }
    }

    /// A left-right symmetric 468-point mesh in MediaPipe's sense (`mesh::mirror`): the
    /// synthetic mesh with each side's point forced to its side and its mirror image placed
    /// opposite, midline points on the midline.
    fn symmetric_mesh(cx: f32, cy: f32, r: f32) -> Vec<Pt> {
        let base = synthetic_mesh(cx, cy, r);
        let m = crate::core::mesh::mirror();
        let mut pts = base.clone();
        for i in 0..468 {
            if m[i] == i {
                pts[i] = [cx, base[i][1]];
            } else if i < m[i] {
                let dx = (base[i][0] - cx).abs().max(1.0);
                pts[i] = [cx - dx, base[i][1]];
                pts[m[i]] = [cx + dx, base[i][1]];
            }
        }
        pts
    }

    /// Mirror fill: a portrait turned by 30 degrees shows its far side foreshortened; turned back
    /// to the front, that side's own few pixels would be stretched over it, so it takes the near
    /// side's texture, mirrored. A frontal portrait keeps its own pixels at any turn.
    #[test]
    fn a_turned_portraits_far_side_takes_the_mirrored_near_side() {
        let (w, h) = (420u32, 400u32);
        let (c, r) = ([210.0f32, 200.0], 95.0);
        let front = symmetric_mesh(c[0], c[1], r);
        let depth = dome(&front, c, r, 70.0);
        // The frontal portrait: no fill at any turn.
        let m0 = WarpModel::new(w, h, &front).unwrap();
        let dm0 = DepthModel::new(&m0, &depth).unwrap();
        for deg in [-30.0, 30.0] {
            let t = dm0.targets(&m0, &front, &Similarity::IDENTITY, &yaw(deg));
            assert!(t.fill.iter().all(|&f| f < 0.05), "frontal portrait, yaw {deg}: fill up to {:?}", t.fill.iter().cloned().fold(0.0f32, f32::max));
        }
        // The turned portrait: the frontal face turned by 30 degrees about its pivot.
        let pv = pivot(&with_depth(&front, &depth)).unwrap();
        let rot = yaw(30.0);
        let turned3: Vec<[f64; 3]> = front.iter().zip(&depth).map(|(p, &z)| rotate_about(&rot, pv, [p[0] as f64, p[1] as f64, z as f64])).collect();
        let portrait: Vec<Pt> = turned3.iter().map(|p| [p[0] as f32, p[1] as f32]).collect();
        let pdepth: Vec<f32> = turned3.iter().map(|p| p[2] as f32).collect();
        // The face's midline in an image: x at height y, from the midline points (nearest above
        // and below).
        let midline = |pts: &[Pt], y: f32| {
            let mut ml: Vec<Pt> = crate::core::mesh::MIDLINE.iter().map(|&i| pts[i]).collect();
            ml.sort_by(|a, b| a[1].total_cmp(&b[1]));
            let k = ml.iter().position(|p| p[1] >= y).unwrap_or(ml.len() - 1).max(1);
            let (a, b) = (ml[k - 1], ml[k]);
            let t = if b[1] > a[1] { ((y - a[1]) / (b[1] - a[1])).clamp(0.0, 1.0) } else { 0.5 };
            a[0] + t * (b[0] - a[0])
        };
        // Canvas: red on the face's left of the midline, blue right of it (a little texture).
        let nose = portrait[1][0];
        let mut img = Frame::black(w, h);
        for y in 0..h {
            for x in 0..w {
                let o = 3 * (y * w + x) as usize;
                let v = ((x * 7 + y * 3) % 20) as u8;
                img.data[o..o + 3].copy_from_slice(&if (x as f32) < midline(&portrait, y as f32) { [200 + v, 40, 40] } else { [40, 40, 200 + v] });
            }
        }
        let m = WarpModel::new(w, h, &portrait).unwrap();
        let dm = DepthModel::new(&m, &pdepth).unwrap();
        // Which side is far: the one whose mesh is narrower in the portrait.
        let half = |pred: &dyn Fn(f32) -> bool| portrait.iter().filter(|p| pred(p[0])).map(|p| (p[0] - nose).abs()).fold(0.0f32, f32::max);
        let far_is_right = half(&|x| x > nose) < half(&|x| x < nose);
        let back = dm.targets(&m, &portrait, &Similarity::IDENTITY, &yaw(-30.0));
        assert!(back.fill.iter().any(|&f| f > 0.5), "the far side is filled: max {:?}", back.fill.iter().cloned().fold(0.0f32, f32::max));
        let mut out = img.clone();
        render(&m, &img, &back, &mut out).unwrap();
        // On the far half of the turned-back face, part of the cheek is now the near side's
        // colour; on the near half, none of the far side's.
        let (mut far, mut mirrored, mut near, mut foreign) = (0, 0, 0, 0);
        let hull: Vec<Pt> = FACE_OVAL.iter().map(|&i| back.pts[i]).collect();
        let inside = |x: f32, y: f32| crate::core::geometry::inside_polygon(&hull, [x, y]);
        for y in 0..h {
            for x in 0..w {
                if !inside(x as f32, y as f32) {
                    continue;
                }
                let o = 3 * (y * w + x) as usize;
                let red = out.data[o] > out.data[o + 2];
                let mid = midline(&back.pts, y as f32);
                let right = x as f32 > mid + 5.0;
                let left = (x as f32) < mid - 5.0;
                if (far_is_right && right) || (!far_is_right && left) {
                    far += 1;
                    mirrored += usize::from(red == far_is_right);
                } else if right || left {
                    near += 1;
                    foreign += usize::from(red != far_is_right);
                }
            }
        }
        assert!(far > 2000 && near > 2000, "{far} {near}");
        assert!(mirrored * 5 >= far, "only {mirrored} of {far} far-side pixels took the near side's texture");
        assert!(foreign * 50 <= near, "{foreign} of {near} near-side pixels show the far side's colour");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mesh = synthetic_mesh(150.0, 150.0, 70.0);
        let m = WarpModel::new(300, 300, &mesh).unwrap();
        assert!(DepthModel::new(&m, &[0.0; 10]).is_err());
        let mut z = vec![0.0; 468];
        z[3] = f32::NAN;
        assert!(DepthModel::new(&m, &z).is_err());
        let dm = DepthModel::new(&m, &vec![0.0; 468]).unwrap();
        let mut bad = mesh.clone();
        bad[0] = [f32::NAN, 0.0];
        let t = dm.targets(&m, &bad, &Similarity::IDENTITY, &yaw(20.0));
        assert_eq!(t.pts, m.rest());
        let img = texture(300, 300);
        let mut out = img.clone();
        assert!(render(&m, &img, &Targets { pts: t.pts.clone(), z: vec![0.0; 3], fill: Vec::new(), facing: Vec::new() }, &mut out).is_err());
        assert!(render(&m, &img, &t, &mut Frame::black(10, 10)).is_err());
    }
}
