//! Eyes: each eye has its own frame (origin at a corner, x along the corners, unit = the eye's
//! width), in which the portrait's lids are rebuilt with the driver's opening ratio (blinks and
//! winks transfer as ratios of the portrait's own eye height, whatever the two eyes' sizes) and
//! the iris moves by the driver's offset from its neutral iris.
use super::eye_contact::Contact;
use super::openness::{self, Eye};
use super::topology::Topology;
use super::Pts68;
use crate::core::geometry::{dist, Pt};
use crate::core::types::Iris;
use crate::error::{Error, Result};

/// Point expressed in an eye's frame: origin at corner a, x along a->b, units of the eye width.
pub(super) fn to_eye(p: &Pts68, eye: Eye, q: [f64; 2]) -> Option<[f64; 2]> {
    let [a, b, ..] = eye.indices();
    let (ax, ay) = (p[a][0] as f64, p[a][1] as f64);
    let (ex, ey) = (p[b][0] as f64 - ax, p[b][1] as f64 - ay);
    let w2 = ex * ex + ey * ey;
    if !(w2 > 1e-12) || !w2.is_finite() {
        return None;
    }
    let (dx, dy) = (q[0] - ax, q[1] - ay);
    // x: along the eye axis; y: along the axis rotated +90 degrees, both divided by the width.
    Some([(dx * ex + dy * ey) / w2, (-dx * ey + dy * ex) / w2])
}

pub(super) fn from_eye(p: &Pts68, eye: Eye, uv: [f64; 2]) -> [f64; 2] {
    let [a, b, ..] = eye.indices();
    let (ax, ay) = (p[a][0] as f64, p[a][1] as f64);
    let (ex, ey) = (p[b][0] as f64 - ax, p[b][1] as f64 - ay);
    [ax + uv[0] * ex - uv[1] * ey, ay + uv[0] * ey + uv[1] * ex]
}

/// A face's eyes in eye coordinates: its lid points (the topology's, in order) and the iris
/// (centre, radius / width).
#[derive(Clone, Debug)]
pub(super) struct EyeModel {
    pub(super) lids: Vec<[f64; 2]>,
    pub(super) iris: Option<([f64; 2], f64)>,
    pub(super) ear: f64,
}

pub(super) fn eye_model(topo: &Topology, all: &[Pt], iris: Option<&[Iris; 2]>, eye: Eye) -> Result<EyeModel> {
    let p = topo.sub(all);
    let [a, b, ..] = eye.indices();
    let err = || Error::Invalid("degenerate face: eye corners coincide".into());
    let lids = topo.lids[eye as usize]
        .iter()
        .map(|&i| to_eye(&p, eye, [all[i][0] as f64, all[i][1] as f64]).ok_or_else(err))
        .collect::<Result<Vec<_>>>()?;
    let width = dist(p[a], p[b]);
    let iris = iris.and_then(|ir| {
        let i = ir[eye as usize];
        let c = to_eye(&p, eye, [i.cx as f64, i.cy as f64])?;
        (i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite() && i.r >= 0.0).then_some((c, i.r as f64 / width))
    });
    let ear = openness::eye(&p, eye).ok_or_else(err)? as f64;
    Ok(EyeModel { lids, iris, ear })
}

/// A shut eye still reads about this fraction of its open eye-aspect ratio in the face stage's
/// lids (lid thickness and lashes; since 2026-12-07 the iris model's lid contour, `[face]
/// iris_lids`). Measured on 35 training clips (every clip but the evaluation, validation and
/// benchmark ones; `puppetcam landmarks --smooth`): the fast dips of the ratio (under 0.8 for
/// at most 12 frames) bottom out at 0.16-0.77 (10th-90th percentile, median 0.42) and at 0.7-0.8
/// in the noise between blinks. With the 468-point mesh's own lids, which hardly close, the
/// same dips bottomed out at 0.48-0.78 (median 0.64), and this was 0.5: most blinks left the
/// portrait's eye half open. Before that it was 0.3, and the refiner, asked for a closed eye
/// over an open one, painted a grey smudge.
pub(super) const CLOSED_EAR_FRACTION: f64 = 0.4;
/// Below this fraction of the neutral opening the lids are remapped (see `lid_opening`): above
/// the blink troughs, below the noise dips and most of a smile's narrowing.
pub(super) const LID_REMAP_BELOW: f64 = 0.7;

/// Lid opening to show (fraction of the neutral) for a measured eye-aspect-ratio fraction `x`:
/// the same above `LID_REMAP_BELOW`, and below it stretched so that a shut driver eye (which
/// measures `CLOSED_EAR_FRACTION`, not 0) shuts the portrait's eye. Continuous and increasing.
pub(super) fn lid_opening(x: f64) -> f64 {
    if x >= LID_REMAP_BELOW {
        x
    } else {
        (LID_REMAP_BELOW * (x - CLOSED_EAR_FRACTION) / (LID_REMAP_BELOW - CLOSED_EAR_FRACTION)).max(0.0)
    }
}

/// A real face's lids as the retargeter would show them: each eye's lid points, in the eye's
/// own frame, scaled by `lid_opening(x) / x`, where x is the eye's aspect ratio over its
/// `neutral_ear` (the open eye's). A shut eye, which MediaPipe reads at about
/// `CLOSED_EAR_FRACTION` of its open ratio, gets lids on the corner line, as the daemon draws a
/// driver's blink.
///
/// The refiner's training pairs use it: without it the network learned blinks from warps whose
/// eyes were still a third open, and painted grey smudges over the closed lids the daemon
/// actually gives it.
pub fn remap_lids(mesh: &mut [Pt], neutral_ear: [f64; 2]) {
    let Ok(p68) = crate::core::landmarks::to68_2d(mesh) else { return };
    for eye in Eye::BOTH {
        let e = eye as usize;
        let n = neutral_ear[e];
        let Some(ear) = openness::eye(&p68, eye) else { continue };
        let x = ear as f64 / n;
        if !(n > 1e-6) || !x.is_finite() || !(x > 1e-6) || x >= LID_REMAP_BELOW {
            continue;
        }
        let f = lid_opening(x) / x;
        for i in crate::core::mesh::lid_points(e) {
            if let Some(uv) = to_eye(&p68, eye, [mesh[i][0] as f64, mesh[i][1] as f64]) {
                let q = from_eye(&p68, eye, [uv[0], uv[1] * f]);
                mesh[i] = [q[0] as f32, q[1] as f32];
            }
        }
    }
}

/// Moves each eye's four lid points of `p` (iBUG 68) away from its corner line by `f` (in the
/// eye's own frame, as `remap_lids` and the retargeter scale an opening), so that each eye's
/// aspect ratio is multiplied by `f`; corners and all other points stay. A degenerate eye is left
/// as it is.
pub fn scale_lid_opening(p: &mut Pts68, f: f64) {
    let rest = *p;
    for eye in Eye::BOTH {
        for &i in &eye.indices()[2..] {
            if let Some(uv) = to_eye(&rest, eye, [rest[i][0] as f64, rest[i][1] as f64]) {
                let q = from_eye(&rest, eye, [uv[0], uv[1] * f]);
                p[i] = [q[0] as f32, q[1] as f32];
            }
        }
    }
}

/// The eye aspect ratios of a 468-point mesh (right, left); `None` when degenerate.
pub fn mesh_ears(mesh: &[Pt]) -> Option<[f64; 2]> {
    let p68 = crate::core::landmarks::to68_2d(mesh).ok()?;
    Some([openness::eye(&p68, Eye::Right)? as f64, openness::eye(&p68, Eye::Left)? as f64])
}

/// Rebuilds the lids of `out` (the portrait's points with the expression transferred) from the
/// portrait's own lid shape scaled by the driver's opening ratio, and sets each iris (`out_iris`,
/// the portrait's neutral irises) offset from the portrait's neutral iris by the driver's offset
/// from its neutral iris, in eye coordinates. `p68`: the driver's frame (68-point subset) and
/// `iris` its irises; `driver` and `target`: the two neutrals' eye models. With `contact` (eye
/// contact, weight > 0) the iris moves, by that weight, to the portrait's camera gaze plus the
/// driver's departure from its screen gaze instead (`eye_contact.rs`).
#[allow(clippy::too_many_arguments)]
pub(super) fn transfer(
    topo: &Topology,
    out: &mut [Pt],
    out_iris: &mut Option<[Iris; 2]>,
    p68: &Pts68,
    iris: Option<&[Iris; 2]>,
    driver: &[EyeModel; 2],
    target: &[EyeModel; 2],
    gain: f64,
    contact: Option<&Contact>,
) {
    for eye in Eye::BOTH {
        let e = eye as usize;
        let dn = &driver[e];
        let tm = &target[e];
        let ear = openness::eye(p68, eye).map(|v| v as f64).unwrap_or(dn.ear);
        let ratio = if dn.ear > 1e-6 { (1.0 + gain * (lid_opening(ear / dn.ear) - 1.0)).clamp(0.0, 1.6) } else { 1.0 };
        let o68 = topo.sub(out);
        for (slot, &idx) in topo.lids[e].iter().enumerate() {
            let uv = tm.lids[slot];
            let q = from_eye(&o68, eye, [uv[0], uv[1] * ratio]);
            out[idx] = [q[0] as f32, q[1] as f32];
        }
        if let (Some(ir), Some((tc, tr))) = (out_iris.as_mut(), tm.iris) {
            let delta = match (iris, dn.iris) {
                (Some(di), Some((dc, _))) => to_eye(p68, eye, [di[e].cx as f64, di[e].cy as f64])
                    .map(|c| [(gain * (c[0] - dc[0])).clamp(-0.25, 0.25), (gain * (c[1] - dc[1])).clamp(-0.12, 0.12)])
                    .unwrap_or([0.0, 0.0]),
                _ => [0.0, 0.0],
            };
            let mut pos = [tc[0] + delta[0], tc[1] + delta[1]];
            if let (Some(k), Some(di)) = (contact.filter(|k| k.weight > 0.0), iris) {
                if let Some(c) = to_eye(p68, eye, [di[e].cx as f64, di[e].cy as f64]) {
                    // The same gain and clamps as the plain transfer: a glance moves the iris as
                    // far as it did without eye contact, only from the camera gaze.
                    let (s, cam) = (k.screen[e], k.camera[e]);
                    let dep = [(gain * (c[0] - s[0])).clamp(-0.25, 0.25), (gain * (c[1] - s[1])).clamp(-0.12, 0.12)];
                    let w = k.weight.min(1.0);
                    pos = [pos[0] + w * (cam[0] + dep[0] - pos[0]), pos[1] + w * (cam[1] + dep[1] - pos[1])];
                }
            }
            let c = from_eye(&o68, eye, pos);
            let [a, b, ..] = eye.indices();
            ir[e] = Iris { cx: c[0] as f32, cy: c[1] as f32, r: (tr * dist(o68[a], o68[b])) as f32 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::retarget::tests::{no_smoothing, retargeter, Face};
    use crate::core::retarget::{Retargeter, Shape68};

    #[test]
    fn blink_and_wink_transfer_as_ratio() {
        let mut r = retargeter();
        let tn = Face::neutral().pts();
        let t_ear = [Eye::Right, Eye::Left].map(|e| openness::eye(&tn, e).unwrap());
        for (eh_r, eh_l) in [(6.0f32, 6.0f32), (3.0, 6.0), (0.0, 6.0), (6.0, 1.5), (1.0, 1.0)] {
            let d = Face { eh: [eh_r, eh_l], ..Face::other() };
            let out = r.retarget(&d.pts(), None).unwrap();
            for (e, eh) in [(Eye::Right, eh_r), (Eye::Left, eh_l)] {
                let got = openness::eye(&out.pts68, e).unwrap();
                let want = t_ear[e as usize] * lid_opening(eh as f64 / 6.0) as f32;
                assert!((got - want).abs() < 1e-3, "{e:?} {eh}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn a_shut_driver_eye_shuts_the_portrait_eye_and_the_remap_is_continuous() {
        assert_eq!(lid_opening(1.0), 1.0);
        assert_eq!(lid_opening(LID_REMAP_BELOW), LID_REMAP_BELOW);
        assert_eq!(lid_opening(0.8), 0.8);
        assert_eq!(lid_opening(CLOSED_EAR_FRACTION), 0.0);
        assert_eq!(lid_opening(0.1), 0.0);
        // A typical blink trough (0.42 of the open ratio) shuts the portrait's eye; a half blink
        // stays part-way.
        assert!(lid_opening(0.42) < 0.1);
        assert!((0.2..0.5).contains(&lid_opening(0.55)));
        let mut prev = -1.0;
        for k in 0..=200 {
            let v = lid_opening(k as f64 / 100.0);
            // Steepest inside the remap: its slope times the 0.01 step.
            let steepest = 0.01 * LID_REMAP_BELOW / (LID_REMAP_BELOW - CLOSED_EAR_FRACTION) + 1e-9;
            assert!(v >= prev && (v - prev) <= steepest || k == 0, "{k}: {prev} -> {v}");
            prev = v;
        }
        // A driver eye at 0.4 of its neutral opening (a typical blink trough) shuts the target's.
        let mut r = retargeter();
        let d = Face { eh: [2.4, 6.0], ..Face::other() };
        let out = r.retarget(&d.pts(), None).unwrap();
        assert!(openness::eye(&out.pts68, Eye::Right).unwrap() < 1e-3);
    }

    /// A 468-point mesh whose two almond eyes open `h` px at their middle (40 px wide).
    fn eye_mesh(h: f32) -> Vec<Pt> {
        let mut m = crate::core::warp::tests::synthetic_mesh(150.0, 150.0, 120.0);
        for e in 0..2 {
            let cx = if e == 0 { 100.0 } else { 200.0 };
            for (k, &i) in crate::core::mesh::eye_contour(e).iter().enumerate() {
                // Slots 0 and 8 are the corners; 1..7 the upper lid, 9..15 the lower.
                let (u, up) = if k <= 8 { (k as f32 / 8.0, true) } else { ((16 - k) as f32 / 8.0, false) };
                let y = h * (std::f32::consts::PI * u).sin();
                m[i] = [cx - 20.0 + 40.0 * u, if up { 100.0 - y } else { 100.0 + y }];
            }
        }
        m
    }

    #[test]
    fn training_lids_close_as_the_retargeter_closes_a_drivers() {
        let open = eye_mesh(8.0);
        let n = mesh_ears(&open).unwrap();
        for x in [0.0f64, 0.15, CLOSED_EAR_FRACTION, 0.45, 0.55, 0.7, 1.0, 1.2] {
            let mut m = eye_mesh(8.0 * x as f32);
            let before = m.clone();
            remap_lids(&mut m, n);
            let got = mesh_ears(&m).unwrap();
            for e in 0..2 {
                // The opening a driver eye at x of its neutral would give the portrait.
                assert!((got[e] / n[e] - lid_opening(x)).abs() < 0.01, "x {x}: {} vs {}", got[e] / n[e], lid_opening(x));
            }
            // Only lid points move; open eyes are left exactly as they are.
            let moved: Vec<usize> = (0..m.len()).filter(|&i| m[i] != before[i]).collect();
            let lids: Vec<usize> = (0..2).flat_map(crate::core::mesh::lid_points).collect();
            assert!(moved.iter().all(|i| lids.contains(i)), "x {x}: moved {moved:?}");
            if x >= LID_REMAP_BELOW {
                let most = (0..m.len()).map(|i| dist(m[i], before[i])).fold(0.0, f64::max);
                assert!(most < 1e-3, "x {x}: moved {most}");
            }
        }
        // Degenerate input changes nothing.
        let mut m = eye_mesh(2.0);
        let before = m.clone();
        remap_lids(&mut m, [0.0, f64::NAN]);
        assert_eq!(m, before);
        remap_lids(&mut m[..100], n);
    }

    #[test]
    fn gaze_transfers_in_eye_coordinates() {
        let mut r = retargeter();
        let d = Face::other();
        // Driver looks right by a quarter of its eye width... clamped to 0.25 width.
        let out = r.retarget(&d.pts(), Some(&d.iris(0.1 * d.ew, 0.0))).unwrap();
        let t = Face::neutral();
        let ti = t.iris(0.0, 0.0);
        let oi = out.iris.unwrap();
        for k in 0..2 {
            let moved = (oi[k].cx - ti[k].cx) / t.ew;
            assert!((moved - 0.1).abs() < 1e-3, "{moved}");
            assert!((oi[k].cy - ti[k].cy).abs() < 1e-3);
        }
        // A wild iris position is clamped, not passed on.
        let out = r.retarget(&d.pts(), Some(&d.iris(5.0 * d.ew, 0.0))).unwrap();
        assert!(((out.iris.unwrap()[0].cx - ti[0].cx) / t.ew - 0.25).abs() < 1e-3);
    }

    #[test]
    fn target_without_iris_gives_no_iris() {
        let target = Shape68 { pts68: Face::neutral().pts(), iris: None };
        let mut r = Retargeter::new(target, Some(Face::other().shape()), no_smoothing()).unwrap();
        let d = Face::other();
        assert!(r.retarget(&d.pts(), Some(&d.iris(1.0, 0.0))).unwrap().iris.is_none());
    }

}
