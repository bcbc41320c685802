//! Eyes and mouth without a network: what the dense warp cannot make, done deterministically on
//! top of it, so a warp avatar already blinks, looks around and opens its mouth believably.
//!
//! - Eyes: inside the retargeted lid contour the eye is drawn from the portrait's eye moved
//!   rigidly with the eye corners (a similarity), so the eye white is never squashed; the lids
//!   clip it. Closing lids shrink that opening while the warp stretches the upper-lid skin down
//!   over it. The iris is redrawn at the retargeted iris position (gaze), and the portrait's
//!   iris where it no longer is is painted over with the eye-white colour.
//! - Mouth: when the inner lips part further than the source image's, the opening is painted as
//!   a feathered dark cavity shaded from the portrait's own lip colour (the warp alone would
//!   stretch a line of lip pixels across it).
//!
//! These are the fallback that a learned refiner improves on. Pure, no I/O.
use super::geometry::{dist, smoothstep, Pt, Similarity};
use super::mesh::{eye_contour, mouth_gap, INNER_LIPS, OUTER_LIPS};
use super::types::{Frame, Iris};
use super::warp::sample_bilinear;
use crate::error::{Error, Result};

/// Gap (inner-lip gap / mouth width) beyond the source's at which the cavity is fully painted.
const CAVITY_RAMP: f32 = 0.06;
/// Feather width of the eye and mouth polygons, in pixels.
const FEATHER_PX: f32 = 1.2;

/// One eye of the source image, measured once per avatar.
#[derive(Clone, Debug, PartialEq)]
pub struct EyeSource {
    /// The 16-point opening contour.
    pub contour: Vec<Pt>,
    pub iris: Option<Iris>,
    /// Robust eye-white colour (median of the opening outside the iris).
    pub sclera: [u8; 3],
    /// Mean visible iris colour.
    pub iris_colour: [u8; 3],
}

/// Everything the eye and mouth fallbacks need from one source image (canvas coordinates).
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSource {
    pub eyes: [EyeSource; 2],
    /// Mean colour of the lips (between the outer and inner lip contours).
    pub lip_colour: [u8; 3],
    /// The source's own mouth opening (see `mesh::mouth_gap`).
    pub gap: f32,
}

/// Polygon helpers on a closed contour.
fn inside(poly: &[Pt], p: Pt) -> bool {
    super::geometry::inside_polygon(poly, p)
}

fn seg_dist(p: Pt, a: Pt, b: Pt) -> f32 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let l2 = dx * dx + dy * dy;
    let t = if l2 > 0.0 { (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / l2).clamp(0.0, 1.0) } else { 0.0 };
    let (qx, qy) = (a[0] + t * dx - p[0], a[1] + t * dy - p[1]);
    (qx * qx + qy * qy).sqrt()
}

/// Distance from `p` to the polygon's boundary.
fn edge_dist(poly: &[Pt], p: Pt) -> f32 {
    let n = poly.len();
    (0..n).map(|i| seg_dist(p, poly[i], poly[(i + 1) % n])).fold(f32::INFINITY, f32::min)
}

/// Integer pixel box of a polygon, clipped to the frame; `None` when empty or non-finite.
pub(super) fn pixel_box(poly: &[Pt], w: u32, h: u32) -> Option<(u32, u32, u32, u32)> {
    let b = super::landmarks::bbox(poly)?;
    let x0 = b[0].floor().max(0.0);
    let y0 = b[1].floor().max(0.0);
    let x1 = b[2].ceil().min(w as f32 - 1.0);
    let y1 = b[3].ceil().min(h as f32 - 1.0);
    (x0 <= x1 && y0 <= y1).then(|| (x0 as u32, y0 as u32, x1 as u32, y1 as u32))
}

fn px(f: &Frame, x: u32, y: u32) -> [u8; 3] {
    let o = 3 * (y as usize * f.width as usize + x as usize);
    [f.data[o], f.data[o + 1], f.data[o + 2]]
}

fn blend_px(f: &mut Frame, x: u32, y: u32, c: [f32; 3], a: f32) {
    let o = 3 * (y as usize * f.width as usize + x as usize);
    for k in 0..3 {
        let v = f.data[o + k] as f32 * (1.0 - a) + c[k] * a;
        f.data[o + k] = v.round().clamp(0.0, 255.0) as u8;
    }
}

fn median3(v: &mut [[u8; 3]]) -> Option<[u8; 3]> {
    if v.is_empty() {
        return None;
    }
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let mut ch: Vec<u8> = v.iter().map(|p| p[c]).collect();
        ch.sort_unstable();
        *o = ch[ch.len() / 2];
    }
    Some(out)
}

fn mean3(v: &[[u8; 3]]) -> Option<[u8; 3]> {
    if v.is_empty() {
        return None;
    }
    let mut s = [0u64; 3];
    for p in v {
        for c in 0..3 {
            s[c] += p[c] as u64;
        }
    }
    Some(s.map(|x| (x / v.len() as u64) as u8))
}

impl FeatureSource {
    /// Measures eyes and lips of `img` whose 468-point mesh (and irises) are `mesh` / `iris`, in
    /// the pixel coordinates of `img`.
    pub fn measure(img: &Frame, mesh: &[Pt], iris: Option<&[Iris; 2]>) -> Result<FeatureSource> {
        if mesh.len() < super::landmarks::MESH_POINTS || !mesh.iter().all(|p| p[0].is_finite() && p[1].is_finite()) {
            return Err(Error::Invalid("features: face mesh missing or not finite".into()));
        }
        if !img.len_ok() || img.width == 0 || img.height == 0 {
            return Err(Error::Invalid("features: empty image".into()));
        }
        let eyes = [0, 1].map(|e| {
            let contour: Vec<Pt> = eye_contour(e).iter().map(|&i| mesh[i]).collect();
            let ir = iris.map(|i| i[e]).filter(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite() && i.r > 0.0);
            let (mut white, mut iris_px) = (Vec::new(), Vec::new());
            if let Some((x0, y0, x1, y1)) = pixel_box(&contour, img.width, img.height) {
                for y in y0..=y1 {
                    for x in x0..=x1 {
                        let p = [x as f32, y as f32];
                        if !inside(&contour, p) || edge_dist(&contour, p) < 1.0 {
                            continue;
                        }
                        match ir {
                            Some(i) if (dist(p, [i.cx, i.cy]) as f32) < i.r * 0.9 => iris_px.push(px(img, x, y)),
                            Some(i) if (dist(p, [i.cx, i.cy]) as f32) < i.r * 1.15 => {}
                            _ => white.push(px(img, x, y)),
                        }
                    }
                }
            }
            if ir.is_none() {
                // No iris: the brighter half of the opening is the eye white.
                white.sort_by_key(|p| p.iter().map(|&c| c as u32).sum::<u32>());
                let half = white.len() / 2;
                white.drain(..half);
            }
            let sclera = median3(&mut white).unwrap_or([220, 215, 210]);
            let iris_colour = mean3(&iris_px).unwrap_or([70, 50, 40]);
            EyeSource { contour, iris: ir, sclera, iris_colour }
        });
        let outer: Vec<Pt> = OUTER_LIPS.iter().map(|&i| mesh[i]).collect();
        let inner: Vec<Pt> = INNER_LIPS.iter().map(|&i| mesh[i]).collect();
        let mut lips = Vec::new();
        if let Some((x0, y0, x1, y1)) = pixel_box(&outer, img.width, img.height) {
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let p = [x as f32, y as f32];
                    if inside(&outer, p) && !inside(&inner, p) && edge_dist(&outer, p) > 1.0 {
                        lips.push(px(img, x, y));
                    }
                }
            }
        }
        let lip_colour = mean3(&lips).unwrap_or([150, 80, 80]);
        Ok(FeatureSource { eyes, lip_colour, gap: mouth_gap(mesh) })
    }
}

/// Draws both eyes of `src` (a source image, measured as `fs`) into `out` for the retargeted
/// mesh `mesh` and irises `iris` (canvas coordinates; `src` must be in the same coordinates as
/// `fs`). `alpha` scales the whole effect (used for cross-fades between sources).
pub fn render_eyes(src: &Frame, fs: &FeatureSource, mesh: &[Pt], iris: Option<&[Iris; 2]>, out: &mut Frame, alpha: f32) {
    if mesh.len() < super::landmarks::MESH_POINTS || !(alpha > 0.0) {
        return;
    }
    for e in 0..2 {
        let es = &fs.eyes[e];
        let c = eye_contour(e);
        let poly: Vec<Pt> = c.iter().map(|&i| mesh[i]).collect();
        if !poly.iter().all(|p| p[0].is_finite() && p[1].is_finite()) {
            continue;
        }
        // Rigid eye motion from the corners (contour slots 0 and 8).
        let Ok(s) = super::geometry::fit_similarity(&[es.contour[0], es.contour[8]], &[poly[0], poly[8]], None) else { continue };
        let Some(inv) = s.inverse() else { continue };
        let iris_out = iris.map(|i| i[e]).filter(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite() && i.r > 0.0).map(|mut i| {
            // The iris centre stays inside the opening (a squint with a noisy gaze estimate
            // would otherwise hide the whole iris under a lid and leave a white eye).
            let n = poly.len() as f32;
            let c = poly.iter().fold([0.0f32, 0.0], |a, p| [a[0] + p[0] / n, a[1] + p[1] / n]);
            let mut k = 0;
            while !inside(&poly, [i.cx, i.cy]) && k < 10 {
                i.cx += (c[0] - i.cx) * 0.25;
                i.cy += (c[1] - i.cy) * 0.25;
                k += 1;
            }
            i
        });
        let gaze = match (es.iris, iris_out) {
            (Some(si), Some(oi)) => Some((si, oi)),
            _ => None,
        };
        let Some((x0, y0, x1, y1)) = pixel_box(&poly, out.width, out.height) else { continue };
        for y in y0..=y1 {
            for x in x0..=x1 {
                let p = [x as f32, y as f32];
                if !inside(&poly, p) {
                    continue;
                }
                let cover = (edge_dist(&poly, p) / FEATHER_PX).min(1.0) * alpha;
                let colour = eye_pixel(src, es, &inv, gaze, p);
                blend_px(out, x, y, colour, cover);
            }
        }
    }
}

/// The eye at output pixel `p`: iris texture inside the retargeted iris, eye white where the
/// source iris was but no longer is, the rigidly moved source eye elsewhere.
fn eye_pixel(src: &Frame, es: &EyeSource, inv: &Similarity, gaze: Option<(Iris, Iris)>, p: Pt) -> [f32; 3] {
    let q = inv.apply(p);
    let base = sample_bilinear(src, q[0] as f64, q[1] as f64).map(|v| v as f32);
    let Some((si, oi)) = gaze else { return base };
    // How far the iris moved relative to the eye (in iris radii): none -> the rigid eye as it
    // is (exactly the portrait at rest), growing smoothly into the redrawn iris.
    let moved = inv.apply([oi.cx, oi.cy]);
    let shift = dist(moved, [si.cx, si.cy]) as f32 / si.r.max(1e-3);
    let g = ((shift - 0.05) / 0.2).clamp(0.0, 1.0);
    if g <= 0.0 {
        return base;
    }
    mix(base, gaze_pixel(src, es, si, oi, q, base, p), smoothstep(g))
}

fn gaze_pixel(src: &Frame, es: &EyeSource, si: Iris, oi: Iris, q: Pt, base: [f32; 3], p: Pt) -> [f32; 3] {
    let d_out = dist(p, [oi.cx, oi.cy]) as f32;
    if d_out < oi.r {
        // Iris texture, scaled between the two radii; where the source iris is hidden under its
        // lid, mirror vertically, else its mean colour.
        let k = si.r / oi.r;
        let (dx, dy) = ((p[0] - oi.cx) * k, (p[1] - oi.cy) * k);
        for cand in [[si.cx + dx, si.cy + dy], [si.cx + dx, si.cy - dy]] {
            if inside(&es.contour, cand) && edge_dist(&es.contour, cand) > 0.8 {
                let v = sample_bilinear(src, cand[0] as f64, cand[1] as f64).map(|v| v as f32);
                // Soft iris edge against the white.
                let a = ((oi.r - d_out) / FEATHER_PX).clamp(0.0, 1.0);
                return mix(white_or_base(es, si, q, base), v, a);
            }
        }
        let a = ((oi.r - d_out) / FEATHER_PX).clamp(0.0, 1.0);
        return mix(white_or_base(es, si, q, base), es.iris_colour.map(|v| v as f32), a);
    }
    white_or_base(es, si, q, base)
}

/// Paints the source iris over with eye white when `q` (source position) falls on it.
fn white_or_base(es: &EyeSource, si: Iris, q: Pt, base: [f32; 3]) -> [f32; 3] {
    let d = dist(q, [si.cx, si.cy]) as f32;
    let r = si.r * 1.12;
    if d >= r + FEATHER_PX {
        return base;
    }
    let a = ((r + FEATHER_PX - d) / FEATHER_PX).clamp(0.0, 1.0);
    mix(base, es.sclera.map(|v| v as f32), a)
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

/// How strongly the cavity is painted for a retargeted mouth opening `gap_out` over a source
/// opening `gap_src`: 0 up to the source's opening, smoothly 1 by `CAVITY_RAMP` more.
pub fn cavity_strength(gap_out: f32, gap_src: f32) -> f32 {
    let s = smoothstep((gap_out - gap_src) / CAVITY_RAMP);
    if s.is_finite() { s } else { 0.0 }
}

/// How the mouth fallback shades an opening: lip colour times `rim` at the lips to times `deep`
/// in the middle, covering the warped pixels by at most `opacity`. Real openings show teeth,
/// tongue and shadow, so on average they are not much darker than the lips: on 27 training
/// clips (docs/quality.md) this setting scored +0.35 dB mouth PSNR over an opaque 0.7-0.45
/// shade; lighter ones scored up to 0.12 dB more but no longer read as an opening.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cavity {
    pub opacity: f32,
    pub rim: f32,
    pub deep: f32,
}

impl Default for Cavity {
    fn default() -> Self {
        Cavity { opacity: 0.75, rim: 0.9, deep: 0.6 }
    }
}

/// Paints the mouth opening of `mesh` as a dark cavity shaded (`cavity`) from `fs.lip_colour`
/// when it is open wider than the source (`fs.gap`). Returns the strength used (0: nothing drawn).
pub fn render_mouth(fs: &FeatureSource, mesh: &[Pt], cavity: &Cavity, out: &mut Frame) -> f32 {
    if mesh.len() < super::landmarks::MESH_POINTS {
        return 0.0;
    }
    let strength = cavity_strength(mouth_gap(mesh), fs.gap);
    if strength <= 0.0 {
        return 0.0;
    }
    let poly: Vec<Pt> = INNER_LIPS.iter().map(|&i| mesh[i]).collect();
    if !poly.iter().all(|p| p[0].is_finite() && p[1].is_finite()) {
        return 0.0;
    }
    let Some((x0, y0, x1, y1)) = pixel_box(&poly, out.width, out.height) else { return 0.0 };
    // Depth shading: lip colour darkened towards the middle of the opening (real openings
    // show teeth and tongue, so not black; see `Cavity`).
    let lip = fs.lip_colour.map(|v| v as f32);
    let rim = lip.map(|v| v * cavity.rim);
    let deep = lip.map(|v| v * cavity.deep);
    let half_open = {
        let w = dist(poly[0], poly[10]) as f32;
        (mouth_gap(mesh) * w / 2.0).max(1.0)
    };
    for y in y0..=y1 {
        for x in x0..=x1 {
            let p = [x as f32, y as f32];
            if !inside(&poly, p) {
                continue;
            }
            let d = edge_dist(&poly, p);
            let cover = (d / (FEATHER_PX * 1.5)).min(1.0) * strength * cavity.opacity;
            let c = mix(rim, deep, smoothstep(d / half_open));
            blend_px(out, x, y, c, cover);
        }
    }
    strength
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::mesh::{EYE_R, LIP_PAIRS, MOUTH_CORNERS};

    /// A mesh with a horizontal almond eye (right eye) at (100, 100) and a mouth at (150, 200).
    fn face_mesh(eye_open: f32, mouth_open: f32) -> Vec<Pt> {
        let mut m = crate::core::warp::tests::synthetic_mesh(150.0, 150.0, 120.0);
        for e in 0..2 {
            let cx = if e == 0 { 100.0 } else { 200.0 };
            let c = eye_contour(e);
            for (k, &i) in c.iter().enumerate() {
                // slot 0 and 8 corners; 1..7 upper, 9..15 lower
                let (u, up) = if k <= 8 { (k as f32 / 8.0, true) } else { ((16 - k) as f32 / 8.0, false) };
                let x = cx - 20.0 + 40.0 * u;
                let h = eye_open * (std::f32::consts::PI * u).sin();
                m[i] = [x, if up { 100.0 - h } else { 100.0 + h }];
            }
        }
        for (k, &i) in INNER_LIPS.iter().enumerate() {
            let (u, up) = if k <= 10 { (k as f32 / 10.0, true) } else { ((20 - k) as f32 / 10.0, false) };
            let h = mouth_open * (std::f32::consts::PI * u).sin();
            m[i] = [130.0 + 40.0 * u, if up { 200.0 - h } else { 200.0 + h }];
        }
        for (k, &i) in OUTER_LIPS.iter().enumerate() {
            let (u, up) = if k <= 10 { (k as f32 / 10.0, true) } else { ((20 - k) as f32 / 10.0, false) };
            let h = mouth_open + 8.0 * (std::f32::consts::PI * u).sin();
            m[i] = [126.0 + 48.0 * u, if up { 200.0 - h } else { 200.0 + h }];
        }
        m
    }

    fn portrait() -> Frame {
        // Skin everywhere, white eyes with dark irises, red lips.
        let mut f = Frame::black(300, 300);
        for y in 0..300u32 {
            for x in 0..300u32 {
                let o = 3 * (y * 300 + x) as usize;
                let mut c = [200u8, 160, 130];
                for cx in [100.0f32, 200.0] {
                    let (dx, dy) = (x as f32 - cx, y as f32 - 100.0);
                    if (dx / 20.0).powi(2) + (dy / 8.0).powi(2) < 1.0 {
                        c = [235, 235, 230];
                    }
                    if dx * dx + dy * dy < 36.0 {
                        c = [40, 60, 90];
                    }
                }
                if (x as f32 - 150.0).abs() < 24.0 && (y as f32 - 200.0).abs() < 9.0 {
                    c = [170, 60, 70];
                }
                f.data[o..o + 3].copy_from_slice(&c);
            }
        }
        f
    }

    fn irises(dx: f32) -> [Iris; 2] {
        [Iris { cx: 100.0 + dx, cy: 100.0, r: 6.0 }, Iris { cx: 200.0 + dx, cy: 100.0, r: 6.0 }]
    }

    #[test]
    fn measures_eye_white_iris_and_lips() {
        let img = portrait();
        let fs = FeatureSource::measure(&img, &face_mesh(8.0, 0.0), Some(&irises(0.0))).unwrap();
        assert_eq!(fs.eyes[0].sclera, [235, 235, 230]);
        assert_eq!(fs.eyes[1].iris_colour, [40, 60, 90]);
        assert_eq!(fs.lip_colour, [170, 60, 70]);
        assert!(fs.gap < 1e-3);
        assert!(FeatureSource::measure(&img, &face_mesh(8.0, 0.0)[..100], None).is_err());
    }

    #[test]
    fn neutral_eyes_redraw_the_portrait() {
        let img = portrait();
        let mesh = face_mesh(8.0, 0.0);
        let fs = FeatureSource::measure(&img, &mesh, Some(&irises(0.0))).unwrap();
        let mut out = img.clone();
        render_eyes(&img, &fs, &mesh, Some(&irises(0.0)), &mut out, 1.0);
        let worst = out.data.iter().zip(&img.data).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
        assert!(worst <= 1, "at rest the eyes are the portrait's: worst difference {worst}");
    }

    #[test]
    fn gaze_moves_the_iris_and_fills_white_behind() {
        let img = portrait();
        let mesh = face_mesh(8.0, 0.0);
        let fs = FeatureSource::measure(&img, &mesh, Some(&irises(0.0))).unwrap();
        let mut out = img.clone();
        render_eyes(&img, &fs, &mesh, Some(&irises(8.0)), &mut out, 1.0);
        let at = |f: &Frame, x: u32, y: u32| px(f, x, y);
        // The iris is now at x = 108 (dark), and where it was (x = 96) is white.
        assert!(at(&out, 108, 100)[0] < 80, "{:?}", at(&out, 108, 100));
        assert!(at(&out, 96, 100)[0] > 200, "{:?}", at(&out, 96, 100));
        assert!(at(&out, 208, 100)[0] < 80);
    }

    #[test]
    fn closed_lids_draw_no_eye() {
        let img = portrait();
        let fs = FeatureSource::measure(&img, &face_mesh(8.0, 0.0), Some(&irises(0.0))).unwrap();
        let mut skin = Frame::black(300, 300);
        for p in skin.data.chunks_exact_mut(3) {
            p.copy_from_slice(&[200, 160, 130]);
        }
        let mut out = skin.clone();
        render_eyes(&img, &fs, &face_mesh(0.0, 0.0), Some(&irises(0.0)), &mut out, 1.0);
        assert_eq!(out.data, skin.data, "a shut eye has no opening to draw in");
        // Half-closed: the eye is drawn, unsquashed: the iris keeps its radius and its centre row.
        let mut out = skin.clone();
        render_eyes(&img, &fs, &face_mesh(4.0, 0.0), Some(&irises(0.0)), &mut out, 1.0);
        assert!(px(&out, 100, 100)[0] < 80, "iris centre visible");
        assert_eq!(px(&out, 100, 106), [200, 160, 130], "below the lowered lid: skin");
        let _ = EYE_R;
    }

    #[test]
    fn open_mouth_gets_a_dark_cavity_from_lip_colour() {
        let img = portrait();
        let fs = FeatureSource::measure(&img, &face_mesh(8.0, 0.0), None).unwrap();
        let mut out = img.clone();
        // Closed: nothing.
        assert_eq!(render_mouth(&fs, &face_mesh(8.0, 0.0), &Cavity::default(), &mut out), 0.0);
        assert_eq!(out.data, img.data);
        let open = face_mesh(8.0, 12.0);
        assert!(mouth_gap(&open) > 0.2);
        let s = render_mouth(&fs, &open, &Cavity::default(), &mut out);
        assert!((s - 1.0).abs() < 1e-6);
        let c = px(&out, 150, 200);
        let (lip, under) = (fs.lip_colour, px(&img, 150, 200));
        assert!(c[0] < lip[0] && c[0] < under[0] && c[0] > c[1], "darker than the lips and than the warp, reddish: {c:?} (lips {lip:?})");
        // Edge of the opening is lighter than its middle.
        assert!(px(&out, 150, 190)[0] > c[0]);
        // Outside the opening nothing changed.
        assert_eq!(px(&out, 150, 230), px(&img, 150, 230));
        assert_eq!(cavity_strength(0.1, 0.1), 0.0);
        assert!(cavity_strength(0.13, 0.1) > 0.4 && cavity_strength(0.13, 0.1) < 0.6);
        assert_eq!(cavity_strength(f32::NAN, 0.1), 0.0);
        let _ = (LIP_PAIRS, MOUTH_CORNERS);
    }
}
