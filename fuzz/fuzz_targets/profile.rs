//! Fuzz target: the calibration-profile parser (`calibration/*.toml`, written by
//! `puppetcam calibrate` but editable by hand). Only UTF-8 text reaches it (the file is read with
//! `read_to_string`), so other inputs are skipped.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = puppetcam::calibrate::Profile::from_toml(text);
    }
});
