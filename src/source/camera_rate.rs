//! A source delivered at a fixed camera rate: the frames of another source (a video file decoded
//! flat out), handed over on a clock of `fps` ticks with timestamps `k / fps`, as a webcam
//! negotiated at that rate would. `puppetcam bench --live --camera-fps 60` drives the pipeline with
//! it, to measure what a user with a 30 or 60 fps camera gets from a clip recorded at another rate.
use super::{FrameSource, Pacer};
use crate::core::types::Frame;
use crate::error::{Error, Result};
use std::time::Duration;

pub struct CameraRate {
    inner: Box<dyn FrameSource>,
    fps: f64,
    pacer: Pacer,
    seq: u64,
}

impl CameraRate {
    /// `fps` within 1..=240 (what a camera mode can be).
    pub fn new(inner: Box<dyn FrameSource>, fps: f64) -> Result<CameraRate> {
        if !(fps.is_finite() && (1.0..=240.0).contains(&fps)) {
            return Err(Error::Config { key: "camera_fps".into(), msg: format!("{fps} is not a camera rate in 1..=240") });
        }
        Ok(CameraRate { inner, fps, pacer: Pacer::new(), seq: 0 })
    }
}

impl FrameSource for CameraRate {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let pts = Duration::from_secs_f64(self.seq as f64 / self.fps);
        // Decoded on its tick, not ahead of it: a webcam's frame is converted when it arrives,
        // after the face stage has taken the one before. Decoding the next frame right after
        // handing one over made the decoder compete with the face stage for the two cores (its
        // landmark model took 5.1-5.8 ms instead of 3.9 on sh_video). A late tick is handed over
        // at once, and one behind by more than a second re-anchors the clock instead of bursting.
        self.pacer.wait(pts);
        let Some(mut f) = self.inner.next_frame()? else { return Ok(None) };
        f.pts = pts;
        f.seq = self.seq;
        self.seq += 1;
        Ok(Some(f))
    }

    fn describe(&self) -> String {
        format!("{} delivered at {} fps (camera rate)", self.inner.describe(), self.fps)
    }

    fn fps(&self) -> Option<f64> {
        Some(self.fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u64);
    impl FrameSource for Counter {
        fn next_frame(&mut self) -> Result<Option<Frame>> {
            self.0 += 1;
            Ok((self.0 <= 3).then(|| Frame::black(4, 4)))
        }
        fn describe(&self) -> String {
            "counter".into()
        }
    }

    #[test]
    fn retimes_frames_to_the_camera_rate() {
        // 240 fps keeps the test's pacing sleeps to a few milliseconds.
        let mut s = CameraRate::new(Box::new(Counter(0)), 240.0).unwrap();
        assert_eq!(s.fps(), Some(240.0));
        let pts: Vec<Duration> = std::iter::from_fn(|| s.next_frame().unwrap()).map(|f| f.pts).collect();
        assert_eq!(pts, [0, 1, 2].map(|k| Duration::from_secs_f64(k as f64 / 240.0)));
        assert!(s.describe().contains("240 fps"));
    }

    #[test]
    fn rejects_rates_no_camera_has() {
        for bad in [0.0, -30.0, 1000.0, f64::NAN] {
            assert!(matches!(CameraRate::new(Box::new(Counter(0)), bad), Err(Error::Config { .. })), "{bad}");
        }
    }
}
