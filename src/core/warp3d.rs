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
use super::warp::{raster_triangle, sample_bilinear, signed_area, WarpModel};
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
/// Depth tolerance of the z-buffer (pixels): within it, the later-drawn triangle wins (drawing
/// order puts slivers and openings first, under the rest, as in 2-D).
const Z_TOLERANCE: f32 = 0.5;

/// The depth of a warp model's control points at rest, and the head's pivot.
#[derive(Clone, Debug)]
pub struct DepthModel {
    rest_z: Vec<f32>,
    pivot: [f64; 3],
    /// Per mesh point: how much of the retargeted (non-rigid) motion it keeps, from how squarely
    /// its surface faces the camera at rest (see [`FACING_FULL`]).
    expression_w: Vec<f32>,
}

/// Where the control points go for a turned head: image positions and depths.
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    pub pts: Vec<Pt>,
    pub z: Vec<f32>,
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
        let w0: Vec<f32> = facing(model, &coarse)
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
        let mesh_depth: Vec<f32> = (0..n).map(|i| smooth[i] + full_w[i] * (mesh_depth[i] - smooth[i])).collect();
        // The pivot from the measured depth: the driver's turn is measured about the same point
        // (`avatar::turn`), so that the head's translation stays consistent.
        let pivot = pivot(&raw3).ok_or_else(|| Error::Invalid("warp depth: no pivot (mesh too small)".into()))?;
        let zmax = mesh_depth.iter().fold(f32::MIN, |a, &b| a.max(b)).max(pivot[2] as f32);
        let r = model.roi();
        let far = zmax + (r[2] - r[0]).max(r[3] - r[1]) as f32;
        let ring_end = n + 2 * model.n_ring();
        let rest_z = (0..model.rest().len()).map(|i| if i < n { mesh_depth[i] } else if i < ring_end { pivot[2] as f32 } else { far }).collect();
        let expression_w = full_w;
        Ok(DepthModel { rest_z, pivot, expression_w })
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
            return Targets { pts: rest.to_vec(), z: self.rest_z.clone() };
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
        for i in 0..n {
            let r = q.apply(rest[i]);
            let w = self.expression_w[i];
            let p = [r[0] + w * (mesh[i][0] - r[0]), r[1] + w * (mesh[i][1] - r[1])];
            dst3[i] = turn_about(c, q, rot, p, self.rest_z[i]);
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
        Targets { pts, z }
    }
}

/// Per mesh point: the camera-facing component (|n_z|) of its surface normal at rest, from the
/// area-weighted normals of the warp's triangles among mesh points.
fn facing(model: &WarpModel, mesh3: &[super::head3d::P3]) -> Vec<f32> {
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
            if l > 1e-12 { (v[2].abs() / l) as f32 } else { 1.0 }
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

/// The depth plane of triangle `d` with vertex depths `z`: `z(x, y) = a x + b y + c`.
fn depth_plane(d: [Pt; 3], z: [f32; 3]) -> Option<[f64; 3]> {
    let area = signed_area(d[0], d[1], d[2]);
    if !(area.abs() > 1e-9) {
        return None;
    }
    let (x0, y0) = (d[0][0] as f64, d[0][1] as f64);
    let (x1, y1) = (d[1][0] as f64, d[1][1] as f64);
    let (x2, y2) = (d[2][0] as f64, d[2][1] as f64);
    let inv = 1.0 / (2.0 * area);
    let l = [
        [(y1 - y2) * inv, (x2 - x1) * inv, (x1 * y2 - x2 * y1) * inv],
        [(y2 - y0) * inv, (x0 - x2) * inv, (x2 * y0 - x0 * y2) * inv],
        [(y0 - y1) * inv, (x1 - x0) * inv, (x0 * y1 - x1 * y0) * inv],
    ];
    let mut p = [0.0; 3];
    for k in 0..3 {
        for (c, lk) in p.iter_mut().zip(l[k]) {
            *c += z[k] as f64 * lk;
        }
    }
    Some(p)
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
    let roi = model.roi();
    let rw = (roi[2] - roi[0]) as usize;
    let mut zbuf = vec![f32::INFINITY; rw * (roi[3] - roi[1]) as usize];
    let areas = model.rest_areas();
    let facing = areas.iter().copied().find(|&a| a != 0.0).map_or(1.0, f64::signum);
    let width = model.width() as usize;
    let mut written = 0;
    for &k in model.order() {
        let tri = model.triangles()[k];
        let d = tri.map(|i| t.pts[i as usize]);
        let s = tri.map(|i| rest[i as usize]);
        // Openings and slivers (rest area 0) have no facing of their own: always drawn, first.
        if areas[k] != 0.0 && signed_area(d[0], d[1], d[2]) * facing <= 0.0 {
            continue;
        }
        let Some(p) = depth_plane(d, tri.map(|i| t.z[i as usize])) else { continue };
        written += raster_triangle(d, s, roi, |x, y, sx, sy| {
            let z = (p[0] * x as f64 + p[1] * y as f64 + p[2]) as f32;
            let zi = (y - roi[1]) as usize * rw + (x - roi[0]) as usize;
            if z <= zbuf[zi] + Z_TOLERANCE {
                zbuf[zi] = z;
                let px = sample_bilinear(src, sx, sy);
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
    use crate::core::head3d::Euler;
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
            let inside = |x: f32, y: f32| {
                let mut c = false;
                for k in 0..oval.len() {
                    let (a, b) = (oval[k], oval[(k + 1) % oval.len()]);
                    if (a[1] > y) != (b[1] > y) && x < a[0] + (y - a[1]) / (b[1] - a[1]) * (b[0] - a[0]) {
                        c = !c;
                    }
                }
                c
            };
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
        assert!(render(&m, &img, &Targets { pts: t.pts.clone(), z: vec![0.0; 3] }, &mut out).is_err());
        assert!(render(&m, &img, &t, &mut Frame::black(10, 10)).is_err());
    }
}
