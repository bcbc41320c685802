//! Null sink: discards frames but counts them (benchmarks and tests of the pipeline).
use crate::core::types::Frame;
use crate::error::Result;
use crate::sink::{check_frame, FrameSink};

/// Counts frames and drops them.
#[derive(Debug)]
pub struct NullSink {
    width: u32,
    height: u32,
    frames: u64,
}

impl NullSink {
    pub fn new(width: u32, height: u32) -> Self {
        NullSink { width, height, frames: 0 }
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

impl FrameSink for NullSink {
    fn write(&mut self, frame: &Frame) -> Result<()> {
        check_frame(frame, self.width, self.height)?;
        self.frames += 1;
        Ok(())
    }

    fn describe(&self) -> String {
        // No frame count here: the description is shown as a state long after it is taken, and
        // the per-stage counters already report frames.
        format!("null {}x{}", self.width, self.height)
    }
}
