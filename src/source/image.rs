//! Still-image source: decodes one picture and repeats it at a fixed fps (a portrait as a
//! driver, for `calibrate` and for checking the pipeline on a known face).
use std::path::{Path, PathBuf};
use std::time::Duration;

use opencv::imgcodecs;

use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::source::{bgr_mat_to_frame, FrameSource, Pacer};

/// Repeats one image.
pub struct ImageSource {
    path: PathBuf,
    frame: Frame,
    fps: u32,
    seq: u64,
    pacer: Pacer,
    pace: bool,
}

impl ImageSource {
    /// Decodes `path` (any format OpenCV reads: JPEG, PNG, ...).
    pub fn open(path: &Path, fps: u32) -> Result<Self> {
        if !(1..=240).contains(&fps) {
            return Err(Error::Source(format!("image {}: fps {fps} out of range 1..=240", path.display())));
        }
        std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let bgr = imgcodecs::imread(path, imgcodecs::IMREAD_COLOR)?;
        let frame = bgr_mat_to_frame(&bgr, Duration::ZERO, 0)
            .map_err(|_| Error::Source(format!("image {}: not a readable image", path.display())))?;
        Ok(ImageSource { path: path.to_path_buf(), frame, fps, seq: 0, pacer: Pacer::new(), pace: true })
    }

    /// Same, but `next_frame` never sleeps (tests, benchmarks).
    pub fn unpaced(path: &Path, fps: u32) -> Result<Self> {
        Ok(ImageSource { pace: false, ..Self::open(path, fps)? })
    }
}

impl FrameSource for ImageSource {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let pts = Duration::from_secs_f64(self.seq as f64 / f64::from(self.fps));
        if self.pace {
            self.pacer.wait(pts);
        }
        let mut f = self.frame.clone();
        f.pts = pts;
        f.seq = self.seq;
        self.seq += 1;
        Ok(Some(f))
    }

    fn describe(&self) -> String {
        format!("image {} {}x{} @ {} fps", self.path.display(), self.frame.width, self.frame.height, self.fps)
    }
}
