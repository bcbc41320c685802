//! Dense landmark warp: moves the portrait's own pixels so that its 468-point mesh lands on the
//! retargeted landmarks, at the output's resolution. Pure, no I/O.
//!
//! Why a warp: the portrait's pixels carry its identity and sharpness; a generator trained on a
//! CPU cannot. The warp is piecewise affine over a Delaunay triangulation (computed once per
//! avatar) of the mesh plus two rings extrapolated outward from the face oval and the fixed
//! border of the region of interest (ROI), so the face fades into a still background and the
//! per-frame cost depends on the face size, not the portrait's. How far each ring point follows
//! the head depends on where it lies ([`RingMotion`]): above the ear line hair and ears move
//! with the skull; below it the neck and the collar stay nearly where they are.
//!
//! Fold-overs: a target triangle whose orientation flips (or collapses) is repaired by pulling its
//! vertices towards their rigidly moved positions (pose only), which can never fold.
//! Sampling: bilinear with OpenCV's 1/32-pixel fixed-point weights, so that a similarity warp
//! matches `cv::warpAffine` to within one grey level.
use super::geometry::{smoothstep, Pt, Similarity};
use super::mesh::FACE_OVAL;
use super::types::Frame;
use crate::error::{Error, Result};

/// Scale of the inner ring around the face-oval centre.
pub const RING_INNER: f32 = 1.3;
/// Scale of the outer ring.
pub const RING_OUTER: f32 = 1.85;
/// Face-outline points beside the ears (right side, then left): the head's pivot region.
pub const EAR_SIDES: [usize; 10] = [127, 234, 93, 132, 162, 356, 454, 323, 361, 389];

/// How the two rings around the face follow it. Each ring point moves by `follow` x the head
/// motion (a similarity fitted to the outline beside the ears) plus `residual` x the nearest
/// outline point's own non-rigid motion (a jaw dropping, a forehead rising). Both are
/// interpolated between their `_up` values (at and above the ear line: hair, ears) and their
/// `_down` values (straight below the face: neck, collar) by the ring point's direction from
/// the face centre. The outer ring gets `outer_*` of the head motion and half the inner ring's
/// residual.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RingMotion {
    pub inner_up: f32,
    pub inner_down: f32,
    pub outer_up: f32,
    pub outer_down: f32,
    pub residual_up: f32,
    pub residual_down: f32,
}

impl RingMotion {
    /// Everything follows as the first version did: inner ring rigid, outer ring half-way,
    /// half the outline's residual, the same all around the face.
    pub const UNIFORM: RingMotion = RingMotion { inner_up: 1.0, inner_down: 1.0, outer_up: 0.5, outer_down: 0.5, residual_up: 0.5, residual_down: 0.5 };
}

impl Default for RingMotion {
    /// Fitted on 27 training clips (self-reenactment, `examples/warp_fit.rs`, docs/quality.md):
    /// the hair and ears follow the head, the neck half-way, the collar not at all; the jaw's
    /// own motion is not passed below the face. +0.18 dB face PSNR and +0.31 dB on the wider
    /// head box over [`RingMotion::UNIFORM`]; the optimum is flat (+-0.04 dB around it).
    fn default() -> Self {
        RingMotion { inner_up: 1.0, inner_down: 0.5, outer_up: 0.5, outer_down: 0.0, residual_up: 0.25, residual_down: 0.0 }
    }
}

/// Fixed points per side of the ROI border.
const BORDER_STEPS: usize = 6;
/// Source triangles smaller than this (pixels²) are slivers (e.g. a closed mouth's inner lips):
/// their orientation is meaningless, so they are never "flipped" and are drawn first, under the
/// others (as are the triangles inside the eye and mouth openings).
const SLIVER_AREA: f64 = 0.5;
/// Repair iterations for folded triangles: smoothing first, then pulling to the rigid pose.
const SMOOTH_ITERS: usize = 12;
const FOLD_ITERS: usize = 20;

/// Control points and their triangulation for one portrait (in the pixel coordinates of the
/// image that is warped, the "canvas").
#[derive(Clone, Debug)]
pub struct WarpModel {
    width: u32,
    height: u32,
    /// Control points at rest: `n_mesh` mesh points, then the inner ring, the outer ring, then
    /// the fixed ROI border.
    src: Vec<Pt>,
    n_mesh: usize,
    n_ring: usize,
    tris: Vec<[u32; 3]>,
    /// Signed area of each triangle at rest (0 for slivers).
    src_area: Vec<f64>,
    /// Triangles with two or more vertices on an eye or mouth opening: they may collapse (a
    /// closing lid), so only a real flip counts as a fold there.
    may_collapse: Vec<bool>,
    /// Control points the fold repair keeps where the retargeter put them: the lips.
    /// Shrinking their offsets towards the rigid pose closes the mouth: a fold at a mouth
    /// corner (the lip-corner triangles of a wide-open mouth, which fold on real faces too) had
    /// the repair halve the whole opening (df_img20 x lp_d18: 0.41 of the inter-ocular distance
    /// retargeted, 0.20 drawn, in 59 of 216 frames). The points around them give way instead.
    pinned: Vec<bool>,
    /// Triangles whose folds the repair leaves: those with all vertices pinned (it cannot move
    /// them), or two at a mouth corner (small lip-corner triangles, drawn over by the mouth's
    /// interior).
    may_fold: Vec<bool>,
    /// Drawing order: slivers first.
    order: Vec<usize>,
    /// ROI `[x0, y0, x1, y1)` clipped to the canvas.
    roi: [u32; 4],
    /// Neighbours of each control point in the triangulation (fold repair smooths over them).
    neighbours: Vec<Vec<u32>>,
    motion: RingMotion,
    /// Per ring point (inner ring, then outer ring): (head follow, residual follow).
    ring_w: Vec<(f32, f32)>,
}

pub(super) fn signed_area(a: Pt, b: Pt, c: Pt) -> f64 {
    ((b[0] - a[0]) as f64 * (c[1] - a[1]) as f64 - (c[0] - a[0]) as f64 * (b[1] - a[1]) as f64) / 2.0
}

fn finite(p: &Pt) -> bool {
    p[0].is_finite() && p[1].is_finite()
}

/// The control points at rest for a mesh on a canvas: mesh, inner ring, outer ring, ROI border
/// (exact multiples of the mesh geometry, so they scale with it), and the ROI.
fn control_points(width: u32, height: u32, mesh: &[Pt]) -> Result<(Vec<Pt>, [u32; 4])> {
    if width == 0 || height == 0 {
        return Err(Error::Invalid("warp: empty canvas".into()));
    }
    if mesh.len() != super::landmarks::MESH_POINTS {
        return Err(Error::Invalid(format!("warp: {} mesh points, expected {}", mesh.len(), super::landmarks::MESH_POINTS)));
    }
    if !mesh.iter().all(finite) {
        return Err(Error::Invalid("warp: non-finite mesh point".into()));
    }
    let n = FACE_OVAL.len() as f32;
    let centre = FACE_OVAL.iter().fold([0.0f32, 0.0], |a, &i| [a[0] + mesh[i][0] / n, a[1] + mesh[i][1] / n]);
    let ring = |s: f32| FACE_OVAL.iter().map(move |&i| [centre[0] + (mesh[i][0] - centre[0]) * s, centre[1] + (mesh[i][1] - centre[1]) * s]);
    let mut src: Vec<Pt> = mesh.to_vec();
    src.extend(ring(RING_INNER));
    src.extend(ring(RING_OUTER));
    // ROI: the outer ring's box with a margin; its border stays fixed.
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in &src {
        x0 = x0.min(p[0]);
        y0 = y0.min(p[1]);
        x1 = x1.max(p[0]);
        y1 = y1.max(p[1]);
    }
    let m = 0.06 * (x1 - x0).max(y1 - y0);
    if !(m > 0.5) {
        return Err(Error::Invalid("warp: landmarks are degenerate (the face has no size)".into()));
    }
    let (x0, y0, x1, y1) = (x0 - m, y0 - m, x1 + m, y1 + m);
    for k in 0..BORDER_STEPS {
        let t = k as f32 / BORDER_STEPS as f32;
        src.push([x0 + t * (x1 - x0), y0]);
        src.push([x1, y0 + t * (y1 - y0)]);
        src.push([x1 - t * (x1 - x0), y1]);
        src.push([x0, y1 - t * (y1 - y0)]);
    }
    // Integer pixels inside the border rectangle (outside it the warp is the identity anyway).
    let roi = [
        x0.ceil().clamp(0.0, width as f32) as u32,
        y0.ceil().clamp(0.0, height as f32) as u32,
        (x1.floor() + 1.0).clamp(0.0, width as f32) as u32,
        (y1.floor() + 1.0).clamp(0.0, height as f32) as u32,
    ];
    Ok((src, roi))
}

impl WarpModel {
    /// `mesh`: the portrait's 468 mesh points in canvas pixels; `width` x `height`: the canvas.
    /// Triangulates the control points (Delaunay).
    pub fn new(width: u32, height: u32, mesh: &[Pt]) -> Result<WarpModel> {
        let (src, roi) = control_points(width, height, mesh)?;
        let pts: Vec<delaunator::Point> = src.iter().map(|p| delaunator::Point { x: p[0] as f64, y: p[1] as f64 }).collect();
        let t = delaunator::triangulate(&pts);
        if t.triangles.is_empty() {
            return Err(Error::Invalid("warp: landmarks are degenerate (no triangulation)".into()));
        }
        let tris: Vec<[u32; 3]> = t.triangles.chunks_exact(3).map(|c| [c[0] as u32, c[1] as u32, c[2] as u32]).collect();
        Self::from_parts(width, height, src, mesh.len(), FACE_OVAL.len(), tris, roi)
    }

    /// Like [`Self::new`] with a stored triangulation (an avatar file keeps it: the control points
    /// scale with the canvas, and Delaunay triangulations are invariant under scaling). Checks
    /// that the triangles fit these points: valid indices, one orientation.
    pub fn with_triangles(width: u32, height: u32, mesh: &[Pt], tris: Vec<[u32; 3]>) -> Result<WarpModel> {
        let (src, roi) = control_points(width, height, mesh)?;
        if tris.is_empty() {
            return Err(Error::Invalid("warp: empty triangulation".into()));
        }
        let m = Self::from_parts(width, height, src, mesh.len(), FACE_OVAL.len(), tris, roi)?;
        let pos = m.src_area.iter().filter(|&&a| a > 0.0).count();
        let neg = m.src_area.iter().filter(|&&a| a < 0.0).count();
        if pos > 0 && neg > 0 {
            return Err(Error::Invalid(format!("warp: triangulation does not fit the landmarks ({pos} vs {neg} triangles of each orientation)")));
        }
        Ok(m)
    }

    /// Rebuilds a model from stored parts (an avatar file keeps the triangulation), validating
    /// every index.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(width: u32, height: u32, src: Vec<Pt>, n_mesh: usize, n_ring: usize, tris: Vec<[u32; 3]>, roi: [u32; 4]) -> Result<WarpModel> {
        if n_mesh + 2 * n_ring > src.len() || tris.iter().any(|t| t.iter().any(|&i| i as usize >= src.len())) {
            return Err(Error::Invalid("warp: triangulation refers to a missing control point".into()));
        }
        if roi[0] > roi[2] || roi[1] > roi[3] || roi[2] > width || roi[3] > height {
            return Err(Error::Invalid("warp: region of interest outside the canvas".into()));
        }
        // Triangles spanning an eye or the mouth opening (all vertices on one of those contours)
        // are allowed to collapse: closing lids and lips do exactly that. The eye and mouth
        // renderers draw over them.
        let holes: Vec<std::collections::HashSet<u32>> = if n_mesh >= super::landmarks::MESH_POINTS {
            [&super::mesh::EYE_R[..], &super::mesh::EYE_L[..], &super::mesh::INNER_LIPS[..]]
                .iter()
                .map(|c| c.iter().map(|&i| i as u32).collect())
                .collect()
        } else {
            Vec::new()
        };
        let src_area: Vec<f64> = tris
            .iter()
            .map(|t| {
                let a = signed_area(src[t[0] as usize], src[t[1] as usize], src[t[2] as usize]);
                let in_hole = holes.iter().any(|h| t.iter().all(|v| h.contains(v)));
                if a.abs() < SLIVER_AREA || in_hole { 0.0 } else { a }
            })
            .collect();
        let may_collapse: Vec<bool> = tris.iter().map(|t| holes.iter().any(|h| t.iter().filter(|v| h.contains(v)).count() >= 2)).collect();
        let mut pinned = vec![false; src.len()];
        if n_mesh >= super::landmarks::MESH_POINTS {
            // The lips: the outer lip contour and every mesh point inside it at rest.
            let outer: Vec<Pt> = super::mesh::OUTER_LIPS.iter().map(|&i| src[i]).collect();
            for (i, p) in src[..n_mesh].iter().enumerate() {
                pinned[i] = super::mesh::OUTER_LIPS.contains(&i) || super::geometry::inside_polygon(&outer, *p);
            }
        }
        // Near a mouth corner (its points and their neighbours), a triangle with two lip
        // vertices may fold: a wide-open mouth tucks its corners in, on real faces too, and the
        // repair could only undo that by closing the mouth.
        let mut near_corner = vec![false; src.len()];
        if n_mesh >= super::landmarks::MESH_POINTS {
            for &c in &super::mesh::LIP_CORNERS {
                near_corner[c] = true;
                for t in tris.iter().filter(|t| t.contains(&(c as u32))) {
                    t.iter().for_each(|&v| near_corner[v as usize] = true);
                }
            }
        }
        let may_fold: Vec<bool> = tris
            .iter()
            .map(|t| {
                let p = t.iter().filter(|&&v| pinned[v as usize]).count();
                p == 3 || (p == 2 && t.iter().any(|&v| near_corner[v as usize]))
            })
            .collect();
        let mut order: Vec<usize> = (0..tris.len()).collect();
        order.sort_by_key(|&i| src_area[i] != 0.0);
        let mut neighbours = vec![Vec::new(); src.len()];
        for t in &tris {
            for (a, b) in [(t[0], t[1]), (t[1], t[2]), (t[2], t[0])] {
                if !neighbours[a as usize].contains(&b) {
                    neighbours[a as usize].push(b);
                }
                if !neighbours[b as usize].contains(&a) {
                    neighbours[b as usize].push(a);
                }
            }
        }
        let mut m = WarpModel {
            width,
            height,
            src,
            n_mesh,
            n_ring,
            tris,
            src_area,
            may_collapse,
            pinned,
            may_fold,
            order,
            roi,
            neighbours,
            motion: RingMotion::default(),
            ring_w: Vec::new(),
        };
        m.set_ring_motion(RingMotion::default());
        Ok(m)
    }

    /// How the rings follow the head (see [`RingMotion`]).
    pub fn ring_motion(&self) -> RingMotion {
        self.motion
    }

    /// Sets how the rings follow the head; the per-point weights come from the rest geometry.
    pub fn set_ring_motion(&mut self, motion: RingMotion) {
        self.motion = motion;
        let n = self.n_ring;
        // "Down" in the face: forehead top (10) to chin (152), when this is a face mesh.
        let mesh = super::landmarks::MESH_POINTS;
        let down = if self.n_mesh == mesh && n == FACE_OVAL.len() {
            let (a, b) = (self.src[10], self.src[152]);
            let d = [(b[0] - a[0]) as f64, (b[1] - a[1]) as f64];
            let l = (d[0] * d[0] + d[1] * d[1]).sqrt();
            if l > 1e-6 { [d[0] / l, d[1] / l] } else { [0.0, 1.0] }
        } else {
            [0.0, 1.0]
        };
        let centre = if n > 0 {
            let r = &self.src[self.n_mesh..self.n_mesh + n];
            let k = n as f64;
            r.iter().fold([0.0f64, 0.0], |c, p| [c[0] + p[0] as f64 / k, c[1] + p[1] as f64 / k])
        } else {
            [0.0, 0.0]
        };
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        self.ring_w = (0..2 * n)
            .map(|j| {
                let p = self.src[self.n_mesh + j];
                let v = [p[0] as f64 - centre[0], p[1] as f64 - centre[1]];
                let l = (v[0] * v[0] + v[1] * v[1]).sqrt();
                // 0 at and above the line through the centre across the face, 1 straight down.
                let t = if l > 1e-9 { smoothstep(((v[0] * down[0] + v[1] * down[1]) / l) as f32) } else { 0.0 };
                let res = lerp(motion.residual_up, motion.residual_down, t);
                if j < n {
                    (lerp(motion.inner_up, motion.inner_down, t), res)
                } else {
                    (lerp(motion.outer_up, motion.outer_down, t), 0.5 * res)
                }
            })
            .collect();
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    /// The control points at rest (mesh, inner ring, outer ring, ROI border).
    pub fn rest(&self) -> &[Pt] {
        &self.src
    }
    pub fn triangles(&self) -> &[[u32; 3]] {
        &self.tris
    }
    pub fn n_mesh(&self) -> usize {
        self.n_mesh
    }
    pub fn n_ring(&self) -> usize {
        self.n_ring
    }
    /// ROI `[x0, y0, x1, y1)` in canvas pixels: outside it the warp is the identity.
    pub fn roi(&self) -> [u32; 4] {
        self.roi
    }
    /// Signed area of each triangle at rest (0 for slivers and the eye and mouth openings).
    pub fn rest_areas(&self) -> &[f64] {
        &self.src_area
    }
    /// Drawing order (slivers and openings first).
    pub fn order(&self) -> &[usize] {
        &self.order
    }
    /// Neighbours of each control point in the triangulation.
    pub fn neighbours(&self) -> &[Vec<u32>] {
        &self.neighbours
    }
    /// Per ring point (inner, then outer): (head follow, residual follow).
    pub fn ring_weights(&self) -> &[(f32, f32)] {
        &self.ring_w
    }

    /// Where the control points go for a retargeted mesh `mesh` and head pose `pose` (both in
    /// canvas pixels): mesh as given, rings as [`RingMotion`] says, border fixed. Folds are repaired (see module doc). Non-finite input gives the rest pose.
    pub fn targets(&self, mesh: &[Pt], pose: &Similarity) -> Vec<Pt> {
        let ok = mesh.len() == self.n_mesh && mesh.iter().all(finite) && pose.is_finite();
        let pose = if ok { *pose } else { Similarity::IDENTITY };
        // Hair, ears and neck turn about the head's pivot, near the ears: a nod moves the face
        // but hardly the ears or the hair. So the rings follow the motion of the face outline
        // beside the ears (a similarity fitted there), not the face centre's.
        let ring_pose = if ok && self.n_mesh == super::landmarks::MESH_POINTS {
            let a: Vec<Pt> = EAR_SIDES.iter().map(|&i| self.src[i]).collect();
            let b: Vec<Pt> = EAR_SIDES.iter().map(|&i| mesh[i]).collect();
            super::geometry::fit_similarity(&a, &b, None).ok().filter(|s| s.is_finite() && s.scale > 0.5 && s.scale < 2.0).unwrap_or(pose)
        } else {
            pose
        };
        let rigid = self.rigid(&pose, &ring_pose);
        let mut dst = rigid.clone();
        if ok {
            dst[..self.n_mesh].copy_from_slice(mesh);
            // The rings also follow part of the outline's own motion (the jaw dropping, the
            // forehead rising).
            if self.n_ring == FACE_OVAL.len() {
                for (k, &o) in FACE_OVAL.iter().enumerate() {
                    // The oval point's motion beyond what the ring pose gives it.
                    let ro = ring_pose.apply(self.src[o]);
                    let r = [mesh[o][0] - ro[0], mesh[o][1] - ro[1]];
                    for j in [k, self.n_ring + k] {
                        let (idx, f) = (self.n_mesh + j, self.ring_w[j].1);
                        dst[idx] = [dst[idx][0] + f * r[0], dst[idx][1] + f * r[1]];
                    }
                }
            }
        }
        self.repair_folds(&mut dst, &rigid, None);
        dst
    }

    /// Rest points moved rigidly: the mesh by the head pose, the rings part-way by `ring_pose`
    /// (their follow weights), the border fixed. The fold repair falls back to these.
    fn rigid(&self, pose: &Similarity, ring_pose: &Similarity) -> Vec<Pt> {
        let mut out = self.src.clone();
        let ring_end = self.n_mesh + 2 * self.n_ring;
        for (i, p) in out.iter_mut().enumerate().take(ring_end) {
            let (q, f) = if i < self.n_mesh { (pose.apply(self.src[i]), 1.0) } else { (ring_pose.apply(self.src[i]), self.ring_w[i - self.n_mesh].0) };
            *p = [p[0] + f * (q[0] - p[0]), p[1] + f * (q[1] - p[1])];
        }
        out
    }

    /// True when triangle `k` of `dst` is folded: flipped, or squashed to under 3 % of its rest
    /// area (about to flip). Next to an eye or the mouth opening, collapsing is what closing
    /// lids and lips do, so only a flip beyond 2 % counts there. Slivers at rest never count.
    fn folded(&self, k: usize, dst: &[Pt]) -> bool {
        self.folded_against(k, dst, None)
    }

    /// [`Self::folded`] against reference areas `refa` (the rigidly posed sheet of a turned head,
    /// where a zero area means "turned away, not a fold") instead of the rest areas.
    fn folded_against(&self, k: usize, dst: &[Pt], refa: Option<&[f64]>) -> bool {
        let a0 = match refa {
            Some(r) => r[k],
            None => self.src_area[k],
        };
        if a0 == 0.0 || self.may_fold[k] {
            return false;
        }
        let t = self.tris[k];
        let a = signed_area(dst[t[0] as usize], dst[t[1] as usize], dst[t[2] as usize]);
        let min = if self.may_collapse[k] { -0.02 } else { 0.03 };
        !(a / a0 > min)
    }

    /// Triangles of `dst` whose orientation differs from the rest shape's, slivers and
    /// opening triangles included (diagnostics).
    pub fn count_flipped_any(&self, dst: &[Pt]) -> (usize, usize) {
        let mut exempt = 0;
        let mut normal = 0;
        for (k, t) in self.tris.iter().enumerate() {
            let a0 = signed_area(self.src[t[0] as usize], self.src[t[1] as usize], self.src[t[2] as usize]);
            let a = signed_area(dst[t[0] as usize], dst[t[1] as usize], dst[t[2] as usize]);
            if a * a0 < 0.0 && a.abs() > 1.0 {
                if self.src_area[k] == 0.0 { exempt += 1 } else { normal += 1 }
            }
        }
        (normal, exempt)
    }

    /// Number of folded (flipped or collapsed) non-sliver triangles in `dst`.
    pub fn count_folds(&self, dst: &[Pt]) -> usize {
        if dst.len() != self.src.len() {
            return self.tris.len();
        }
        (0..self.tris.len()).filter(|&k| self.folded(k, dst)).count()
    }

    /// Repairs folds of `dst` by pulling it towards `safe` (which must not fold); `refa`: the
    /// reference areas that decide what a fold is (see [`Self::folded_against`]).
    pub(super) fn repair_folds(&self, dst: &mut [Pt], safe: &[Pt], refa: Option<&[f64]>) {
        // With the lips held where the retargeter put them first; where that cannot undo every
        // fold locally, the lips give way too (the rigid fallback cannot fold).
        let orig: Vec<Pt> = dst.to_vec();
        if self.repair_pass(dst, safe, refa, true) {
            return;
        }
        dst.copy_from_slice(&orig);
        self.repair_pass(dst, safe, refa, false);
    }

    /// One repair: smoothing, then local shrinking, then (unless `pin`) shrinking everything.
    /// With `pin` the lips do not move, and the pass gives up (false) where the local stages
    /// leave a fold.
    fn repair_pass(&self, dst: &mut [Pt], safe: &[Pt], refa: Option<&[f64]>, pin: bool) -> bool {
        let fixed_from = self.n_mesh + 2 * self.n_ring;
        let held = |v: usize| pin && self.pinned[v];
        // First, smooth the non-rigid offsets (dst - safe) around folds: a fold is local shear,
        // and averaging with the neighbours removes it while keeping the field continuous
        // (snapping single vertices back would tear the image).
        let mut marked = vec![false; dst.len()];
        for _ in 0..SMOOTH_ITERS {
            let bad: Vec<usize> = (0..self.tris.len()).filter(|&k| self.folded_against(k, dst, refa)).collect();
            if bad.is_empty() {
                return true;
            }
            marked.iter_mut().for_each(|m| *m = false);
            for &k in &bad {
                for &v in &self.tris[k] {
                    marked[v as usize] = true;
                    for &n in &self.neighbours[v as usize] {
                        marked[n as usize] = true;
                    }
                }
            }
            let off: Vec<[f32; 2]> = dst.iter().zip(safe).map(|(d, s)| [d[0] - s[0], d[1] - s[1]]).collect();
            for v in 0..fixed_from.min(dst.len()) {
                if !marked[v] || self.neighbours[v].is_empty() || held(v) {
                    continue;
                }
                let n = self.neighbours[v].len() as f32;
                let m = self.neighbours[v].iter().fold([0.0f32, 0.0], |a, &u| [a[0] + off[u as usize][0] / n, a[1] + off[u as usize][1] / n]);
                let o = [0.5 * off[v][0] + 0.5 * m[0], 0.5 * off[v][1] + 0.5 * m[1]];
                dst[v] = [safe[v][0] + o[0], safe[v][1] + o[1]];
            }
        }
        // Then shrink the non-rigid offsets around what is left, a little at a time over a
        // widening neighbourhood (still continuous), ...
        let mut marked = vec![false; dst.len()];
        for _ in 0..FOLD_ITERS {
            let bad: Vec<usize> = (0..self.tris.len()).filter(|&k| self.folded_against(k, dst, refa)).collect();
            if bad.is_empty() {
                return true;
            }
            for &k in &bad {
                for &v in &self.tris[k] {
                    marked[v as usize] = true;
                    for &n in &self.neighbours[v as usize] {
                        marked[n as usize] = true;
                    }
                }
            }
            for v in 0..fixed_from.min(dst.len()) {
                if marked[v] && !held(v) {
                    dst[v] = [safe[v][0] + 0.7 * (dst[v][0] - safe[v][0]), safe[v][1] + 0.7 * (dst[v][1] - safe[v][1])];
                }
            }
        }
        // ... and if that was not enough, shrink all of them until nothing folds (at zero
        // offset the pose is rigid, which cannot fold).
        if pin {
            return !(0..self.tris.len()).any(|k| self.folded_against(k, dst, refa));
        }
        let orig: Vec<Pt> = dst.to_vec();
        let mut t = 0.7f32;
        while (0..self.tris.len()).any(|k| self.folded_against(k, dst, refa)) {
            if t < 0.01 {
                dst.copy_from_slice(safe);
                return true;
            }
            for v in 0..fixed_from.min(dst.len()) {
                dst[v] = [safe[v][0] + t * (orig[v][0] - safe[v][0]), safe[v][1] + t * (orig[v][1] - safe[v][1])];
            }
            t *= 0.7;
        }
        true
    }

    /// Renders the warp of `src` (the canvas, `width` x `height` RGB) for control-point targets
    /// `dst` into `out` (same size), writing only the ROI: the caller keeps the rest of `out`
    /// equal to the canvas. Returns the number of pixels written.
    pub fn render(&self, src: &Frame, dst: &[Pt], out: &mut Frame) -> Result<usize> {
        if src.width != self.width || src.height != self.height || !src.len_ok() {
            return Err(Error::Invalid(format!(
                "warp: canvas is {}x{}, model was built for {}x{}",
                src.width, src.height, self.width, self.height
            )));
        }
        if out.width != self.width || out.height != self.height || !out.len_ok() {
            return Err(Error::Invalid("warp: output frame has the wrong size".into()));
        }
        if dst.len() != self.src.len() || !dst.iter().all(finite) {
            return Err(Error::Invalid("warp: target points missing or not finite".into()));
        }
        let mut written = 0;
        for &k in &self.order {
            let t = self.tris[k];
            let (d0, d1, d2) = (dst[t[0] as usize], dst[t[1] as usize], dst[t[2] as usize]);
            let (s0, s1, s2) = (self.src[t[0] as usize], self.src[t[1] as usize], self.src[t[2] as usize]);
            written += raster_triangle([d0, d1, d2], [s0, s1, s2], self.roi, |x, y, sx, sy| {
                let px = sample_bilinear(src, sx, sy);
                let o = 3 * (y as usize * self.width as usize + x as usize);
                out.data[o..o + 3].copy_from_slice(&px);
            });
        }
        Ok(written)
    }

    /// The backward map of the warp at one canvas pixel (for tests and tools): the source
    /// position drawn at (x, y), or `None` when no triangle covers it (identity there).
    pub fn source_of(&self, dst: &[Pt], x: u32, y: u32) -> Option<[f64; 2]> {
        let mut hit = None;
        for &k in &self.order {
            let t = self.tris[k];
            let d = [dst[t[0] as usize], dst[t[1] as usize], dst[t[2] as usize]];
            let s = [self.src[t[0] as usize], self.src[t[1] as usize], self.src[t[2] as usize]];
            let roi = [x, y, x + 1, y + 1];
            raster_triangle(d, s, roi, |_, _, sx, sy| hit = Some([sx, sy]));
        }
        hit
    }
}

/// The barycentric coordinates over triangle `d` as affine functions of the pixel position:
/// `l[i] = [a, b, c]` with `l_i(x, y) = a x + b y + c` (1 at vertex i, 0 at the others). `None`
/// for a degenerate triangle.
pub fn barycentric(d: [Pt; 3]) -> Option<[[f64; 3]; 3]> {
    let area = signed_area(d[0], d[1], d[2]);
    if !(area.abs() > 1e-9) || !area.is_finite() {
        return None;
    }
    let (x0, y0) = (d[0][0] as f64, d[0][1] as f64);
    let (x1, y1) = (d[1][0] as f64, d[1][1] as f64);
    let (x2, y2) = (d[2][0] as f64, d[2][1] as f64);
    let inv = 1.0 / (2.0 * area);
    Some([
        [(y1 - y2) * inv, (x2 - x1) * inv, (x1 * y2 - x2 * y1) * inv],
        [(y2 - y0) * inv, (x0 - x2) * inv, (x2 * y0 - x0 * y2) * inv],
        [(y0 - y1) * inv, (x1 - x0) * inv, (x0 * y1 - x1 * y0) * inv],
    ])
}

/// The affine function over a triangle (its [`barycentric`] coordinates `l`) that takes the
/// values `v` at its vertices: `[a, b, c]` with `f(x, y) = a x + b y + c`.
pub fn interpolant(l: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    let mut p = [0.0; 3];
    for k in 0..3 {
        for (c, lk) in p.iter_mut().zip(l[k]) {
            *c += v[k] * lk;
        }
    }
    p
}

/// Visits the integer pixels (x, y) inside triangle `d` and within `roi`, with the position the
/// affine map d -> s gives them. Pixels on a shared edge may be visited by both triangles: the
/// maps agree there, so the result does not depend on the order. Returns the count visited.
pub fn raster_triangle(d: [Pt; 3], s: [Pt; 3], roi: [u32; 4], mut visit: impl FnMut(u32, u32, f64, f64)) -> usize {
    let Some(l) = barycentric(d) else { return 0 };
    let [l0, l1, l2] = l;
    let (x0, y0) = (d[0][0] as f64, d[0][1] as f64);
    let (x1, y1) = (d[1][0] as f64, d[1][1] as f64);
    let (x2, y2) = (d[2][0] as f64, d[2][1] as f64);
    // Source position as an affine function of (x, y).
    let ax = interpolant(&l, s.map(|p| p[0] as f64));
    let ay = interpolant(&l, s.map(|p| p[1] as f64));
    let bx0 = x0.min(x1).min(x2).floor().max(roi[0] as f64);
    let bx1 = x0.max(x1).max(x2).ceil().min(roi[2] as f64 - 1.0);
    let by0 = y0.min(y1).min(y2).floor().max(roi[1] as f64);
    let by1 = y0.max(y1).max(y2).ceil().min(roi[3] as f64 - 1.0);
    if bx0 > bx1 || by0 > by1 {
        return 0;
    }
    const EPS: f64 = -1e-7;
    let mut n = 0;
    for y in by0 as u32..=by1 as u32 {
        let yf = y as f64;
        // Row span where all three barycentrics are >= 0 (each is linear in x).
        let (mut lo, mut hi) = (bx0, bx1);
        for l in [&l0, &l1, &l2] {
            let c = l[1] * yf + l[2];
            if l[0].abs() < 1e-15 {
                if c < EPS {
                    lo = 1.0;
                    hi = 0.0;
                }
            } else if l[0] > 0.0 {
                lo = lo.max(((EPS - c) / l[0]).ceil());
            } else {
                hi = hi.min(((EPS - c) / l[0]).floor());
            }
        }
        if lo > hi {
            continue;
        }
        for x in lo as u32..=hi as u32 {
            let xf = x as f64;
            visit(x, y, ax[0] * xf + ax[1] * yf + ax[2], ay[0] * xf + ay[1] * yf + ay[2]);
            n += 1;
        }
    }
    n
}

/// Bilinear sample of an RGB frame at (sx, sy) with OpenCV's fixed point: position rounded to
/// 1/32 pixel, integer weights summing to 1024, border replicated.
#[inline]
pub fn sample_bilinear(f: &Frame, sx: f64, sy: f64) -> [u8; 3] {
    let (w, h) = (f.width as i64, f.height as i64);
    let fx = (sx * 32.0).round() as i64;
    let fy = (sy * 32.0).round() as i64;
    let (ix, iy) = (fx >> 5, fy >> 5);
    let (ax, ay) = ((fx & 31) as u32, (fy & 31) as u32);
    let cx = |x: i64| x.clamp(0, w - 1) as usize;
    let cy = |y: i64| y.clamp(0, h - 1) as usize;
    let (x0, x1, y0, y1) = (cx(ix), cx(ix + 1), cy(iy), cy(iy + 1));
    let stride = f.width as usize;
    let i00 = 3 * (y0 * stride + x0);
    let i10 = 3 * (y0 * stride + x1);
    let i01 = 3 * (y1 * stride + x0);
    let i11 = 3 * (y1 * stride + x1);
    let w00 = (32 - ax) * (32 - ay);
    let w10 = ax * (32 - ay);
    let w01 = (32 - ax) * ay;
    let w11 = ax * ay;
    let d = &f.data;
    let mut out = [0u8; 3];
    for c in 0..3 {
        let v = w00 * d[i00 + c] as u32 + w10 * d[i10 + c] as u32 + w01 * d[i01 + c] as u32 + w11 * d[i11 + c] as u32;
        out[c] = ((v + 512) >> 10) as u8;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A smooth synthetic "face mesh": 468 points on concentric ellipses around (cx, cy) with
    /// the face-oval indices on the outermost one, like a real mesh (oval outside, others in).
    pub(crate) fn synthetic_mesh(cx: f32, cy: f32, r: f32) -> Vec<Pt> {
        let mut pts = vec![[0.0f32; 2]; 468];
        let oval: std::collections::HashSet<usize> = FACE_OVAL.iter().copied().collect();
        for (k, &i) in FACE_OVAL.iter().enumerate() {
            let a = k as f32 / FACE_OVAL.len() as f32 * std::f32::consts::TAU;
            pts[i] = [cx + r * 0.8 * a.sin(), cy - r * a.cos()];
        }
        let inner: Vec<usize> = (0..468).filter(|i| !oval.contains(i)).collect();
        // Golden-angle spiral inside the oval: well spread, no duplicates.
        for (k, &i) in inner.iter().enumerate() {
            let t = (k as f32 + 0.5) / inner.len() as f32;
            let rr = 0.9 * t.sqrt();
            let a = k as f32 * 2.399_963;
            pts[i] = [cx + r * 0.8 * rr * a.cos(), cy + r * rr * a.sin()];
        }
        pts
    }

    /// A textured test image: smooth gradients plus a checker (every pixel differs).
    pub(crate) fn texture(w: u32, h: u32) -> Frame {
        let mut f = Frame::black(w, h);
        for y in 0..h {
            for x in 0..w {
                let o = 3 * (y * w + x) as usize;
                let chk = if ((x / 7) + (y / 5)) % 2 == 0 { 40 } else { 0 };
                f.data[o] = ((x * 255 / w) as u8).saturating_add(chk);
                f.data[o + 1] = ((y * 255 / h) as u8) / 2 + ((x * y) % 61) as u8;
                f.data[o + 2] = (((x + 2 * y) % 200) as u8).saturating_add(chk / 2);
            }
        }
        f
    }

    fn render(m: &WarpModel, img: &Frame, dst: &[Pt]) -> Frame {
        let mut out = img.clone();
        m.render(img, dst, &mut out).unwrap();
        out
    }

    #[test]
    fn identity_landmarks_give_the_portrait_back_exactly() {
        let img = texture(320, 300);
        let mesh = synthetic_mesh(160.0, 150.0, 80.0);
        let m = WarpModel::new(320, 300, &mesh).unwrap();
        let dst = m.targets(&mesh, &Similarity::IDENTITY);
        assert_eq!(dst, m.rest());
        assert_eq!(m.count_folds(&dst), 0);
        let out = render(&m, &img, &dst);
        assert_eq!(out.data, img.data);
        // And it did draw the ROI (not a no-op).
        let mut blank = Frame::black(320, 300);
        let n = m.render(&img, &dst, &mut blank).unwrap();
        let roi = m.roi();
        assert!(n >= ((roi[2] - roi[0]) * (roi[3] - roi[1])) as usize, "{n} pixels for ROI {roi:?}");
    }

    #[test]
    fn similarity_of_all_points_equals_warp_affine_inside_the_face() {
        use opencv::core::{Mat, Scalar, Size, Vec3b, BORDER_REPLICATE};
        let (w, h) = (360u32, 340u32);
        // Smooth, photo-like detail (gradients under ~25 grey levels per pixel): both sides round
        // positions to 1/32 pixel, so one grey level is what a 1/32-pixel rounding difference
        // may cost there.
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
        for s in [Similarity::about(1.05, 0.12, [180.0, 170.0], [4.3, -2.7]), Similarity::about(0.93, -0.2, [180.0, 170.0], [-3.0, 5.5])] {
            // Every control point (mesh and both rings) moves by s; only the ROI border stays.
            let mut dst: Vec<Pt> = m.rest().iter().map(|&p| s.apply(p)).collect();
            let fixed = m.n_mesh() + 2 * m.n_ring();
            dst[fixed..].copy_from_slice(&m.rest()[fixed..]);
            assert_eq!(m.count_folds(&dst), 0);
            let out = render(&m, &img, &dst);
            // OpenCV: dst(x) = src(M^-1 x), M the forward similarity.
            let (a, b) = (s.scale * s.angle.cos(), s.scale * s.angle.sin());
            let mm = Mat::from_slice_2d(&[[a, -b, s.tx], [b, a, s.ty]]).unwrap();
            let src = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, &img.data).unwrap();
            let mut cv = Mat::default();
            opencv::imgproc::warp_affine(&src, &mut cv, &mm, Size::new(w as i32, h as i32), opencv::imgproc::INTER_LINEAR, BORDER_REPLICATE, Scalar::default())
                .unwrap();
            let cvb = { use opencv::prelude::MatTraitConstManual; cv.data_bytes().unwrap() };
            // Inside the face: within the warped oval shrunk a little.
            let mut worst = 0i32;
            let mut n = 0;
            let c = s.apply([180.0, 170.0]);
            for y in 0..h {
                for x in 0..w {
                    let (dx, dy) = ((x as f32 - c[0]) / (0.8 * 90.0 * 0.85 * s.scale as f32), (y as f32 - c[1]) / (90.0 * 0.85 * s.scale as f32));
                    if dx * dx + dy * dy > 1.0 {
                        continue;
                    }
                    n += 1;
                    let o = 3 * (y * w + x) as usize;
                    for k in 0..3 {
                        worst = worst.max((out.data[o + k] as i32 - cvb[o + k] as i32).abs());
                    }
                }
            }
            assert!(n > 10_000, "{n}");
            assert!(worst <= 1, "max difference to warpAffine inside the face: {worst}");
        }
    }

    #[test]
    fn outside_the_roi_nothing_changes_and_the_border_stays() {
        let img = texture(400, 400);
        let mesh = synthetic_mesh(200.0, 190.0, 60.0);
        let m = WarpModel::new(400, 400, &mesh).unwrap();
        let pose = Similarity::about(1.0, 0.15, [200.0, 190.0], [6.0, 3.0]);
        let moved: Vec<Pt> = mesh.iter().map(|&p| pose.apply(p)).collect();
        let dst = m.targets(&moved, &pose);
        let out = render(&m, &img, &dst);
        let roi = m.roi();
        assert!(roi[0] > 0 && roi[2] < 400, "test face is small enough for a proper ROI: {roi:?}");
        for y in 0..400u32 {
            for x in 0..400u32 {
                if x < roi[0] || x >= roi[2] || y < roi[1] || y >= roi[3] {
                    let o = 3 * (y * 400 + x) as usize;
                    assert_eq!(&out.data[o..o + 3], &img.data[o..o + 3]);
                }
            }
        }
        // Just inside the ROI border the warp is (nearly) the identity.
        let s = m.source_of(&dst, roi[0] + 1, (roi[1] + roi[3]) / 2).unwrap();
        assert!((s[0] - (roi[0] + 1) as f64).abs() < 1.0, "{s:?}");
        // Above the face (ring point 0 is over the forehead) the inner ring follows the head
        // fully and the outer ring half-way; straight below (the chin's ring points) the inner
        // ring follows half-way and the outer ring stays.
        let rm = m.ring_motion();
        let check = |k: usize, inner_f: f32, outer_f: f32| {
            for (idx, f) in [(m.n_mesh() + k, inner_f), (m.n_mesh() + m.n_ring() + k, outer_f)] {
                let (r, p) = (m.rest()[idx], pose.apply(m.rest()[idx]));
                let want = [r[0] + f * (p[0] - r[0]), r[1] + f * (p[1] - r[1])];
                assert!((dst[idx][0] - want[0]).abs() < 1e-3 && (dst[idx][1] - want[1]).abs() < 1e-3, "ring point {idx}: {:?} vs {want:?}", dst[idx]);
            }
        };
        check(0, rm.inner_up, rm.outer_up);
        let chin = FACE_OVAL.iter().position(|&i| i == 152).unwrap();
        check(chin, rm.inner_down, rm.outer_down);
        assert!(rm.inner_down < rm.inner_up && rm.outer_down < rm.outer_up);
    }

    #[test]
    fn folded_and_degenerate_input_gives_no_nan_and_no_flip() {
        let img = texture(300, 300);
        let mesh = synthetic_mesh(150.0, 150.0, 70.0);
        let m = WarpModel::new(300, 300, &mesh).unwrap();
        let pose = Similarity::about(1.1, 0.3, [150.0, 150.0], [5.0, -4.0]);
        // Scrambled mesh: every other point thrown across the face.
        let mut bad = mesh.clone();
        for (i, p) in bad.iter_mut().enumerate() {
            if i % 2 == 0 {
                *p = [300.0 - p[0], 300.0 - p[1] * 0.5];
            }
        }
        let dst = m.targets(&bad, &pose);
        assert_eq!(m.count_folds(&dst), 0, "folds repaired");
        assert!(dst.iter().all(finite));
        let out = render(&m, &img, &dst);
        assert!(out.len_ok());
        // All points collapsed onto one: still no fold, no NaN.
        let dst = m.targets(&vec![[150.0, 150.0]; 468], &pose);
        assert_eq!(m.count_folds(&dst), 0);
        // Non-finite input: the rest pose, no error.
        let mut nan = mesh.clone();
        nan[5] = [f32::NAN, 1.0];
        assert_eq!(m.targets(&nan, &pose), m.rest());
        assert_eq!(m.targets(&mesh[..10], &pose), m.rest());
        // Bad models and frames are errors, not panics.
        assert!(WarpModel::new(0, 10, &mesh).is_err());
        assert!(WarpModel::new(10, 10, &mesh[..100]).is_err());
        assert!(WarpModel::with_triangles(300, 300, &mesh, vec![]).is_err());
        let mut flipped = m.triangles().to_vec();
        flipped[3].swap(0, 1);
        assert!(WarpModel::with_triangles(300, 300, &mesh, flipped).is_err());
        assert_eq!(WarpModel::with_triangles(300, 300, &mesh, m.triangles().to_vec()).unwrap().rest(), m.rest());
        assert!(WarpModel::new(300, 300, &vec![[5.0, 5.0]; 468]).is_err());
        let mut small = Frame::black(10, 10);
        assert!(m.render(&img, m.rest(), &mut small).is_err());
        assert!(m.render(&img, &m.rest()[..5], &mut img.clone()).is_err());
        assert!(WarpModel::from_parts(300, 300, m.rest().to_vec(), 468, 36, vec![[0, 1, 9999]], [0, 0, 1, 1]).is_err());
    }

    #[test]
    fn sampling_matches_pixels_and_interpolates() {
        let img = texture(16, 16);
        let at = |x: usize, y: usize| [img.data[3 * (y * 16 + x)], img.data[3 * (y * 16 + x) + 1], img.data[3 * (y * 16 + x) + 2]];
        assert_eq!(sample_bilinear(&img, 3.0, 4.0), at(3, 4));
        assert_eq!(sample_bilinear(&img, -5.0, 40.0), at(0, 15));
        let mid = sample_bilinear(&img, 3.5, 4.0);
        for c in 0..3 {
            let want = (at(3, 4)[c] as f32 + at(4, 4)[c] as f32) / 2.0;
            assert!((mid[c] as f32 - want).abs() <= 0.5 + 1e-3);
        }
    }
}
