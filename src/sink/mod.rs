//! Frame sinks behind the `FrameSink` trait: v4l2loopback, y4m, PNG frames, null.
use crate::core::types::Frame;
use crate::error::Result;

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
