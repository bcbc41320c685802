//! Video-file source (OpenCV videoio): frames carry the file's own timestamps
//! (`CAP_PROP_POS_MSEC`), so variable-frame-rate files keep their timing; optional real-time
//! pacing by those timestamps and looping with continuing timestamps.
use std::path::{Path, PathBuf};
use std::time::Duration;

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture, CAP_ANY, CAP_PROP_FPS, CAP_PROP_FRAME_COUNT, CAP_PROP_POS_MSEC};

use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::source::{bgr_mat_to_frame, FrameSource, Pacer};

/// Decodes a video file frame by frame.
pub struct FileSource {
    path: PathBuf,
    cap: VideoCapture,
    looping: bool,
    realtime: bool,
    pacer: Pacer,
    mat: Mat,
    seq: u64,
    /// Frames decoded in the current pass (0 after a restart).
    in_pass: u64,
    /// Added to the file's timestamps: the length of the passes already played.
    offset: Duration,
    /// Timestamp of the last frame returned, and the last inter-frame step (used to place the
    /// first frame of the next loop, and for files that report no timestamps).
    last_pts: Option<Duration>,
    step: Duration,
    fps: f64,
    width: u32,
    height: u32,
}

fn open_capture(path: &Path) -> Result<VideoCapture> {
    let cap = VideoCapture::from_file(path, CAP_ANY)
        .map_err(|e| Error::Source(format!("video {}: cannot open: {e}", path.display())))?;
    if !cap.is_opened()? {
        return Err(Error::Source(format!(
            "video {}: cannot open (not a video OpenCV can decode, or corrupt)",
            path.display()
        )));
    }
    super::check_video_size(&cap, path)?;
    Ok(cap)
}

impl FileSource {
    /// Opens `path` and decodes its first frame (so that a corrupt file fails here, clearly).
    pub fn open(path: &Path, looping: bool, realtime: bool) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        if !meta.is_file() {
            return Err(Error::Source(format!("video {}: not a file", path.display())));
        }
        let cap = open_capture(path)?;
        let fps = cap.get(CAP_PROP_FPS).unwrap_or(0.0);
        let fps = if fps.is_finite() && fps > 0.0 && fps < 1000.0 { fps } else { 30.0 };
        let mut s = FileSource {
            path: path.to_path_buf(),
            cap,
            looping,
            realtime,
            pacer: Pacer::new(),
            mat: Mat::default(),
            seq: 0,
            in_pass: 0,
            offset: Duration::ZERO,
            last_pts: None,
            step: Duration::from_secs_f64(1.0 / fps),
            fps,
            width: 0,
            height: 0,
        };
        // Probe one frame, then rewind by reopening (seeking is unreliable on some containers).
        match s.decode()? {
            Some(f) => {
                s.width = f.width;
                s.height = f.height;
            }
            None => return Err(Error::Source(format!("video {}: no decodable frames", path.display()))),
        }
        s.cap = open_capture(path)?;
        s.in_pass = 0;
        s.last_pts = None;
        Ok(s)
    }

    /// Frame count the container claims (may be approximate or 0).
    pub fn frame_count_hint(&self) -> u64 {
        self.cap.get(CAP_PROP_FRAME_COUNT).map(|n| n.max(0.0) as u64).unwrap_or(0)
    }

    /// Average frame rate the container claims (30 when it claims nothing usable).
    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// Decodes the next frame of the current pass with its in-file timestamp.
    fn decode(&mut self) -> Result<Option<Frame>> {
        let ok = self
            .cap
            .read(&mut self.mat)
            .map_err(|e| Error::Source(format!("video {}: decode error: {e}", self.path.display())))?;
        if !ok || self.mat.empty() {
            return Ok(None);
        }
        let ms = self.cap.get(CAP_PROP_POS_MSEC).unwrap_or(-1.0);
        let file_pts = if ms.is_finite() && ms >= 0.0 && !(ms == 0.0 && self.in_pass > 0) {
            Duration::from_secs_f64(ms / 1000.0)
        } else {
            // No usable timestamp: fall back to frame index / fps.
            self.step * self.in_pass as u32
        };
        self.in_pass += 1;
        let frame = bgr_mat_to_frame(&self.mat, file_pts, 0)?;
        Ok(Some(frame))
    }
}

impl FrameSource for FileSource {
    fn fps(&self) -> Option<f64> {
        Some(self.fps)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.realtime {
            // Like a camera, decode a frame at its time (the last one's plus one frame step), not
            // right after handing the last one over, when the decoder would compete with the face
            // stage for the cores (`camera_rate` measures it).
            if let Some(prev) = self.last_pts {
                self.pacer.wait(prev + self.step);
            }
        }
        let mut f = match self.decode()? {
            Some(f) => f,
            None if self.looping && self.in_pass > 0 => {
                // Next pass starts one frame step after the last frame of this one.
                self.offset = self.last_pts.map_or(self.offset, |p| p + self.step);
                self.cap = open_capture(&self.path)?;
                self.in_pass = 0;
                match self.decode()? {
                    Some(f) => f,
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        let pts = self.offset + f.pts;
        // Keep timestamps strictly increasing even if the container repeats one.
        let pts = match self.last_pts {
            Some(prev) if pts <= prev => prev + Duration::from_micros(1),
            Some(prev) => {
                self.step = (pts - prev).min(Duration::from_secs(1));
                pts
            }
            None => pts,
        };
        if self.realtime {
            self.pacer.wait(pts);
        }
        self.last_pts = Some(pts);
        f.pts = pts;
        f.seq = self.seq;
        self.seq += 1;
        Ok(Some(f))
    }

    fn describe(&self) -> String {
        format!(
            "video {} {}x{} @ {:.2} fps{}{}",
            self.path.display(),
            self.width,
            self.height,
            self.fps,
            if self.looping { ", looping" } else { "" },
            if self.realtime { ", real time" } else { "" }
        )
    }
}

/// Keeps the videoio import used for its constants on every OpenCV version.
#[allow(dead_code)]
const _BACKEND: i32 = videoio::CAP_FFMPEG;
