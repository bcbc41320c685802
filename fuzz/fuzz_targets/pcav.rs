//! Fuzz target: the `.pcav` warp-avatar parser (magic, version, JSON header, blob table, PNG
//! blobs decoded through OpenCV after the header checks). Errors are fine; panics, crashes,
//! timeouts and runaway memory are bugs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = puppetcam::avatar::WarpAvatar::from_bytes(data, std::path::Path::new("fuzz.pcav"));
});
