//! Webcam source (feature `camera`): nokhwa's V4L2 backend on a private thread.
//!
//! nokhwa's `Camera` is not `Send`, but a `FrameSource` must be, so the camera is opened and
//! read on its own thread and frames come through a one-slot channel (latest frame wins).
//! We ask for the mode closest to the requested size/fps among MJPEG and YUYV (what webcams
//! offer at 720p/30) and decode ourselves: MJPEG with OpenCV's imdecode, YUYV with the BT.601
//! limited-range inverse of `core::colour`, so nokhwa's optional decoders are not needed.
//! When the device disappears (unplugged: ENODEV, or the node is gone) `next_frame` returns
//! `Error::SourceDisconnected` and the capture stage reopens it.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, TrySendError};
use nokhwa::utils::{ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution};
use nokhwa::{Camera, NokhwaError};
use opencv::core::{Mat, Vector};
use opencv::imgcodecs;

use crate::core::colour::yuyv_to_rgb;
use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::source::{bgr_mat_to_frame, FrameSource};

/// One camera as `puppetcam devices` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraInfo {
    pub index: u32,
    pub path: String,
    pub name: String,
}

/// Cameras V4L2 knows about (empty when there are none or the query fails).
pub fn list_cameras() -> Vec<CameraInfo> {
    match nokhwa::query(ApiBackend::Video4Linux) {
        Ok(list) => list
            .into_iter()
            .filter_map(|c| {
                let index = c.index().as_index().ok()?;
                Some(CameraInfo { index, path: format!("/dev/video{index}"), name: c.human_name() })
            })
            .collect(),
        Err(e) => {
            log::debug!("camera query failed: {e}");
            Vec::new()
        }
    }
}

/// Resolves `/dev/videoN`, a symlink to it (`/dev/v4l/by-id/...`), `N`, or part of a name.
pub fn resolve_device(device: &str) -> Result<u32> {
    let d = device.trim();
    if let Ok(n) = d.parse::<u32>() {
        return Ok(n);
    }
    if d.starts_with('/') {
        let p = Path::new(d);
        let real = std::fs::canonicalize(p).map_err(|e| Error::Source(format!("camera {d}: no such device ({e})")))?;
        let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("");
        return name
            .strip_prefix("video")
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| Error::Source(format!("camera {d}: {} is not a /dev/videoN node", real.display())));
    }
    let needle = d.to_lowercase();
    let cams = list_cameras();
    cams.iter()
        .find(|c| c.name.to_lowercase().contains(&needle))
        .map(|c| c.index)
        .ok_or_else(|| {
            let known: Vec<String> = cams.iter().map(|c| format!("{} ({})", c.path, c.name)).collect();
            Error::Source(format!(
                "camera `{d}`: no such device; cameras found: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })
}

/// True when a nokhwa error means the device went away rather than a transient failure.
fn is_gone(e: &NokhwaError, index: u32) -> bool {
    let msg = e.to_string().to_lowercase();
    msg.contains("no such device") || msg.contains("os error 19") || msg.contains("enodev")
        || !Path::new(&format!("/dev/video{index}")).exists()
}

/// Decodes one raw camera buffer to RGB.
fn decode(format: FrameFormat, raw: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let (w, h) = (width as usize, height as usize);
    let need = |n: usize| {
        if raw.len() < n {
            Err(Error::Source(format!("camera: short {format:?} buffer ({} < {n} bytes)", raw.len())))
        } else {
            Ok(())
        }
    };
    match format {
        FrameFormat::MJPEG => {
            let buf = Vector::<u8>::from_slice(raw);
            let bgr: Mat = imgcodecs::imdecode(&buf, imgcodecs::IMREAD_COLOR)?;
            let f = bgr_mat_to_frame(&bgr, Duration::ZERO, 0).map_err(|_| Error::Source("camera: undecodable MJPEG frame".into()))?;
            Ok(f.data)
        }
        FrameFormat::YUYV => {
            need(2 * w * h)?;
            yuyv_to_rgb(&raw[..2 * w * h], width, height)
        }
        FrameFormat::RAWRGB => {
            need(3 * w * h)?;
            Ok(raw[..3 * w * h].to_vec())
        }
        FrameFormat::RAWBGR => {
            need(3 * w * h)?;
            Ok(raw[..3 * w * h].chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect())
        }
        FrameFormat::GRAY => {
            need(w * h)?;
            Ok(raw[..w * h].iter().flat_map(|&g| [g, g, g]).collect())
        }
        FrameFormat::NV12 => Err(Error::Source("camera: NV12 is not supported; pick a MJPEG/YUYV mode".into())),
    }
}

/// What the camera thread sends.
type Msg = Result<Frame>;

/// A webcam read on its own thread.
pub struct CameraSource {
    rx: Receiver<Msg>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    desc: String,
    seq: u64,
}

impl CameraSource {
    /// Opens the camera and starts streaming the mode closest to `width`x`height`@`fps`.
    pub fn open(device: &str, width: u32, height: u32, fps: u32) -> Result<Self> {
        let index = resolve_device(device)?;
        let node = format!("/dev/video{index}");
        if !Path::new(&node).exists() {
            return Err(Error::Source(format!("camera `{device}`: no such device ({node} does not exist)")));
        }
        let (tx, rx) = bounded::<Msg>(1);
        let (ready_tx, ready_rx) = bounded::<Result<String>>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let device_name = device.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("camera-{index}"))
            .spawn(move || {
                let want = CameraFormat::new(Resolution::new(width, height), FrameFormat::MJPEG, fps);
                let formats = [FrameFormat::MJPEG, FrameFormat::YUYV];
                let req = RequestedFormat::with_formats(RequestedFormatType::Closest(want), &formats);
                let mut cam = match Camera::with_backend(CameraIndex::Index(index), req, ApiBackend::Video4Linux)
                    .and_then(|mut c| c.open_stream().map(|()| c))
                {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Source(format!("camera `{device_name}` ({node}): {e}"))));
                        return;
                    }
                };
                let fmt = cam.camera_format();
                let (w, h) = (fmt.resolution().width_x, fmt.resolution().height_y);
                let _ = ready_tx.send(Ok(format!(
                    "camera {node} `{}` {w}x{h} {:?} @ {} fps (asked {width}x{height} @ {fps})",
                    cam.info().human_name(),
                    fmt.format(),
                    fmt.frame_rate()
                )));
                let t0 = Instant::now();
                while !stop2.load(Ordering::Relaxed) {
                    let msg = match cam.frame_raw() {
                        Ok(raw) => decode(fmt.format(), &raw, w, h)
                            .map(|data| Frame { width: w, height: h, data, pts: t0.elapsed(), seq: 0 }),
                        Err(e) if is_gone(&e, index) => Err(Error::SourceDisconnected(format!("camera {node}: {e}"))),
                        Err(e) => Err(Error::Source(format!("camera {node}: {e}"))),
                    };
                    let fatal = matches!(msg, Err(Error::SourceDisconnected(_)));
                    match tx.try_send(msg) {
                        // The consumer is behind: the older frame in the slot stays, this one is
                        // dropped; the next read is newer anyway.
                        Ok(()) | Err(TrySendError::Full(_)) => {}
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                    if fatal {
                        break;
                    }
                }
                let _ = cam.stop_stream();
            })
            .map_err(|e| Error::Source(format!("camera: cannot start thread: {e}")))?;
        let desc = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                return Err(Error::Source(format!("camera `{device}`: timed out opening")));
            }
        };
        Ok(CameraSource { rx, stop, thread: Some(thread), desc, seq: 0 })
    }
}

impl FrameSource for CameraSource {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        match self.rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(mut f)) => {
                f.seq = self.seq;
                self.seq += 1;
                Ok(Some(f))
            }
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Disconnected) => Err(Error::SourceDisconnected(format!("{}: capture thread ended", self.desc))),
            Err(RecvTimeoutError::Timeout) => Err(Error::SourceDisconnected(format!("{}: no frame for 5 s", self.desc))),
        }
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a thread waiting to send, then let it finish its current read.
        while self.rx.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_fails_cleanly() {
        let e = CameraSource::open("/dev/video97", 640, 480, 30).err().unwrap();
        assert!(e.to_string().contains("no such device"), "{e}");
        let e = CameraSource::open("97", 640, 480, 30).err().unwrap();
        assert!(e.to_string().contains("no such device"), "{e}");
        let e = CameraSource::open("Definitely Not A Camera", 640, 480, 30).err().unwrap();
        assert!(e.to_string().contains("no such device"), "{e}");
    }

    #[test]
    fn resolves_device_forms() {
        assert_eq!(resolve_device("3").unwrap(), 3);
        assert!(resolve_device("/dev/null").is_err(), "not a video node");
        let _ = list_cameras(); // must not panic without /dev/video*
    }

    #[test]
    fn decodes_raw_formats() {
        assert_eq!(decode(FrameFormat::GRAY, &[7, 9], 2, 1).unwrap(), vec![7, 7, 7, 9, 9, 9]);
        assert_eq!(decode(FrameFormat::RAWBGR, &[1, 2, 3], 1, 1).unwrap(), vec![3, 2, 1]);
        assert_eq!(decode(FrameFormat::YUYV, &[16, 128, 235, 128], 2, 1).unwrap(), vec![0, 0, 0, 255, 255, 255]);
        assert!(decode(FrameFormat::YUYV, &[16, 128], 2, 1).is_err());
        assert!(decode(FrameFormat::MJPEG, &[0xff, 0xd8, 1, 2], 2, 1).is_err());
    }
}
