//! Expression transfer: the face's regions (jaw, brows, nose, eyes, mouth), their sizes in units
//! of the inter-ocular distance, and the move of the driver's displacements from its neutral into
//! the portrait's frame, scaled region by region by the ratio of the two faces' region sizes (so
//! that a brow raise or a jaw drop is the same *fraction* of the portrait's region).
use super::openness;
use super::retargeter::DriverModel;
use super::topology::Topology;
use super::{check_finite, Pts68};
use crate::core::geometry::{centroid, dist, Pt, Similarity};
use crate::error::{Error, Result};

/// Regions with their own expression scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Region {
    Jaw,
    BrowR,
    BrowL,
    Nose,
    EyeR,
    EyeL,
    Mouth,
}
pub(super) const REGIONS: usize = 7;

pub(super) fn region_of(i: usize) -> Region {
    match i {
        0..=16 => Region::Jaw,
        17..=21 => Region::BrowR,
        22..=26 => Region::BrowL,
        27..=35 => Region::Nose,
        36..=41 => Region::EyeR,
        42..=47 => Region::EyeL,
        _ => Region::Mouth,
    }
}

/// Sizes of a face's regions in units of its inter-ocular distance, plus its eye-line frame.
#[derive(Clone, Copy, Debug)]
pub(super) struct Measures {
    /// Eye-line angle (radians, image coordinates).
    pub(super) phi: f64,
    pub(super) iod: f64,
    /// Per region: (extent along the eye line, extent across it), divided by `iod`.
    pub(super) sizes: [(f64, f64); REGIONS],
}

pub(super) fn measure(p: &Pts68) -> Result<Measures> {
    check_finite(p, "measure")?;
    let iod = openness::iod(p).ok_or_else(|| Error::Invalid("degenerate face: eyes coincide".into()))? as f64;
    let cr = centroid((36..=41).map(|i| p[i]));
    let cl = centroid((42..=47).map(|i| p[i]));
    let phi = (cl[1] - cr[1]).atan2(cl[0] - cr[0]);
    let cen = |r: std::ops::RangeInclusive<usize>| {
        let c = centroid(r.map(|i| p[i]));
        [c[0] as f32, c[1] as f32]
    };
    let face_w = dist(p[0], p[16]);
    let face_h = dist(p[27], p[8]);
    let brow_r = dist(cen(17..=21), cen(36..=41));
    let brow_l = dist(cen(22..=26), cen(42..=47));
    let nose_w = dist(p[31], p[35]);
    let nose_h = dist(p[27], p[30]);
    let eye_r = dist(p[36], p[39]);
    let eye_l = dist(p[42], p[45]);
    let mouth_w = dist(p[48], p[54]);
    let sizes = [
        (face_w, face_h),
        (face_w, brow_r),
        (face_w, brow_l),
        (nose_w, nose_h),
        (eye_r, eye_r),
        (eye_l, eye_l),
        (mouth_w, mouth_w),
    ]
    .map(|(a, b)| (a / iod, b / iod));
    if sizes.iter().any(|&(a, b)| !(a > 1e-3 && b > 1e-3 && a.is_finite() && b.is_finite())) {
        return Err(Error::Invalid("degenerate face: a facial region has zero size".into()));
    }
    Ok(Measures { phi, iod, sizes })
}

/// Per region: the canonical anisotropic ratio (portrait / driver) of the region sizes, clamped
/// so that a mis-detected region cannot amplify motion wildly. The mouth opens across by the
/// face's scale (the inter-ocular distance, applied by `transfer`) times `mouth_gain`, not by the
/// mouths' width ratio (see `RetargetParams::mouth_gain`).
pub(super) fn ratios(target: &Measures, driver: &Measures, mouth_gain: f64) -> [(f64, f64); REGIONS] {
    let mut ratios = [(1.0, 1.0); REGIONS];
    for k in 0..REGIONS {
        ratios[k] = ((target.sizes[k].0 / driver.sizes[k].0).clamp(0.5, 2.0), (target.sizes[k].1 / driver.sizes[k].1).clamp(0.5, 2.0));
    }
    ratios[Region::Mouth as usize].1 = mouth_gain;
    ratios
}

/// The portrait's points showing the driver's expression (no pose yet): each driver point,
/// aligned onto the driver's neutral by `t`, minus its neutral position, moved into a canonical
/// frame (rotate by -phi_d, / iod_d), scaled per region, and back into the portrait's frame
/// (rotate by phi_t, * iod_t), added to the portrait's neutral point.
pub(super) fn transfer(topo: &Topology, pts: &[Pt], t: &Similarity, d: &DriverModel, tm: &Measures, target: &[Pt], gain: f64) -> Vec<Pt> {
    let (cd, sd) = ((-d.measures.phi).cos(), (-d.measures.phi).sin());
    let (ct, st) = (tm.phi.cos(), tm.phi.sin());
    let k = gain * tm.iod / d.measures.iod;
    let mut out = target.to_vec();
    for i in 0..topo.len() {
        let a = t.apply_f64([pts[i][0] as f64, pts[i][1] as f64]);
        let e = [a[0] - d.all[i][0] as f64, a[1] - d.all[i][1] as f64];
        let c = [cd * e[0] - sd * e[1], sd * e[0] + cd * e[1]];
        let (rx, ry) = d.ratios[topo.region[i] as usize];
        let c = [c[0] * rx * k, c[1] * ry * k];
        let v = [ct * c[0] - st * c[1], st * c[0] + ct * c[1]];
        out[i] = [(target[i][0] as f64 + v[0]) as f32, (target[i][1] as f64 + v[1]) as f32];
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::core::retarget::tests::{retargeter, Face};

    #[test]
    fn brow_raise_moves_target_brows_up_only() {
        let mut r = retargeter();
        let d = Face { brow: 8.0, ..Face::other() };
        let out = r.retarget(&d.pts(), None).unwrap();
        let tn = Face::neutral().pts();
        for i in 17..=26 {
            assert!(out.pts68[i][1] < tn[i][1] - 1.0, "{i}");
        }
        for i in (0..17).chain(27..68) {
            assert!((out.pts68[i][1] - tn[i][1]).abs() < 1e-2, "{i}");
        }
    }

}
