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
