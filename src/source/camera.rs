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
use nokhwa::utils::{ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};
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

/// One capture mode, as far as choosing one goes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mode {
    width: u32,
    height: u32,
    fps: u32,
    /// MJPEG (else YUYV).
    mjpeg: bool,
    /// A format we decode (MJPEG or YUYV).
    usable: bool,
}

impl Mode {
    fn of(f: &CameraFormat) -> Mode {
        let r = f.resolution();
        Mode {
            width: r.width_x,
            height: r.height_y,
            fps: f.frame_rate(),
            mjpeg: f.format() == FrameFormat::MJPEG,
            usable: matches!(f.format(), FrameFormat::MJPEG | FrameFormat::YUYV),
        }
    }
}

/// The mode closest to `width`x`height`@`fps`: nearest size first (relative), then nearest
/// frame rate (a 720p YUYV mode at 10 fps loses to 720p MJPEG at 30), then MJPEG over YUYV at
/// equal size and rate (less USB bandwidth, same picture).
fn choose_mode(modes: &[Mode], width: u32, height: u32, fps: u32) -> Option<usize> {
    let size_cost = |m: &Mode| {
        let dw = (f64::from(m.width) - f64::from(width)) / f64::from(width.max(1));
        let dh = (f64::from(m.height) - f64::from(height)) / f64::from(height.max(1));
        // Quantised so that the frame rate decides between nearly equal sizes.
        (((dw * dw + dh * dh).sqrt()) * 100.0).round() as i64
    };
    modes
        .iter()
        .enumerate()
        .filter(|(_, m)| m.usable && m.fps > 0)
        .min_by_key(|(_, m)| (size_cost(m), (i64::from(m.fps) - i64::from(fps)).abs(), !m.mjpeg))
        .map(|(k, _)| k)
}

/// What the camera thread sends.
type Msg = Result<Frame>;

/// A webcam read on its own thread.
pub struct CameraSource {
    rx: Receiver<Msg>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the camera thread ends (its sender is dropped with it).
    done: Receiver<()>,
    desc: String,
    /// The negotiated frame rate (0 when the driver reports none).
    rate: u32,
    seq: u64,
}

/// How long dropping a source waits for its thread; a camera that went silent leaves the thread
/// blocked in the driver's poll, and waiting for it would stall the capture stage's reopening.
const DROP_WAIT: Duration = Duration::from_millis(500);

impl CameraSource {
    /// Opens the camera and starts streaming the mode closest to `width`x`height`@`fps`.
    pub fn open(device: &str, width: u32, height: u32, fps: u32) -> Result<Self> {
        let index = resolve_device(device)?;
        let node = format!("/dev/video{index}");
        if !Path::new(&node).exists() {
            return Err(Error::Source(format!("camera `{device}`: no such device ({node} does not exist)")));
        }
        let (tx, rx) = bounded::<Msg>(1);
        let (ready_tx, ready_rx) = bounded::<Result<(String, u32)>>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let device_name = device.to_string();
        let (done_tx, done) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name(format!("camera-{index}"))
            .spawn(move || {
                let _done = done_tx;
                // Opened with any mode we can decode, then switched to the mode we choose from
                // the camera's whole list: nokhwa's `Closest` only looks at modes of the
                // requested format (a YUYV-only camera never opens) and at frame rates of the
                // exact requested size.
                let formats = [FrameFormat::MJPEG, FrameFormat::YUYV];
                let any = RequestedFormat::with_formats(RequestedFormatType::None, &formats);
                let opened = Camera::with_backend(CameraIndex::Index(index), any, ApiBackend::Video4Linux).and_then(|mut c| {
                    let modes = c.compatible_camera_formats()?;
                    let listed: Vec<Mode> = modes.iter().map(Mode::of).collect();
                    if let Some(k) = choose_mode(&listed, width, height, fps) {
                        c.set_camera_requset(RequestedFormat::with_formats(RequestedFormatType::Exact(modes[k]), &formats))?;
                    }
                    c.open_stream().map(|()| c)
                });
                let mut cam = match opened {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Source(format!("camera `{device_name}` ({node}): {e}"))));
                        return;
                    }
                };
                let fmt = cam.camera_format();
                let (w, h) = (fmt.resolution().width_x, fmt.resolution().height_y);
                let _ = ready_tx.send(Ok((
                    format!(
                        "camera {node} `{}` {w}x{h} {:?} @ {} fps (asked {width}x{height} @ {fps})",
                        cam.info().human_name(),
                        fmt.format(),
                        fmt.frame_rate()
                    ),
                    fmt.frame_rate(),
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
        let (desc, rate) = match ready_rx.recv_timeout(Duration::from_secs(10)) {
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
        Ok(CameraSource { rx, stop, thread: Some(thread), done, desc, rate, seq: 0 })
    }
}

impl FrameSource for CameraSource {
    fn fps(&self) -> Option<f64> {
        (self.rate > 0).then(|| f64::from(self.rate))
    }

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
            match self.done.recv_timeout(DROP_WAIT) {
                Err(RecvTimeoutError::Timeout) => {
                    // Blocked in the driver (a silent camera): detached; it ends with its next
                    // read, and reopening the device meanwhile fails and is retried.
                    log::warn!("{}: the capture thread is blocked in the driver; not waiting for it", self.desc);
                }
                _ => {
                    let _ = t.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_mode_of_any_usable_format_is_chosen() {
        let m = |width, height, fps, mjpeg| Mode { width, height, fps, mjpeg, usable: true };
        // A YUYV-only camera opens (nokhwa's Closest(MJPEG) found nothing here).
        let yuyv = [m(640, 480, 30, false), m(1280, 720, 10, false), m(320, 240, 30, false)];
        assert_eq!(choose_mode(&yuyv, 640, 480, 15), Some(0));
        assert_eq!(choose_mode(&yuyv, 1280, 720, 30), Some(1), "the size first");
        // Same size: the nearer frame rate, then MJPEG.
        let both = [m(1280, 720, 10, false), m(1280, 720, 30, true), m(1280, 720, 30, false)];
        assert_eq!(choose_mode(&both, 1280, 720, 30), Some(1));
        assert_eq!(choose_mode(&both, 1280, 720, 10), Some(0));
        // No exact size: the nearest one, with its own frame rates.
        let odd = [m(800, 600, 25, true), m(1920, 1080, 30, true)];
        assert_eq!(choose_mode(&odd, 1280, 720, 30), Some(0));
        // Nothing usable.
        let nv12 = [Mode { usable: false, ..m(640, 480, 30, false) }];
        assert_eq!(choose_mode(&nv12, 640, 480, 30), None);
        assert_eq!(choose_mode(&[], 640, 480, 30), None);
    }

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
