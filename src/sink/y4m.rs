//! YUV4MPEG2 sink: I420 frames to a file or stdout (`-`), for `ffplay`/`ffmpeg` pipes and tests.
//!
//! Header: `YUV4MPEG2 W H F<fps>:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED`. `C420jpeg` because our
//! I420 averages each 2x2 block (chroma sited at the block centre); `XCOLORRANGE=LIMITED`
//! because the conversion is BT.601 limited range (ffmpeg reads it as yuv420p, tv range).
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::core::colour::{rgb_to_i420_into, PixFormat};
use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::sink::{check_frame, FrameSink};

/// The stream header (one line, ends with `\n`).
pub fn header(width: u32, height: u32, fps: u32) -> String {
    format!("YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED\n")
}

/// Writes a y4m stream.
pub struct Y4mSink {
    out: Box<dyn Write + Send>,
    path: PathBuf,
    width: u32,
    height: u32,
    fps: u32,
    buf: Vec<u8>,
    frames: u64,
    header_written: bool,
}

impl Y4mSink {
    /// Opens (truncates) `path`, or stdout for `-`. Width and height must be even (I420).
    pub fn open(path: &Path, width: u32, height: u32, fps: u32) -> Result<Y4mSink> {
        PixFormat::I420.check_size(width, height).map_err(|e| Error::Sink(format!("y4m: {e}")))?;
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(File::create(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?)
        };
        Ok(Self::from_writer(out, path, width, height, fps))
    }

    /// Wraps any writer (tests use pipes and buffers).
    pub fn from_writer(out: Box<dyn Write + Send>, name: &Path, width: u32, height: u32, fps: u32) -> Y4mSink {
        let size = PixFormat::I420.frame_size(width, height);
        let mut buf = Vec::with_capacity(6 + size);
        buf.extend_from_slice(b"FRAME\n");
        buf.resize(6 + size, 0);
        Y4mSink { out, path: name.to_path_buf(), width, height, fps, buf, frames: 0, header_written: false }
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn io_err(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Error::SinkReaderGone(format!("y4m {}: reader closed the pipe", self.path.display()))
        } else {
            Error::Io { path: self.path.clone(), source: e }
        }
    }
}

impl FrameSink for Y4mSink {
    fn write(&mut self, frame: &Frame) -> Result<()> {
        check_frame(frame, self.width, self.height)?;
        if !self.header_written {
            let h = header(self.width, self.height, self.fps);
            self.out.write_all(h.as_bytes()).map_err(|e| self.io_err(e))?;
            self.header_written = true;
        }
        rgb_to_i420_into(&frame.data, self.width, self.height, &mut self.buf[6..])?;
        // Flush per frame: a pipe reader (ffplay) should see each frame as soon as it exists.
        let r = self.out.write_all(&self.buf).and_then(|()| self.out.flush());
        r.map_err(|e| self.io_err(e))?;
        self.frames += 1;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("y4m {} {}x{} @ {} fps I420 ({} frames)", self.path.display(), self.width, self.height, self.fps, self.frames)
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.io_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer whose reader is gone.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stream_layout() {
        let buf = Shared::default();
        let mut s = Y4mSink::from_writer(Box::new(buf.clone()), Path::new("mem"), 4, 2, 25);
        let mut f = Frame::black(4, 2);
        f.data.fill(255);
        s.write(&f).unwrap();
        s.write(&Frame::black(4, 2)).unwrap();
        s.finish().unwrap();
        let out = buf.0.lock().unwrap().clone();
        let h = header(4, 2, 25);
        assert!(h.starts_with("YUV4MPEG2 W4 H2 F25:1 ") && h.ends_with('\n'));
        assert!(out.starts_with(h.as_bytes()));
        let body = &out[h.len()..];
        let fsz = 6 + 4 * 2 + 2 * 2;
        assert_eq!(body.len(), 2 * fsz);
        assert_eq!(&body[..6], b"FRAME\n");
        assert_eq!(&body[6..14], &[235; 8]); // white luma
        assert_eq!(&body[fsz + 6..fsz + 14], &[16; 8]); // black luma
        assert_eq!(&body[fsz + 14..], &[128; 4]); // neutral chroma
        assert_eq!(s.frames(), 2);
    }

    #[test]
    fn broken_pipe_is_reader_gone() {
        let mut s = Y4mSink::from_writer(Box::new(Broken), Path::new("pipe"), 4, 2, 25);
        let e = s.write(&Frame::black(4, 2)).unwrap_err();
        assert!(matches!(e, Error::SinkReaderGone(_)), "{e}");
    }

    #[test]
    fn odd_size_rejected_at_open() {
        let e = Y4mSink::open(Path::new("/nonexistent/x.y4m"), 5, 4, 30).err().unwrap();
        assert!(e.to_string().contains("even width"), "{e}");
        assert!(Y4mSink::open(Path::new("/nonexistent/dir/x.y4m"), 4, 4, 30).is_err());
    }
}
