//! puppetcam binary entry point: a thin shell that maps errors to exit codes
//! (0 success, 1 failure, 2 usage or configuration error).
mod bench;
mod check;
mod cli;
mod ctl;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main_with_args() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("puppetcam: error: {e:#}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
