//! Frame sources behind the `FrameSource` trait: camera, video file, still image, synthetic.
#[cfg(feature = "camera")]
pub mod camera;
pub mod camera_rate;
pub mod file;
pub mod image;
pub mod synthetic;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use opencv::core::Mat;
use opencv::imgproc;
use opencv::prelude::*;

use crate::core::types::Frame;
use crate::error::{Error, Result};

/// Something that produces frames. Each capture thread builds and owns its source.
pub trait FrameSource: Send {
    /// Blocks until the next frame. `Ok(None)` is the end of a finite stream (file).
    /// A camera that goes away returns `Err(Error::SourceDisconnected)`.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
    /// Human-readable description for logs and status (device, size, fps).
    fn describe(&self) -> String;
    /// Frames per second the source delivers: a camera's negotiated rate, a file's own rate.
    /// The live output follows it by default (`pipeline::rate`); `None` when unknown.
    fn fps(&self) -> Option<f64> {
        None
    }
}

/// Which source to open: what `[source]` of the config resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A webcam (feature `camera`): `device` is a path (`/dev/video0`, `/dev/v4l/by-id/...`),
    /// an index (`0`) or part of the camera's name. Size and fps are requests; the closest
    /// mode the camera offers is used.
    Camera { device: String, width: u32, height: u32, fps: u32 },
    /// A video file, decoded with OpenCV. `looping` restarts it at the end (timestamps keep
    /// increasing); `realtime` paces frames by their timestamps instead of decoding flat out.
    File { path: PathBuf, looping: bool, realtime: bool },
    /// A still image repeated at `fps` (a portrait as a driver).
    Image { path: PathBuf, fps: u32 },
    /// A generated cartoon face; needs no hardware or files (see `synthetic`).
    Synthetic { width: u32, height: u32, fps: u32 },
}

/// Opens the source described by `spec`.
pub fn open_source(spec: &SourceSpec) -> Result<Box<dyn FrameSource>> {
    match spec {
        SourceSpec::Camera { device, width, height, fps } => open_camera(device, *width, *height, *fps),
        SourceSpec::File { path, looping, realtime } => Ok(Box::new(file::FileSource::open(path, *looping, *realtime)?)),
        SourceSpec::Image { path, fps } => Ok(Box::new(image::ImageSource::open(path, *fps)?)),
        SourceSpec::Synthetic { width, height, fps } => Ok(Box::new(synthetic::SyntheticSource::new(*width, *height, *fps)?)),
    }
}

#[cfg(feature = "camera")]
fn open_camera(device: &str, width: u32, height: u32, fps: u32) -> Result<Box<dyn FrameSource>> {
    Ok(Box::new(camera::CameraSource::open(device, width, height, fps)?))
}

#[cfg(not(feature = "camera"))]
fn open_camera(device: &str, _w: u32, _h: u32, _fps: u32) -> Result<Box<dyn FrameSource>> {
    Err(Error::Source(format!("cannot open camera `{device}`: this puppetcam was built without the `camera` feature")))
}

/// Largest video frame side accepted from a file (4K is 3840; anything larger is refused before
/// the first frame is decoded, because each decoded frame is allocated at that size).
pub const MAX_VIDEO_SIDE: u32 = 4096;

/// Refuses a video whose stream claims frames larger than [`MAX_VIDEO_SIDE`], before decoding.
pub(crate) fn check_video_size(cap: &opencv::videoio::VideoCapture, path: &std::path::Path) -> Result<()> {
    use opencv::videoio::{CAP_PROP_FRAME_HEIGHT, CAP_PROP_FRAME_WIDTH};
    let w = cap.get(CAP_PROP_FRAME_WIDTH).unwrap_or(0.0);
    let h = cap.get(CAP_PROP_FRAME_HEIGHT).unwrap_or(0.0);
    check_frame_side(w, h).map_err(|m| Error::Source(format!("video {}: {m}", path.display())))
}

fn check_frame_side(w: f64, h: f64) -> std::result::Result<(), String> {
    let max = f64::from(MAX_VIDEO_SIDE);
    if !(w.is_finite() && h.is_finite()) || w > max || h > max {
        return Err(format!("frames are {w}x{h}: larger than the limit of {MAX_VIDEO_SIDE} pixels a side"));
    }
    Ok(())
}

/// Copies a BGR `CV_8UC3` Mat into an RGB frame.
pub(crate) fn bgr_mat_to_frame(bgr: &Mat, pts: Duration, seq: u64) -> Result<Frame> {
    if bgr.empty() || bgr.typ() != opencv::core::CV_8UC3 {
        return Err(Error::Source(format!("decoded image is empty or not 8-bit BGR (type {})", bgr.typ())));
    }
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(bgr, &mut rgb, imgproc::COLOR_BGR2RGB)?;
    // cvtColor allocates a fresh, continuous Mat, so its bytes are exactly 3 * w * h.
    let data = rgb.data_bytes()?.to_vec();
    Ok(Frame { width: rgb.cols() as u32, height: rgb.rows() as u32, data, pts, seq })
}

/// Paces a stream against the wall clock: `wait(pts)` sleeps until `pts` after the start.
#[derive(Debug)]
pub(crate) struct Pacer {
    start: Option<(Instant, Duration)>,
}

impl Pacer {
    pub(crate) fn new() -> Self {
        Pacer { start: None }
    }

    /// Sleeps until `pts` (relative to the first `pts` seen) has elapsed. If the consumer fell
    /// far behind (> 1 s), re-anchors instead of bursting to catch up.
    pub(crate) fn wait(&mut self, pts: Duration) {
        let now = Instant::now();
        let (t0, p0) = *self.start.get_or_insert((now, pts));
        let due = t0 + pts.saturating_sub(p0);
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_secs(1) {
            self.start = Some((now, pts));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn video_frame_sides_are_bounded() {
        assert!(super::check_frame_side(3840.0, 2160.0).is_ok());
        assert!(super::check_frame_side(0.0, 0.0).is_ok()); // unknown: the first decoded frame tells
        let e = super::check_frame_side(16384.0, 16384.0).unwrap_err();
        assert!(e.contains("16384x16384") && e.contains("4096"), "{e}");
        assert!(super::check_frame_side(f64::NAN, 10.0).is_err());
    }
}
