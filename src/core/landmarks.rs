//! Landmark helpers: MediaPipe 468-point mesh -> iBUG 68 points (table in docs/rasteriser.md),
//! inter-ocular distance and bounding box. Pure, so training (via `puppetcam landmarks`) and the
//! daemon derive the 68 points the same way.
use crate::error::{Error, Result};

/// Number of points in MediaPipe's face mesh (without the iris refinement).
pub const MESH_POINTS: usize = 468;

/// For each of the 68 iBUG points, its index in the 468-point mesh (docs/rasteriser.md).
pub const MP468_TO_68: [usize; 68] = [
    // jaw 0..=16
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    // right brow 17..=21
    70, 63, 105, 66, 107,
    // left brow 22..=26
    336, 296, 334, 293, 300,
    // nose bridge 27..=30
    168, 197, 5, 4,
    // nose base 31..=35
    75, 97, 2, 326, 305,
    // right eye 36..=41
    33, 160, 158, 133, 153, 144,
    // left eye 42..=47
    362, 385, 387, 263, 373, 380,
    // outer lips 48..=59
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    // inner lips 60..=67
    78, 82, 13, 312, 308, 317, 14, 87,
];

/// The 68 iBUG points (x, y) of a 468-point mesh.
pub fn to68(mesh: &[[f32; 3]]) -> Result<[[f32; 2]; 68]> {
    if mesh.len() < MESH_POINTS {
        return Err(Error::Invalid(format!("face mesh has {} points, expected {MESH_POINTS}", mesh.len())));
    }
    let mut out = [[0.0f32; 2]; 68];
    for (o, &i) in out.iter_mut().zip(MP468_TO_68.iter()) {
        *o = [mesh[i][0], mesh[i][1]];
    }
    Ok(out)
}

/// The 68 iBUG points of a 2-D mesh (mesh points without z, as retargeting and the warp use).
pub fn to68_2d(mesh: &[[f32; 2]]) -> Result<[[f32; 2]; 68]> {
    if mesh.len() < MESH_POINTS {
        return Err(Error::Invalid(format!("face mesh has {} points, expected {MESH_POINTS}", mesh.len())));
    }
    Ok(MP468_TO_68.map(|i| mesh[i]))
}

fn mean(pts: &[[f32; 2]]) -> [f32; 2] {
    let n = pts.len() as f32;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
    [sx / n, sy / n]
}

/// Centres of the subject's right eye (points 36..=41) and left eye (42..=47).
pub fn eye_centres(pts68: &[[f32; 2]; 68]) -> ([f32; 2], [f32; 2]) {
    (mean(&pts68[36..42]), mean(&pts68[42..48]))
}

/// Inter-ocular distance: between the centres of the two eye contours. Used to normalise
/// landmark errors and to scale filters to the face size.
pub fn inter_ocular(pts68: &[[f32; 2]; 68]) -> f32 {
    let (r, l) = eye_centres(pts68);
    ((r[0] - l[0]).powi(2) + (r[1] - l[1]).powi(2)).sqrt()
}

/// Axis-aligned bounding box `[x0, y0, x1, y1]` of `pts`; `None` for no points or a non-finite one.
pub fn bbox(pts: &[[f32; 2]]) -> Option<[f32; 4]> {
    if pts.is_empty() || pts.iter().any(|p| !(p[0].is_finite() && p[1].is_finite())) {
        return None;
    }
    let mut b = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for p in pts {
        b[0] = b[0].min(p[0]);
        b[1] = b[1].min(p[1]);
        b[2] = b[2].max(p[0]);
        b[3] = b[3].max(p[1]);
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_valid_and_unique() {
        assert!(MP468_TO_68.iter().all(|&i| i < MESH_POINTS));
        let mut s = MP468_TO_68.to_vec();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 68, "every 68-point maps to a distinct mesh point");
    }

    #[test]
    fn table_matches_the_spec_document() {
        // docs/rasteriser.md is the source of truth; parse its table and compare.
        let doc = include_str!("../../docs/rasteriser.md");
        let start = doc.find("jaw        127").expect("table in docs/rasteriser.md");
        let block = &doc[start..];
        let block = &block[..block.find("```").unwrap()];
        let nums: Vec<usize> = block
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(nums, MP468_TO_68.to_vec());
    }

    #[test]
    fn to68_picks_the_mapped_points() {
        let mesh: Vec<[f32; 3]> = (0..468).map(|i| [i as f32, 1000.0 + i as f32, -(i as f32)]).collect();
        let p = to68(&mesh).unwrap();
        for (k, &i) in MP468_TO_68.iter().enumerate() {
            assert_eq!(p[k], [i as f32, 1000.0 + i as f32]);
        }
    }

    #[test]
    fn to68_rejects_short_mesh() {
        assert!(matches!(to68(&[[0.0; 3]; 10]), Err(Error::Invalid(_))));
    }

    #[test]
    fn inter_ocular_is_distance_of_eye_centres() {
        let mut p = [[0.0f32; 2]; 68];
        for (k, q) in p[36..42].iter_mut().enumerate() {
            *q = [10.0 + k as f32, 20.0];
        }
        for (k, q) in p[42..48].iter_mut().enumerate() {
            *q = [40.0 + k as f32, 24.0];
        }
        // centres (12.5, 20) and (42.5, 24): distance sqrt(900 + 16)
        assert!((inter_ocular(&p) - (916.0f32).sqrt()).abs() < 1e-4);
        let (r, l) = eye_centres(&p);
        assert_eq!(r, [12.5, 20.0]);
        assert_eq!(l, [42.5, 24.0]);
    }

    #[test]
    fn bbox_bounds_points() {
        assert_eq!(bbox(&[[1.0, 5.0], [-2.0, 3.0], [4.0, 9.0]]), Some([-2.0, 3.0, 4.0, 9.0]));
        assert_eq!(bbox(&[]), None);
        assert_eq!(bbox(&[[f32::NAN, 0.0]]), None);
    }
}
