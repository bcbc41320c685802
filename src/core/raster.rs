//! Landmark raster of docs/rasteriser.md (version 1) and the face crop rule.
//!
//! The generator only ever sees this image, so the daemon and the Python training code
//! (scripts/puppetcam_train/raster.py) must draw it identically: both use OpenCV's own drawing
//! calls with the same fixed-point coordinates, and tests/golden/ pins the result bit for bit.
//! Pure: no I/O; OpenCV is used as a drawing/warping library only.
use ndarray::Array4;
use opencv::core::{Mat, Point, Scalar, Size, Vec3b, Vector, BORDER_REPLICATE, CV_64F};
use opencv::imgproc::{self, INTER_LINEAR, LINE_AA};
use opencv::prelude::*;

use crate::core::types::{FaceLandmarks, Frame, Iris};
use crate::error::{Error, Result};

/// Side of the square raster and of the generator input, in pixels.
pub const RASTER_SIZE: usize = 256;
/// Bytes of one raster (RGB24).
pub const RASTER_BYTES: usize = RASTER_SIZE * RASTER_SIZE * 3;
/// OpenCV fixed-point shift: coordinates are in 1/16 px.
pub const SHIFT: i32 = 4;
/// Coordinates beyond this are nonsense for a 256 px crop and could overflow OpenCV's fixed point
/// (it works in 1/65536 px internally), so they are rejected rather than drawn.
pub const MAX_ABS_COORD: f32 = 16384.0;

const IRIS_COLOUR: [u8; 3] = [255, 255, 255];
const THICKNESS: i32 = 2;

/// One polyline of the raster: inclusive point range, closed or not, RGB colour.
struct Part {
    first: usize,
    last: usize,
    closed: bool,
    rgb: [u8; 3],
}

/// The drawing table of the spec, in drawing order (after the irises).
const PARTS: [Part; 9] = [
    Part { first: 0, last: 16, closed: false, rgb: [0, 160, 255] },   // jaw
    Part { first: 17, last: 21, closed: false, rgb: [255, 128, 0] },  // right brow
    Part { first: 22, last: 26, closed: false, rgb: [255, 210, 0] },  // left brow
    Part { first: 27, last: 30, closed: false, rgb: [0, 255, 255] },  // nose bridge
    Part { first: 31, last: 35, closed: false, rgb: [0, 200, 120] },  // nose base
    Part { first: 36, last: 41, closed: true, rgb: [0, 255, 0] },     // right eye
    Part { first: 42, last: 47, closed: true, rgb: [160, 255, 0] },   // left eye
    Part { first: 48, last: 59, closed: true, rgb: [255, 0, 96] },    // outer lips
    Part { first: 60, last: 67, closed: true, rgb: [255, 0, 255] },   // inner lips
];

/// The spec's fixed-point rule `floor(v * 16 + 0.5)` in f64 (round-half-up, not half-even).
fn fixed(v: f32) -> Result<i32> {
    if !v.is_finite() || v.abs() > MAX_ABS_COORD {
        return Err(Error::Invalid(format!("raster: coordinate {v} is not finite or beyond ±{MAX_ABS_COORD}")));
    }
    Ok((f64::from(v) * f64::from(1 << SHIFT) + 0.5).floor() as i32)
}

fn fixed_point(p: [f32; 2]) -> Result<Point> {
    Ok(Point::new(fixed(p[0])?, fixed(p[1])?))
}

/// The canvas bytes are RGB, so a colour is passed to OpenCV in R, G, B channel order.
fn scalar(rgb: [u8; 3]) -> Scalar {
    Scalar::new(f64::from(rgb[0]), f64::from(rgb[1]), f64::from(rgb[2]), 0.0)
}

/// Draws the landmark raster: 256x256 RGB24, black background (docs/rasteriser.md).
///
/// `pts68` are in 256x256 crop pixels; points outside the canvas are allowed (clipped by
/// OpenCV). Non-finite or absurd coordinates are rejected with `Error::Invalid`.
pub fn rasterise(pts68: &[[f32; 2]; 68], iris: Option<&[Iris; 2]>) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; RASTER_BYTES];
    rasterise_into(pts68, iris, &mut buf)?;
    Ok(buf)
}

/// Like [`rasterise`] but draws into a caller-owned buffer (cleared first), so the generator
/// thread can reuse one allocation per frame.
pub fn rasterise_into(pts68: &[[f32; 2]; 68], iris: Option<&[Iris; 2]>, buf: &mut [u8]) -> Result<()> {
    if buf.len() != RASTER_BYTES {
        return Err(Error::Invalid(format!("raster: buffer has {} bytes, expected {RASTER_BYTES}", buf.len())));
    }
    // Convert everything before touching the canvas so bad input leaves no partial drawing.
    let q: Vec<Point> = pts68.iter().map(|&p| fixed_point(p)).collect::<Result<_>>()?;
    let mut circles = Vec::with_capacity(2);
    if let Some(irises) = iris {
        for i in irises {
            let (c, r) = (fixed_point([i.cx, i.cy])?, fixed(i.r)?);
            if !(i.r >= 0.5) {
                continue; // too small (or NaN-free but tiny): the spec skips it
            }
            circles.push((c, r));
        }
    }
    buf.fill(0);
    let mut img = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(RASTER_SIZE as i32, RASTER_SIZE as i32, buf)?;
    for (c, r) in circles {
        imgproc::circle(&mut img, c, r, scalar(IRIS_COLOUR), -1, LINE_AA, SHIFT)?;
    }
    for part in &PARTS {
        // One contour per call, exactly as the spec (and Python's cv2.polylines([c])) does.
        let contour: Vector<Point> = q[part.first..=part.last].iter().copied().collect();
        let mut contours = Vector::<Vector<Point>>::new();
        contours.push(contour);
        imgproc::polylines(&mut img, &contours, part.closed, scalar(part.rgb), THICKNESS, LINE_AA, SHIFT)?;
    }
    Ok(())
}

/// Generator input: NCHW `[1, 3, 256, 256]` f32, RGB, `x / 127.5 - 1`.
pub fn to_input_tensor(raster: &[u8]) -> Result<Array4<f32>> {
    let mut t = Array4::<f32>::zeros((1, 3, RASTER_SIZE, RASTER_SIZE));
    write_input_tensor(raster, t.as_slice_mut().expect("fresh array is contiguous"))?;
    Ok(t)
}

/// Writes the generator input into a caller-owned contiguous NCHW slice (`3 * 256 * 256` f32).
pub fn write_input_tensor(raster: &[u8], out: &mut [f32]) -> Result<()> {
    const PLANE: usize = RASTER_SIZE * RASTER_SIZE;
    if raster.len() != RASTER_BYTES || out.len() != RASTER_BYTES {
        return Err(Error::Invalid(format!(
            "raster: tensor conversion needs {RASTER_BYTES} bytes and floats, got {} and {}",
            raster.len(),
            out.len()
        )));
    }
    let (r, rest) = out.split_at_mut(PLANE);
    let (g, b) = rest.split_at_mut(PLANE);
    // Divide (not multiply by 1/127.5) so the values equal numpy's x / 127.5 - 1 exactly.
    for (i, px) in raster.chunks_exact(3).enumerate() {
        r[i] = f32::from(px[0]) / 127.5 - 1.0;
        g[i] = f32::from(px[1]) / 127.5 - 1.0;
        b[i] = f32::from(px[2]) / 127.5 - 1.0;
    }
    Ok(())
}

/// Square face crop in source pixels (docs/rasteriser.md, "Face crop rule").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    pub x0: f64,
    pub y0: f64,
    pub side: f64,
}

/// The crop box of one set of 68 points: 1.8x the larger bbox side, centre raised by 0.1 h.
pub fn crop_box_from_68(pts68: &[[f32; 2]; 68]) -> Result<CropBox> {
    let (mut x0, mut y0, mut x1, mut y1) = (f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for p in pts68 {
        if !p[0].is_finite() || !p[1].is_finite() {
            return Err(Error::Invalid("crop box: non-finite landmark".into()));
        }
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let (w, h) = (x1 - x0, y1 - y0);
    let side = 1.8 * w.max(h);
    if side < 1.0 {
        return Err(Error::Invalid(format!("crop box: degenerate landmarks (side {side:.3} px < 1)")));
    }
    let cx = (x0 + x1) / 2.0;
    let cy = (y0 + y1) / 2.0 - 0.1 * h;
    Ok(CropBox { x0: cx - side / 2.0, y0: cy - side / 2.0, side })
}

impl CropBox {
    /// Per-coordinate median of per-frame boxes (for clips: head motion stays inside the crop).
    pub fn median(boxes: &[CropBox]) -> Result<CropBox> {
        if boxes.is_empty() {
            return Err(Error::Invalid("crop box: median of no boxes".into()));
        }
        let med = |f: fn(&CropBox) -> f64| {
            let mut v: Vec<f64> = boxes.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
        };
        Ok(CropBox { x0: med(|b| b.x0), y0: med(|b| b.y0), side: med(|b| b.side) })
    }

    /// Source pixel -> pixel of a 256x256 crop.
    pub fn to_crop(&self, pt: [f32; 2]) -> [f32; 2] {
        self.to_crop_sized(pt, RASTER_SIZE as u32)
    }

    /// Pixel of a 256x256 crop -> source pixel.
    pub fn from_crop(&self, pt: [f32; 2]) -> [f32; 2] {
        self.from_crop_sized(pt, RASTER_SIZE as u32)
    }

    /// Source pixel -> pixel of a `size` x `size` crop: `u = (x - x0) * size / side`.
    pub fn to_crop_sized(&self, pt: [f32; 2], size: u32) -> [f32; 2] {
        let s = f64::from(size) / self.side;
        [((f64::from(pt[0]) - self.x0) * s) as f32, ((f64::from(pt[1]) - self.y0) * s) as f32]
    }

    /// Inverse of [`CropBox::to_crop_sized`].
    pub fn from_crop_sized(&self, pt: [f32; 2], size: u32) -> [f32; 2] {
        let s = self.side / f64::from(size);
        [(f64::from(pt[0]) * s + self.x0) as f32, (f64::from(pt[1]) * s + self.y0) as f32]
    }

    /// The 2x3 affine matrix (row-major) from source to crop pixels.
    pub fn matrix(&self, size: u32) -> [[f64; 3]; 2] {
        let s = f64::from(size) / self.side;
        [[s, 0.0, -self.x0 * s], [0.0, s, -self.y0 * s]]
    }
}

/// Crops and scales `frame` to `size` x `size` with `warpAffine(INTER_LINEAR, BORDER_REPLICATE)`.
pub fn warp_to_crop(frame: &Frame, crop: &CropBox, size: u32) -> Result<Frame> {
    if !frame.len_ok() || frame.width == 0 || frame.height == 0 {
        return Err(Error::Invalid(format!("warp: frame {}x{} has {} bytes", frame.width, frame.height, frame.data.len())));
    }
    if size == 0 || size > 8192 || !(crop.side.is_finite() && crop.side > 0.0 && crop.x0.is_finite() && crop.y0.is_finite()) {
        return Err(Error::Invalid(format!("warp: bad crop {crop:?} or size {size}")));
    }
    let src = Mat::new_rows_cols_with_bytes::<Vec3b>(frame.height as i32, frame.width as i32, &frame.data)?;
    let m = crop.matrix(size);
    let mut mm = Mat::new_rows_cols_with_default(2, 3, CV_64F, Scalar::all(0.0))?;
    for (r, row) in m.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            *mm.at_2d_mut::<f64>(r as i32, c as i32)? = *v;
        }
    }
    let mut out = vec![0u8; 3 * size as usize * size as usize];
    {
        let mut dst = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(size as i32, size as i32, &mut out)?;
        // dst is preallocated with the right size and type, so OpenCV writes into `out`.
        imgproc::warp_affine(&src, &mut dst, &mm, Size::new(size as i32, size as i32), INTER_LINEAR, BORDER_REPLICATE, Scalar::all(0.0))?;
    }
    Ok(Frame { width: size, height: size, data: out, pts: frame.pts, seq: frame.seq })
}

/// Maps landmarks from source pixels into a `size` x `size` crop (mesh z and iris radii scale too).
pub fn map_landmarks_to_crop(lm: &FaceLandmarks, crop: &CropBox, size: u32) -> FaceLandmarks {
    let s = (f64::from(size) / crop.side) as f32;
    let mut pts68 = lm.pts68;
    for p in pts68.iter_mut() {
        *p = crop.to_crop_sized(*p, size);
    }
    let mesh = lm
        .mesh
        .iter()
        .map(|m| {
            let [x, y] = crop.to_crop_sized([m[0], m[1]], size);
            [x, y, m[2] * s]
        })
        .collect();
    let iris = lm.iris.map(|irs| {
        irs.map(|i| {
            let [cx, cy] = crop.to_crop_sized([i.cx, i.cy], size);
            Iris { cx, cy, r: i.r * s }
        })
    });
    FaceLandmarks { mesh, pts68, iris, score: lm.score }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simple synthetic face: points on a circle, irises inside.
    fn ring68(cx: f32, cy: f32, r: f32) -> [[f32; 2]; 68] {
        let mut p = [[0.0; 2]; 68];
        for (i, q) in p.iter_mut().enumerate() {
            let a = i as f32 / 68.0 * std::f32::consts::TAU;
            *q = [cx + r * a.cos(), cy + r * a.sin()];
        }
        p
    }

    fn px(img: &[u8], x: usize, y: usize) -> [u8; 3] {
        let o = 3 * (y * RASTER_SIZE + x);
        [img[o], img[o + 1], img[o + 2]]
    }

    #[test]
    fn fixed_point_rounds_half_up() {
        assert_eq!(fixed(1.0).unwrap(), 16);
        assert_eq!(fixed(1.0 / 32.0).unwrap(), 1); // 0.5 -> 1 (half-even would give 0)
        assert_eq!(fixed(3.0 / 32.0).unwrap(), 2); // 1.5 -> 2
        assert_eq!(fixed(5.0 / 32.0).unwrap(), 3); // 2.5 -> 3 (half-even would give 2)
        assert_eq!(fixed(-1.0 / 32.0).unwrap(), 0); // -0.5 -> 0 (floor(0.0))
        assert_eq!(fixed(-3.0 / 32.0).unwrap(), -1);
        assert_eq!(fixed(0.03).unwrap(), 0);
        assert_eq!(fixed(0.04).unwrap(), 1);
    }

    #[test]
    fn rejects_non_finite_and_huge() {
        let mut p = ring68(128.0, 128.0, 50.0);
        p[3][0] = f32::NAN;
        assert!(matches!(rasterise(&p, None), Err(Error::Invalid(_))));
        p[3][0] = 1e9;
        assert!(matches!(rasterise(&p, None), Err(Error::Invalid(_))));
        let p = ring68(128.0, 128.0, 50.0);
        let bad = [Iris { cx: f32::INFINITY, cy: 0.0, r: 3.0 }, Iris::default()];
        assert!(rasterise(&p, Some(&bad)).is_err());
        assert!(rasterise_into(&p, None, &mut [0u8; 12]).is_err());
    }

    #[test]
    fn draws_parts_in_their_colours_and_irises_under_eyes() {
        let p = ring68(128.0, 128.0, 100.0);
        let img = rasterise(&p, None).unwrap();
        assert_eq!(img.len(), RASTER_BYTES);
        // Centre stays black, background corner stays black.
        assert_eq!(px(&img, 128, 128), [0, 0, 0]);
        assert_eq!(px(&img, 0, 0), [0, 0, 0]);
        // Point 0 is at (228, 128) on the jaw: exactly the jaw colour on the line centre.
        assert_eq!(px(&img, 228, 128), [0, 160, 255]);
        // Irises: filled white discs where nothing else is drawn.
        let irs = [Iris { cx: 100.0, cy: 120.0, r: 6.0 }, Iris { cx: 150.0, cy: 120.0, r: 0.49 }];
        let img = rasterise(&p, Some(&irs)).unwrap();
        assert_eq!(px(&img, 100, 120), [255, 255, 255]);
        assert_eq!(px(&img, 150, 120), [0, 0, 0], "r < 0.5 is skipped");
    }

    #[test]
    fn anti_aliasing_gives_intermediate_values() {
        let p = ring68(128.0, 128.0, 90.3);
        let img = rasterise(&p, None).unwrap();
        let partial = img.iter().filter(|&&v| v > 0 && v < 255).count();
        assert!(partial > 100, "LINE_AA must blend edges, found {partial} partial bytes");
    }

    #[test]
    fn subpixel_shift_changes_the_raster() {
        // Points on the 1/16 px grid, so that small offsets have a known fixed-point effect.
        let grid = ring68(128.0, 128.0, 80.0).map(|p| p.map(|v| (v * 16.0).round() / 16.0));
        let shifted = |d: f32| grid.map(|p| [p[0] + d, p[1]]);
        let a = rasterise(&grid, None).unwrap();
        let b = rasterise(&shifted(0.25), None).unwrap();
        assert!(a != b, "1/4 px must be visible with shift=4");
        // Below 1/32 px the fixed-point value is the same, so the raster is too.
        let c = rasterise(&shifted(0.03), None).unwrap();
        assert!(a == c, "0.03 px rounds to the same 1/16 px");
        let d = rasterise(&shifted(1.0 / 32.0), None).unwrap();
        assert!(a != d, "a 1/32 px tie rounds up");
    }

    #[test]
    fn points_outside_canvas_are_clipped_not_errors() {
        let img = rasterise(&ring68(0.0, 0.0, 300.0), None).unwrap();
        assert_eq!(img.len(), RASTER_BYTES);
        let buf_reused = {
            let mut b = vec![7u8; RASTER_BYTES];
            rasterise_into(&ring68(0.0, 0.0, 300.0), None, &mut b).unwrap();
            b
        };
        assert_eq!(img, buf_reused, "the buffer is cleared first");
    }

    #[test]
    fn input_tensor_is_nchw_scaled() {
        let mut r = vec![0u8; RASTER_BYTES];
        let o = 3 * (5 * RASTER_SIZE + 7);
        r[o] = 255;
        r[o + 1] = 0;
        r[o + 2] = 51;
        let t = to_input_tensor(&r).unwrap();
        assert_eq!(t.shape(), &[1, 3, 256, 256]);
        assert_eq!(t[[0, 0, 5, 7]], 1.0);
        assert_eq!(t[[0, 1, 5, 7]], -1.0);
        assert!((t[[0, 2, 5, 7]] - (51.0 / 127.5 - 1.0)).abs() < 1e-7);
        assert_eq!(t[[0, 0, 0, 0]], -1.0);
        assert!(to_input_tensor(&r[..10]).is_err());
    }

    #[test]
    fn crop_box_follows_the_rule() {
        let mut p = [[0.0f32; 2]; 68];
        for (i, q) in p.iter_mut().enumerate() {
            *q = [100.0 + (i % 2) as f32 * 50.0, 200.0 + (i % 3) as f32 * 20.0];
        }
        // bbox x 100..150 (w 50), y 200..240 (h 40) -> side 90, cx 125, cy 220 - 4 = 216.
        let b = crop_box_from_68(&p).unwrap();
        assert!((b.side - 90.0).abs() < 1e-9);
        assert!((b.x0 - (125.0 - 45.0)).abs() < 1e-9);
        assert!((b.y0 - (216.0 - 45.0)).abs() < 1e-9);
        let u = b.to_crop([125.0, 216.0]);
        assert!((u[0] - 128.0).abs() < 1e-4 && (u[1] - 128.0).abs() < 1e-4);
        let back = b.from_crop(b.to_crop([111.5, 233.25]));
        assert!((back[0] - 111.5).abs() < 1e-4 && (back[1] - 233.25).abs() < 1e-4);
        assert!(crop_box_from_68(&[[3.0, 3.0]; 68]).is_err());
        let mut nan = p;
        nan[0][1] = f32::NAN;
        assert!(crop_box_from_68(&nan).is_err());
    }

    #[test]
    fn median_box() {
        let bx = |v: f64| CropBox { x0: v, y0: -v, side: 10.0 + v };
        let m = CropBox::median(&[bx(3.0), bx(1.0), bx(2.0)]).unwrap();
        assert_eq!(m, bx(2.0));
        let m = CropBox::median(&[bx(1.0), bx(4.0)]).unwrap();
        assert_eq!(m, bx(2.5));
        assert!(CropBox::median(&[]).is_err());
    }

    #[test]
    fn warp_maps_pixels_like_to_crop() {
        // A frame whose pixel value encodes its x coordinate (R) and y (G).
        let (w, h) = (200u32, 150u32);
        let mut f = Frame::black(w, h);
        for y in 0..h {
            for x in 0..w {
                let o = 3 * (y * w + x) as usize;
                f.data[o] = x as u8;
                f.data[o + 1] = y as u8;
            }
        }
        let b = CropBox { x0: 40.0, y0: 30.0, side: 128.0 };
        let c = warp_to_crop(&f, &b, 64).unwrap();
        assert_eq!((c.width, c.height, c.data.len()), (64, 64, 64 * 64 * 3));
        // Crop pixel (u, v) samples source (x0 + u*2, y0 + v*2): integer, so exact.
        for &(u, v) in &[(0u32, 0u32), (10, 20), (50, 55)] {
            let o = 3 * (v * 64 + u) as usize;
            let src = b.from_crop_sized([u as f32, v as f32], 64);
            assert_eq!(c.data[o] as f32, src[0]);
            assert_eq!(c.data[o + 1] as f32, src[1]);
        }
        // Border replicate: a box beyond the frame repeats the edge instead of black.
        let far = CropBox { x0: 190.0, y0: 140.0, side: 64.0 };
        let c = warp_to_crop(&f, &far, 64).unwrap();
        let o = 3 * (63 * 64 + 63);
        assert_eq!((c.data[o], c.data[o + 1]), (199, 149));
        assert!(warp_to_crop(&Frame { data: vec![], ..Frame::black(4, 4) }, &b, 64).is_err());
        assert!(warp_to_crop(&f, &CropBox { side: 0.0, ..b }, 64).is_err());
    }

    #[test]
    fn landmarks_map_into_crop() {
        let b = CropBox { x0: 10.0, y0: 20.0, side: 512.0 };
        let lm = FaceLandmarks {
            mesh: vec![[10.0, 20.0, 4.0]],
            pts68: [[266.0, 276.0]; 68],
            iris: Some([Iris { cx: 10.0, cy: 20.0, r: 8.0 }; 2]),
            score: 0.9,
        };
        let m = map_landmarks_to_crop(&lm, &b, 256);
        assert_eq!(m.pts68[0], [128.0, 128.0]);
        assert_eq!(m.mesh[0], [0.0, 0.0, 2.0]);
        assert_eq!(m.iris.unwrap()[1], Iris { cx: 0.0, cy: 0.0, r: 4.0 });
        assert_eq!(m.score, 0.9);
    }
}
