//! MediaPipe 468-point face-mesh topology: the index lists the dense retargeting and the warp
//! need (face oval, eye and inner-lip contours, lip pairs), taken from MediaPipe's own
//! `face_mesh_connections` (mediapipe 0.10.14, Apache-2.0). Pure constants and small helpers.
//!
//! Orientation: "right eye" is the subject's right (image left), as in the 68-point scheme
//! (iBUG 36..41); each eye contour starts at the iBUG corner `a` of `Eye::indices()`.
use super::landmarks::MP468_TO_68;

/// Face oval, clockwise in the image starting at the forehead top (36 points).
pub const FACE_OVAL: [usize; 36] = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136,
    172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
];

/// Subject's right eye opening: outer corner 33 (iBUG 36), upper lid, inner corner 133
/// (iBUG 39), lower lid back to the start. A closed polygon.
pub const EYE_R: [usize; 16] = [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7];
/// Subject's left eye opening: inner corner 362 (iBUG 42), upper lid, outer corner 263
/// (iBUG 45), lower lid back. Same layout as `EYE_R` (corner a, 7 upper, corner b, 7 lower).
pub const EYE_L: [usize; 16] = [362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382];

/// Positions of the lid points inside `EYE_R` / `EYE_L`: 1..=7 upper, 9..=15 lower.
pub const LID_SLOTS: std::ops::RangeInclusive<usize> = 1..=15;

/// The mesh indices of eye `e`'s lid points (`LID_SLOTS` without the far corner, slot 8): what
/// the retargeter rebuilds from the driver's opening.
pub fn lid_points(e: usize) -> impl Iterator<Item = usize> {
    let c = eye_contour(e);
    LID_SLOTS.filter(|&s| s != 8).map(move |s| c[s])
}

/// Inner-lip contour (the mouth opening): corner 78 (iBUG 60), upper inner lip, corner 308
/// (iBUG 64), lower inner lip back. A closed polygon.
pub const INNER_LIPS: [usize; 20] = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95];

/// The lip corners: outer lip contour (61, 291) and inner (78, 308).
pub const LIP_CORNERS: [usize; 4] = [61, 291, 78, 308];

/// Outer-lip contour, from corner 61 (iBUG 48) over the upper lip and back under the lower lip.
pub const OUTER_LIPS: [usize; 20] = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146];

/// Inner-lip pairs (upper, lower) facing each other across the mouth, left to right.
pub const LIP_PAIRS: [(usize, usize); 9] =
    [(191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318), (415, 324)];

/// Mouth corners of the inner-lip contour (iBUG 60 and 64).
pub const MOUTH_CORNERS: (usize, usize) = (78, 308);

/// The eye contour of eye `e` (0 = subject's right, 1 = left).
pub fn eye_contour(e: usize) -> &'static [usize; 16] {
    if e == 0 {
        &EYE_R
    } else {
        &EYE_L
    }
}

/// True when every index of the topology tables is a valid mesh index and the corners agree
/// with the 468 -> 68 table (checked by a unit test; cheap enough to assert in debug builds).
pub fn tables_consistent() -> bool {
    let all = FACE_OVAL.iter().chain(&EYE_R).chain(&EYE_L).chain(&INNER_LIPS).chain(&OUTER_LIPS);
    all.clone().all(|&i| i < super::landmarks::MESH_POINTS)
        && EYE_R[0] == MP468_TO_68[36]
        && EYE_R[8] == MP468_TO_68[39]
        && EYE_L[0] == MP468_TO_68[42]
        && EYE_L[8] == MP468_TO_68[45]
        && INNER_LIPS[0] == MP468_TO_68[60]
        && INNER_LIPS[10] == MP468_TO_68[64]
        && OUTER_LIPS[0] == MP468_TO_68[48]
        && MOUTH_CORNERS == (MP468_TO_68[60], MP468_TO_68[64])
}

/// Mean inner-lip gap (pairs' distances) divided by the mouth width: 0 closed, ~0.3-0.6 wide open.
pub fn mouth_gap(pts: &[[f32; 2]]) -> f32 {
    let w = super::geometry::dist(pts[MOUTH_CORNERS.0], pts[MOUTH_CORNERS.1]) as f32;
    if !(w > 1e-6) {
        return 0.0;
    }
    let g: f32 = LIP_PAIRS.iter().map(|&(u, l)| super::geometry::dist(pts[u], pts[l]) as f32).sum::<f32>() / LIP_PAIRS.len() as f32;
    g / w
}

/// The points on the face's midline (their own mirror images). In MediaPipe's canonical face
/// model (`canonical_face_model.obj`, Apache-2.0) these are the vertices with x = 0.
pub const MIDLINE: [usize; 28] = [0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 94, 151, 152, 164, 168, 175, 195, 197, 199, 200];

/// Left-right mirror of the 468 points: `mirror()[i]` is the point at i's place on the other side
/// of the face. The canonical model lists the points of one side among the first 248 vertices
/// and their mirror images, in the same order, as vertices 248..467; so the map follows from
/// [`MIDLINE`] alone (it maps 1316 of the tessellation's 1322 edges onto edges; the other six
/// are where MediaPipe's triangulation itself is not symmetric).
pub fn mirror() -> [usize; 468] {
    let mut m = [0usize; 468];
    for (i, v) in m.iter_mut().enumerate() {
        *v = i;
    }
    let side = (0..248).filter(|i| !MIDLINE.contains(i));
    for (k, i) in side.enumerate() {
        m[i] = 248 + k;
        m[248 + k] = i;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_the_68_point_table() {
        assert!(tables_consistent());
    }

    #[test]
    fn the_mirror_swaps_the_sides() {
        let m = mirror();
        assert!((0..468).all(|i| m[m[i]] == i), "an involution");
        assert_eq!((0..468).filter(|&i| m[i] == i).count(), MIDLINE.len());
        // Known pairs: outer and inner eye corners, mouth corners (outer and inner), cheeks.
        for (a, b) in [(33, 263), (133, 362), (61, 291), (78, 308), (234, 454), (127, 356), (58, 288), (172, 397)] {
            assert_eq!((m[a], m[b]), (b, a), "{a} <-> {b}");
        }
        // The contours map onto each other: the oval onto itself, one eye onto the other, the
        // lips onto themselves.
        let set = |v: &[usize]| v.iter().map(|&i| m[i]).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(set(&FACE_OVAL), FACE_OVAL.iter().copied().collect());
        assert_eq!(set(&EYE_R), EYE_L.iter().copied().collect());
        assert_eq!(set(&INNER_LIPS), INNER_LIPS.iter().copied().collect());
        assert_eq!(set(&OUTER_LIPS), OUTER_LIPS.iter().copied().collect());
    }

    #[test]
    fn contours_have_no_repeated_index() {
        for c in [&EYE_R[..], &EYE_L[..], &INNER_LIPS[..], &OUTER_LIPS[..], &FACE_OVAL[..]] {
            let mut v = c.to_vec();
            v.sort();
            v.dedup();
            assert_eq!(v.len(), c.len());
        }
        for &(u, l) in &LIP_PAIRS {
            assert!(INNER_LIPS[1..10].contains(&u), "{u} is on the upper inner lip");
            assert!(INNER_LIPS[11..].contains(&l), "{l} is on the lower inner lip");
        }
    }

    #[test]
    fn gap_of_a_square_mouth() {
        let mut pts = vec![[0.0f32, 0.0]; 468];
        pts[MOUTH_CORNERS.0] = [0.0, 0.0];
        pts[MOUTH_CORNERS.1] = [10.0, 0.0];
        for &(u, l) in &LIP_PAIRS {
            pts[u] = [5.0, -1.0];
            pts[l] = [5.0, 1.0];
        }
        assert!((mouth_gap(&pts) - 0.2).abs() < 1e-6);
        assert_eq!(mouth_gap(&vec![[1.0, 1.0]; 468]), 0.0);
    }
}

/// Lifts 68 points to a 468-point mesh, for drivers that only have 68 landmarks (the embedded
/// demo driver, landmark files): every mesh point is tied to the 68 points once, on a template
/// mesh (the portrait's), and follows them linearly.
/// - Lid and inner-lip contour points follow their 68-point polyline at the same fraction of
///   arc length (a closed mouth has coincident inner-lip points, which no triangulation can
///   tell apart).
/// - Every other point uses its barycentric coordinates in a triangulation of the 68 points
///   without those contour points (affine extrapolation outside their hull).
#[derive(Clone, Debug)]
pub struct Lift68 {
    ties: Vec<Tie>,
}

#[derive(Clone, Debug)]
enum Tie {
    /// Index into `CHAINS` and the arc-length fraction along it.
    Chain(usize, f32),
    /// Three 68-point indices and barycentric weights.
    Bary([usize; 3], [f32; 3]),
}

/// 68-point polylines and the mesh contours that follow them (from corner to corner).
const CHAINS: [(&[usize], &[usize]); 6] = [
    (&[36, 37, 38, 39], &[33, 246, 161, 160, 159, 158, 157, 173, 133]),
    (&[39, 40, 41, 36], &[133, 155, 154, 153, 145, 144, 163, 7, 33]),
    (&[42, 43, 44, 45], &[362, 398, 384, 385, 386, 387, 388, 466, 263]),
    (&[45, 46, 47, 42], &[263, 249, 390, 373, 374, 380, 381, 382, 362]),
    (&[60, 61, 62, 63, 64], &[78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]),
    (&[64, 65, 66, 67, 60], &[308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78]),
];

fn arc_fractions(pts: &[[f32; 2]]) -> Vec<f32> {
    let mut acc = vec![0.0f32];
    for w in pts.windows(2) {
        let d = super::geometry::dist(w[0], w[1]) as f32;
        acc.push(acc.last().copied().unwrap_or(0.0) + d);
    }
    let total = *acc.last().unwrap_or(&0.0);
    let n = acc.len();
    acc.iter().enumerate().map(|(k, &a)| if total > 1e-6 { a / total } else { k as f32 / (n - 1).max(1) as f32 }).collect()
}

fn point_at(poly: &[[f32; 2]], f: f32) -> [f32; 2] {
    let fr = arc_fractions(poly);
    for k in 1..poly.len() {
        if f <= fr[k] || k == poly.len() - 1 {
            let span = (fr[k] - fr[k - 1]).max(1e-9);
            let t = ((f - fr[k - 1]) / span).clamp(0.0, 1.0);
            return [poly[k - 1][0] + t * (poly[k][0] - poly[k - 1][0]), poly[k - 1][1] + t * (poly[k][1] - poly[k - 1][1])];
        }
    }
    poly[0]
}

impl Lift68 {
    /// Ties every point of `template` (a 468-point mesh) to the template's own 68 points.
    pub fn new(template: &[[f32; 2]]) -> crate::error::Result<Lift68> {
        use crate::error::Error;
        if template.len() != super::landmarks::MESH_POINTS || !template.iter().all(|p| p[0].is_finite() && p[1].is_finite()) {
            return Err(Error::Invalid("lift: template mesh missing or not finite".into()));
        }
        let t68 = super::landmarks::to68_2d(template)?;
        let mut ties: Vec<Option<Tie>> = vec![None; template.len()];
        for (c, (_, contour)) in CHAINS.iter().enumerate() {
            let pts: Vec<[f32; 2]> = contour.iter().map(|&i| template[i]).collect();
            for (&i, f) in contour.iter().zip(arc_fractions(&pts)) {
                ties[i] = Some(Tie::Chain(c, f));
            }
        }
        let skip = [37, 38, 40, 41, 43, 44, 46, 47, 61, 62, 63, 65, 66, 67];
        let keep: Vec<usize> = (0..68).filter(|k| !skip.contains(k)).collect();
        let dpts: Vec<delaunator::Point> = keep.iter().map(|&k| delaunator::Point { x: t68[k][0] as f64, y: t68[k][1] as f64 }).collect();
        let tri = delaunator::triangulate(&dpts);
        if tri.triangles.is_empty() {
            return Err(Error::Invalid("lift: template's 68 points are degenerate".into()));
        }
        let tris: Vec<[usize; 3]> = tri.triangles.chunks_exact(3).map(|c| [keep[c[0]], keep[c[1]], keep[c[2]]]).collect();
        let bary = |p: [f32; 2], t: &[usize; 3]| -> Option<[f32; 3]> {
            let (a, b, c) = (t68[t[0]], t68[t[1]], t68[t[2]]);
            let d = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1]);
            if d.abs() < 1e-6 {
                return None;
            }
            let l0 = ((b[1] - c[1]) * (p[0] - c[0]) + (c[0] - b[0]) * (p[1] - c[1])) / d;
            let l1 = ((c[1] - a[1]) * (p[0] - c[0]) + (a[0] - c[0]) * (p[1] - c[1])) / d;
            Some([l0, l1, 1.0 - l0 - l1])
        };
        for (i, tie) in ties.iter_mut().enumerate() {
            if tie.is_some() {
                continue;
            }
            // The containing triangle, else the one whose most negative weight is least negative.
            let mut best: Option<([usize; 3], [f32; 3], f32)> = None;
            for t in &tris {
                if let Some(w) = bary(template[i], t) {
                    let m = w[0].min(w[1]).min(w[2]);
                    if best.as_ref().map_or(true, |b| m > b.2) {
                        best = Some((*t, w, m));
                    }
                }
            }
            let (t, w, _) = best.ok_or_else(|| Error::Invalid("lift: no usable triangle".into()))?;
            *tie = Some(Tie::Bary(t, w));
        }
        Ok(Lift68 { ties: ties.into_iter().map(|t| t.expect("every point tied")).collect() })
    }

    /// The mesh that `pts68` imply.
    pub fn apply(&self, pts68: &[[f32; 2]; 68]) -> Vec<[f32; 2]> {
        let chains: Vec<Vec<[f32; 2]>> = CHAINS.iter().map(|(k, _)| k.iter().map(|&i| pts68[i]).collect()).collect();
        self.ties
            .iter()
            .map(|t| match t {
                Tie::Chain(c, f) => point_at(&chains[*c], *f),
                Tie::Bary(t, w) => [
                    w[0] * pts68[t[0]][0] + w[1] * pts68[t[1]][0] + w[2] * pts68[t[2]][0],
                    w[0] * pts68[t[0]][1] + w[1] * pts68[t[1]][1] + w[2] * pts68[t[2]][1],
                ],
            })
            .collect()
    }
}

#[cfg(test)]
mod lift_tests {
    use super::*;

    #[test]
    fn lifting_the_template_gives_the_template_and_follows_affine_motion() {
        let m = crate::core::warp::tests::synthetic_mesh(200.0, 200.0, 90.0);
        // Give the synthetic mesh a proper open mouth and eyes along the chains.
        let lift = Lift68::new(&m).unwrap();
        let p68 = crate::core::landmarks::to68_2d(&m).unwrap();
        let back = lift.apply(&p68);
        for i in 0..468 {
            let on_chain = CHAINS.iter().any(|(_, c)| c.contains(&i));
            if !on_chain {
                assert!((back[i][0] - m[i][0]).abs() < 1e-2 && (back[i][1] - m[i][1]).abs() < 1e-2, "point {i}");
            }
        }
        // An affine motion of the 68 points moves every lifted point the same way.
        let f = |p: [f32; 2]| [1.1 * p[0] + 0.2 * p[1] + 5.0, -0.1 * p[0] + 0.9 * p[1] - 3.0];
        let moved = lift.apply(&p68.map(f));
        for i in (0..468).filter(|i| !CHAINS.iter().any(|(_, c)| c.contains(i))) {
            let want = f(back[i]);
            assert!((moved[i][0] - want[0]).abs() < 1e-2 && (moved[i][1] - want[1]).abs() < 1e-2, "point {i}");
        }
        assert!(Lift68::new(&m[..10]).is_err());
    }
}
