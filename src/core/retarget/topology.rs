//! `Topology`: which point set a retargeter works on (the 68 iBUG points or MediaPipe's
//! 468-point mesh), with each point's expression region, the lid and inner-lip points, and the
//! 68-point subset that every measure, the pose and the eye frames are taken from.
use super::expression::{region_of, Region};
use super::mouth::LIP_PAIRS;
use super::openness::Eye;
use super::Pts68;
use crate::core::geometry::{dist, Pt};
use crate::error::{Error, Result};

/// Which point set a [`Retargeter`] works on: the 68 iBUG points, or MediaPipe's 468-point
/// mesh. Either way the measures, the head pose and the eye frames come from the 68-point
/// subset, so both topologies retarget the same face the same way; the mesh only adds points.
#[derive(Clone, Debug)]
pub struct Topology {
    pub(super) n: usize,
    /// Index of each iBUG point in this point set.
    pub(super) sub68: [usize; 68],
    /// Expression-scaling region of each point.
    pub(super) region: Vec<Region>,
    /// Lid points (corners excluded) of each eye, subject's right then left.
    pub(super) lids: [Vec<usize>; 2],
    /// Inner-lip pairs (upper, lower) facing each other.
    pub(super) lip_pairs: Vec<(usize, usize)>,
    /// Inner mouth corners.
    pub(super) mouth_axis: (usize, usize),
}

impl Topology {
    /// The 68 iBUG points themselves.
    pub fn ibug68() -> Topology {
        let sub68: [usize; 68] = std::array::from_fn(|i| i);
        Topology {
            n: 68,
            sub68,
            region: (0..68).map(region_of).collect(),
            lids: Eye::BOTH.map(|e| {
                let [_, _, u1, u2, l2, l1] = e.indices();
                vec![u1, u2, l2, l1]
            }),
            lip_pairs: LIP_PAIRS.to_vec(),
            mouth_axis: (60, 64),
        }
    }

    /// MediaPipe's 468-point mesh. `neutral` is the mesh of the face the topology is used with:
    /// each point takes the region of its nearest 68-point landmark there (contours are fixed).
    pub fn mesh468(neutral: &[Pt]) -> Result<Topology> {
        use crate::core::landmarks::{MESH_POINTS, MP468_TO_68};
        use crate::core::mesh;
        if neutral.len() != MESH_POINTS {
            return Err(Error::Invalid(format!("face mesh has {} points, expected {MESH_POINTS}", neutral.len())));
        }
        if neutral.iter().any(|p| !(p[0].is_finite() && p[1].is_finite())) {
            return Err(Error::Invalid("face mesh: non-finite point".into()));
        }
        let mut region: Vec<Region> = neutral
            .iter()
            .map(|&p| {
                let k = (0..68)
                    .min_by(|&a, &b| dist(p, neutral[MP468_TO_68[a]]).total_cmp(&dist(p, neutral[MP468_TO_68[b]])))
                    .unwrap_or(0);
                region_of(k)
            })
            .collect();
        for &i in mesh::EYE_R.iter() {
            region[i] = Region::EyeR;
        }
        for &i in mesh::EYE_L.iter() {
            region[i] = Region::EyeL;
        }
        for &i in mesh::INNER_LIPS.iter().chain(mesh::OUTER_LIPS.iter()) {
            region[i] = Region::Mouth;
        }
        let lids = [0, 1].map(|e| mesh::lid_points(e).collect());
        Ok(Topology {
            n: MESH_POINTS,
            sub68: MP468_TO_68,
            region,
            lids,
            lip_pairs: mesh::LIP_PAIRS.to_vec(),
            mouth_axis: mesh::MOUTH_CORNERS,
        })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The 68-point subset of `pts` (which must have `len()` points).
    pub fn sub(&self, pts: &[Pt]) -> Pts68 {
        self.sub68.map(|i| pts[i])
    }
}
