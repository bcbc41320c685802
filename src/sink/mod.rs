//! Frame sinks behind the `FrameSink` trait: v4l2loopback, y4m, PNG frames, null.
#[cfg(feature = "v4l2")]
pub mod v4l2;
pub mod null;
pub mod png;
pub mod y4m;

use std::path::PathBuf;

use crate::core::colour::PixFormat;
use crate::core::types::Frame;
use crate::error::{Error, Result};

/// Something that consumes output frames. The output thread builds and owns its sink.
pub trait FrameSink: Send {
    /// Writes one frame; frames all have the size the sink was opened with.
    fn write(&mut self, frame: &Frame) -> Result<()>;
    /// Human-readable description for logs and status.
    fn describe(&self) -> String;
    /// Flushes and closes; called once at shutdown.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Which sink to open: what `[output]` of the config resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// v4l2loopback device (feature `v4l2`).
    V4l2 { device: PathBuf, format: PixFormat },
    /// YUV4MPEG2 stream (I420, BT.601 limited range) to a file, or stdout for `-`.
    Y4m { path: PathBuf },
    /// Numbered PNG files in `dir`, one of every `every` frames.
    Png { dir: PathBuf, every: u32 },
    /// Discards frames (benchmarks, tests).
    Null,
}

/// Opens the sink for frames of `width` x `height` at `fps`.
pub fn open_sink(spec: &SinkSpec, width: u32, height: u32, fps: u32) -> Result<Box<dyn FrameSink>> {
    if width == 0 || height == 0 || fps == 0 {
        return Err(Error::Sink(format!("bad output geometry {width}x{height} @ {fps} fps")));
    }
    match spec {
        SinkSpec::V4l2 { device, format } => open_v4l2(device, *format, width, height, fps),
        SinkSpec::Y4m { path } => Ok(Box::new(y4m::Y4mSink::open(path, width, height, fps)?)),
        SinkSpec::Png { dir, every } => Ok(Box::new(png::PngSink::open(dir, width, height, *every)?)),
        SinkSpec::Null => Ok(Box::new(null::NullSink::new(width, height))),
    }
}

#[cfg(feature = "v4l2")]
fn open_v4l2(device: &std::path::Path, format: PixFormat, width: u32, height: u32, fps: u32) -> Result<Box<dyn FrameSink>> {
    Ok(Box::new(v4l2::V4l2Sink::open(device, width, height, fps, format)?))
}

#[cfg(not(feature = "v4l2"))]
fn open_v4l2(device: &std::path::Path, _format: PixFormat, _w: u32, _h: u32, _fps: u32) -> Result<Box<dyn FrameSink>> {
    Err(Error::Sink(format!(
        "cannot open {}: this puppetcam was built without the `v4l2` feature",
        device.display()
    )))
}

/// Checks that a frame has the size the sink was opened with and a consistent buffer.
pub(crate) fn check_frame(frame: &Frame, width: u32, height: u32) -> Result<()> {
    if frame.width != width || frame.height != height {
        return Err(Error::Sink(format!(
            "frame {} is {}x{}, the sink was opened for {width}x{height}",
            frame.seq, frame.width, frame.height
        )));
    }
    if !frame.len_ok() {
        return Err(Error::Invalid(format!("frame {} has {} bytes for {width}x{height} RGB24", frame.seq, frame.data.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_sink_counts_and_checks_size() {
        let mut n = null::NullSink::new(4, 2);
        n.write(&Frame::black(4, 2)).unwrap();
        n.write(&Frame::black(4, 2)).unwrap();
        assert_eq!(n.frames(), 2);
        let mut s = open_sink(&SinkSpec::Null, 4, 2, 30).unwrap();
        assert_eq!(s.describe(), "null 4x2");
        assert!(s.write(&Frame::black(2, 2)).is_err());
        assert!(s.write(&Frame { data: vec![1], ..Frame::black(4, 2) }).is_err());
        s.finish().unwrap();
    }

    #[test]
    fn bad_geometry_is_rejected() {
        assert!(open_sink(&SinkSpec::Null, 0, 2, 30).is_err());
        assert!(open_sink(&SinkSpec::Null, 2, 2, 0).is_err());
    }

    #[test]
    fn missing_v4l2_device_fails_cleanly() {
        let spec = SinkSpec::V4l2 { device: "/dev/video-does-not-exist".into(), format: PixFormat::Yuyv };
        let e = open_sink(&spec, 640, 480, 30).err().expect("no such device here");
        assert!(e.to_string().contains("video-does-not-exist"), "{e}");
    }
}
