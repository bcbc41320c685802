//! Shared helpers of the integration tests: where the developer data set is.
//!
//! The data (videos, portraits; research use only, never copied into the repository) is found
//! through `$PUPPETCAM_DATA`, else at `../shared/data` next to the repository. A test that needs
//! it and cannot find it skips with a message on a developer machine; under `CI=true` a missing
//! data set is a failure, so CI can never pass by skipping.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

/// The data set's root: `$PUPPETCAM_DATA`, else `<repository>/../shared/data`.
pub fn data_root() -> PathBuf {
    match std::env::var_os("PUPPETCAM_DATA").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        // The crate root is the repository root.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

/// True when running under CI (`CI=true`), where missing data fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports missing data: panics under CI, otherwise prints why the test is skipped.
pub fn missing(what: &str) {
    let msg = format!(
        "{what} not found under {} (set PUPPETCAM_DATA to the data set, or put it at ../shared/data next to the repository)",
        data_root().display()
    );
    if in_ci() {
        panic!("CI=true and the test data is missing: {msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

/// `rel` under the data root if it exists; `None` (after [`missing`]) if not.
pub fn data(rel: &str) -> Option<PathBuf> {
    let p = data_root().join(rel);
    if p.exists() {
        Some(p)
    } else {
        missing(rel);
        None
    }
}

/// Runs the built `puppetcam` binary in `cwd` with `RUST_LOG=warn` and extra environment.
pub fn puppetcam(args: &[&str], cwd: &Path, env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_puppetcam"));
    c.args(args).current_dir(cwd).env("RUST_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run puppetcam")
}

/// stdout and stderr of a run, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
