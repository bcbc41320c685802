//! Frame sources behind the `FrameSource` trait: camera, video file, still image, synthetic.
use crate::core::types::Frame;
use crate::error::Result;

/// Something that produces frames. Each capture thread builds and owns its source.
pub trait FrameSource: Send {
    /// Blocks until the next frame. `Ok(None)` is the end of a finite stream (file).
    /// A camera that goes away returns `Err(Error::SourceDisconnected)`.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
    /// Human-readable description for logs and status (device, size, fps).
    fn describe(&self) -> String;
}
