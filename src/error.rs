//! The library's error type: every failure a user can cause or meet names what went wrong.
use std::path::PathBuf;

/// Errors of the puppetcam library. Binaries wrap them in `anyhow` for context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("config: `{key}`: {msg}")]
    Config { key: String, msg: String },
    #[error("model {path}: {msg}")]
    Model { path: PathBuf, msg: String },
    #[error("onnx runtime: {0}")]
    Ort(String),
    #[error("source: {0}")]
    Source(String),
    /// The source went away (camera unplugged); the capture stage reopens it.
    #[error("source disconnected: {0}")]
    SourceDisconnected(String),
    #[error("sink: {0}")]
    Sink(String),
    /// Nobody reads the sink any more (pipe closed); not fatal for a virtual camera.
    #[error("sink reader gone: {0}")]
    SinkReaderGone(String),
    #[error("opencv: {0}")]
    OpenCv(String),
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl From<opencv::Error> for Error {
    fn from(e: opencv::Error) -> Self {
        Error::OpenCv(e.to_string())
    }
}

impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        Error::Ort(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The text of a panic payload (`panic!` gives a `String` or a `&str`), for logs and errors of
/// code that catches or joins a panicking thread.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "unknown panic".into())
}
