//! PNG sink: writes every n-th frame as `frame_NNNNNN.png` (numbered by written-frame index),
//! for inspecting output without a virtual camera.
use std::path::{Path, PathBuf};

use opencv::core::{Mat, Vec3b, Vector};
use opencv::imgcodecs;
use opencv::imgproc;

use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::sink::{check_frame, FrameSink};

/// Writes numbered PNG files into a directory.
#[derive(Debug)]
pub struct PngSink {
    dir: PathBuf,
    width: u32,
    height: u32,
    every: u32,
    seen: u64,
    written: u64,
}

impl PngSink {
    /// Creates `dir` if needed. `every` must be at least 1.
    pub fn open(dir: &Path, width: u32, height: u32, every: u32) -> Result<PngSink> {
        if every == 0 {
            return Err(Error::Sink("png: `every` must be at least 1".into()));
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        Ok(PngSink { dir: dir.to_path_buf(), width, height, every, seen: 0, written: 0 })
    }

    /// Path of the n-th written file.
    pub fn file_name(&self, n: u64) -> PathBuf {
        self.dir.join(format!("frame_{n:06}.png"))
    }

    /// Files written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl FrameSink for PngSink {
    fn write(&mut self, frame: &Frame) -> Result<()> {
        check_frame(frame, self.width, self.height)?;
        let take = self.seen % u64::from(self.every) == 0;
        self.seen += 1;
        if !take {
            return Ok(());
        }
        let rgb = Mat::new_rows_cols_with_bytes::<Vec3b>(self.height as i32, self.width as i32, &frame.data)?;
        let mut bgr = Mat::default();
        imgproc::cvt_color_def(&rgb, &mut bgr, imgproc::COLOR_RGB2BGR)?; // imgcodecs expects BGR
        let path = self.file_name(self.written);
        let ok = imgcodecs::imwrite(&path, &bgr, &Vector::new())?;
        if !ok {
            return Err(Error::Sink(format!("png: cannot write {}", path.display())));
        }
        self.written += 1;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("png {} {}x{} every {} ({} written)", self.dir.display(), self.width, self.height, self.every, self.written)
    }
}
