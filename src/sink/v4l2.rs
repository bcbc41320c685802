//! v4l2loopback virtual-camera sink: negotiates the OUTPUT format and `write()`s converted frames.
//!
//! We use plain `write()` rather than mmap streaming: it is what v4l2loopback handles best with
//! `exclusive_caps=1` (the device only advertises CAPTURE to browsers/Zoom once a producer has
//! set the format and written a frame), and it has no buffer-queue state to get out of sync when
//! a consumer comes and goes. See docs/virtual-camera.md.
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use v4l::buffer::Type;
use v4l::capability::Flags;
use v4l::format::{Colorspace, FieldOrder, Format, FourCC, Quantization};
use v4l::video::output::Parameters;
use v4l::video::Output;
use v4l::Device;

use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::sink::FrameSink;

/// Driver name v4l2loopback reports in VIDIOC_QUERYCAP.
pub const LOOPBACK_DRIVER: &str = "v4l2 loopback";

/// The hint every "device missing" error carries, because that is nearly always the cause.
const MODPROBE_HINT: &str =
    "is v4l2loopback loaded? (modprobe v4l2loopback exclusive_caps=1 card_label=puppetcam)";

/// Pixel formats the sink can write; the layout and conversion live in `core::colour`.
/// YUYV is the safest default (Chrome/Zoom/OBS all take it), I420 halves the bandwidth.
pub use crate::core::colour::PixFormat;

/// The V4L2 four-character code of `format`.
pub fn fourcc(format: PixFormat) -> FourCC {
    match format {
        PixFormat::Yuyv => FourCC::new(b"YUYV"),
        PixFormat::I420 => FourCC::new(b"YU12"),
    }
}

/// Bytes per line of the first plane, what VIDIOC_S_FMT wants in `bytesperline`.
fn bytes_per_line(format: PixFormat, width: u32) -> u32 {
    match format {
        PixFormat::Yuyv => 2 * width,
        PixFormat::I420 => width,
    }
}

/// An open v4l2loopback device we write frames to.
pub struct V4l2Sink {
    dev: Device,
    path: PathBuf,
    card: String,
    /// What the device carries: the configured size and format, or the ones v4l2loopback kept
    /// for a consumer that still holds the device (see `kept`).
    width: u32,
    height: u32,
    fps: u32,
    format: PixFormat,
    /// The size of the frames `write` receives (the configured output size).
    frame_width: u32,
    frame_height: u32,
    /// Set when the driver kept another format than the configured one: what was configured,
    /// for the status line. Frames are then scaled (and cropped to the kept aspect) to fit.
    kept: Option<String>,
    /// Reused conversion buffer, `format.frame_size()` bytes.
    buf: Vec<u8>,
    written: u64,
    /// Frames the driver refused for the moment (EAGAIN); latest-frame-wins, so we drop them.
    dropped: u64,
}

impl V4l2Sink {
    /// Opens `device` as a video OUTPUT, sets `width`x`height` in `format` and the frame rate,
    /// and writes one black frame so that, with `exclusive_caps=1`, consumers see a camera
    /// right away instead of only once the first real frame arrives.
    pub fn open(device: &Path, width: u32, height: u32, fps: u32, format: PixFormat) -> Result<V4l2Sink> {
        format.check_size(width, height)?;
        if fps == 0 {
            return Err(Error::Invalid("output fps must be at least 1".into()));
        }
        let dev = Device::with_path(device).map_err(|e| open_error(device, e))?;

        // QUERYCAP also refreshes v4l2loopback's advertised caps, which the V4L2 core checks
        // before it lets S_FMT on the OUTPUT type through.
        let caps = query_caps(&dev).map_err(|e| sink_err(device, "VIDIOC_QUERYCAP", e))?;
        if caps.driver != LOOPBACK_DRIVER {
            return Err(Error::Sink(format!(
                "{} is `{}` (driver `{}`), not a v4l2loopback device; run `puppetcam devices` to find the virtual camera",
                device.display(),
                caps.card,
                caps.driver
            )));
        }
        if !caps.flags.contains(Flags::VIDEO_OUTPUT) {
            // exclusive_caps=1 hides OUTPUT while another producer is writing.
            return Err(Error::Sink(format!(
                "{} (`{}`) does not accept output right now: another program is already writing to it \
                 (stop it, or load v4l2loopback with more devices: devices=2)",
                device.display(),
                caps.card
            )));
        }

        let mut want = Format::new(width, height, fourcc(format));
        want.field_order = FieldOrder::Progressive;
        want.stride = bytes_per_line(format, width);
        want.size = format.frame_size(width, height) as u32;
        // We convert with BT.601 limited range; say so for consumers that read it.
        want.colorspace = Colorspace::SMPTE170M;
        want.quantization = Quantization::LimitedRange;
        let got = dev.set_format(&want).map_err(|e| sink_err(device, "VIDIOC_S_FMT", e))?;
        let (frame_width, frame_height) = (width, height);
        let mut kept = None;
        let (width, height, format) = if got.width == width && got.height == height && got.fourcc == fourcc(format) {
            (width, height, format)
        } else if let Some(kept_format) = writable(&got) {
            // v4l2loopback keeps the previous producer's format while anyone (a browser tab, a
            // call) still has the device open, or forever with keep_format=1. Writing that
            // format keeps the consumer's picture alive across a restart with new settings;
            // refusing left it frozen and the service failing to start until the consumer let
            // go (scripts/vm/run-browser-test.sh restarts with a new size under a held stream).
            log::warn!(
                "{} kept format {}x{} {} for a consumer that still holds it (or keep_format=1): writing that \
                 instead of the configured {width}x{height} {format}, frames scaled to fit; restart puppetcam \
                 once no app has the camera open to apply the configured format",
                device.display(),
                got.width,
                got.height,
                kept_format,
            );
            kept = Some(format!("{width}x{height} {format}"));
            (got.width, got.height, kept_format)
        } else {
            // A format the sink cannot write (another producer's, e.g. MJPEG or RGB).
            return Err(Error::Sink(format!(
                "{} kept format {}x{} {} instead of the requested {}x{} {}: a consumer (browser, Zoom, OBS) \
                 still holds the device with the old format, or v4l2loopback was loaded with keep_format=1 \
                 — close the consumer or configure output {}x{} {}",
                device.display(),
                got.width,
                got.height,
                got.fourcc,
                width,
                height,
                fourcc(format),
                got.width,
                got.height,
                fourcc_name(got.fourcc),
            )));
        };
        let need = format.frame_size(width, height);
        if (got.size as usize) < need {
            return Err(Error::Sink(format!(
                "{}: driver buffer of {} bytes is smaller than a {}x{} {} frame ({} bytes)",
                device.display(),
                got.size,
                width,
                height,
                format,
                need
            )));
        }

        // The frame rate only informs consumers (they read it back with G_PARM); not fatal.
        if let Err(e) = dev.set_params(&Parameters::with_fps(fps)) {
            log::warn!("{}: could not set {fps} fps (VIDIOC_S_PARM): {e}", device.display());
        }

        // v4l2loopback 0.12.x only marks an opener as the writer on STREAMON, not on write():
        // without it, closing the device never re-advertises OUTPUT under exclusive_caps=1 and
        // the next puppetcam start is refused until the module is reloaded. STREAMON also makes
        // the device advertise CAPTURE at once. Newer versions track write() themselves, so a
        // failure here is not fatal.
        let mut buf_type = Type::VideoOutput as u32;
        // SAFETY: VIDIOC_STREAMON reads one u32 buffer type from the pointer.
        if let Err(e) = unsafe {
            v4l::v4l2::ioctl(
                dev.handle().fd(),
                v4l::v4l2::vidioc::VIDIOC_STREAMON,
                &mut buf_type as *mut u32 as *mut std::os::raw::c_void,
            )
        } {
            log::debug!("{}: VIDIOC_STREAMON(OUTPUT) not accepted ({e}); relying on write()", device.display());
        }

        let mut sink = V4l2Sink {
            dev,
            path: device.to_path_buf(),
            card: caps.card,
            width,
            height,
            fps,
            format,
            frame_width,
            frame_height,
            kept,
            buf: vec![0; need],
            written: 0,
            dropped: 0,
        };
        // Black in limited-range YUV is Y=16, U=V=128, not all zeros (which would be green).
        fill_black(format, width, height, &mut sink.buf);
        sink.write_buf()?;
        log::info!("{}", sink.describe());
        Ok(sink)
    }

    /// Frames written to the device so far (including the initial black frame).
    pub fn frames_written(&self) -> u64 {
        self.written
    }

    /// Frames dropped because the driver was momentarily busy.
    pub fn frames_dropped(&self) -> u64 {
        self.dropped
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> PixFormat {
        self.format
    }

    fn write_buf(&mut self) -> Result<()> {
        match self.dev.write(&self.buf) {
            Ok(n) if n == self.buf.len() => {
                self.written += 1;
                Ok(())
            }
            Ok(n) => Err(Error::Sink(format!(
                "{}: short write, {n} of {} bytes accepted (format changed under us?)",
                self.path.display(),
                self.buf.len()
            ))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                self.dropped += 1;
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc_epipe()) => {
                Err(Error::SinkReaderGone(format!("{}: {e}", self.path.display())))
            }
            Err(e) if e.raw_os_error() == Some(libc_enodev()) => Err(Error::Sink(format!(
                "{} went away (v4l2loopback unloaded?): {e}",
                self.path.display()
            ))),
            Err(e) => Err(sink_err(&self.path, "write", e)),
        }
    }
}

impl FrameSink for V4l2Sink {
    fn write(&mut self, frame: &Frame) -> Result<()> {
        if frame.width != self.frame_width || frame.height != self.frame_height {
            return Err(Error::Invalid(format!(
                "frame is {}x{} but {} was opened for {}x{}",
                frame.width,
                frame.height,
                self.path.display(),
                self.frame_width,
                self.frame_height
            )));
        }
        if !frame.len_ok() {
            return Err(Error::Invalid(format!(
                "frame {} has {} bytes, expected {} for {}x{} RGB24",
                frame.seq,
                frame.data.len(),
                3 * frame.width as usize * frame.height as usize,
                frame.width,
                frame.height
            )));
        }
        if self.kept.is_some() && (frame.width != self.width || frame.height != self.height) {
            let fitted = cover(frame, self.width, self.height)?;
            crate::core::colour::rgb_to_yuv_into(self.format, &fitted.data, self.width, self.height, &mut self.buf)?;
        } else {
            crate::core::colour::rgb_to_yuv_into(self.format, &frame.data, self.width, self.height, &mut self.buf)?;
        }
        self.write_buf()
    }

    fn describe(&self) -> String {
        let kept = match &self.kept {
            Some(configured) => format!(" (kept by a consumer; configured {configured}, applied at a restart with the camera closed)"),
            None => String::new(),
        };
        format!(
            "v4l2loopback {} (`{}`) {}x{} {} @ {} fps{kept}",
            self.path.display(),
            self.card,
            self.width,
            self.height,
            self.format,
            self.fps
        )
    }

    fn finish(&mut self) -> Result<()> {
        if self.dropped > 0 {
            log::info!("{}: {} frames written, {} dropped", self.path.display(), self.written, self.dropped);
        }
        Ok(())
    }
}

/// v4l2loopback devices on this machine as (device node, card label), sorted by node number.
/// Devices we cannot open (permissions, busy) are skipped: this is for `puppetcam devices`.
pub fn list_loopback_devices() -> Vec<(PathBuf, String)> {
    let mut found: Vec<(u32, PathBuf, String)> = Vec::new();
    let Ok(entries) = std::fs::read_dir("/dev") else { return Vec::new() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(num) = name.to_str().and_then(|n| n.strip_prefix("video")).and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let path = entry.path();
        let Ok(dev) = Device::with_path(&path) else { continue };
        if let Ok(caps) = query_caps(&dev) {
            if caps.driver == LOOPBACK_DRIVER {
                found.push((num, path, caps.card));
            }
        }
    }
    found.sort_by_key(|(n, _, _)| *n);
    found.into_iter().map(|(_, p, c)| (p, c)).collect()
}

/// What we need from VIDIOC_QUERYCAP. Parsed here rather than through `v4l::Capabilities`
/// because that one panics on a card label that is not UTF-8 (the label is user-chosen).
struct Caps {
    driver: String,
    card: String,
    flags: Flags,
}

fn query_caps(dev: &Device) -> io::Result<Caps> {
    // SAFETY: v4l2_capability is plain old data, so all-zero is a valid value, and
    // VIDIOC_QUERYCAP writes at most size_of::<v4l2_capability>() bytes into it.
    let mut raw: v4l::v4l_sys::v4l2_capability = unsafe { std::mem::zeroed() };
    unsafe {
        v4l::v4l2::ioctl(
            dev.handle().fd(),
            v4l::v4l2::vidioc::VIDIOC_QUERYCAP,
            &mut raw as *mut _ as *mut std::os::raw::c_void,
        )?;
    }
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    // device_caps describes this node; `capabilities` is the whole physical device.
    let bits = if raw.capabilities & Flags::DEVICE_CAPS.bits() != 0 { raw.device_caps } else { raw.capabilities };
    Ok(Caps { driver: text(&raw.driver), card: text(&raw.card), flags: Flags::from(bits) })
}

/// The pixel format of a format the driver kept, if the sink can write it (an even size too).
fn writable(got: &Format) -> Option<PixFormat> {
    let format = match &got.fourcc.repr {
        b"YUYV" => PixFormat::Yuyv,
        b"YU12" => PixFormat::I420,
        _ => return None,
    };
    format.check_size(got.width, got.height).ok()?;
    (got.width >= 2 && got.height >= 2).then_some(format)
}

/// `frame` scaled to cover `width` x `height` and cropped to it around the centre: the kept
/// format's aspect ratio without stretching the face (what browsers do with crop-and-scale).
fn cover(frame: &Frame, width: u32, height: u32) -> Result<Frame> {
    let k = (width as f64 / frame.width as f64).max(height as f64 / frame.height as f64);
    let sw = ((frame.width as f64 * k).ceil() as u32).max(width);
    let sh = ((frame.height as f64 * k).ceil() as u32).max(height);
    let scaled = crate::pipeline::compose::resize(frame, sw as i32, sh as i32)?;
    let (x0, y0) = (((sw - width) / 2) as usize, ((sh - height) / 2) as usize);
    let mut data = Vec::with_capacity(3 * width as usize * height as usize);
    for row in y0..y0 + height as usize {
        let start = 3 * (row * sw as usize + x0);
        data.extend_from_slice(&scaled.data[start..start + 3 * width as usize]);
    }
    Ok(Frame { width, height, data, pts: frame.pts, seq: frame.seq })
}

fn fourcc_name(f: FourCC) -> String {
    match &f.repr {
        b"YUYV" => "yuyv".into(),
        b"YU12" => "i420".into(),
        _ => f.to_string(),
    }
}

fn open_error(device: &Path, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => {
            Error::Sink(format!("no such device {} — {MODPROBE_HINT}", device.display()))
        }
        io::ErrorKind::PermissionDenied => Error::Sink(format!(
            "permission denied opening {}: add your user to the `video` group (sudo usermod -aG video $USER, then log in again)",
            device.display()
        )),
        _ if e.raw_os_error() == Some(libc_ebusy()) => Error::Sink(format!(
            "{} is busy: v4l2loopback's max_openers is reached (close some consumers or reload with a larger max_openers)",
            device.display()
        )),
        _ if e.raw_os_error() == Some(libc_enodev()) || e.raw_os_error() == Some(libc_enxio()) => {
            Error::Sink(format!("no such device {} — {MODPROBE_HINT}", device.display()))
        }
        _ => sink_err(device, "open", e),
    }
}

fn sink_err(device: &Path, what: &str, e: io::Error) -> Error {
    Error::Sink(format!("{}: {what}: {e}", device.display()))
}

// errno values for Linux (all architectures we build for share them); spelled out so the crate
// needs no direct libc dependency just for four constants.
const fn libc_epipe() -> i32 {
    32
}
const fn libc_enodev() -> i32 {
    19
}
const fn libc_ebusy() -> i32 {
    16
}
const fn libc_enxio() -> i32 {
    6
}

/// Fills `out` with a black frame in `format`.
fn fill_black(format: PixFormat, width: u32, height: u32, out: &mut [u8]) {
    match format {
        PixFormat::Yuyv => {
            for px in out.chunks_exact_mut(2) {
                px[0] = 16;
                px[1] = 128;
            }
        }
        PixFormat::I420 => {
            let y = width as usize * height as usize;
            out[..y].fill(16);
            out[y..].fill(128);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourccs() {
        assert_eq!(fourcc(PixFormat::Yuyv), FourCC::new(b"YUYV"));
        assert_eq!(fourcc(PixFormat::I420), FourCC::new(b"YU12"));
        assert_eq!(bytes_per_line(PixFormat::Yuyv, 640), 1280);
        assert_eq!(bytes_per_line(PixFormat::I420, 640), 640);
    }

    #[test]
    fn bad_sizes_rejected_before_opening() {
        let e = V4l2Sink::open(Path::new("/dev/null"), 641, 480, 30, PixFormat::Yuyv).err().expect("odd width");
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        let e = V4l2Sink::open(Path::new("/dev/null"), 640, 480, 0, PixFormat::Yuyv).err().expect("0 fps");
        assert!(matches!(e, Error::Invalid(_)), "{e}");
    }

    #[test]
    fn missing_device_names_modprobe() {
        let err = V4l2Sink::open(Path::new("/dev/video-puppetcam-missing"), 640, 480, 30, PixFormat::Yuyv)
            .err()
            .expect("opening a missing device must fail");
        let msg = err.to_string();
        assert!(matches!(err, Error::Sink(_)), "{msg}");
        assert!(msg.contains("no such device /dev/video-puppetcam-missing"), "{msg}");
        assert!(msg.contains("modprobe v4l2loopback exclusive_caps=1"), "{msg}");
    }

    #[test]
    fn non_v4l2_device_rejected() {
        // /dev/null opens fine but QUERYCAP fails: must be an error, not a panic.
        let err = V4l2Sink::open(Path::new("/dev/null"), 640, 480, 30, PixFormat::Yuyv).err().expect("must fail");
        assert!(matches!(err, Error::Sink(_)), "{err}");
    }

    #[test]
    fn kept_formats_the_sink_can_write() {
        assert_eq!(writable(&Format::new(1280, 720, FourCC::new(b"YUYV"))), Some(PixFormat::Yuyv));
        assert_eq!(writable(&Format::new(640, 480, FourCC::new(b"YU12"))), Some(PixFormat::I420));
        assert_eq!(writable(&Format::new(640, 480, FourCC::new(b"MJPG"))), None);
        assert_eq!(writable(&Format::new(641, 480, FourCC::new(b"YUYV"))), None);
        assert_eq!(writable(&Format::new(640, 481, FourCC::new(b"YU12"))), None);
    }

    #[test]
    fn cover_keeps_the_aspect_and_the_centre() {
        // 4:3 frame, left half red, right half blue, a green centre column; into 16:9.
        let (w, h) = (64u32, 48u32);
        let mut data = vec![0u8; 3 * (w * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let i = 3 * (y * w + x) as usize;
                data[i..i + 3].copy_from_slice(if (31..33).contains(&x) { &[0, 255, 0] } else if x < 32 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let f = Frame { width: w, height: h, data, pts: std::time::Duration::ZERO, seq: 7 };
        let out = cover(&f, 128, 72).unwrap();
        assert_eq!((out.width, out.height, out.seq), (128, 72, 7));
        assert_eq!(out.data.len(), 3 * 128 * 72);
        let px = |x: usize, y: usize| &out.data[3 * (y * 128 + x)..3 * (y * 128 + x) + 3];
        assert!(px(2, 36)[0] > 200 && px(2, 36)[2] < 50, "left stays red: {:?}", px(2, 36));
        assert!(px(125, 36)[2] > 200 && px(125, 36)[0] < 50, "right stays blue: {:?}", px(125, 36));
        assert!(px(64, 36)[1] > 100, "centre column stays in the centre: {:?}", px(64, 36));
        // Same size: unchanged.
        assert_eq!(cover(&f, w, h).unwrap().data, f.data);
    }

    #[test]
    fn black_fill() {
        let mut out = vec![0; PixFormat::I420.frame_size(4, 2)];
        fill_black(PixFormat::I420, 4, 2, &mut out);
        assert_eq!(out, [16, 16, 16, 16, 16, 16, 16, 16, 128, 128, 128, 128]);
        // Must match what the converter makes of an RGB black frame.
        let rgb = vec![0; 3 * 4 * 2];
        for f in [PixFormat::Yuyv, PixFormat::I420] {
            let mut filled = vec![0; f.frame_size(4, 2)];
            let mut converted = filled.clone();
            fill_black(f, 4, 2, &mut filled);
            crate::core::colour::rgb_to_yuv_into(f, &rgb, 4, 2, &mut converted).unwrap();
            assert_eq!(filled, converted, "{f}");
        }
    }
}
