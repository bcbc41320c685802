//! The mouth's own rule: lips cannot pass through each other. When the driver presses its lips
//! together harder than in its neutral and the portrait's neutral mouth is already closed, the
//! transferred displacement would push the lower inner lip above the upper one (and the gap
//! measure would read that as opening). The lips meet in the middle instead.
use crate::core::geometry::Pt;

/// Inner-lip pairs (upper, lower) of the 68 points, facing each other across the mouth.
pub(super) const LIP_PAIRS: [(usize, usize); 3] = [(61, 67), (62, 66), (63, 65)];

/// Moves crossed inner-lip pairs to their common midpoint (in the mouth's own frame: the
/// corner-to-corner axis and its normal, which points down in an upright face).
pub(super) fn uncross_lips(p: &mut [Pt], pairs: &[(usize, usize)], axis: (usize, usize)) {
    let (ax, ay) = (p[axis.0][0] as f64, p[axis.0][1] as f64);
    let (ex, ey) = (p[axis.1][0] as f64 - ax, p[axis.1][1] as f64 - ay);
    let w2 = ex * ex + ey * ey;
    if !(w2 > 1e-12) || !w2.is_finite() {
        return;
    }
    // Signed distance along the normal (-ey, ex) / |e|: larger is lower on the face.
    let across = |q: [f32; 2]| (-(q[0] as f64 - ax) * ey + (q[1] as f64 - ay) * ex) / w2.sqrt();
    for &(u, l) in pairs {
        if across(p[l]) < across(p[u]) {
            let m = [(p[u][0] + p[l][0]) / 2.0, (p[u][1] + p[l][1]) / 2.0];
            p[u] = m;
            p[l] = m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::dist;
    use crate::core::retarget::tests::{no_smoothing, Face};
    use crate::core::retarget::{openness, Pts68, RetargetParams, Retargeter};
    use crate::stats::pearson;

    /// Inner-lip gap over the inter-ocular distance.
    fn gap_iod(p: &Pts68) -> f64 {
        LIP_PAIRS.iter().map(|&(u, l)| dist(p[u], p[l])).sum::<f64>() / 3.0 / openness::iod(p).unwrap() as f64
    }

    #[test]
    fn mouth_opening_transfers_proportionally() {
        // A driver with a much wider mouth than the portrait's: the opening still transfers
        // with gain 1 relative to each face's eye distance (not shrunk by the mouth widths).
        for gain in [1.0f32, 1.5] {
            let mut r = Retargeter::new(Face::neutral().shape(), Some(Face::other().shape()), RetargetParams { mouth_gain: gain, ..no_smoothing() }).unwrap();
            let (mut dm, mut tm) = (vec![], vec![]);
            for gap in [0.0f32, 5.0, 10.0, 20.0, 30.0, 40.0] {
                let d = Face { gap, ..Face::other() };
                let out = r.retarget(&d.pts(), None).unwrap();
                dm.push(gap_iod(&d.pts()));
                tm.push(gap_iod(&out.pts68));
            }
            // Both neutrals have (nearly) closed mouths, so the openings match up to the gain.
            for (a, b) in dm.iter().zip(&tm) {
                assert!((gain as f64 * a - b).abs() < 0.01 + 0.05 * a, "gain {gain}: driver {a} target {b}");
            }
            assert!(pearson(&dm, &tm) > 0.999, "{dm:?} {tm:?}");
            assert!(tm[5] > tm[1] * 4.0);
        }
    }

    #[test]
    fn pressed_lips_do_not_cross() {
        // Driver's neutral mouth is slightly open, the portrait's closed: pressing the lips
        // together must give a closed mouth, not lips passed through each other.
        let mut r = Retargeter::new(Face::neutral().shape(), Some(Face { gap: 6.0, ..Face::other() }.shape()), no_smoothing()).unwrap();
        let out = r.retarget(&Face::other().pts(), None).unwrap();
        for (u, l) in LIP_PAIRS {
            assert!(out.pts68[l][1] >= out.pts68[u][1] - 1e-4, "{u}/{l}: {:?} {:?}", out.pts68[u], out.pts68[l]);
        }
        assert!(openness::mouth(&out.pts68).unwrap() < 0.01);
        // Opening from there still opens.
        let out = r.retarget(&Face { gap: 26.0, ..Face::other() }.pts(), None).unwrap();
        assert!(openness::mouth(&out.pts68).unwrap() > 0.2);
    }

}
