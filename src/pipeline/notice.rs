//! The placeholder the virtual camera shows while the camera is gone (missing at start, or lost
//! for longer than `[service] source_lost_timeout_s`): the idle portrait, dimmed, with a short
//! notice. A call then shows that the camera is the problem instead of a frozen face, and the
//! output never stops, so call software keeps the device.
use crate::core::types::Frame;
use crate::error::Result;
use opencv::core::{Mat, Point, Scalar, Vec3b};
use opencv::imgproc;

/// The notice's text.
pub const TEXT: &str = "Camera unavailable - waiting for it";

/// `idle` dimmed to 40 % with [`TEXT`] centred near the bottom, scaled to the frame's width.
pub fn placeholder(idle: &Frame) -> Result<Frame> {
    let mut out = idle.clone();
    for v in out.data.iter_mut() {
        *v = (u16::from(*v) * 2 / 5) as u8;
    }
    let (w, h) = (out.width as i32, out.height as i32);
    let mut m = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h, w, &mut out.data)?;
    let font = imgproc::FONT_HERSHEY_SIMPLEX;
    let mut base = 0;
    let size1 = imgproc::get_text_size(TEXT, font, 1.0, 2, &mut base)?;
    // The text spans about 80 % of the width, however large the output.
    let scale = (0.8 * f64::from(w) / f64::from(size1.width.max(1))).clamp(0.3, 3.0);
    let thick = ((scale * 2.0).round() as i32).max(1);
    let size = imgproc::get_text_size(TEXT, font, scale, thick, &mut base)?;
    let org = Point::new((w - size.width) / 2, h - (h / 10).max(size.height + base));
    imgproc::put_text(&mut m, TEXT, org, font, scale, Scalar::new(235.0, 235.0, 235.0, 0.0), thick, imgproc::LINE_AA, false)?;
    drop(m);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_is_the_dimmed_portrait_with_a_notice() {
        let mut idle = Frame::black(320, 240);
        idle.data.iter_mut().for_each(|v| *v = 200);
        let p = placeholder(&idle).unwrap();
        assert_eq!((p.width, p.height, p.data.len()), (320, 240, idle.data.len()));
        // Top half: only dimmed (200 -> 80).
        assert!(p.data[..320 * 3 * 100].iter().all(|&v| v == 80));
        // Bottom: bright text pixels, brighter than the dimmed portrait.
        let bottom = &p.data[320 * 3 * 160..];
        let bright = bottom.iter().filter(|&&v| v > 150).count();
        assert!(bright > 300, "{bright} text pixels");
        // Tiny and huge outputs work too.
        assert!(placeholder(&Frame::black(16, 16)).is_ok());
        assert!(placeholder(&Frame::black(3840, 2160)).is_ok());
    }
}
