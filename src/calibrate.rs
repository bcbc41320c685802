//! `puppetcam calibrate`: record the driver's neutral face into a calibration profile.
use std::path::PathBuf;

/// Arguments of `puppetcam calibrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Where to write the profile (TOML).
    #[arg(long, default_value = "calibration/profile.toml")]
    pub out: PathBuf,
}

/// Runs a calibration. (Being implemented.)
pub fn run(_args: &CalibrateArgs) -> crate::Result<()> {
    Err(crate::Error::Invalid("calibration is not implemented yet".into()))
}
