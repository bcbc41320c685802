//! The warp-avatar file (`.pcav`): one self-contained, versioned file holding the portrait, the
//! other shots, each shot's landmarks, the warp triangulation and optionally a refiner ONNX.
//!
//! Layout: `PCAVATAR` (8 bytes), format version (u32 LE), header length (u32 LE), the header
//! (UTF-8 JSON, [`Header`]), then the blobs the header points into (PNG images, ONNX bytes) by
//! offset and length from the end of the header. Lossless PNG keeps the portrait's pixels
//! exactly; JSON keeps the header readable with any tool. Everything is validated on load and
//! every error names the file and what is wrong with it.
use crate::core::geometry::Pt;
use crate::core::landmarks::MESH_POINTS;
use crate::core::types::{Frame, Iris};
use crate::error::{Error, Result};
use opencv::core::{Mat, Vector};
use opencv::imgcodecs;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"PCAVATAR";
/// Version written by this build; files of a newer version are refused with a clear message.
/// 2: the refiner slot holds the ONNX plus its embeddings (version-1 files, which never had a
/// refiner, still load). 3: each shot may carry its mesh's depth (the head turns in 3-D; older
/// files get a template's depth when rendered).
pub const VERSION: u32 = 3;
/// The usual file extension.
pub const EXTENSION: &str = "pcav";
/// Most shots an avatar holds (the paper's K goes to 32).
pub const MAX_SHOTS: usize = 32;
/// Largest header accepted (a 32-shot header is ~1 MB of JSON).
const MAX_HEADER: usize = 16 << 20;
/// Largest image side stored.
pub const MAX_SIDE: u32 = 4096;
/// Most pixels over all shots together (480 MB as RGB): a 4096-pixel portrait plus 31 shots of
/// about 2048x1536. `avatar create` shrinks the other shots to stay within it.
pub const MAX_TOTAL_PIXELS: u64 = 160_000_000;
/// Largest refiner ONNX inside an avatar (the shipped one is ~5 MB).
pub const MAX_REFINER_BYTES: u64 = 256 << 20;
/// Largest avatar file read at all.
pub const MAX_FILE_BYTES: u64 = 768 << 20;
/// What one stored shot may decode to (also a generator ONNX's embedded portrait).
pub const SHOT_LIMITS: crate::imageio::Limits = crate::imageio::Limits { max_side: MAX_SIDE, max_pixels: MAX_SIDE as u64 * MAX_SIDE as u64 };

/// The shots' pixels together against [`MAX_TOTAL_PIXELS`].
fn check_total_pixels(pixels: u64) -> std::result::Result<(), String> {
    if pixels > MAX_TOTAL_PIXELS {
        return Err(format!("shots hold {:.0} megapixels together, over the limit of {:.0}", pixels as f64 / 1e6, MAX_TOTAL_PIXELS as f64 / 1e6));
    }
    Ok(())
}

/// One image of the avatar: the first is the portrait that is animated; all are shots.
#[derive(Clone, Debug, PartialEq)]
pub struct Shot {
    pub image: Frame,
    /// 468-point mesh in the image's pixels.
    pub mesh: Vec<Pt>,
    pub iris: Option<[Iris; 2]>,
    /// Depth of each mesh point (same pixel units, away from the camera; version 3), when it was
    /// measured.
    pub depth: Option<Vec<f32>>,
    /// Where it came from (file name), for the status page and provenance.
    pub source: String,
}

/// A warp avatar in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct WarpAvatar {
    pub name: String,
    pub shots: Vec<Shot>,
    /// Triangulation of the portrait's warp control points (see `core::warp`).
    pub triangles: Vec<[u32; 3]>,
    /// The learned refiner (mouth and eyes), when the avatar has one.
    pub refiner: Option<RefinerBlob>,
    pub created: String,
    pub provenance: String,
}

/// A refiner inside an avatar: the ONNX (contract refiner-1, docs/refiner.md) and the embeddings
/// it is conditioned on.
#[derive(Clone, Debug, PartialEq)]
pub struct RefinerBlob {
    pub onnx: Vec<u8>,
    pub e_mouth: Vec<f32>,
    pub e_eye: Vec<f32>,
    /// How it was made (fine-tuning steps, K, the meta-learned weights' step), for `check`.
    pub info: String,
}

/// Longest embedding accepted.
const MAX_EMBEDDING: usize = 4096;

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RefinerHeader {
    onnx: Blob,
    e_mouth: Vec<f32>,
    e_eye: Vec<f32>,
    info: String,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Blob {
    offset: u64,
    len: u64,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ShotHeader {
    source: String,
    width: u32,
    height: u32,
    /// PNG bytes.
    image: Blob,
    mesh: Vec<[f32; 2]>,
    /// `[[cx, cy, r], [cx, cy, r]]`: subject's right, left.
    iris: Option<[[f32; 3]; 2]>,
    /// 468 depths (version 3), absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    depth: Option<Vec<f32>>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    name: String,
    created: String,
    provenance: String,
    shots: Vec<ShotHeader>,
    triangles: Vec<[u32; 3]>,
    refiner: Option<RefinerHeader>,
}

const FORMAT: &str = "puppetcam warp avatar";

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Model { path: path.to_path_buf(), msg: msg.into() }
}

/// True when `bytes` start like a warp-avatar file (used to tell it from an ONNX generator).
pub fn is_warp_avatar(bytes: &[u8]) -> bool {
    bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] == MAGIC
}

/// True when the file at `path` is a warp avatar (by its first bytes, not its name).
pub fn path_is_warp_avatar(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).map(|_| is_warp_avatar(&head)).unwrap_or(false)
}

fn encode_png(f: &Frame) -> Result<Vec<u8>> {
    let rgb = Mat::new_rows_cols_with_bytes::<opencv::core::Vec3b>(f.height as i32, f.width as i32, &f.data)?;
    let mut bgr = Mat::default();
    opencv::imgproc::cvt_color_def(&rgb, &mut bgr, opencv::imgproc::COLOR_RGB2BGR)?;
    let mut buf = Vector::<u8>::new();
    // Level 3: files stay small enough and writing stays fast.
    let params = Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_PNG_COMPRESSION, 3]);
    if !imgcodecs::imencode(".png", &bgr, &mut buf, &params)? {
        return Err(Error::Invalid("PNG encoding failed".into()));
    }
    Ok(buf.iter().collect())
}

/// Random access to the bytes of an avatar file: a slice in memory, or the file itself (the
/// watcher's cheap check reads only the header and each image's first bytes).
trait ReadAt {
    fn len(&self) -> u64;
    fn read_at(&mut self, offset: u64, len: usize) -> std::io::Result<Vec<u8>>;
}

impl ReadAt for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&mut self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let end = offset.checked_add(len as u64).filter(|&e| e <= <[u8]>::len(self) as u64);
        end.map(|e| self[offset as usize..e as usize].to_vec()).ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
    }
}

struct FileAt(std::fs::File, u64);

impl ReadAt for FileAt {
    fn len(&self) -> u64 {
        self.1
    }
    fn read_at(&mut self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        self.0.seek(SeekFrom::Start(offset))?;
        let mut v = vec![0u8; len];
        self.0.read_exact(&mut v)?;
        Ok(v)
    }
}

/// A file's structure, checked against every limit without decoding anything.
struct Layout {
    header: Header,
    /// Where the blobs start.
    data: u64,
    /// The shots' pixels together.
    pixels: u64,
}

/// What [`check_file`] found: enough for a log line.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub name: String,
    pub shots: usize,
    pub pixels: u64,
    pub refiner: bool,
    /// The refiner's own line (`fine-tuned: 200 steps ...`, `feed-forward: ...`), when it has one.
    pub refiner_info: Option<String>,
    /// RFC 3339 time of creation.
    pub created: String,
}

/// Reads and checks the header and the blob table: magic, version, header size, shot count,
/// every blob inside the file and no two overlapping (so that 32 shots cannot all point at one
/// bomb), each PNG's dimensions from its IHDR against the header and [`MAX_SIDE`], the total
/// pixels against [`MAX_TOTAL_PIXELS`] and the refiner's size. Nothing is decoded, so this costs
/// the same for a hostile file as for a good one.
fn layout(r: &mut dyn ReadAt, path: &Path) -> Result<Layout> {
    let io = |e: std::io::Error| bad(path, format!("truncated or unreadable: {e}"));
    let total = r.len();
    if total > MAX_FILE_BYTES {
        return Err(bad(path, format!("{total} bytes: over the limit of {} MiB for an avatar", MAX_FILE_BYTES >> 20)));
    }
    if total < 16 {
        let head = r.read_at(0, total as usize).map_err(io)?;
        return Err(bad(path, if is_warp_avatar(&head) { "truncated header" } else { "not a puppetcam warp avatar (bad magic bytes)" }));
    }
    let head = r.read_at(0, 16).map_err(io)?;
    if !is_warp_avatar(&head) {
        return Err(bad(path, "not a puppetcam warp avatar (bad magic bytes)"));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version == 0 || version > VERSION {
        return Err(bad(path, format!("avatar format version {version}; this puppetcam reads version {VERSION} (made by a newer puppetcam?)")));
    }
    let hlen = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as u64;
    if hlen > MAX_HEADER as u64 || 16 + hlen > total {
        return Err(bad(path, format!("header length {hlen} does not fit the file ({total} bytes; at most {MAX_HEADER}): truncated or corrupt")));
    }
    let json = r.read_at(16, hlen as usize).map_err(io)?;
    let header: Header = serde_json::from_slice(&json).map_err(|e| bad(path, format!("header: {e}")))?;
    if header.format != FORMAT {
        return Err(bad(path, format!("header format is `{}`, expected `{FORMAT}`", header.format)));
    }
    if header.shots.is_empty() || header.shots.len() > MAX_SHOTS {
        return Err(bad(path, format!("{} shots; 1..={MAX_SHOTS} expected", header.shots.len())));
    }
    let data = 16 + hlen;
    let data_len = total - data;
    // Every blob inside the file, none overlapping another.
    let mut ranges: Vec<(u64, u64, String)> = Vec::new();
    for (k, s) in header.shots.iter().enumerate() {
        ranges.push((s.image.offset, s.image.len, format!("shot {k} ({})", s.source)));
    }
    if let Some(rf) = &header.refiner {
        if rf.onnx.len > MAX_REFINER_BYTES {
            return Err(bad(path, format!("refiner: {} bytes, over the limit of {} MiB", rf.onnx.len, MAX_REFINER_BYTES >> 20)));
        }
        ranges.push((rf.onnx.offset, rf.onnx.len, "refiner".into()));
    }
    for (off, len, what) in &ranges {
        if off.checked_add(*len).map_or(true, |e| e > data_len) || *len == 0 {
            return Err(bad(path, format!("{what}: data range {off}+{len} lies outside the file: truncated or corrupt")));
        }
    }
    ranges.sort_by_key(|r| r.0);
    for w in ranges.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            return Err(bad(path, format!("{} and {} share bytes (data ranges overlap): corrupt or crafted", w[0].2, w[1].2)));
        }
    }
    // Dimensions from each PNG's header, before anything is decoded.
    let mut pixels: u64 = 0;
    for (k, s) in header.shots.iter().enumerate() {
        let what = format!("shot {k} ({})", s.source);
        let first = r.read_at(data + s.image.offset, s.image.len.min(64) as usize).map_err(io)?;
        match crate::imageio::probe(&first) {
            Some(p) if p.format == crate::imageio::Format::Png => {
                if (p.width, p.height) != (s.width, s.height) || p.width == 0 || p.height == 0 || p.width > MAX_SIDE || p.height > MAX_SIDE {
                    return Err(bad(path, format!("{what}: image is {}x{} (header says {}x{}; at most {MAX_SIDE} a side)", p.width, p.height, s.width, s.height)));
                }
                pixels += u64::from(p.width) * u64::from(p.height);
            }
            _ => return Err(bad(path, format!("{what}: image is not a PNG"))),
        }
    }
    check_total_pixels(pixels).map_err(|m| bad(path, m))?;
    Ok(Layout { header, data, pixels })
}

/// The cheap check of an avatar file: header, blob table and image dimensions against every
/// limit, reading a few kilobytes and decoding nothing (the avatar watcher runs it on each new
/// version; the full load happens in the generator stage).
pub fn check_file(path: &Path) -> Result<Summary> {
    let f = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let len = f.metadata().map_err(|source| Error::Io { path: path.to_path_buf(), source })?.len();
    let l = layout(&mut FileAt(f, len), path)?;
    let refiner_info = l.header.refiner.as_ref().map(|r| r.info.clone());
    Ok(Summary {
        name: l.header.name,
        shots: l.header.shots.len(),
        pixels: l.pixels,
        refiner: refiner_info.is_some(),
        refiner_info,
        created: l.header.created,
    })
}

fn decode_png(bytes: &[u8]) -> std::result::Result<Frame, String> {
    crate::imageio::decode_bounded(bytes, SHOT_LIMITS)
}

impl WarpAvatar {
    /// Checks everything a renderer relies on; the message names the shot and the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.shots.is_empty() {
            return Err("no shots (the first image is the portrait)".into());
        }
        if self.shots.len() > MAX_SHOTS {
            return Err(format!("{} shots, at most {MAX_SHOTS}", self.shots.len()));
        }
        for (k, s) in self.shots.iter().enumerate() {
            let what = format!("shot {k} ({})", s.source);
            if !s.image.len_ok() || s.image.width == 0 || s.image.height == 0 || s.image.width > MAX_SIDE || s.image.height > MAX_SIDE {
                return Err(format!("{what}: image {}x{} is empty, too large or inconsistent", s.image.width, s.image.height));
            }
            if s.mesh.len() != MESH_POINTS {
                return Err(format!("{what}: mesh has {} points, expected {MESH_POINTS}", s.mesh.len()));
            }
            let (w, h) = (s.image.width as f32, s.image.height as f32);
            if s.mesh.iter().any(|p| !(p[0].is_finite() && p[1].is_finite() && p[0] > -w && p[0] < 2.0 * w && p[1] > -h && p[1] < 2.0 * h)) {
                return Err(format!("{what}: mesh has a non-finite point or one far outside the image"));
            }
            if let Some(d) = &s.depth {
                let lim = 2.0 * w.max(h);
                if d.len() != MESH_POINTS || d.iter().any(|z| !(z.is_finite() && z.abs() < lim)) {
                    return Err(format!("{what}: depth has {} values (expected {MESH_POINTS}), a non-finite one or one far outside the image's scale", d.len()));
                }
            }
            if let Some(ir) = s.iris {
                if ir.iter().any(|i| !(i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite() && i.r > 0.0)) {
                    return Err(format!("{what}: iris is not finite or has no radius"));
                }
            }
        }
        if let Some(r) = &self.refiner {
            for (what, e) in [("e_mouth", &r.e_mouth), ("e_eye", &r.e_eye)] {
                if e.is_empty() || e.len() > MAX_EMBEDDING || e.iter().any(|v| !v.is_finite()) {
                    return Err(format!("refiner: embedding {what} has {} values or a non-finite one (1..={MAX_EMBEDDING} finite expected)", e.len()));
                }
            }
            if r.onnx.is_empty() || r.onnx.len() as u64 > MAX_REFINER_BYTES {
                return Err(format!("refiner: ONNX of {} bytes (1..={} MiB expected)", r.onnx.len(), MAX_REFINER_BYTES >> 20));
            }
        }
        check_total_pixels(self.shots.iter().map(|s| u64::from(s.image.width) * u64::from(s.image.height)).sum())?;
        let p = &self.shots[0];
        crate::core::warp::WarpModel::with_triangles(p.image.width, p.image.height, &p.mesh, self.triangles.clone())
            .map_err(|e| format!("triangulation: {e}"))?;
        Ok(())
    }

    /// Serialises to the file format.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate().map_err(|m| Error::Invalid(format!("avatar: {m}")))?;
        let mut blobs: Vec<u8> = Vec::new();
        let mut shots = Vec::new();
        for s in &self.shots {
            let png = encode_png(&s.image)?;
            let blob = Blob { offset: blobs.len() as u64, len: png.len() as u64 };
            blobs.extend_from_slice(&png);
            shots.push(ShotHeader {
                source: s.source.clone(),
                width: s.image.width,
                height: s.image.height,
                image: blob,
                mesh: s.mesh.clone(),
                iris: s.iris.map(|ir| ir.map(|i| [i.cx, i.cy, i.r])),
                depth: s.depth.clone(),
            });
        }
        let refiner = self.refiner.as_ref().map(|r| {
            let b = Blob { offset: blobs.len() as u64, len: r.onnx.len() as u64 };
            blobs.extend_from_slice(&r.onnx);
            RefinerHeader { onnx: b, e_mouth: r.e_mouth.clone(), e_eye: r.e_eye.clone(), info: r.info.clone() }
        });
        let header = Header {
            format: FORMAT.into(),
            name: self.name.clone(),
            created: self.created.clone(),
            provenance: self.provenance.clone(),
            shots,
            triangles: self.triangles.clone(),
            refiner,
        };
        let json = serde_json::to_vec(&header).map_err(|e| Error::Invalid(format!("avatar header: {e}")))?;
        let mut out = Vec::with_capacity(16 + json.len() + blobs.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&blobs);
        Ok(out)
    }

    /// Writes atomically and durably (`durable::write_atomic`), so a watcher never sees half a
    /// file and a power cut never leaves an empty one.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::durable::write_atomic(path, &self.to_bytes()?)
    }

    /// Reads and validates `path` (its size is checked before it is read).
    pub fn load(path: &Path) -> Result<WarpAvatar> {
        let bytes = crate::imageio::read_file_bounded(path, MAX_FILE_BYTES).map_err(|e| match e {
            Error::Invalid(m) => bad(path, m),
            e => e,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and validates; `path` only names the file in errors. Every limit is checked on
    /// the header and the images' own headers before any image is decoded.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<WarpAvatar> {
        let Layout { header, data, .. } = layout(&mut &bytes[..], path)?;
        let data = &bytes[data as usize..];
        // In range: `layout` checked every blob.
        let blob = |b: &Blob| &data[b.offset as usize..(b.offset + b.len) as usize];
        let mut shots = Vec::with_capacity(header.shots.len());
        for (k, s) in header.shots.into_iter().enumerate() {
            let what = format!("shot {k} ({})", s.source);
            let image = decode_png(blob(&s.image)).map_err(|e| bad(path, format!("{what}: image {e}")))?;
            if image.width != s.width || image.height != s.height {
                return Err(bad(path, format!("{what}: image is {}x{}, header says {}x{}", image.width, image.height, s.width, s.height)));
            }
            shots.push(Shot {
                image,
                mesh: s.mesh,
                iris: s.iris.map(|ir| ir.map(|v| Iris { cx: v[0], cy: v[1], r: v[2] })),
                depth: s.depth,
                source: s.source,
            });
        }
        let refiner = match header.refiner {
            Some(r) => Some(RefinerBlob { onnx: blob(&r.onnx).to_vec(), e_mouth: r.e_mouth, e_eye: r.e_eye, info: r.info }),
            None => None,
        };
        let av = WarpAvatar {
            name: header.name,
            shots,
            triangles: header.triangles,
            refiner,
            created: header.created,
            provenance: header.provenance,
        };
        av.validate().map_err(|m| bad(path, m))?;
        Ok(av)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::warp::tests::{synthetic_mesh, texture};

    pub(crate) fn sample_avatar(shots: usize) -> WarpAvatar {
        let shots: Vec<Shot> = (0..shots)
            .map(|k| Shot {
                image: texture(200 + 10 * k as u32, 180),
                mesh: synthetic_mesh(100.0, 90.0, 50.0),
                iris: Some([Iris { cx: 80.0, cy: 80.0, r: 4.0 }, Iris { cx: 120.0, cy: 80.0, r: 4.0 }]),
                // The portrait's depth measured, the other shots' not (both occur).
                depth: (k == 0).then(|| synthetic_mesh(100.0, 90.0, 50.0).iter().map(|p| -0.3 * (40.0 - (p[0] - 100.0).abs().min(40.0))).collect()),
                source: format!("shot{k}.png"),
            })
            .collect();
        let triangles = crate::core::warp::WarpModel::new(200, 180, &shots[0].mesh).unwrap().triangles().to_vec();
        WarpAvatar { name: "test".into(), shots, triangles, refiner: None, created: "now".into(), provenance: "unit test".into() }
    }

    #[test]
    fn round_trip_is_exact() {
        let mut av = sample_avatar(3);
        av.refiner = Some(RefinerBlob { onnx: vec![1, 2, 3, 4], e_mouth: vec![0.5; 8], e_eye: vec![-1.0; 8], info: "test".into() });
        let bytes = av.to_bytes().unwrap();
        assert!(is_warp_avatar(&bytes));
        let back = WarpAvatar::from_bytes(&bytes, Path::new("x.pcav")).unwrap();
        assert_eq!(back, av);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.pcav");
        av.save(&p).unwrap();
        assert!(path_is_warp_avatar(&p));
        assert_eq!(WarpAvatar::load(&p).unwrap(), av);
    }

    #[test]
    fn corrupt_files_name_the_problem() {
        let av = sample_avatar(2);
        let bytes = av.to_bytes().unwrap();
        let p = Path::new("bad.pcav");
        let err = |b: &[u8]| WarpAvatar::from_bytes(b, p).unwrap_err().to_string();
        assert!(err(b"hello").contains("magic"), "{}", err(b"hello"));
        let mut v = bytes.clone();
        v[8] = 9;
        assert!(err(&v).contains("version 9"), "{}", err(&v));
        assert!(err(&bytes[..bytes.len() - 100]).contains("outside the file"), "{}", err(&bytes[..bytes.len() - 100]));
        assert!(err(&bytes[..40]).contains("truncated"), "{}", err(&bytes[..40]));
        // A header that parses but lies.
        let tweak = |f: &dyn Fn(&mut serde_json::Value)| {
            let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
            let mut h: serde_json::Value = serde_json::from_slice(&bytes[16..16 + hlen]).unwrap();
            f(&mut h);
            let j = serde_json::to_vec(&h).unwrap();
            let mut out = bytes[..12].to_vec();
            out.extend_from_slice(&(j.len() as u32).to_le_bytes());
            out.extend_from_slice(&j);
            out.extend_from_slice(&bytes[16 + hlen..]);
            err(&out)
        };
        let e = tweak(&|h| h["shots"][1]["mesh"] = serde_json::json!([[1.0, 2.0]]));
        assert!(e.contains("shot 1 (shot1.png): mesh has 1 points"), "{e}");
        let e = tweak(&|h| h["shots"][0]["width"] = serde_json::json!(7));
        assert!(e.contains("header says 7x180"), "{e}");
        let e = tweak(&|h| h["triangles"][0] = serde_json::json!([0, 1, 100000]));
        assert!(e.contains("triangulation"), "{e}");
        let e = tweak(&|h| h["shots"] = serde_json::json!([]));
        assert!(e.contains("0 shots"), "{e}");
        let e = tweak(&|h| h["shots"][0]["iris"] = serde_json::json!([[1.0, 2.0, 0.0], [1.0, 2.0, 3.0]]));
        assert!(e.contains("iris"), "{e}");
        // Blobs may not share bytes: all 32 shots could otherwise point at one small PNG bomb.
        let e = tweak(&|h| h["refiner"] = serde_json::json!({"onnx": {"offset": 0, "len": 4}, "e_mouth": [], "e_eye": [1.0], "info": ""}));
        assert!(e.contains("shot 0 (shot0.png) and refiner share bytes"), "{e}");
        let e = tweak(&|h| h["shots"][1]["image"] = h["shots"][0]["image"].clone());
        assert!(e.contains("share bytes"), "{e}");
        let mut no_emb = av.clone();
        no_emb.refiner = Some(RefinerBlob { onnx: vec![1], e_mouth: vec![], e_eye: vec![1.0], info: String::new() });
        assert!(no_emb.validate().unwrap_err().contains("refiner: embedding e_mouth has 0 values"));
        let e = tweak(&|h| h["refiner"] = serde_json::json!({"onnx": {"offset": 0, "len": 99999999}, "e_mouth": [1.0], "e_eye": [1.0], "info": ""}));
        assert!(e.contains("refiner: data range"), "{e}");
        let e = tweak(&|h| h["shots"][0]["depth"] = serde_json::json!([1.0, 2.0]));
        assert!(e.contains("shot 0 (shot0.png): depth has 2 values"), "{e}");
        // Version-2 headers (no depth) still load.
        let e = tweak(&|h| {
            h["shots"][0].as_object_mut().unwrap().remove("depth");
            h["bogus"] = serde_json::json!(1)
        });
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = tweak(&|h| h["bogus"] = serde_json::json!(1));
        assert!(e.contains("unknown field"), "{e}");
        // A PNG claiming a huge image is refused before it is decoded (memory).
        let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let mut huge = bytes.clone();
        let png0 = 16 + hlen; // shot 0's blob starts the data
        huge[png0 + 16..png0 + 20].copy_from_slice(&40000u32.to_be_bytes());
        huge[png0 + 20..png0 + 24].copy_from_slice(&40000u32.to_be_bytes());
        assert!(err(&huge).contains("image is 40000x40000"), "{}", err(&huge));
        assert!(WarpAvatar::load(Path::new("/nonexistent/a.pcav")).unwrap_err().to_string().contains("/nonexistent/a.pcav"));
    }
}
