//! Bounded image input. Every picture puppetcam reads from a file or a blob it did not make
//! (portraits, `avatar create` shots, calibration photos, a still driver, a generator's portrait,
//! the shots inside a `.pcav`) goes through here: the file's size is checked before it is read,
//! and the image's dimensions are read from its header and checked before anything is decoded.
//! A decoder allocates width x height x channels up front, so a few kilobytes of highly
//! compressed PNG can ask for gigabytes; refusing by the header is the only cheap defence.
//! Formats whose header we do not parse are refused rather than handed to OpenCV unchecked.
use crate::core::types::Frame;
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Largest image file read (a 50-megapixel JPEG is ~20 MB; a PNG of the same can be ~100 MB).
pub const MAX_FILE_BYTES: u64 = 200 << 20;
/// Largest side of an input picture. Photos from phones reach ~8000 px; everything is shrunk to
/// at most 4096 (the avatar's limit) right after decoding.
pub const MAX_SIDE: u32 = 16384;
/// Most pixels of an input picture: 50 megapixels (150 MB as RGB; decoding briefly holds about
/// twice that).
pub const MAX_PIXELS: u64 = 50_000_000;

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Bmp,
    Webp,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Bmp => "BMP",
            Format::Webp => "WebP",
        }
    }
}

/// Dimensions from the header, without decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

/// Limits an image must stay within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_side: u32,
    pub max_pixels: u64,
}

/// The limits for input pictures (portraits, shots, photos).
pub const INPUT: Limits = Limits { max_side: MAX_SIDE, max_pixels: MAX_PIXELS };

fn be16(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?)))
}
fn le16(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?)))
}
fn le24(b: &[u8], i: usize) -> Option<u32> {
    let s = b.get(i..i + 3)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}
fn le32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Reads the format and dimensions from the first bytes of an image. `None` when the bytes are
/// not one of the formats we parse, or the header is truncated.
pub fn probe(b: &[u8]) -> Option<Probe> {
    let p = |format, width, height| Some(Probe { format, width, height });
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        if b.get(12..16)? != b"IHDR" {
            return None;
        }
        return p(Format::Png, u32::from_be_bytes(b.get(16..20)?.try_into().ok()?), u32::from_be_bytes(b.get(20..24)?.try_into().ok()?));
    }
    if b.starts_with(&[0xFF, 0xD8]) {
        return probe_jpeg(b);
    }
    if b.starts_with(b"BM") {
        let dib = le32(b, 14)?;
        return if dib == 12 {
            p(Format::Bmp, le16(b, 18)?, le16(b, 20)?)
        } else if dib >= 40 {
            let w = le32(b, 18)? as i32;
            let h = le32(b, 22)? as i32;
            p(Format::Bmp, w.unsigned_abs(), h.unsigned_abs())
        } else {
            None
        };
    }
    if b.len() >= 30 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return match &b[12..16] {
            b"VP8 " => p(Format::Webp, le16(b, 26)? & 0x3FFF, le16(b, 28)? & 0x3FFF),
            b"VP8L" => {
                let bits = le32(b, 21)?;
                p(Format::Webp, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
            }
            b"VP8X" => p(Format::Webp, le24(b, 24)? + 1, le24(b, 27)? + 1),
            _ => None,
        };
    }
    None
}

/// JPEG: walks the marker segments to the first start-of-frame. The largest frame header wins
/// if there are several (a thumbnail's comes in an APP segment, which is skipped whole).
fn probe_jpeg(b: &[u8]) -> Option<Probe> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            i += 2; // no length
            continue;
        }
        let len = be16(b, i + 2)? as usize;
        if len < 2 {
            return None;
        }
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            let h = be16(b, i + 5)?;
            let w = be16(b, i + 7)?;
            return Some(Probe { format: Format::Jpeg, width: w, height: h });
        }
        if marker == 0xDA || marker == 0xD9 {
            return None; // scan data (or the end) before any frame header
        }
        i += 2 + len;
    }
    None
}

/// Checks a probe against limits; the message names what was read and the limit.
pub fn check(p: &Probe, lim: Limits) -> std::result::Result<(), String> {
    if p.width == 0 || p.height == 0 {
        return Err(format!("{} image claims {}x{} pixels", p.format.name(), p.width, p.height));
    }
    if p.width > lim.max_side || p.height > lim.max_side {
        return Err(format!("{} image is {}x{}: larger than the limit of {} pixels a side", p.format.name(), p.width, p.height, lim.max_side));
    }
    let px = u64::from(p.width) * u64::from(p.height);
    if px > lim.max_pixels {
        return Err(format!(
            "{} image is {}x{} ({:.1} megapixels): over the limit of {:.1} megapixels",
            p.format.name(),
            p.width,
            p.height,
            px as f64 / 1e6,
            lim.max_pixels as f64 / 1e6
        ));
    }
    Ok(())
}

/// Probes and checks `bytes`, then decodes them to RGB. The decoded size must match the header.
pub fn decode_bounded(bytes: &[u8], lim: Limits) -> std::result::Result<Frame, String> {
    let p = probe(bytes).ok_or_else(|| "not a PNG, JPEG, BMP or WebP image (or its header is truncated)".to_string())?;
    check(&p, lim)?;
    let buf = opencv::core::Vector::<u8>::from_slice(bytes);
    let bgr = opencv::imgcodecs::imdecode(&buf, opencv::imgcodecs::IMREAD_COLOR).map_err(|e| format!("does not decode: {e}"))?;
    let f = crate::source::bgr_mat_to_frame(&bgr, std::time::Duration::ZERO, 0).map_err(|_| format!("{} image does not decode", p.format.name()))?;
    // JPEG's EXIF orientation may swap the sides; anything else is a lying header.
    let swapped = p.format == Format::Jpeg && (f.width, f.height) == (p.height, p.width);
    if (f.width, f.height) != (p.width, p.height) && !swapped {
        return Err(format!("decoded {}x{}, but the header says {}x{}", f.width, f.height, p.width, p.height));
    }
    Ok(f)
}

/// Reads at most `max` bytes of `path`, refusing larger files before reading them.
pub fn read_file_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let f = std::fs::File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!("{}: not a regular file", path.display())));
    }
    if meta.len() > max {
        return Err(Error::Invalid(format!("{}: {} bytes, over the limit of {} MiB", path.display(), meta.len(), max >> 20)));
    }
    // `take` bounds the read even if the file grows while it is read.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(Error::Invalid(format!("{}: grew over the limit of {} MiB while being read", path.display(), max >> 20)));
    }
    Ok(bytes)
}

/// Reads an input picture as RGB within [`INPUT`]'s limits; errors name the file.
pub fn read_image(path: &Path) -> Result<Frame> {
    read_image_within(path, INPUT)
}

/// Same with explicit limits.
pub fn read_image_within(path: &Path, lim: Limits) -> Result<Frame> {
    let bytes = read_file_bounded(path, MAX_FILE_BYTES)?;
    decode_bounded(&bytes, lim).map_err(|m| Error::Invalid(format!("{}: {m}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(ext: &str, w: i32, h: i32) -> Vec<u8> {
        use opencv::prelude::*;
        let m = opencv::core::Mat::new_rows_cols_with_default(h, w, opencv::core::CV_8UC3, opencv::core::Scalar::all(90.0)).unwrap();
        let mut buf = opencv::core::Vector::<u8>::new();
        assert!(opencv::imgcodecs::imencode(ext, &m, &mut buf, &opencv::core::Vector::new()).unwrap());
        let _ = m.rows();
        buf.to_vec()
    }

    #[test]
    fn probes_every_format_it_decodes() {
        for (ext, fmt) in [(".png", Format::Png), (".jpg", Format::Jpeg), (".bmp", Format::Bmp), (".webp", Format::Webp)] {
            let b = encode(ext, 37, 21);
            assert_eq!(probe(&b), Some(Probe { format: fmt, width: 37, height: 21 }), "{ext}");
            let f = decode_bounded(&b, INPUT).unwrap();
            assert_eq!((f.width, f.height), (37, 21), "{ext}");
        }
        // Lossless WebP has its own header layout.
        use opencv::prelude::*;
        let m = opencv::core::Mat::new_rows_cols_with_default(9, 300, opencv::core::CV_8UC3, opencv::core::Scalar::all(10.0)).unwrap();
        let mut buf = opencv::core::Vector::<u8>::new();
        let params = opencv::core::Vector::<i32>::from_slice(&[opencv::imgcodecs::IMWRITE_WEBP_QUALITY, 101]);
        assert!(opencv::imgcodecs::imencode(".webp", &m, &mut buf, &params).unwrap());
        assert_eq!(probe(&buf.to_vec()), Some(Probe { format: Format::Webp, width: 300, height: 9 }));
    }

    #[test]
    fn huge_headers_are_refused_before_decoding() {
        let mut png = encode(".png", 8, 8);
        png[16..20].copy_from_slice(&60000u32.to_be_bytes());
        png[20..24].copy_from_slice(&60000u32.to_be_bytes());
        let e = decode_bounded(&png, INPUT).unwrap_err();
        assert!(e.contains("60000x60000") && e.contains("16384"), "{e}");
        // Within each side, over the pixel count.
        png[16..20].copy_from_slice(&10000u32.to_be_bytes());
        png[20..24].copy_from_slice(&10000u32.to_be_bytes());
        let e = decode_bounded(&png, INPUT).unwrap_err();
        assert!(e.contains("100.0 megapixels") && e.contains("50.0"), "{e}");
        // A JPEG frame header that lies is found and refused the same way.
        let mut jpg = encode(".jpg", 8, 8);
        let sof = jpg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpg[sof + 5..sof + 7].copy_from_slice(&40000u16.to_be_bytes());
        assert!(decode_bounded(&jpg, INPUT).unwrap_err().contains("8x40000"));
        // A header smaller than the image it carries is a lie, not a smaller image.
        let mut png = encode(".png", 8, 8);
        png[16..20].copy_from_slice(&4u32.to_be_bytes());
        assert!(decode_bounded(&png, INPUT).is_err());
    }

    #[test]
    fn unknown_and_truncated_inputs_are_refused() {
        assert_eq!(probe(b""), None);
        assert_eq!(probe(b"GIF89a...."), None);
        assert_eq!(probe(&encode(".png", 8, 8)[..20]), None);
        assert_eq!(probe(&encode(".jpg", 8, 8)[..30]), None);
        assert_eq!(probe(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
        // Every prefix of every format either probes to the truth or to nothing; never panics.
        for ext in [".png", ".jpg", ".bmp", ".webp"] {
            let b = encode(ext, 5, 3);
            for n in 0..b.len() {
                if let Some(p) = probe(&b[..n]) {
                    assert_eq!((p.width, p.height), (5, 3), "{ext} prefix {n}");
                }
            }
        }
        assert!(decode_bounded(b"P6\n1 1\n255\nabc", INPUT).unwrap_err().contains("not a PNG"));
    }

    #[test]
    fn files_are_size_checked_before_reading() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.png");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap(); // sparse: costs no disk
        let e = read_image(&p).unwrap_err().to_string();
        assert!(e.contains("over the limit of 200 MiB") && e.contains("big.png"), "{e}");
        assert!(read_image(d.path()).is_err());
        let e = read_image(&d.path().join("missing.jpg")).unwrap_err().to_string();
        assert!(e.contains("missing.jpg"), "{e}");
    }
}
