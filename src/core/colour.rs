//! RGB24 <-> YUV conversions for the sinks: packed YUYV (4:2:2) and planar I420 (4:2:0),
//! BT.601 limited range ("TV range": Y 16..=235, Cb/Cr 16..=240), integer arithmetic only.
//!
//! Limited-range BT.601 is what webcams deliver and what browsers/conferencing apps assume for
//! YUYV/I420 of unknown provenance, so the virtual camera looks the same as a real one.
//! Chroma is subsampled by averaging the RGB of the 2 (YUYV) or 4 (I420) pixels first and
//! converting the average, which rounds once instead of twice. Pure: no I/O.
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// YUV layouts the sinks can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PixFormat {
    /// Packed 4:2:2: Y0 U Y1 V per pixel pair (V4L2 `YUYV`).
    #[default]
    Yuyv,
    /// Planar 4:2:0: Y (w x h), then U, then V (each w/2 x h/2) (V4L2 `YU12`, y4m `C420`).
    I420,
}

impl PixFormat {
    /// Bytes of one frame of `width` x `height`.
    pub fn frame_size(self, width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixFormat::Yuyv => 2 * w * h,
            PixFormat::I420 => w * h + 2 * (w / 2) * (h / 2),
        }
    }

    /// Rejects sizes the layout cannot hold without padding that consumers do not expect:
    /// both formats share chroma between horizontal pairs, I420 also between vertical pairs.
    pub fn check_size(self, width: u32, height: u32) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::Invalid(format!("{self}: frame size {width}x{height} is empty")));
        }
        if width % 2 != 0 {
            return Err(Error::Invalid(format!("{self}: needs an even width, got {width}")));
        }
        if self == PixFormat::I420 && height % 2 != 0 {
            return Err(Error::Invalid(format!("{self}: needs an even height, got {height}")));
        }
        Ok(())
    }
}

impl fmt::Display for PixFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixFormat::Yuyv => "yuyv",
            PixFormat::I420 => "i420",
        })
    }
}

impl FromStr for PixFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "yuyv" | "yuy2" => Ok(PixFormat::Yuyv),
            "i420" | "yu12" | "yuv420" => Ok(PixFormat::I420),
            other => Err(Error::Invalid(format!("unknown pixel format `{other}` (expected yuyv or i420)"))),
        }
    }
}

// BT.601 limited range in 16-bit fixed point (coefficients * 65536 / 255, from
// Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 and the 224-scaled Cb/Cr rows). The classic
// 8-bit table (66, 129, 25) is off by one on saturated greens and reds; these are exact to
// the rounding of the final code. The chroma rows sum to zero so greys get exactly 128.
const YR: i32 = 16829;
const YG: i32 = 33039;
const YB: i32 = 6416;
const UR: i32 = -9714;
const UG: i32 = -19070;
const UB: i32 = 28784;
const VR: i32 = 28784;
const VG: i32 = -24103;
const VB: i32 = -4681;
const FIX: u32 = 16;

/// Luma of one pixel, rounded.
#[inline]
fn luma(r: i32, g: i32, b: i32) -> u8 {
    (((YR * r + YG * g + YB * b + (1 << (FIX - 1))) >> FIX) + 16) as u8 // always within 16..=235
}

/// Cb/Cr of the sum of `1 << shift` pixels' R, G, B (shift 0, 1 or 2), rounded once.
#[inline]
fn chroma(sr: i32, sg: i32, sb: i32, shift: u32) -> (u8, u8) {
    let s = FIX + shift;
    let half = 1 << (s - 1);
    // Arithmetic shift of a possibly negative sum floors, so `+ half` rounds half up.
    // Max magnitude: 4 * 255 * 28784 ~ 2.9e7, far from i32 overflow.
    let u = ((UR * sr + UG * sg + UB * sb + half) >> s) + 128;
    let v = ((VR * sr + VG * sg + VB * sb + half) >> s) + 128;
    (u as u8, v as u8) // always within 16..=240
}

/// BT.601 limited range Y, Cb, Cr of one pixel.
pub fn rgb_to_yuv_pixel(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let (u, v) = chroma(r, g, b, 0);
    (luma(r, g, b), u, v)
}

/// RGB of one BT.601 limited-range Y, Cb, Cr (out-of-range codes are clamped after conversion).
pub fn yuv_to_rgb_pixel(y: u8, u: u8, v: u8) -> (u8, u8, u8) {
    // Inverse matrix (255/219 luma gain, 255/224 chroma gain) in the same 16-bit fixed point.
    let c = 76309 * (i32::from(y) - 16);
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let half = 1 << (FIX - 1);
    let r = (c + 104597 * e + half) >> FIX;
    let g = (c - 25675 * d - 53279 * e + half) >> FIX;
    let b = (c + 132201 * d + half) >> FIX;
    (r.clamp(0, 255) as u8, g.clamp(0, 255) as u8, b.clamp(0, 255) as u8)
}

fn check_rgb(rgb: &[u8], width: u32, height: u32) -> Result<()> {
    let want = 3 * width as usize * height as usize;
    if rgb.len() != want {
        return Err(Error::Invalid(format!("colour: RGB buffer has {} bytes, {width}x{height} needs {want}", rgb.len())));
    }
    Ok(())
}

fn check_out(format: PixFormat, out: &[u8], width: u32, height: u32) -> Result<()> {
    let want = format.frame_size(width, height);
    if out.len() != want {
        return Err(Error::Invalid(format!("colour: {format} buffer has {} bytes, {width}x{height} needs {want}", out.len())));
    }
    Ok(())
}

/// RGB24 -> YUYV into `out` (`2 * width * height` bytes). Width must be even.
pub fn rgb_to_yuyv_into(rgb: &[u8], width: u32, height: u32, out: &mut [u8]) -> Result<()> {
    PixFormat::Yuyv.check_size(width, height)?;
    check_rgb(rgb, width, height)?;
    check_out(PixFormat::Yuyv, out, width, height)?;
    for (s, d) in rgb.chunks_exact(6).zip(out.chunks_exact_mut(4)) {
        let (r0, g0, b0) = (i32::from(s[0]), i32::from(s[1]), i32::from(s[2]));
        let (r1, g1, b1) = (i32::from(s[3]), i32::from(s[4]), i32::from(s[5]));
        let (u, v) = chroma(r0 + r1, g0 + g1, b0 + b1, 1);
        d[0] = luma(r0, g0, b0);
        d[1] = u;
        d[2] = luma(r1, g1, b1);
        d[3] = v;
    }
    Ok(())
}

/// RGB24 -> YUYV, allocating.
pub fn rgb_to_yuyv(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = vec![0; PixFormat::Yuyv.frame_size(width, height)];
    rgb_to_yuyv_into(rgb, width, height, &mut out)?;
    Ok(out)
}

/// RGB24 -> I420 into `out` (`w*h + 2*(w/2)*(h/2)` bytes). Width and height must be even.
pub fn rgb_to_i420_into(rgb: &[u8], width: u32, height: u32, out: &mut [u8]) -> Result<()> {
    PixFormat::I420.check_size(width, height)?;
    check_rgb(rgb, width, height)?;
    check_out(PixFormat::I420, out, width, height)?;
    let (w, h) = (width as usize, height as usize);
    let cw = w / 2;
    let (ys, rest) = out.split_at_mut(w * h);
    let (us, vs) = rest.split_at_mut(cw * (h / 2));
    // Two source rows at a time: both luma rows and one chroma row.
    for ((rows, yrows), (urow, vrow)) in
        rgb.chunks_exact(6 * w).zip(ys.chunks_exact_mut(2 * w)).zip(us.chunks_exact_mut(cw).zip(vs.chunks_exact_mut(cw)))
    {
        let (top, bottom) = rows.split_at(3 * w);
        let (ytop, ybottom) = yrows.split_at_mut(w);
        for (x, ((t, b), (yt, yb))) in top
            .chunks_exact(6)
            .zip(bottom.chunks_exact(6))
            .zip(ytop.chunks_exact_mut(2).zip(ybottom.chunks_exact_mut(2)))
            .enumerate()
        {
            let p = |s: &[u8], i: usize| (i32::from(s[i]), i32::from(s[i + 1]), i32::from(s[i + 2]));
            let (a, bb, c, d) = (p(t, 0), p(t, 3), p(b, 0), p(b, 3));
            yt[0] = luma(a.0, a.1, a.2);
            yt[1] = luma(bb.0, bb.1, bb.2);
            yb[0] = luma(c.0, c.1, c.2);
            yb[1] = luma(d.0, d.1, d.2);
            let (u, v) = chroma(a.0 + bb.0 + c.0 + d.0, a.1 + bb.1 + c.1 + d.1, a.2 + bb.2 + c.2 + d.2, 2);
            urow[x] = u;
            vrow[x] = v;
        }
    }
    Ok(())
}

/// RGB24 -> I420, allocating.
pub fn rgb_to_i420(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = vec![0; PixFormat::I420.frame_size(width, height)];
    rgb_to_i420_into(rgb, width, height, &mut out)?;
    Ok(out)
}

/// RGB24 -> `format` into `out` (exactly `format.frame_size(width, height)` bytes).
pub fn rgb_to_yuv_into(format: PixFormat, rgb: &[u8], width: u32, height: u32, out: &mut [u8]) -> Result<()> {
    match format {
        PixFormat::Yuyv => rgb_to_yuyv_into(rgb, width, height, out),
        PixFormat::I420 => rgb_to_i420_into(rgb, width, height, out),
    }
}

/// YUYV -> RGB24 (each pixel pair shares its chroma). For tests, previews and y4m checks.
pub fn yuyv_to_rgb(yuyv: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    PixFormat::Yuyv.check_size(width, height)?;
    check_out(PixFormat::Yuyv, yuyv, width, height)?;
    let mut rgb = vec![0; 3 * width as usize * height as usize];
    for (s, d) in yuyv.chunks_exact(4).zip(rgb.chunks_exact_mut(6)) {
        let (r, g, b) = yuv_to_rgb_pixel(s[0], s[1], s[3]);
        d[..3].copy_from_slice(&[r, g, b]);
        let (r, g, b) = yuv_to_rgb_pixel(s[2], s[1], s[3]);
        d[3..].copy_from_slice(&[r, g, b]);
    }
    Ok(rgb)
}

/// I420 -> RGB24 (nearest-neighbour chroma upsampling).
pub fn i420_to_rgb(i420: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    PixFormat::I420.check_size(width, height)?;
    check_out(PixFormat::I420, i420, width, height)?;
    let (w, h) = (width as usize, height as usize);
    let cw = w / 2;
    let (ys, rest) = i420.split_at(w * h);
    let (us, vs) = rest.split_at(cw * (h / 2));
    let mut rgb = vec![0; 3 * w * h];
    for (y, row) in rgb.chunks_exact_mut(3 * w).enumerate() {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let c = cw * (y / 2) + x / 2;
            let (r, g, b) = yuv_to_rgb_pixel(ys[w * y + x], us[c], vs[c]);
            px.copy_from_slice(&[r, g, b]);
        }
    }
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
        rgb.repeat(w as usize * h as usize)
    }

    #[test]
    fn known_colours() {
        // Reference values of BT.601 limited range (e.g. ITU-R BT.601 / libyuv).
        assert_eq!(rgb_to_yuv_pixel(0, 0, 0), (16, 128, 128));
        assert_eq!(rgb_to_yuv_pixel(255, 255, 255), (235, 128, 128));
        // Y = 16 + 65.481 = 81.48, Cb = 128 - 37.797 = 90.2, Cr = 240 (red), and so on.
        assert_eq!(rgb_to_yuv_pixel(255, 0, 0), (81, 90, 240));
        assert_eq!(rgb_to_yuv_pixel(0, 255, 0), (145, 54, 34));
        assert_eq!(rgb_to_yuv_pixel(0, 0, 255), (41, 240, 110));
        assert_eq!(rgb_to_yuv_pixel(255, 255, 0), (210, 16, 146));
        assert_eq!(rgb_to_yuv_pixel(128, 128, 128), (126, 128, 128));
    }

    #[test]
    fn inverse_of_known_colours() {
        assert_eq!(yuv_to_rgb_pixel(16, 128, 128), (0, 0, 0));
        assert_eq!(yuv_to_rgb_pixel(235, 128, 128), (255, 255, 255));
        let (r, g, b) = yuv_to_rgb_pixel(81, 90, 240);
        assert!(r >= 253 && g <= 2 && b <= 2, "{r} {g} {b}");
        // Super-white / super-black codes clamp instead of wrapping.
        assert_eq!(yuv_to_rgb_pixel(255, 128, 128), (255, 255, 255));
        assert_eq!(yuv_to_rgb_pixel(0, 128, 128), (0, 0, 0));
    }

    #[test]
    fn ranges_are_limited_for_every_rgb() {
        // Exhaustive over a 4-step grid of the RGB cube (and its corners): codes stay in range.
        let vals: Vec<u8> = (0..=255).step_by(4).chain([255]).collect();
        for &r in &vals {
            for &g in &vals {
                for &b in &vals {
                    let (y, u, v) = rgb_to_yuv_pixel(r, g, b);
                    assert!((16..=235).contains(&y), "Y {y} for {r},{g},{b}");
                    assert!((16..=240).contains(&u) && (16..=240).contains(&v), "UV {u},{v} for {r},{g},{b}");
                }
            }
        }
    }

    #[test]
    fn round_trip_error_is_bounded() {
        // Flat colours survive RGB -> YUV -> RGB within the quantisation of limited range.
        let mut worst = 0u8;
        for r in (0..=255u16).step_by(3) {
            for g in (0..=255u16).step_by(3) {
                for b in (0..=255u16).step_by(3) {
                    let (r, g, b) = (r as u8, g as u8, b as u8);
                    let (y, u, v) = rgb_to_yuv_pixel(r, g, b);
                    let (r2, g2, b2) = yuv_to_rgb_pixel(y, u, v);
                    worst = worst.max(r.abs_diff(r2)).max(g.abs_diff(g2)).max(b.abs_diff(b2));
                }
            }
        }
        assert!(worst <= 3, "worst round-trip error {worst}");
    }

    #[test]
    fn frame_round_trip_both_formats() {
        let (w, h) = (6u32, 4u32);
        for c in [[0u8, 0, 0], [255, 255, 255], [200, 30, 90], [12, 250, 128]] {
            let rgb = flat(w, h, c);
            for (fmt, back) in [
                (PixFormat::Yuyv, yuyv_to_rgb(&rgb_to_yuyv(&rgb, w, h).unwrap(), w, h).unwrap()),
                (PixFormat::I420, i420_to_rgb(&rgb_to_i420(&rgb, w, h).unwrap(), w, h).unwrap()),
            ] {
                let err = rgb.iter().zip(&back).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
                assert!(err <= 3, "{fmt} {c:?}: error {err}");
            }
        }
    }

    #[test]
    fn yuyv_layout_and_chroma_average() {
        // Red then blue: own luma each, chroma is the conversion of the averaged RGB.
        let rgb = [255, 0, 0, 0, 0, 255];
        let out = rgb_to_yuyv(&rgb, 2, 1).unwrap();
        assert_eq!(out[0], 81);
        assert_eq!(out[2], 41);
        // Average (127.5, 0, 127.5): Cb = 128 + (112 - 37.797) / 2 = 165.1, Cr = 128 + 46.9 = 174.9.
        assert_eq!((out[1], out[3]), (165, 175));
    }

    #[test]
    fn i420_layout_and_chroma_average() {
        // 4x2: left 2x2 block black/white checker, right block all green.
        let k = [0u8, 0, 0];
        let wh = [255u8, 255, 255];
        let gr = [0u8, 255, 0];
        let rows = [[k, wh, gr, gr], [wh, k, gr, gr]];
        let rgb: Vec<u8> = rows.iter().flatten().flatten().copied().collect();
        let out = rgb_to_i420(&rgb, 4, 2).unwrap();
        assert_eq!(out.len(), 8 + 2 + 2);
        assert_eq!(&out[..8], &[16, 235, 145, 145, 235, 16, 145, 145]);
        // Checker averages to grey: neutral chroma. Green block keeps green's chroma.
        assert_eq!((out[8], out[10]), (128, 128));
        assert_eq!((out[9], out[11]), (54, 34));
    }

    #[test]
    fn i420_chroma_planes_are_separate_and_row_paired() {
        // 2x4: top block red, bottom block blue -> U plane [red U, blue U], V likewise.
        let rgb: Vec<u8> = [[255u8, 0, 0]; 4].into_iter().chain([[0, 0, 255]; 4]).flatten().collect();
        let out = rgb_to_i420(&rgb, 2, 4).unwrap();
        assert_eq!(&out[8..10], &[90, 240]);
        assert_eq!(&out[10..12], &[240, 110]);
    }

    #[test]
    fn odd_and_bad_sizes_are_rejected_clearly() {
        let e = rgb_to_yuyv(&flat(3, 2, [0; 3]), 3, 2).unwrap_err().to_string();
        assert!(e.contains("even width") && e.contains('3'), "{e}");
        let e = rgb_to_i420(&flat(4, 3, [0; 3]), 4, 3).unwrap_err().to_string();
        assert!(e.contains("even height"), "{e}");
        // YUYV takes odd heights.
        assert_eq!(rgb_to_yuyv(&flat(4, 3, [9; 3]), 4, 3).unwrap().len(), 24);
        assert!(rgb_to_yuyv(&[], 0, 0).is_err());
        assert!(rgb_to_i420(&[0; 5], 2, 2).is_err(), "short RGB buffer");
        assert!(rgb_to_yuyv_into(&flat(2, 2, [0; 3]), 2, 2, &mut [0; 7]).is_err(), "wrong out size");
        assert!(yuyv_to_rgb(&[0; 3], 2, 2).is_err());
        assert!(i420_to_rgb(&[0; 3], 2, 2).is_err());
    }

    #[test]
    fn agrees_with_opencv_i420() {
        // Independent reference: OpenCV's RGB -> YUV I420 (BT.601 limited range too).
        use opencv::core::{Mat, Vec3b};
        use opencv::prelude::*;
        let (w, h) = (64u32, 32u32);
        // Constant over each 2x2 block: OpenCV takes chroma from the block's top-left pixel
        // while we average the four, so only block-flat images are comparable.
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        for y in 0..h {
            for x in 0..w {
                let (bx, by) = (x / 2, y / 2);
                let o = (3 * (y * w + x)) as usize;
                rgb[o] = (bx * 8 + by * 3) as u8;
                rgb[o + 1] = (255 - bx * 5 + by * 7) as u8;
                rgb[o + 2] = (by * 16 + bx) as u8;
            }
        }
        let src = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, &rgb).unwrap();
        let mut dst = Mat::default();
        opencv::imgproc::cvt_color_def(&src, &mut dst, opencv::imgproc::COLOR_RGB2YUV_I420).unwrap();
        let cv = dst.data_bytes().unwrap();
        let ours = rgb_to_i420(&rgb, w, h).unwrap();
        assert_eq!(cv.len(), ours.len());
        let yd = cv[..(w * h) as usize].iter().zip(&ours).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        let cd = cv[(w * h) as usize..].iter().zip(&ours[(w * h) as usize..]).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(yd <= 1 && cd <= 1, "luma diff {yd}, chroma diff {cd}");
    }

    #[test]
    fn pix_format_parse_display_size() {
        assert_eq!("YUYV".parse::<PixFormat>().unwrap(), PixFormat::Yuyv);
        assert_eq!("i420".parse::<PixFormat>().unwrap(), PixFormat::I420);
        assert!("nv12".parse::<PixFormat>().is_err());
        assert_eq!(PixFormat::I420.to_string(), "i420");
        assert_eq!(PixFormat::Yuyv.frame_size(1280, 720), 1280 * 720 * 2);
        assert_eq!(PixFormat::I420.frame_size(1280, 720), 1280 * 720 * 3 / 2);
        let mut out = vec![0; PixFormat::I420.frame_size(4, 2)];
        rgb_to_yuv_into(PixFormat::I420, &flat(4, 2, [1, 2, 3]), 4, 2, &mut out).unwrap();
        assert_eq!(out, rgb_to_i420(&flat(4, 2, [1, 2, 3]), 4, 2).unwrap());
    }
}
