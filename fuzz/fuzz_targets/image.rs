//! Fuzz target: bounded image input: the header probe (PNG, JPEG, BMP, WebP dimensions read
//! without decoding) and `decode_bounded`, which checks the probe against the input limits and
//! then decodes through OpenCV. A probe that says "small" for an image OpenCV decodes as large
//! is caught by `decode_bounded`'s own size check (an error, not a panic).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = puppetcam::imageio::probe(data);
    let _ = puppetcam::imageio::decode_bounded(data, puppetcam::imageio::INPUT);
});
