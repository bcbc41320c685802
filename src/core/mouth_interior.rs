//! The inside of an opening mouth for a portrait that never showed one: upper teeth under the
//! upper lip, shadow, tongue and lower teeth, from a prior learned on the training identities'
//! open mouths (`mouth_prior`, made by scripts/make_mouth_prior.py), in the portrait's own colours.
//!
//! Why: a one-portrait avatar (K = 1, a photo or a painting) has a closed mouth, so the warp can
//! only stretch a line of lip pixels across the opening and the refiner, which cannot invent
//! teeth it was never shown, paints a soft red blob over it. The prior is stored relative to the
//! skin colour, so multiplying it by the portrait's skin gives teeth lit and tinted like the
//! portrait (yellowed on a varnished painting, cool on a blue-lit photo), and the refiner then
//! blends it in.
//!
//! Geometry: the opening is parameterised by `s` (0 at one inner mouth corner, 1 at the other,
//! along the corner-to-corner axis) and `t` (0 on the upper inner lip, 1 on the lower); the
//! atlas is sampled bilinearly in (s, t) and linearly between its gap bins. Pure, no I/O.
use super::geometry::{dist, smoothstep, Pt};
use super::mouth_prior::{ATLAS, GAPS, ROUND_ATLAS, ROUND_FROM, ROUND_FULL, S, SKIN_POINTS, T};
use super::types::Frame;
use super::warp::sample_bilinear;

/// Upper and lower inner-lip polylines, corner 78 to corner 308 (MediaPipe indices).
const UPPER: [usize; 11] = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308];
const LOWER: [usize; 11] = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308];
/// Central inner-lip pairs: the gap the prior's bins are indexed by.
const CENTRAL_PAIRS: [(usize, usize); 3] = [(82, 87), (13, 14), (312, 317)];
/// Outer eye corners: the inter-ocular distance the gap is measured against.
const OUTER_EYE: (usize, usize) = (33, 263);
/// Feather at the inner lips, in pixels (the lip edge stays the warp's).
const FEATHER_PX: f32 = 1.5;

fn d(a: Pt, b: Pt) -> f32 {
    dist(a, b) as f32
}

/// Central inner-lip gap over the outer inter-ocular distance (`None` for a degenerate mesh).
pub fn gap_iod(mesh: &[Pt]) -> Option<f32> {
    if mesh.len() < super::landmarks::MESH_POINTS {
        return None;
    }
    let iod = d(mesh[OUTER_EYE.0], mesh[OUTER_EYE.1]);
    let g = CENTRAL_PAIRS.iter().map(|&(u, l)| d(mesh[u], mesh[l])).sum::<f32>() / CENTRAL_PAIRS.len() as f32 / iod;
    (iod > 1e-3 && g.is_finite()).then_some(g)
}

/// The skin colour the prior is relative to: the mean of `img` at the prior's skin points.
pub fn skin_colour(img: &Frame, mesh: &[Pt]) -> Option<[f32; 3]> {
    if mesh.len() < super::landmarks::MESH_POINTS {
        return None;
    }
    let mut acc = [0.0f32; 3];
    for &i in &SKIN_POINTS {
        let c = sample_bilinear(img, mesh[i][0] as f64, mesh[i][1] as f64);
        for k in 0..3 {
            acc[k] += c[k] as f32 / SKIN_POINTS.len() as f32;
        }
    }
    acc.iter().all(|v| v.is_finite()).then_some(acc)
}

/// An atlas (T rows of S RGB ratios x 100) at (s, t) in [0, 1]^2, bilinear between cell centres.
fn sample_atlas(a: &[u8; S * T * 3], s: f32, t: f32) -> [f32; 3] {
    let fx = (s * S as f32 - 0.5).clamp(0.0, (S - 1) as f32);
    let fy = (t * T as f32 - 0.5).clamp(0.0, (T - 1) as f32);
    let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(S - 1), (y0 + 1).min(T - 1));
    let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
    let px = |x: usize, y: usize, c: usize| a[(y * S + x) * 3 + c] as f32 / 100.0;
    [0, 1, 2].map(|c| {
        let top = px(x0, y0, c) * (1.0 - ax) + px(x1, y0, c) * ax;
        let bot = px(x0, y1, c) * (1.0 - ax) + px(x1, y1, c) * ax;
        top * (1.0 - ay) + bot * ay
    })
}

/// The prior's colour ratio at (s, t) for an opening of `gap` (linear between bins, the end
/// bins beyond their centres).
pub fn prior_ratio(gap: f32, s: f32, t: f32) -> [f32; 3] {
    let n = GAPS.len();
    if gap <= GAPS[0] {
        return sample_atlas(&ATLAS[0], s, t);
    }
    if gap >= GAPS[n - 1] {
        return sample_atlas(&ATLAS[n - 1], s, t);
    }
    let k = (0..n - 1).find(|&k| gap < GAPS[k + 1]).unwrap_or(n - 2);
    let w = (gap - GAPS[k]) / (GAPS[k + 1] - GAPS[k]);
    let (a, b) = (sample_atlas(&ATLAS[k], s, t), sample_atlas(&ATLAS[k + 1], s, t));
    [0, 1, 2].map(|c| a[c] * (1.0 - w) + b[c] * w)
}

/// A polyline in the mouth's frame (u along the corner axis in mouth widths, v across in
/// pixels), sorted by u so it can be interpolated.
fn polyline(mesh: &[Pt], idx: &[usize; 11], o: Pt, ux: [f32; 2], w: f32) -> [(f32, f32); 11] {
    let mut p = idx.map(|i| {
        let (dx, dy) = (mesh[i][0] - o[0], mesh[i][1] - o[1]);
        ((dx * ux[0] + dy * ux[1]) / w, -dx * ux[1] + dy * ux[0])
    });
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p
}

fn interp(p: &[(f32, f32); 11], u: f32) -> f32 {
    if u <= p[0].0 {
        return p[0].1;
    }
    for k in 1..p.len() {
        if u <= p[k].0 {
            let span = p[k].0 - p[k - 1].0;
            let a = if span > 1e-6 { (u - p[k - 1].0) / span } else { 1.0 };
            return p[k - 1].1 + a * (p[k].1 - p[k - 1].1);
        }
    }
    p[p.len() - 1].1
}

/// Inner mouth-corner distance over the outer inter-ocular distance (`None` when degenerate).
pub fn inner_width_iod(mesh: &[Pt]) -> Option<f32> {
    if mesh.len() < super::landmarks::MESH_POINTS {
        return None;
    }
    let iod = d(mesh[OUTER_EYE.0], mesh[OUTER_EYE.1]);
    let w = d(mesh[UPPER[0]], mesh[UPPER[10]]) / iod;
    (iod > 1e-3 && w.is_finite()).then_some(w)
}

/// How rounded a mouth of inner width `w` is against its rest width `rest` (both over the
/// inter-ocular distance): 0 (not) .. 1 (fully). A mouth whose inner width has narrowed to
/// `ROUND_FROM` of its rest width starts to round ("o", "u", "w") and is fully rounded at
/// `ROUND_FULL`; rounded lips cover the teeth. Both are measured on the training identities'
/// open mouths (scripts/make_mouth_prior.py: where their teeth share falls); the held-out clips
/// show the same (docs/quality.md, "Where the teeth error comes from").
pub fn rounding(w: f32, rest: f32) -> f32 {
    if !(rest > 1e-6) || !w.is_finite() {
        return 0.0;
    }
    ((ROUND_FROM - w / rest) / (ROUND_FROM - ROUND_FULL)).clamp(0.0, 1.0)
}

/// The inside of a fully rounded mouth at (s, t): the rounded atlas (shadow and tongue).
fn rounded_ratio(s: f32, t: f32) -> [f32; 3] {
    sample_atlas(&ROUND_ATLAS, s, t)
}

/// Paints the opening of `mesh` beyond the source's own opening `gap_src` (`mesh::mouth_gap`),
/// ramped in by `features::cavity_strength`, the rounded mouth's inside where the lips round
/// against the source's inner width `width_src` (`inner_width_iod`; `None`: never): what the avatar's renderer draws
/// before the refiner, and what the refiner's training pairs carry (`refine::pair_sample`), so
/// the two cannot drift apart. Returns the number of pixels touched.
pub fn paint_opening(out: &mut Frame, mesh: &[Pt], skin: [f32; 3], gap_src: f32, width_src: Option<f32>) -> usize {
    if mesh.len() < super::landmarks::MESH_POINTS {
        return 0;
    }
    let strength = super::features::cavity_strength(super::mesh::mouth_gap(mesh), gap_src);
    let round = match (width_src, inner_width_iod(mesh)) {
        (Some(rest), Some(w)) => rounding(w, rest),
        _ => 0.0,
    };
    paint(out, mesh, skin, strength, round)
}

/// Paints the opening of `mesh` (canvas pixels) with the prior times `skin`, covering the warp
/// by `strength` (0..1; the caller ramps it with how far the mouth opens beyond its source's),
/// blended by `round` (0..1, `rounding`) towards the rounded mouth's atlas, feathered at the
/// inner lips. Returns the number of pixels touched.
pub fn paint(out: &mut Frame, mesh: &[Pt], skin: [f32; 3], strength: f32, round: f32) -> usize {
    let Some(gap) = gap_iod(mesh) else { return 0 };
    let strength = strength.clamp(0.0, 1.0);
    if !(strength > 0.0) {
        return 0;
    }
    let (o, e) = (mesh[UPPER[0]], mesh[UPPER[10]]);
    let w = d(o, e);
    if !(w > 2.0) || !w.is_finite() {
        return 0;
    }
    let ux = [(e[0] - o[0]) / w, (e[1] - o[1]) / w];
    let (up, lo) = (polyline(mesh, &UPPER, o, ux, w), polyline(mesh, &LOWER, o, ux, w));
    let lips: Vec<Pt> = UPPER.iter().chain(LOWER.iter()).map(|&i| mesh[i]).collect();
    let Some((xa, ya, xb, yb)) = super::features::pixel_box(&lips, out.width, out.height) else { return 0 };
    let round = round.clamp(0.0, 1.0);
    let mut n = 0;
    for y in ya..=yb {
        for x in xa..=xb {
            let (dx, dy) = (x as f32 - o[0], y as f32 - o[1]);
            let u = (dx * ux[0] + dy * ux[1]) / w;
            if !(0.0..=1.0).contains(&u) {
                continue;
            }
            let v = -dx * ux[1] + dy * ux[0];
            let (top, bot) = (interp(&up, u), interp(&lo, u));
            let h = bot - top;
            if !(h > 0.5) || v < top || v > bot {
                continue;
            }
            let t = (v - top) / h;
            // Feather across the lips, and along the axis near the corners.
            let edge = ((v - top).min(bot - v) / FEATHER_PX).min(u.min(1.0 - u) * w / FEATHER_PX);
            let a = smoothstep(edge.min(1.0)) * strength;
            let p = prior_ratio(gap, u, t);
            let r = if round > 0.0 {
                let q = rounded_ratio(u, t);
                [0, 1, 2].map(|c| p[c] + (q[c] - p[c]) * round)
            } else {
                p
            };
            let i = ((y * out.width + x) * 3) as usize;
            for c in 0..3 {
                let want = (r[c] * skin[c]).clamp(0.0, 255.0);
                let have = out.data[i + c] as f32;
                out.data[i + c] = (have + (want - have) * a).round().clamp(0.0, 255.0) as u8;
            }
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A 468-point mesh with eyes 100 px apart and a mouth 50 px wide whose central gap is `gap` px.
    fn mesh(gap: f32) -> Vec<Pt> {
        let mut m = vec![[100.0f32, 100.0]; super::super::landmarks::MESH_POINTS];
        m[OUTER_EYE.0] = [50.0, 60.0];
        m[OUTER_EYE.1] = [150.0, 60.0];
        for (k, (&u, &l)) in UPPER.iter().zip(LOWER.iter()).enumerate() {
            let s = k as f32 / 10.0;
            let x = 75.0 + 50.0 * s;
            let h = (std::f32::consts::PI * s).sin() * gap / 2.0;
            m[u] = [x, 140.0 - h];
            m[l] = [x, 140.0 + h];
        }
        for &i in &SKIN_POINTS {
            m[i] = [100.0, 100.0];
        }
        m
    }

    fn frame(c: [u8; 3]) -> Frame {
        Frame { width: 200, height: 200, data: c.repeat(200 * 200), pts: Duration::ZERO, seq: 0 }
    }

    fn px(f: &Frame, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * f.width + x) * 3) as usize;
        [f.data[i], f.data[i + 1], f.data[i + 2]]
    }

    #[test]
    fn gap_is_relative_to_the_eyes() {
        assert!((gap_iod(&mesh(20.0)).unwrap() - 0.2 * (0.4 * std::f32::consts::PI).sin()).abs() < 0.02);
        assert!(gap_iod(&mesh(0.0)).unwrap() < 1e-6);
        assert!(gap_iod(&[[0.0, 0.0]; 10]).is_none());
    }

    #[test]
    fn skin_colour_is_read_at_the_skin_points() {
        let f = frame([200, 150, 120]);
        let s = skin_colour(&f, &mesh(10.0)).unwrap();
        assert!((s[0] - 200.0).abs() < 0.5 && (s[2] - 120.0).abs() < 0.5);
    }

    #[test]
    fn the_prior_has_teeth_on_top_and_is_darker_in_the_middle_of_a_wide_opening() {
        let luma = |r: [f32; 3]| 0.299 * r[0] + 0.587 * r[1] + 0.114 * r[2];
        let sat = |r: [f32; 3]| (r.iter().cloned().fold(0.0, f32::max) - r.iter().cloned().fold(9.0, f32::min)) / r.iter().cloned().fold(1e-3, f32::max);
        let wide = GAPS[GAPS.len() - 1];
        let teeth = prior_ratio(wide, 0.5, 0.08);
        let middle = prior_ratio(wide, 0.5, 0.5);
        // Relative to skin (ratio 1): teeth are brighter and whiter, the middle is shadow.
        assert!(luma(teeth) > 1.0 && luma(teeth) > 1.5 * luma(middle), "teeth {teeth:?} middle {middle:?}");
        assert!(sat(teeth) < sat(middle));
        // Mirror-symmetric, and continuous between bins.
        let (a, b) = (prior_ratio(0.2, 0.2, 0.3), prior_ratio(0.2, 0.8, 0.3));
        assert!((0..3).all(|c| (a[c] - b[c]).abs() < 0.02));
        let (lo, hi) = (prior_ratio(0.2, 0.5, 0.3), prior_ratio(0.2001, 0.5, 0.3));
        assert!((0..3).all(|c| (lo[c] - hi[c]).abs() < 0.01));
    }

    #[test]
    fn paint_fills_only_the_opening_in_the_portraits_colours() {
        let m = mesh(30.0);
        let skin = [200.0, 150.0, 120.0];
        let mut f = frame([10, 200, 10]);
        let n = paint(&mut f, &m, skin, 1.0, 0.0);
        assert!(n > 500, "{n} pixels");
        // Outside the opening: untouched.
        assert_eq!(px(&f, 100, 160), [10, 200, 10]);
        assert_eq!(px(&f, 70, 140), [10, 200, 10]);
        // Inside: the prior times the skin colour (no green left), teeth above shadow.
        let top = px(&f, 100, 128);
        let mid = px(&f, 100, 140);
        assert!(top[1] < 200 && mid[1] < 200 && top[0] > top[1] / 2, "top {top:?} mid {mid:?}");
        let l = |c: [u8; 3]| c[0] as u32 + c[1] as u32 + c[2] as u32;
        assert!(l(top) > l(mid), "top {top:?} mid {mid:?}");
        // Twice the skin brightness gives (about) twice the colour.
        let mut g = frame([10, 200, 10]);
        paint(&mut g, &m, skin.map(|v| v / 2.0), 1.0, 0.0);
        let mid2 = px(&g, 100, 140);
        assert!((mid[0] as i32 - 2 * mid2[0] as i32).abs() <= 2);
    }

    #[test]
    fn rounded_lips_show_the_dark_cavity_not_teeth() {
        // Measured on the training identities: rounding starts a little below the rest width
        // and is full before 0.8 of it.
        assert!((0.85..1.0).contains(&ROUND_FROM) && (0.8..ROUND_FROM - 0.03).contains(&ROUND_FULL), "{ROUND_FROM} {ROUND_FULL}");
        assert_eq!(rounding(0.5, 0.5), 0.0);
        assert_eq!(rounding(0.5 * (ROUND_FROM + 0.005), 0.5), 0.0);
        assert!((rounding(0.25 * (ROUND_FROM + ROUND_FULL), 0.5) - 0.5).abs() < 1e-4);
        assert_eq!(rounding(0.3, 0.5), 1.0);
        assert_eq!(rounding(0.3, 0.0), 0.0);
        assert_eq!(rounding(f32::NAN, 0.5), 0.0);
        let m = mesh(30.0);
        let skin = [200.0, 150.0, 120.0];
        let l = |c: [u8; 3]| c[0] as u32 + c[1] as u32 + c[2] as u32;
        let (mut open, mut round) = (frame([10, 200, 10]), frame([10, 200, 10]));
        paint(&mut open, &m, skin, 1.0, 0.0);
        paint(&mut round, &m, skin, 1.0, 1.0);
        // Where the open mouth shows its upper teeth the rounded one is dark, and the rounded
        // interior is about one colour (no teeth band above a shadow).
        let (t_open, t_round, mid_round) = (px(&open, 100, 128), px(&round, 100, 128), px(&round, 100, 140));
        assert!(l(t_round) * 2 < l(t_open), "teeth {t_open:?} rounded {t_round:?}");
        assert!(l(t_round).abs_diff(l(mid_round)) <= 6, "top {t_round:?} mid {mid_round:?}");
        // Through paint_opening: the mouth's inner width against the source's decides.
        let w = inner_width_iod(&m).unwrap();
        assert!((w - 0.5).abs() < 1e-5);
        let (mut same, mut narrowed) = (frame([10, 200, 10]), frame([10, 200, 10]));
        paint_opening(&mut same, &m, skin, 0.0, Some(w));
        paint_opening(&mut narrowed, &m, skin, 0.0, Some(w / 0.75));
        assert_eq!(same.data, open.data);
        assert_eq!(narrowed.data, round.data);
    }

    #[test]
    fn nothing_is_painted_for_a_closed_mouth_zero_strength_or_a_bad_mesh() {
        let mut f = frame([10, 200, 10]);
        let before = f.data.clone();
        assert_eq!(paint(&mut f, &mesh(0.0), [200.0; 3], 1.0, 0.0), 0);
        assert_eq!(paint(&mut f, &mesh(30.0), [200.0; 3], 0.0, 0.0), 0);
        let mut nan = mesh(30.0);
        nan[13] = [f32::NAN, 0.0];
        assert_eq!(paint(&mut f, &nan, [200.0; 3], 1.0, 0.0), 0);
        // Off the frame: clipped, no panic.
        let far: Vec<Pt> = mesh(30.0).iter().map(|p| [p[0] + 150.0, p[1] + 150.0]).collect();
        paint(&mut f, &far, [200.0; 3], 1.0, 0.0);
        let neg: Vec<Pt> = mesh(30.0).iter().map(|p| [p[0] - 400.0, p[1] - 400.0]).collect();
        assert_eq!(paint(&mut f, &neg, [200.0; 3], 1.0, 0.0), 0);
        assert_eq!(f.data[..3000], before[..3000]);
    }
}
