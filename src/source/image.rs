//! Still-image source: decodes one picture (within `imageio`'s limits) and repeats it at a
//! fixed fps (a portrait as a driver, for `calibrate` and for checking the pipeline on a known face).
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::source::{FrameSource, Pacer};

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
        // Bounded: dimensions from the header are checked before decoding.
        let frame = crate::imageio::read_image(path).map_err(|e| match e {
            Error::Io { .. } => e,
            other => Error::Source(format!("image: {other}")),
        })?;
        Ok(ImageSource { path: path.to_path_buf(), frame, fps, seq: 0, pacer: Pacer::new(), pace: true })
    }

    /// Same, but `next_frame` never sleeps (tests, benchmarks).
    pub fn unpaced(path: &Path, fps: u32) -> Result<Self> {
        Ok(ImageSource { pace: false, ..Self::open(path, fps)? })
    }
}

impl FrameSource for ImageSource {
    fn fps(&self) -> Option<f64> {
        Some(f64::from(self.fps))
    }

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
