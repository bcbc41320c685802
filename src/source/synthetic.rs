//! Synthetic source: a drawn cartoon face that turns, nods, blinks and talks, at a fixed fps.
//!
//! What it is for: exercising the whole pipeline (capture -> face -> generator -> sink, stats,
//! pacing, the HTTP preview) on a machine with no camera and no video files, in CI and demos.
//! It is deliberately face-like (skin ellipse, eyes with irises, brows, nose, lips, shading) so
//! that a detector has a chance, but it is a cartoon: MediaPipe may not detect it, or may
//! detect it only at some poses, so tests must not depend on detection succeeding.
//! Frames are deterministic functions of the frame index (pts = seq / fps).
use std::f64::consts::TAU;
use std::time::Duration;

use opencv::core::{Mat, Point, Scalar, Size, ToInputOutputArray, Vec3b};
use opencv::imgproc::{self, FILLED, LINE_AA};

use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::source::{FrameSource, Pacer};

/// Generates the cartoon face.
pub struct SyntheticSource {
    width: u32,
    height: u32,
    fps: u32,
    seq: u64,
    pacer: Pacer,
    /// `false` in tests that want frames as fast as they can be drawn.
    pace: bool,
}

impl SyntheticSource {
    /// A source of `width` x `height` frames at `fps`, paced in real time.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self> {
        if !(16..=7680).contains(&width) || !(16..=4320).contains(&height) || !(1..=240).contains(&fps) {
            return Err(Error::Source(format!("synthetic: bad geometry {width}x{height} @ {fps} fps")));
        }
        Ok(SyntheticSource { width, height, fps, seq: 0, pacer: Pacer::new(), pace: true })
    }

    /// Same, but `next_frame` never sleeps.
    pub fn unpaced(width: u32, height: u32, fps: u32) -> Result<Self> {
        Ok(SyntheticSource { pace: false, ..Self::new(width, height, fps)? })
    }

    /// Draws frame number `seq` (pure function of `seq`).
    pub fn render(&self, seq: u64) -> Result<Frame> {
        let (w, h) = (self.width as i32, self.height as i32);
        let t = seq as f64 / f64::from(self.fps);
        let mut data = vec![0u8; 3 * w as usize * h as usize];
        {
            let mut img = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h, w, &mut data)?;
            draw_face(&mut img, w, h, t)?;
        }
        Ok(Frame { width: self.width, height: self.height, data, pts: Duration::from_secs_f64(t), seq })
    }
}

// Colours are RGB (the Mat's bytes are RGB).
fn rgb(r: u8, g: u8, b: u8) -> Scalar {
    Scalar::new(f64::from(r), f64::from(g), f64::from(b), 0.0)
}

fn draw_face(img: &mut impl ToInputOutputArray, w: i32, h: i32, t: f64) -> Result<()> {
    // Background: a soft vertical gradient so the frame is not flat.
    for y in 0..h {
        let v = 70.0 + 60.0 * f64::from(y) / f64::from(h);
        imgproc::line(img, Point::new(0, y), Point::new(w - 1, y), Scalar::new(v * 0.8, v * 0.9, v, 0.0), 1, imgproc::LINE_8, 0)?;
    }
    let s = f64::from(w.min(h)) / 480.0; // scale: designed at 480 px
    let yaw = 0.25 * (TAU * t / 6.0).sin(); // turn left/right every 6 s
    let nod = 0.12 * (TAU * t / 4.3).sin();
    let mouth = 0.5 + 0.5 * (TAU * t * 1.7).sin().max(-0.6); // talking
    let blink = ((t * 1000.0) as u64 % 3500) < 140; // eyes closed 140 ms of every 3.5 s
    let cx = f64::from(w) / 2.0 + 60.0 * s * yaw * 2.0;
    let cy = f64::from(h) / 2.0 + 40.0 * s * nod * 2.0;
    let p = |dx: f64, dy: f64| Point::new((cx + (dx + yaw * 40.0 * (1.0 - dx.abs() / 150.0)) * s) as i32, (cy + (dy + nod * 30.0) * s) as i32);
    let sz = |a: f64, b: f64| Size::new((a * s).max(1.0) as i32, (b * s).max(1.0) as i32);

    // Hair, neck, head.
    imgproc::ellipse(img, p(0.0, 200.0), sz(70.0, 90.0), 0.0, 0.0, 360.0, rgb(205, 160, 135), FILLED, LINE_AA, 0)?;
    imgproc::ellipse(img, p(0.0, -30.0), sz(135.0, 165.0), 0.0, 0.0, 360.0, rgb(60, 40, 30), FILLED, LINE_AA, 0)?;
    imgproc::ellipse(img, p(0.0, 0.0), sz(115.0, 150.0), 0.0, 0.0, 360.0, rgb(225, 180, 150), FILLED, LINE_AA, 0)?;
    // Cheek shading on the side turned away.
    imgproc::ellipse(img, p(-90.0 * yaw.signum(), 30.0), sz(30.0, 70.0), 0.0, 0.0, 360.0, rgb(205, 160, 130), FILLED, LINE_AA, 0)?;
    // Brows, lifted a little while talking.
    let lift = 6.0 * mouth;
    for side in [-1.0, 1.0] {
        imgproc::ellipse(img, p(side * 45.0, -55.0 - lift), sz(30.0, 10.0), 0.0, 180.0, 360.0, rgb(60, 40, 30), (6.0 * s).max(1.0) as i32, LINE_AA, 0)?;
        // Eyes: white, iris, pupil; a line when blinking.
        if blink {
            imgproc::line(img, p(side * 45.0 - 22.0, -25.0), p(side * 45.0 + 22.0, -25.0), rgb(40, 30, 30), (3.0 * s).max(1.0) as i32, LINE_AA, 0)?;
        } else {
            imgproc::ellipse(img, p(side * 45.0, -25.0), sz(24.0, 12.0), 0.0, 0.0, 360.0, rgb(245, 245, 240), FILLED, LINE_AA, 0)?;
            imgproc::circle(img, p(side * 45.0 + 6.0 * yaw, -25.0), (9.0 * s) as i32, rgb(70, 110, 60), FILLED, LINE_AA, 0)?;
            imgproc::circle(img, p(side * 45.0 + 6.0 * yaw, -25.0), (4.0 * s) as i32, rgb(10, 10, 10), FILLED, LINE_AA, 0)?;
        }
    }
    // Nose.
    imgproc::line(img, p(0.0, -20.0), p(4.0, 25.0), rgb(190, 140, 115), (4.0 * s).max(1.0) as i32, LINE_AA, 0)?;
    imgproc::ellipse(img, p(0.0, 30.0), sz(16.0, 8.0), 0.0, 0.0, 180.0, rgb(180, 130, 105), (3.0 * s).max(1.0) as i32, LINE_AA, 0)?;
    // Mouth: dark opening between lips whose gap follows `mouth`.
    let open = 4.0 + 22.0 * mouth;
    imgproc::ellipse(img, p(0.0, 75.0), sz(40.0, open), 0.0, 0.0, 360.0, rgb(170, 60, 70), FILLED, LINE_AA, 0)?;
    imgproc::ellipse(img, p(0.0, 75.0), sz(32.0, (open - 5.0).max(1.0)), 0.0, 0.0, 360.0, rgb(60, 15, 20), FILLED, LINE_AA, 0)?;
    Ok(())
}

impl FrameSource for SyntheticSource {
    fn fps(&self) -> Option<f64> {
        Some(f64::from(self.fps))
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let f = self.render(self.seq)?;
        if self.pace {
            self.pacer.wait(f.pts);
        }
        self.seq += 1;
        Ok(Some(f))
    }

    fn describe(&self) -> String {
        format!("synthetic cartoon face {}x{} @ {} fps", self.width, self.height, self.fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_and_are_deterministic() {
        let mut s = SyntheticSource::unpaced(160, 120, 30).unwrap();
        let a = s.next_frame().unwrap().unwrap();
        let b = s.next_frame().unwrap().unwrap();
        assert!(a.len_ok() && b.len_ok());
        assert_eq!((a.seq, b.seq), (0, 1));
        assert_eq!(b.pts, Duration::from_secs_f64(1.0 / 30.0));
        assert_ne!(a.data, b.data, "the face moves");
        assert_eq!(s.render(1).unwrap().data, b.data, "pure function of seq");
        // Skin colour is present near the centre: it is a face, not noise.
        let o = 3 * (60 * 160 + 80);
        assert!(a.data[o] > a.data[o + 2], "centre pixel {:?} should be skin-toned", &a.data[o..o + 3]);
    }

    #[test]
    fn paces_in_real_time() {
        let mut s = SyntheticSource::new(64, 48, 100).unwrap();
        let t0 = std::time::Instant::now();
        for _ in 0..6 {
            s.next_frame().unwrap();
        }
        assert!(t0.elapsed() >= Duration::from_millis(45), "{:?}", t0.elapsed());
    }

    #[test]
    fn rejects_bad_geometry() {
        assert!(SyntheticSource::new(0, 10, 30).is_err());
        assert!(SyntheticSource::new(64, 64, 0).is_err());
    }
}
