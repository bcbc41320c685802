//! How a portrait fills an output of another aspect ratio (`[output] fit`, issue 20): a square
//! painting in a 16:9 call was pillarboxed with black bars, which reads as a broken feed.
//! - `contain`: the whole portrait, black bars (the old behaviour);
//! - `cover`: scaled to fill the frame and cropped around the face (the face and a margin kept
//!   in view, placed a little above the centre as in a video call);
//! - `blur` (default): the whole portrait over a blurred, darkened copy of itself that fills the
//!   bars, computed once per avatar (it is the canvas every frame is drawn on).
//!
//! When the output has the portrait's own size nothing changes (pixel-aligned mode).
use crate::core::types::Frame;
use crate::error::Result;

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fit {
    Contain,
    Cover,
    #[default]
    Blur,
}

impl Fit {
    pub fn name(self) -> &'static str {
        match self {
            Fit::Contain => "contain",
            Fit::Cover => "cover",
            Fit::Blur => "blur",
        }
    }
}

/// Where the portrait lands: portrait pixel `p` goes to `scale * p + offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    pub scale: f32,
    pub offset: [f32; 2],
}

/// The face's box in portrait pixels (min x, min y, max x, max y), from its mesh.
pub fn face_box(mesh: &[[f32; 2]]) -> Option<[f32; 4]> {
    let mut b = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for p in mesh.iter().filter(|p| p[0].is_finite() && p[1].is_finite()) {
        b = [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])];
    }
    (b[2] > b[0] && b[3] > b[1]).then_some(b)
}

/// Scale and offset of the whole portrait inside the output (`contain`, and `blur`'s sharp copy).
pub fn contain(w: u32, h: u32, out_w: u32, out_h: u32) -> Placement {
    let s = (out_w as f64 / w as f64).min(out_h as f64 / h as f64);
    let (sw, sh) = ((w as f64 * s).round(), (h as f64 * s).round());
    Placement { scale: s as f32, offset: [((out_w as f64 - sw) / 2.0).floor() as f32, ((out_h as f64 - sh) / 2.0).floor() as f32] }
}

/// Fraction of the face box's height kept free around it when cropping (`cover`).
const FACE_MARGIN: f64 = 0.5;
/// Where the face's centre goes, as a fraction of the output's height (a little above the middle).
const FACE_Y: f64 = 0.45;

/// `cover`: the smallest scale that fills the output (more would only crop more); the crop
/// window slides to put the face a little above the centre, keeps the face with its margin
/// inside, and never leaves the portrait.
pub fn cover(w: u32, h: u32, out_w: u32, out_h: u32, face: Option<[f32; 4]>) -> Placement {
    let s = (out_w as f64 / w as f64).max(out_h as f64 / h as f64);
    let (sw, sh) = (w as f64 * s, h as f64 * s);
    let [x0, y0, x1, y1] = face.map(|b| b.map(f64::from)).unwrap_or([0.0, 0.0, w as f64, h as f64]);
    let (cx, cy) = ((x0 + x1) / 2.0 * s, (y0 + y1) / 2.0 * s);
    let margin = (y1 - y0) * s * FACE_MARGIN;
    // The window's top-left in scaled-portrait pixels: face centred, then the face box with its
    // margin pulled inside where the window allows, then the window clamped to the portrait.
    let mut ox = cx - out_w as f64 / 2.0;
    let mut oy = cy - out_h as f64 * FACE_Y;
    oy = oy.min(y0 * s - margin).max(y1 * s + margin - out_h as f64);
    ox = ox.clamp(0.0, (sw - out_w as f64).max(0.0));
    oy = oy.clamp(0.0, (sh - out_h as f64).max(0.0));
    Placement { scale: s as f32, offset: [(-ox).round() as f32, (-oy).round() as f32] }
}

/// Draws `img` scaled and placed onto `canvas` (clipped).
fn draw(canvas: &mut Frame, img: &Frame, p: Placement) -> Result<()> {
    let (sw, sh) = ((img.width as f32 * p.scale).round().max(1.0) as i32, (img.height as f32 * p.scale).round().max(1.0) as i32);
    let scaled = crate::pipeline::compose::resize(img, sw, sh)?;
    crate::pipeline::compose::blit(canvas, &scaled, p.offset[0] as i32, p.offset[1] as i32);
    Ok(())
}

/// The blurred, darkened background of `blur`: the portrait covering the output, blurred by a
/// sigma of 1/40 of the output's diagonal and at 55 % brightness, so the sharp portrait on top
/// stands out and the bars carry its colours.
pub fn blurred_background(img: &Frame, out_w: u32, out_h: u32, face: Option<[f32; 4]>) -> Result<Frame> {
    use opencv::core::{Mat, Size, Vec3b, BORDER_REFLECT};
    let mut bg = Frame::black(out_w, out_h);
    draw(&mut bg, img, cover(img.width, img.height, out_w, out_h, face))?;
    let sigma = ((out_w as f64).hypot(out_h as f64) / 40.0).max(1.0);
    let mut out = vec![0u8; bg.data.len()];
    {
        let src = Mat::new_rows_cols_with_bytes::<Vec3b>(out_h as i32, out_w as i32, &bg.data)?;
        let mut dst = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(out_h as i32, out_w as i32, &mut out)?;
        opencv::imgproc::gaussian_blur(&src, &mut dst, Size::new(0, 0), sigma, sigma, BORDER_REFLECT)?;
    }
    for v in out.iter_mut() {
        *v = ((u16::from(*v) * 141 + 128) >> 8) as u8;
    }
    Ok(Frame { data: out, ..bg })
}

/// The canvas the portrait is animated on, and where the portrait lies on it.
pub fn canvas(img: &Frame, out_w: u32, out_h: u32, fit: Fit, face: Option<[f32; 4]>) -> Result<(Frame, Placement)> {
    if img.width == out_w && img.height == out_h {
        // Pixel-aligned: the canvas is the portrait, whatever the fit.
        return Ok((Frame { pts: Default::default(), seq: 0, ..img.clone() }, Placement { scale: 1.0, offset: [0.0, 0.0] }));
    }
    let (mut canvas, p) = match fit {
        Fit::Contain => (Frame::black(out_w, out_h), contain(img.width, img.height, out_w, out_h)),
        Fit::Cover => (Frame::black(out_w, out_h), cover(img.width, img.height, out_w, out_h, face)),
        Fit::Blur => (blurred_background(img, out_w, out_h, face)?, contain(img.width, img.height, out_w, out_h)),
    };
    draw(&mut canvas, img, p)?;
    Ok((canvas, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contain_centres_and_cover_fills_around_the_face() {
        let c = contain(1000, 1000, 1280, 720);
        assert_eq!((c.scale, c.offset), (0.72, [280.0, 0.0]));
        // A square portrait in 16:9: cover scales to the width and crops rows.
        let face = [400.0, 200.0, 600.0, 450.0];
        let p = cover(1000, 1000, 1280, 720, Some(face));
        assert!((p.scale - 1.28).abs() < 1e-6);
        assert_eq!(p.offset[0], 0.0);
        // The whole face box with its margin is inside the frame.
        let (top, bottom) = (face[1] * p.scale + p.offset[1], face[3] * p.scale + p.offset[1]);
        let margin = (face[3] - face[1]) * p.scale * 0.5;
        assert!(top >= margin - 1.0 && bottom <= 720.0 - margin + 1.0, "{top} {bottom}");
        // The crop never leaves the portrait: a face at the very top keeps the top edge.
        let p = cover(1000, 1000, 1280, 720, Some([400.0, 0.0, 600.0, 150.0]));
        assert_eq!(p.offset[1], 0.0);
        let p = cover(1000, 1000, 1280, 720, Some([400.0, 850.0, 600.0, 1000.0]));
        assert_eq!(p.offset[1], 720.0 - 1280.0);
        // A wide portrait in 16:9 crops columns around the face.
        let p = cover(2000, 800, 1280, 720, Some([900.0, 200.0, 1100.0, 450.0]));
        let cx = 1000.0 * p.scale + p.offset[0];
        assert!((cx - 640.0).abs() < 2.0, "{cx}");
        // ... but not past the portrait's edge: a face near the right edge stays off-centre.
        let p = cover(2000, 800, 1280, 720, Some([1500.0, 200.0, 1700.0, 450.0]));
        assert_eq!(p.offset[0], -(2000.0 * p.scale - 1280.0).round());
        assert_eq!(face_box(&[[1.0, 2.0], [3.0, 5.0], [f32::NAN, 0.0]]), Some([1.0, 2.0, 3.0, 5.0]));
        assert_eq!(face_box(&[]), None);
    }

    #[test]
    fn canvases_fill_the_bars_except_contain_and_keep_pixel_aligned_output() {
        let mut img = Frame::black(100, 100);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = 40 + (i % 200) as u8;
        }
        let (c, _) = canvas(&img, 160, 90, Fit::Contain, None).unwrap();
        assert!(c.data[..3].iter().all(|&v| v == 0), "contain keeps black bars");
        for fit in [Fit::Cover, Fit::Blur] {
            let (c, _) = canvas(&img, 160, 90, fit, None).unwrap();
            // No black column at the left edge.
            let col: Vec<u8> = (0..90).flat_map(|y| c.data[y * 160 * 3..y * 160 * 3 + 3].to_vec()).collect();
            assert!(col.iter().all(|&v| v > 10), "{fit:?} left a bar");
        }
        let (b, p) = canvas(&img, 160, 90, Fit::Blur, None).unwrap();
        // The sharp portrait is in the middle, unchanged geometry from contain.
        assert_eq!(p, contain(100, 100, 160, 90));
        assert_eq!(b.width, 160);
        for fit in [Fit::Contain, Fit::Cover, Fit::Blur] {
            assert_eq!(canvas(&img, 100, 100, fit, None).unwrap().0.data, img.data, "{fit:?} changed the pixel-aligned canvas");
        }
    }
}
