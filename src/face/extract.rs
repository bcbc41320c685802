//! `puppetcam landmarks`: run the face tracker over a video/image and write JSON lines.
use std::path::PathBuf;

/// Arguments of `puppetcam landmarks`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// Video or image file to analyse.
    pub input: PathBuf,
    /// Output JSON-lines file (one object per frame); stdout when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs the extraction. (Being implemented.)
pub fn run(_args: &ExtractArgs) -> crate::Result<()> {
    Err(crate::Error::Invalid("landmark extraction is not implemented yet".into()))
}
