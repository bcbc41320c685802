//! Rotated regions of interest and the crop into a model's input tensor, following MediaPipe's
//! conventions exactly (ImageToTensorCalculator, RectTransformationCalculator,
//! LandmarkProjectionCalculator) so that our landmarks agree with MediaPipe's own.
//!
//! Convention: a rect is centre, size and rotation in frame pixels (pixel centres at integer
//! coordinates, as MediaPipe's normalised x * width). The crop maps the rect's corner to tensor
//! coordinate (0, 0) and the opposite corner to (W, H): tensor point (u, v) samples the frame at
//! `c + R(angle) * ((u/W - 0.5) * w, (v/H - 0.5) * h)`.
use crate::core::types::Frame;
use crate::error::{Error, Result};
use opencv::core::{Mat, Scalar, Size, ToInputArray, Vec3b, BORDER_CONSTANT, BORDER_REPLICATE};
use opencv::prelude::*;

/// A rotated rectangle in frame pixels; `angle` in radians, positive = clockwise on screen
/// (y points down).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotRect {
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
    pub angle: f32,
}

/// MediaPipe's NormalizeRadians: into [-pi, pi).
fn normalize_radians(a: f32) -> f32 {
    use std::f32::consts::PI;
    a - 2.0 * PI * ((a + PI) / (2.0 * PI)).floor()
}

/// Rotation that makes the vector `p0 -> p1` horizontal (DetectionsToRectsCalculator with target
/// angle 0).
pub fn rotation_from(p0: [f32; 2], p1: [f32; 2]) -> f32 {
    normalize_radians(-(-(p1[1] - p0[1])).atan2(p1[0] - p0[0]))
}

impl RotRect {
    /// Square rect around an axis-aligned box `[x0, y0, x1, y1]`: centre of the box, side = `scale`
    /// times the box's longer side (RectTransformationCalculator with `square_long`).
    pub fn square_around(b: [f32; 4], angle: f32, scale: f32) -> Self {
        let side = (b[2] - b[0]).max(b[3] - b[1]) * scale;
        RotRect { cx: 0.5 * (b[0] + b[2]), cy: 0.5 * (b[1] + b[3]), w: side, h: side, angle }
    }

    /// Whether the rect is usable for a crop (finite, not degenerate).
    pub fn is_valid(&self) -> bool {
        [self.cx, self.cy, self.w, self.h, self.angle].iter().all(|v| v.is_finite()) && self.w > 1.0 && self.h > 1.0
    }

    /// Maps a point in tensor coordinates (0..size_w, 0..size_h) to frame pixels.
    pub fn to_frame(&self, u: f32, v: f32, size_w: f32, size_h: f32) -> [f32; 2] {
        let x = (u / size_w - 0.5) * self.w;
        let y = (v / size_h - 0.5) * self.h;
        let (s, c) = self.angle.sin_cos();
        [self.cx + c * x - s * y, self.cy + s * x + c * y]
    }

    /// The 2x3 affine matrix tensor -> frame (for `warpAffine` with `WARP_INVERSE_MAP`).
    fn tensor_to_frame(&self, size_w: f32, size_h: f32) -> [[f64; 3]; 2] {
        let (s, c) = (self.angle as f64).sin_cos();
        let (sx, sy) = (self.w as f64 / size_w as f64, self.h as f64 / size_h as f64);
        // frame = c + R * diag(sx, sy) * ((u, v) - size/2)
        let a = [[c * sx, -s * sy], [s * sx, c * sy]];
        let (hu, hv) = (size_w as f64 / 2.0, size_h as f64 / 2.0);
        [
            [a[0][0], a[0][1], self.cx as f64 - a[0][0] * hu - a[0][1] * hv],
            [a[1][0], a[1][1], self.cy as f64 - a[1][0] * hu - a[1][1] * hv],
        ]
    }
}

/// How pixels outside the frame are filled in a crop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    Zero,
    Replicate,
}

/// A borrowed view of an RGB frame as an OpenCV matrix (no copy).
pub fn frame_mat(frame: &Frame) -> Result<opencv::boxed_ref::BoxedRef<'_, Mat>> {
    if !frame.len_ok() || frame.width == 0 || frame.height == 0 {
        return Err(Error::Invalid(format!(
            "frame {}x{} has {} bytes, expected {}",
            frame.width,
            frame.height,
            frame.data.len(),
            3 * frame.width as usize * frame.height as usize
        )));
    }
    Ok(Mat::new_rows_cols_with_bytes::<Vec3b>(frame.height as i32, frame.width as i32, &frame.data)?)
}

/// Crops `rect` of `img` (RGB u8) into a `size x size` NCHW float tensor with values
/// `px * scale + offset`, optionally mirrored left-right (MediaPipe's iris model only sees left eyes).
pub fn crop_to_tensor(
    img: &impl ToInputArray,
    rect: &RotRect,
    size: usize,
    border: Border,
    scale: f32,
    offset: f32,
    flip_x: bool,
) -> Result<Vec<f32>> {
    let m = rect.tensor_to_frame(size as f32, size as f32);
    let m = Mat::from_slice_2d(&m)?;
    let mut crop = Mat::default();
    let border_mode = match border {
        Border::Zero => BORDER_CONSTANT,
        Border::Replicate => BORDER_REPLICATE,
    };
    opencv::imgproc::warp_affine(
        img,
        &mut crop,
        &m,
        Size::new(size as i32, size as i32),
        opencv::imgproc::INTER_LINEAR | opencv::imgproc::WARP_INVERSE_MAP,
        border_mode,
        Scalar::all(0.0),
    )?;
    let bytes = crop.data_bytes()?;
    if bytes.len() != size * size * 3 {
        return Err(Error::OpenCv(format!("crop has {} bytes, expected {}", bytes.len(), size * size * 3)));
    }
    let plane = size * size;
    let mut out = vec![0.0f32; 3 * plane];
    // Planes filled in one pass over the pixels, then mirrored row by row: the same values as a
    // per-pixel mirrored read, without a bounds-checked index per channel (this runs once per
    // model input, 37k pixels for the landmark model).
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (((p, r), g), b) in bytes.chunks_exact(3).zip(r.iter_mut()).zip(g.iter_mut()).zip(b.iter_mut()) {
        *r = p[0] as f32 * scale + offset;
        *g = p[1] as f32 * scale + offset;
        *b = p[2] as f32 * scale + offset;
    }
    if flip_x {
        for row in out.chunks_exact_mut(size) {
            row.reverse();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_of_horizontal_and_tilted_vectors() {
        assert!(rotation_from([0.0, 0.0], [10.0, 0.0]).abs() < 1e-6);
        // Right end lower on screen (y down) = head tilted clockwise: positive angle.
        let a = rotation_from([0.0, 0.0], [10.0, 10.0]);
        assert!((a - std::f32::consts::FRAC_PI_4).abs() < 1e-6, "{a}");
    }

    #[test]
    fn to_frame_maps_corners_and_centre() {
        let r = RotRect { cx: 100.0, cy: 50.0, w: 40.0, h: 40.0, angle: 0.0 };
        assert_eq!(r.to_frame(0.0, 0.0, 192.0, 192.0), [80.0, 30.0]);
        assert_eq!(r.to_frame(96.0, 96.0, 192.0, 192.0), [100.0, 50.0]);
        let r = RotRect { angle: std::f32::consts::FRAC_PI_2, ..r };
        // Rotated 90 deg clockwise: the tensor's +u axis points down the frame.
        let p = r.to_frame(192.0, 96.0, 192.0, 192.0);
        assert!((p[0] - 100.0).abs() < 1e-4 && (p[1] - 70.0).abs() < 1e-4, "{p:?}");
    }

    #[test]
    fn crop_samples_where_to_frame_points() {
        // A frame whose red channel encodes x and green encodes y: the crop must read back the
        // coordinates that `to_frame` predicts, for a rotated rect.
        let (w, h) = (200u32, 150u32);
        let mut f = Frame::black(w, h);
        for y in 0..h as usize {
            for x in 0..w as usize {
                f.data[3 * (y * w as usize + x)] = x as u8;
                f.data[3 * (y * w as usize + x) + 1] = y as u8;
            }
        }
        let r = RotRect { cx: 100.0, cy: 70.0, w: 64.0, h: 64.0, angle: 0.3 };
        let mat = frame_mat(&f).unwrap();
        let t = crop_to_tensor(&mat, &r, 32, Border::Zero, 1.0, 0.0, false).unwrap();
        for &(u, v) in &[(0usize, 0usize), (5, 20), (31, 31), (16, 16)] {
            let p = r.to_frame(u as f32, v as f32, 32.0, 32.0);
            let (rx, gy) = (t[v * 32 + u], t[32 * 32 + v * 32 + u]);
            assert!((rx - p[0]).abs() < 1.01 && (gy - p[1]).abs() < 1.01, "({u},{v}) -> {p:?} read {rx},{gy}");
        }
        let flipped = crop_to_tensor(&mat, &r, 32, Border::Zero, 1.0, 0.0, true).unwrap();
        assert_eq!(flipped[3], t[28]);
    }

    #[test]
    fn frame_mat_rejects_bad_buffer() {
        let mut f = Frame::black(4, 4);
        f.data.pop();
        assert!(matches!(frame_mat(&f), Err(Error::Invalid(_))));
    }
}
