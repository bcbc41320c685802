//! puppetcam library: the pipeline stages, their pure core and the hardware traits.
pub mod core;
pub mod error;
pub mod source;
pub mod sink;
pub mod face;
pub mod ep;
pub mod paths;
pub mod imageio;
pub mod durable;
pub mod generator;
pub mod pipeline;
pub mod config;
pub mod service;
pub mod stats;
pub mod histogram;
pub mod calibrate;
pub mod avatar;
pub mod refine;

pub use error::{Error, Result};
pub mod control;
