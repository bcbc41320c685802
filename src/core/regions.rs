//! The refiner's regions: where the mouth and the two eyes are cut out of a rendered frame, the
//! crops and landmark rasters the refiner network sees, and the alpha paste-back of its output.
//!
//! One implementation serves the daemon (refine the live frame), training-data preparation
//! (`puppetcam refiner-data`) and personalisation (`avatar create`), so the network always sees
//! crops cut exactly as at run time. Pure, no I/O.
//!
//! Boxes are squares rotated with the eye line and scaled by the outer inter-ocular distance
//! (stable under expression, unlike the mouth's own width). The subject's left eye is mirrored
//! so that both eyes look like a right eye to the network (one eye model, twice the data).
use super::geometry::{smoothstep, Pt};
use super::mesh::{EYE_L, EYE_R, INNER_LIPS, OUTER_LIPS};
use super::types::{Frame, Iris};
use super::warp::sample_bilinear;

/// Side of the mouth crop in pixels.
pub const MOUTH_SIZE: usize = 96;
/// Side of each eye crop in pixels.
pub const EYE_SIZE: usize = 48;
/// Mouth box side as a fraction of the outer inter-ocular distance (room for a wide-open mouth).
pub const MOUTH_SIDE: f64 = 1.0;
/// Eye box side as a fraction of the outer inter-ocular distance (the eye plus lid skin).
pub const EYE_SIDE: f64 = 0.55;
/// Outer eye corners (subject's right, left) defining the eye line and the scale.
pub const OUTER_CORNERS: (usize, usize) = (33, 263);
/// Fraction of the crop side over which the pasted output fades out towards the crop's edge.
pub const FEATHER: f64 = 0.12;

/// Crop pixel (u, v) -> canvas point `(a0 u + a1 v + a2, a3 u + a4 v + a5)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegionBox {
    pub a: [f64; 6],
    pub size: usize,
}

impl RegionBox {
    /// A square of `side` canvas pixels centred on `c`, turned by `angle`, `size` crop pixels
    /// across, mirrored left-right when `mirror`.
    pub fn new(c: [f64; 2], side: f64, angle: f64, size: usize, mirror: bool) -> RegionBox {
        let k = side / size as f64;
        let m = if mirror { -1.0 } else { 1.0 };
        let (cs, sn) = (angle.cos(), angle.sin());
        // Column vectors of R(angle) * diag(m, 1), times the pixel pitch.
        let (ux, uy) = (m * cs * k, m * sn * k);
        let (vx, vy) = (-sn * k, cs * k);
        // Crop pixel centre u sits at k (u + 0.5) - side / 2 along the box's own axis.
        let o = k * 0.5 - side / 2.0;
        let a2 = c[0] + (ux + vx) / k * o;
        let a5 = c[1] + (uy + vy) / k * o;
        RegionBox { a: [ux, vx, a2, uy, vy, a5], size }
    }

    /// The same box carried into another image by `t` (canvas point p -> t(p)).
    pub fn mapped(&self, t: &super::geometry::Similarity) -> RegionBox {
        let a = &self.a;
        let o = t.apply_f64([a[2], a[5]]);
        let u = t.apply_vec([a[0], a[3]]);
        let v = t.apply_vec([a[1], a[4]]);
        RegionBox { a: [u[0], v[0], o[0], u[1], v[1], o[1]], size: self.size }
    }

    pub fn to_canvas(&self, u: f64, v: f64) -> [f64; 2] {
        let a = &self.a;
        [a[0] * u + a[1] * v + a[2], a[3] * u + a[4] * v + a[5]]
    }

    /// Canvas point -> crop coordinates; `None` for a degenerate box.
    pub fn to_crop(&self, p: [f64; 2]) -> Option<[f64; 2]> {
        let a = &self.a;
        let det = a[0] * a[4] - a[1] * a[3];
        if !det.is_finite() || det.abs() < 1e-12 {
            return None;
        }
        let (x, y) = (p[0] - a[2], p[1] - a[5]);
        Some([(a[4] * x - a[1] * y) / det, (-a[3] * x + a[0] * y) / det])
    }

    /// The canvas pixels the box covers: `[x0, y0, x1, y1)` clipped to `w` x `h`.
    pub fn canvas_bounds(&self, w: u32, h: u32) -> [u32; 4] {
        let n = self.size as f64;
        let cs = [self.to_canvas(-0.5, -0.5), self.to_canvas(n - 0.5, -0.5), self.to_canvas(-0.5, n - 0.5), self.to_canvas(n - 0.5, n - 0.5)];
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for c in cs {
            x0 = x0.min(c[0]);
            y0 = y0.min(c[1]);
            x1 = x1.max(c[0]);
            y1 = y1.max(c[1]);
        }
        let cl = |v: f64, hi: u32| v.clamp(0.0, hi as f64) as u32;
        [cl(x0.floor(), w), cl(y0.floor(), h), cl(x1.ceil() + 1.0, w), cl(y1.ceil() + 1.0, h)]
    }
}

/// The three refiner boxes of a mesh (canvas pixels): mouth, subject's right eye, left eye
/// (mirrored). `None` when the mesh is not a finite 468-point mesh with distinct eye corners.
pub fn boxes(mesh: &[Pt]) -> Option<[RegionBox; 3]> {
    if mesh.len() != super::landmarks::MESH_POINTS || !mesh.iter().all(|p| p[0].is_finite() && p[1].is_finite()) {
        return None;
    }
    let (r, l) = (mesh[OUTER_CORNERS.0], mesh[OUTER_CORNERS.1]);
    let (dx, dy) = ((l[0] - r[0]) as f64, (l[1] - r[1]) as f64);
    let iod = dx.hypot(dy);
    if iod < 4.0 {
        return None;
    }
    let angle = dy.atan2(dx);
    let centre = |idx: &[usize]| {
        let n = idx.len() as f64;
        let s = idx.iter().fold([0.0f64; 2], |s, &i| [s[0] + mesh[i][0] as f64, s[1] + mesh[i][1] as f64]);
        [s[0] / n, s[1] / n]
    };
    Some([
        RegionBox::new(centre(&OUTER_LIPS), MOUTH_SIDE * iod, angle, MOUTH_SIZE, false),
        RegionBox::new(centre(&EYE_R), EYE_SIDE * iod, angle, EYE_SIZE, false),
        RegionBox::new(centre(&EYE_L), EYE_SIDE * iod, angle, EYE_SIZE, true),
    ])
}

/// The crop of `img` under `b`: `size * size * 3` RGB bytes (OpenCV-exact bilinear, border
/// replicated).
pub fn crop(img: &Frame, b: &RegionBox) -> Vec<u8> {
    let n = b.size;
    let mut out = vec![0u8; n * n * 3];
    for v in 0..n {
        for u in 0..n {
            let p = b.to_canvas(u as f64, v as f64);
            let c = sample_bilinear(img, p[0], p[1]);
            out[3 * (v * n + u)..3 * (v * n + u) + 3].copy_from_slice(&c);
        }
    }
    out
}

fn seg_dist(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let l2 = dx * dx + dy * dy;
    let t = if l2 > 0.0 { (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / l2).clamp(0.0, 1.0) } else { 0.0 };
    (p[0] - a[0] - t * dx).hypot(p[1] - a[1] - t * dy)
}


/// What a region's raster draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// ch0 outer-lip contour, ch1 inner-lip contour, ch2 the filled mouth opening.
    Mouth,
    /// ch0 eye contour, ch1 the visible iris (iris disc inside the opening), ch2 the filled
    /// eye opening.
    Eye(usize),
}

/// The points of a region's raster, in crop coordinates: (contour line, second line, opening
/// polygon, iris disc).
type RasterGeometry = (Vec<[f64; 2]>, Vec<[f64; 2]>, Vec<[f64; 2]>, Option<([f64; 2], f64)>);

fn raster_geometry(b: &RegionBox, kind: RegionKind, mesh: &[Pt], iris: Option<&[Iris; 2]>) -> RasterGeometry {
    let to = |i: usize| b.to_crop([mesh[i][0] as f64, mesh[i][1] as f64]).unwrap_or([-1e6, -1e6]);
    match kind {
        RegionKind::Mouth => {
            let inner: Vec<[f64; 2]> = INNER_LIPS.iter().map(|&i| to(i)).collect();
            (OUTER_LIPS.iter().map(|&i| to(i)).collect(), inner.clone(), inner, None)
        }
        RegionKind::Eye(e) => {
            let idx = if e == 0 { &EYE_R } else { &EYE_L };
            let contour: Vec<[f64; 2]> = idx.iter().map(|&i| to(i)).collect();
            let mut disc = None;
            if let Some(ir) = iris {
                let i = ir[e.min(1)];
                if let Some(c) = b.to_crop([i.cx as f64, i.cy as f64]) {
                    let pitch = (b.a[0] * b.a[0] + b.a[3] * b.a[3]).sqrt();
                    if pitch > 0.0 && i.r.is_finite() && i.r > 0.0 {
                        disc = Some((c, i.r as f64 / pitch));
                    }
                }
            }
            (contour.clone(), Vec::new(), contour, disc)
        }
    }
}

/// Integer pixel range `[lo, hi]` covering `[a - pad, b + pad]`, clipped to `0..n`; `None` when
/// empty.
fn span(a: f64, b: f64, pad: f64, n: usize) -> Option<(usize, usize)> {
    let lo = (a.min(b) - pad).ceil().max(0.0);
    let hi = (a.max(b) + pad).floor().min(n as f64 - 1.0);
    (lo.is_finite() && hi.is_finite() && lo <= hi).then(|| (lo as usize, hi as usize))
}

/// Draws a closed polyline into plane `ch` of `out` (max with what is there), visiting only the
/// pixels near each segment: value `clamp(1.5 - distance, 0, 1) * 255`.
fn draw_polyline(out: &mut [u8], n: usize, ch: usize, poly: &[[f64; 2]]) {
    let m = poly.len();
    for k in 0..m {
        let (a, b) = (poly[k], poly[(k + 1) % m]);
        let (Some((x0, x1)), Some((y0, y1))) = (span(a[0], b[0], 1.5, n), span(a[1], b[1], 1.5, n)) else { continue };
        for v in y0..=y1 {
            for u in x0..=x1 {
                let d = seg_dist([u as f64, v as f64], a, b);
                let val = (255.0 * (1.5 - d).clamp(0.0, 1.0)).round() as u8;
                let o = 3 * (v * n + u) + ch;
                out[o] = out[o].max(val);
            }
        }
    }
}

/// The landmark raster of a region: `size * size * 3` bytes (0 or up to 255, anti-aliased lines
/// about 2 crop pixels wide), drawn from the mesh (and iris) in canvas pixels. Only the pixels
/// near each line, inside each polygon's bounds and around the iris are visited (the whole-crop
/// reference, `raster_reference` in the tests, gives the same bytes).
pub fn raster(b: &RegionBox, kind: RegionKind, mesh: &[Pt], iris: Option<&[Iris; 2]>) -> Vec<u8> {
    let n = b.size;
    let mut out = vec![0u8; n * n * 3];
    let (line0, line1, fill, disc) = raster_geometry(b, kind, mesh, iris);
    draw_polyline(&mut out, n, 0, &line0);
    if kind == RegionKind::Mouth {
        draw_polyline(&mut out, n, 1, &line1);
    }
    if fill.len() >= 3 {
        let (fx0, fx1) = fill.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p[0]), hi.max(p[0])));
        let (fy0, fy1) = fill.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p[1]), hi.max(p[1])));
        if let (Some((x0, x1)), Some((y0, y1))) = (span(fx0, fx1, 0.0, n), span(fy0, fy1, 0.0, n)) {
            for v in y0..=y1 {
                for u in x0..=x1 {
                    let p = [u as f64, v as f64];
                    if !super::geometry::inside_polygon(&fill, p) {
                        continue;
                    }
                    let o = 3 * (v * n + u);
                    out[o + 2] = 255;
                    if let (RegionKind::Eye(_), Some((c, r))) = (kind, disc) {
                        let d = (p[0] - c[0]).hypot(p[1] - c[1]);
                        out[o + 1] = (255.0 * (r + 0.5 - d).clamp(0.0, 1.0)).round() as u8;
                    }
                }
            }
        }
    }
    out
}

/// Bilinear sample of a planar f32 image (`ch` planes of `n * n`) at (x, y), border replicated.
fn sample_planar(img: &[f32], n: usize, ch: usize, x: f64, y: f64) -> f32 {
    let (x, y) = (x.clamp(0.0, (n - 1) as f64), y.clamp(0.0, (n - 1) as f64));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(n - 1), (y0 + 1).min(n - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let p = &img[ch * n * n..(ch + 1) * n * n];
    let top = p[y0 * n + x0] * (1.0 - fx) + p[y0 * n + x1] * fx;
    let bot = p[y1 * n + x0] * (1.0 - fx) + p[y1 * n + x1] * fx;
    top * (1.0 - fy) + bot * fy
}

/// Composites a refiner output over `out`: `gen` is 4 planes of `size * size` (RGB in [-1, 1],
/// alpha in [0, 1]). Alpha fades to 0 towards the crop's edge so no seam shows; pixels are
/// only changed where alpha is above zero, so the canvas keeps its own (sharp) pixels
/// wherever the refiner leaves the warp alone. Returns the number of pixels changed.
pub fn paste(out: &mut Frame, b: &RegionBox, gen: &[f32]) -> usize {
    let n = b.size;
    if gen.len() != 4 * n * n {
        return 0;
    }
    let [x0, y0, x1, y1] = b.canvas_bounds(out.width, out.height);
    let fw = (FEATHER * n as f64).max(1.0);
    let width = out.width as usize;
    let mut changed = 0;
    for y in y0..y1 {
        for x in x0..x1 {
            let Some(q) = b.to_crop([x as f64, y as f64]) else { return changed };
            let edge = q[0].min(q[1]).min(n as f64 - 1.0 - q[0]).min(n as f64 - 1.0 - q[1]);
            if edge <= 0.0 {
                continue;
            }
            let feather = smoothstep((edge / fw) as f32);
            let a = sample_planar(gen, n, 3, q[0], q[1]).clamp(0.0, 1.0) * feather;
            if a <= 1.0 / 512.0 {
                continue;
            }
            let o = 3 * (y as usize * width + x as usize);
            for c in 0..3 {
                let g = ((sample_planar(gen, n, c, q[0], q[1]) + 1.0) * 127.5).clamp(0.0, 255.0);
                let cur = out.data[o + c] as f32;
                out.data[o + c] = (cur + (g - cur) * a).round().clamp(0.0, 255.0) as u8;
            }
            changed += 1;
        }
    }
    changed
}

/// Network input of one region: crop RGB mapped to [-1, 1] then the raster mapped to [0, 1],
/// as 6 planes of `size * size` appended to `dst`.
pub fn push_input(dst: &mut Vec<f32>, crop: &[u8], raster: &[u8], size: usize) {
    let px = size * size;
    for c in 0..3 {
        dst.extend((0..px).map(|i| crop[3 * i + c] as f32 / 127.5 - 1.0));
    }
    for c in 0..3 {
        dst.extend((0..px).map(|i| raster[3 * i + c] as f32 / 255.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::warp::tests::synthetic_mesh;

    fn frame(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Frame {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&f(x, y));
            }
        }
        Frame { width: w, height: h, data, pts: Default::default(), seq: 0 }
    }

    #[test]
    fn box_maps_centre_and_inverts() {
        for mirror in [false, true] {
            let b = RegionBox::new([100.0, 50.0], 40.0, 0.3, 96, mirror);
            // The crop's centre (between pixels 47 and 48) is the box centre.
            let c = b.to_canvas(47.5, 47.5);
            assert!((c[0] - 100.0).abs() < 1e-9 && (c[1] - 50.0).abs() < 1e-9, "{c:?}");
            for (u, v) in [(0.0, 0.0), (95.0, 3.0), (12.5, 80.25)] {
                let q = b.to_crop(b.to_canvas(u, v)).unwrap();
                assert!((q[0] - u).abs() < 1e-9 && (q[1] - v).abs() < 1e-9);
            }
            // Side: the crop spans 40 canvas pixels along its rows.
            let e = b.to_canvas(95.5, 47.5);
            let s = b.to_canvas(-0.5, 47.5);
            assert!(((e[0] - s[0]).hypot(e[1] - s[1]) - 40.0).abs() < 1e-9);
            // Mirroring flips the row direction only.
            let dir = e[0] - s[0];
            assert_eq!(dir < 0.0, mirror);
        }
        assert!(RegionBox::new([0.0, 0.0], 0.0, 0.0, 8, false).to_crop([1.0, 1.0]).is_none());
        // Carried by a similarity, every crop pixel lands where the similarity puts it.
        let b = RegionBox::new([100.0, 50.0], 40.0, 0.3, 96, true);
        let t = crate::core::geometry::Similarity::new(1.7, -0.4, 12.0, -3.0);
        let m = b.mapped(&t);
        for (u, v) in [(0.0, 0.0), (95.0, 3.0), (12.5, 80.25)] {
            let p = t.apply_f64(b.to_canvas(u, v));
            let q = m.to_canvas(u, v);
            assert!((p[0] - q[0]).abs() < 1e-9 && (p[1] - q[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn boxes_follow_the_face_and_refuse_bad_meshes() {
        let mesh = synthetic_mesh(200.0, 150.0, 80.0);
        let bx = boxes(&mesh).unwrap();
        assert_eq!(bx[0].size, MOUTH_SIZE);
        assert_eq!(bx[1].size, EYE_SIZE);
        // Scaling and moving the face moves and scales the boxes with it.
        let moved: Vec<Pt> = mesh.iter().map(|p| [p[0] * 2.0 + 10.0, p[1] * 2.0 - 5.0]).collect();
        let bm = boxes(&moved).unwrap();
        for k in 0..3 {
            let c0 = bx[k].to_canvas(3.0, 7.0);
            let c1 = bm[k].to_canvas(3.0, 7.0);
            assert!((c1[0] - (c0[0] * 2.0 + 10.0)).abs() < 1e-3 && (c1[1] - (c0[1] * 2.0 - 5.0)).abs() < 1e-3);
        }
        assert!(boxes(&mesh[..100]).is_none());
        let mut nan = mesh.clone();
        nan[5][0] = f32::NAN;
        assert!(boxes(&nan).is_none());
        let collapsed = vec![[3.0f32, 3.0]; 468];
        assert!(boxes(&collapsed).is_none());
    }

    #[test]
    fn crop_of_an_axis_aligned_box_copies_pixels() {
        let img = frame(64, 64, |x, y| [x as u8 * 3, y as u8 * 3, 7]);
        // Side 16 at 16 px: pitch 1, crop pixel (0, 0) is canvas (c - 7.5).
        let b = RegionBox::new([32.5, 20.5], 16.0, 0.0, 16, false);
        let c = crop(&img, &b);
        assert_eq!(&c[0..3], &[25 * 3, 13 * 3, 7]);
        let o = 3 * (15 * 16 + 15);
        assert_eq!(&c[o..o + 3], &[40 * 3, 28 * 3, 7]);
        // Mirrored: the first crop column is the box's right edge.
        let m = crop(&img, &RegionBox::new([32.5, 20.5], 16.0, 0.0, 16, true));
        assert_eq!(&m[0..3], &[40 * 3, 13 * 3, 7]);
    }

    #[test]
    fn raster_draws_contours_and_openings() {
        // A real face: the bundled default avatar's portrait mesh.
        let av = crate::avatar::WarpAvatar::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/default_avatar.pcav")).unwrap();
        let mut mesh = av.shots[0].mesh.clone();
        let bx = boxes(&mesh).unwrap();
        let closed = raster(&bx[0], RegionKind::Mouth, &mesh, None);
        let count = |r: &[u8], ch: usize| r.chunks(3).filter(|p| p[ch] > 127).count();
        assert!(count(&closed, 0) > 50, "outer lips drawn");
        // Open the mouth: lower inner lips down -> the filled opening grows.
        let gap0 = count(&closed, 2);
        for &(_, l) in crate::core::mesh::LIP_PAIRS.iter() {
            mesh[l][1] += 12.0;
        }
        let open = raster(&bx[0], RegionKind::Mouth, &mesh, None);
        assert!(count(&open, 2) > gap0 + 100, "{} vs {gap0}", count(&open, 2));
        // Eyes: an iris at the eye centre shows inside the opening only.
        let c = |idx: &[usize]| idx.iter().fold([0.0f32; 2], |s, &i| [s[0] + mesh[i][0] / 16.0, s[1] + mesh[i][1] / 16.0]);
        let (cr, cl) = (c(&EYE_R), c(&EYE_L));
        let iris = [Iris { cx: cr[0], cy: cr[1], r: 4.0 }, Iris { cx: cl[0], cy: cl[1], r: 4.0 }];
        for e in 0..2 {
            let r = raster(&bx[1 + e], RegionKind::Eye(e), &mesh, Some(&iris));
            assert!(count(&r, 1) > 0, "iris visible");
            assert!(r.chunks(3).all(|p| p[1] == 0 || p[2] == 255), "iris only inside the opening");
        }
        // A box from a degenerate frame draws nothing rather than panicking.
        let b = RegionBox::new([0.0, 0.0], 0.0, 0.0, 8, false);
        assert!(raster(&b, RegionKind::Mouth, &mesh, None).iter().all(|&v| v == 0));
    }

    /// The straightforward whole-crop raster (every pixel against every segment): the fast one
    /// must give the same bytes, since the refiner was trained on these rasters.
    fn raster_reference(b: &RegionBox, kind: RegionKind, mesh: &[Pt], iris: Option<&[Iris; 2]>) -> Vec<u8> {
        let n = b.size;
        let mut out = vec![0u8; n * n * 3];
        let (line0, line1, fill, disc) = raster_geometry(b, kind, mesh, iris);
        let line_v = |p: [f64; 2], poly: &[[f64; 2]]| -> f64 {
            let m = poly.len();
            let d = (0..m).map(|k| seg_dist(p, poly[k], poly[(k + 1) % m])).fold(f64::MAX, f64::min);
            (1.5 - d).clamp(0.0, 1.0)
        };
        for v in 0..n {
            for u in 0..n {
                let p = [u as f64, v as f64];
                let o = 3 * (v * n + u);
                let in_open = fill.len() >= 3 && crate::core::geometry::inside_polygon(&fill, p);
                out[o] = (255.0 * line_v(p, &line0)).round() as u8;
                out[o + 1] = match (kind, disc) {
                    (RegionKind::Mouth, _) => (255.0 * line_v(p, &line1)).round() as u8,
                    (RegionKind::Eye(_), Some((c, r))) if in_open => (255.0 * (r + 0.5 - (p[0] - c[0]).hypot(p[1] - c[1])).clamp(0.0, 1.0)).round() as u8,
                    _ => 0,
                };
                out[o + 2] = if in_open { 255 } else { 0 };
            }
        }
        out
    }

    #[test]
    fn fast_raster_equals_the_whole_crop_reference() {
        let av = crate::avatar::WarpAvatar::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/default_avatar.pcav")).unwrap();
        let base = av.shots[0].mesh.clone();
        let iris = av.shots[0].iris;
        for (open, roll, shift) in [(0.0f32, 0.0f64, 0.0f32), (9.0, 0.2, 3.3), (20.0, -0.4, -7.1)] {
            let mut mesh = base.clone();
            for &(_, l) in crate::core::mesh::LIP_PAIRS.iter() {
                mesh[l][1] += open;
            }
            let t = crate::core::geometry::Similarity::about(1.1, roll, [250.0, 250.0], [shift as f64, 0.0]);
            let mesh: Vec<Pt> = mesh.iter().map(|&p| t.apply(p)).collect();
            let bx = boxes(&mesh).unwrap();
            for (k, kind) in [RegionKind::Mouth, RegionKind::Eye(0), RegionKind::Eye(1)].into_iter().enumerate() {
                assert_eq!(raster(&bx[k], kind, &mesh, iris.as_ref()), raster_reference(&bx[k], kind, &mesh, iris.as_ref()), "{kind:?} open {open}");
            }
        }
    }

    #[test]
    fn paste_with_zero_alpha_changes_nothing_and_full_alpha_writes_the_centre() {
        let img = frame(120, 100, |x, y| [(x * 2) as u8, (y * 2) as u8, 90]);
        let b = RegionBox::new([60.0, 50.0], 48.0, 0.2, 48, true);
        let mut gen = vec![0.0f32; 4 * 48 * 48];
        let mut out = img.clone();
        assert_eq!(paste(&mut out, &b, &gen), 0);
        assert_eq!(out.data, img.data);
        // Full alpha, white: the box centre turns white, far pixels stay.
        for i in 0..3 * 48 * 48 {
            gen[i] = 1.0;
        }
        for i in 3 * 48 * 48..4 * 48 * 48 {
            gen[i] = 1.0;
        }
        let n = paste(&mut out, &b, &gen);
        assert!(n > 1000, "{n}");
        let at = |f: &Frame, x: usize, y: usize| f.data[3 * (y * 120 + x)];
        assert_eq!(at(&out, 60, 50), 255);
        assert_eq!(at(&out, 2, 2), at(&img, 2, 2));
        // Wrong plane count: refused, nothing written.
        let mut o2 = img.clone();
        assert_eq!(paste(&mut o2, &b, &gen[..100]), 0);
        assert_eq!(o2.data, img.data);
    }

    #[test]
    fn crop_then_paste_of_the_crop_is_near_identity() {
        // Pasting a region's own crop back at full alpha changes the frame only by resampling.
        let img = frame(160, 120, |x, y| [((x as f32 * 0.3).sin() * 100.0 + 120.0) as u8, (y * 2) as u8, ((x + y) % 256) as u8]);
        let b = RegionBox::new([80.0, 60.0], 40.0, 0.1, 96, false);
        let c = crop(&img, &b);
        let mut gen = Vec::new();
        push_input(&mut gen, &c, &vec![0u8; 96 * 96 * 3], 96);
        gen.truncate(3 * 96 * 96);
        gen.extend(std::iter::repeat_n(1.0f32, 96 * 96));
        let mut out = img.clone();
        paste(&mut out, &b, &gen);
        let mut worst = 0i32;
        for y in 55..65 {
            for x in 75..85 {
                for ch in 0..3 {
                    let o = 3 * (y * 160 + x) + ch;
                    worst = worst.max((out.data[o] as i32 - img.data[o] as i32).abs());
                }
            }
        }
        assert!(worst <= 6, "{worst}");
    }
}
