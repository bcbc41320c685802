//! The generator stage: an avatar ONNX file checked against docs/generator-contract.md, its
//! metadata (portrait, crop box, neutral landmarks) and one inference per driven frame.
use crate::core::types::{Frame, Iris};
use crate::ep::{build_session, RuntimeOptions};
use crate::error::{Error, Result};
use crate::stats::EpStatus;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};
use std::path::{Path, PathBuf};

/// Side of the landmark raster the generator is driven by (docs/rasteriser.md).
pub const RASTER: usize = 256;
pub const INPUT_NAME: &str = "landmarks";
pub const OUTPUT_NAME: &str = "image";
/// Portraits are stored at most this large on their long side (contract).
const MAX_PORTRAIT_SIDE: u32 = 1024;

/// Everything the avatar file says about itself (its `puppetcam.*` metadata).
#[derive(Clone, Debug, PartialEq)]
pub struct AvatarMeta {
    pub name: String,
    /// Side `R` of the square output image.
    pub resolution: u32,
    /// `[x0, y0, side]` in portrait pixels: the square the output image covers.
    pub crop_box: [f32; 3],
    /// The portrait's own 68 landmarks in 256x256 crop coordinates (the idle pose).
    pub neutral_lm68: [[f32; 2]; 68],
    pub neutral_iris: Option<[Iris; 2]>,
    /// The whole portrait, RGB.
    pub portrait: Frame,
    /// "fp32" or "fp16" (informational: inputs and outputs are float32 either way).
    pub precision: String,
    pub provenance: Option<String>,
}

/// An open generator session with its avatar metadata. Owned by the generator thread.
pub struct Generator {
    session: Session,
    meta: AvatarMeta,
    ep: EpStatus,
    path: PathBuf,
    /// Reused NCHW input buffer (3 * 256 * 256 floats) so the hot path does not allocate it.
    input: Vec<f32>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").field("path", &self.path).field("name", &self.meta.name).field("ep", &self.ep).finish()
    }
}

fn model_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Model { path: path.to_path_buf(), msg: msg.into() }
}

impl Generator {
    /// Opens `path`, validates tensors and metadata against the contract, and runs one warm-up
    /// inference (the first run allocates and, on TensorRT, may build engines: better here than
    /// on the first live frame).
    pub fn open(path: &Path, opts: &RuntimeOptions) -> Result<Generator> {
        if !path.is_file() {
            return Err(model_err(path, "avatar file not found"));
        }
        let (session, ep) = build_session(path, opts, &format!("generator {}", path.display()))?;
        let meta = read_contract(&session, path)?;
        let mut g = Generator { session, meta, ep, path: path.to_path_buf(), input: vec![0.0; 3 * RASTER * RASTER] };
        let t = std::time::Instant::now();
        g.run(&vec![0u8; 3 * RASTER * RASTER]).map_err(|e| model_err(path, format!("warm-up inference failed: {e}")))?;
        log::info!(
            "avatar '{}' ({}x{}, {}) on {}: warm-up {:.1} ms",
            g.meta.name,
            g.meta.resolution,
            g.meta.resolution,
            g.meta.precision,
            g.ep.active,
            t.elapsed().as_secs_f64() * 1e3
        );
        Ok(g)
    }

    pub fn meta(&self) -> &AvatarMeta {
        &self.meta
    }

    pub fn ep_status(&self) -> &EpStatus {
        &self.ep
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the generator on a 256x256 RGB landmark raster; returns the `R x R` RGB face.
    pub fn run(&mut self, raster_rgb: &[u8]) -> Result<Frame> {
        if raster_rgb.len() != 3 * RASTER * RASTER {
            return Err(Error::Invalid(format!(
                "generator input must be a {RASTER}x{RASTER} RGB raster ({} bytes), got {} bytes",
                3 * RASTER * RASTER,
                raster_rgb.len()
            )));
        }
        crate::core::raster::write_input_tensor(raster_rgb, &mut self.input)?;
        let r = self.meta.resolution as usize;
        let input = TensorRef::from_array_view(([1usize, 3, RASTER, RASTER], self.input.as_slice()))?;
        let outputs = self.session.run(ort::inputs![INPUT_NAME => input])?;
        let out = outputs
            .get(OUTPUT_NAME)
            .ok_or_else(|| model_err(&self.path, format!("output `{OUTPUT_NAME}` missing from the results")))?;
        let (shape, data) = out.try_extract_tensor::<f32>()?;
        if shape[..] != [1, 3, r as i64, r as i64] || data.len() != 3 * r * r {
            return Err(model_err(&self.path, format!("output `{OUTPUT_NAME}` has shape {shape}, expected [1, 3, {r}, {r}]")));
        }
        Ok(Frame { width: r as u32, height: r as u32, data: nchw_to_rgb(data, r), pts: Default::default(), seq: 0 })
    }
}

/// `[-1, 1]` CHW floats -> RGB bytes; values outside the range are clamped (contract) and NaN
/// becomes black rather than garbage.
pub fn nchw_to_rgb(data: &[f32], r: usize) -> Vec<u8> {
    let plane = r * r;
    let mut out = vec![0u8; 3 * plane];
    for i in 0..plane {
        for c in 0..3 {
            let v = data[c * plane + i];
            let v = if v.is_nan() { -1.0 } else { v.clamp(-1.0, 1.0) };
            out[3 * i + c] = ((v + 1.0) * 127.5).round() as u8;
        }
    }
    out
}

/// Checks tensors and metadata of an open session; returns the parsed metadata.
fn read_contract(session: &Session, path: &Path) -> Result<AvatarMeta> {
    let md = session.metadata().map_err(|e| model_err(path, format!("cannot read metadata: {e}")))?;
    let get = |key: &str| -> Option<String> { md.custom(key) };
    let require = |key: &str| -> Result<String> {
        get(key).ok_or_else(|| model_err(path, format!("metadata key `{key}` is missing (docs/generator-contract.md)")))
    };
    let contract = require("puppetcam.contract")?;
    if contract.trim() != "1" {
        return Err(model_err(path, format!("metadata `puppetcam.contract` is {contract:?}; this daemon reads contract \"1\"")));
    }
    let res_s = require("puppetcam.resolution")?;
    let resolution: u32 = res_s
        .trim()
        .parse()
        .ok()
        .filter(|&r| (16..=2048).contains(&r))
        .ok_or_else(|| model_err(path, format!("metadata `puppetcam.resolution` = {res_s:?} is not a size in 16..=2048")))?;

    check_tensors(session, path, resolution)?;

    let crop_s = require("puppetcam.crop_box")?;
    let crop_box: [f32; 3] = serde_json::from_str(&crop_s)
        .map_err(|e| model_err(path, format!("metadata `puppetcam.crop_box` is not JSON [x0, y0, side]: {e}")))?;
    if !crop_box.iter().all(|v| v.is_finite()) || crop_box[2] <= 0.0 {
        return Err(model_err(path, format!("metadata `puppetcam.crop_box` {crop_box:?} needs finite values and side > 0")));
    }
    let lm_s = require("puppetcam.neutral_landmarks")?;
    let lm: Vec<[f32; 2]> = serde_json::from_str(&lm_s)
        .map_err(|e| model_err(path, format!("metadata `puppetcam.neutral_landmarks` is not JSON [[x, y] x 68]: {e}")))?;
    let neutral_lm68: [[f32; 2]; 68] = lm.as_slice().try_into().map_err(|_| {
        model_err(path, format!("metadata `puppetcam.neutral_landmarks` has {} points, expected 68", lm.len()))
    })?;
    if !neutral_lm68.iter().flatten().all(|v| v.is_finite()) {
        return Err(model_err(path, "metadata `puppetcam.neutral_landmarks` has non-finite values"));
    }
    let neutral_iris = match get("puppetcam.neutral_iris") {
        None => None,
        Some(s) => {
            let v: Option<[[f32; 3]; 2]> = serde_json::from_str(&s).map_err(|e| {
                model_err(path, format!("metadata `puppetcam.neutral_iris` is not JSON [[cx, cy, r], [cx, cy, r]] or null: {e}"))
            })?;
            v.map(|[a, b]| [Iris { cx: a[0], cy: a[1], r: a[2] }, Iris { cx: b[0], cy: b[1], r: b[2] }])
        }
    };
    let png_b64 = require("puppetcam.portrait_png_b64")?;
    let portrait = decode_portrait(&png_b64).map_err(|msg| model_err(path, format!("metadata `puppetcam.portrait_png_b64`: {msg}")))?;
    let name = get("puppetcam.name").filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "avatar".into())
    });
    let precision = get("puppetcam.precision").unwrap_or_else(|| "fp32".into());
    if precision != "fp32" && precision != "fp16" {
        log::warn!("{}: unknown puppetcam.precision {precision:?}", path.display());
    }
    Ok(AvatarMeta { name, resolution, crop_box, neutral_lm68, neutral_iris, portrait, precision, provenance: get("puppetcam.provenance") })
}

fn dims_of(outlet: &ort::value::Outlet) -> Option<(TensorElementType, Vec<i64>)> {
    let ty = outlet.dtype();
    Some((ty.tensor_type()?, ty.tensor_shape()?.iter().copied().collect()))
}

fn check_tensors(session: &Session, path: &Path, r: u32) -> Result<()> {
    let ins = session.inputs();
    let want_in = [1, 3, RASTER as i64, RASTER as i64];
    match ins {
        [one] if one.name() == INPUT_NAME => match dims_of(one) {
            Some((TensorElementType::Float32, d)) if d == want_in => {}
            Some((ty, d)) => {
                return Err(model_err(
                    path,
                    format!("input `{INPUT_NAME}` is {ty:?} {d:?}, expected Float32 {want_in:?} (batch fixed to 1)"),
                ))
            }
            None => return Err(model_err(path, format!("input `{INPUT_NAME}` is not a tensor"))),
        },
        _ => {
            let names: Vec<&str> = ins.iter().map(|o| o.name()).collect();
            return Err(model_err(path, format!("expected exactly one input named `{INPUT_NAME}`, found {names:?}")));
        }
    }
    let outs = session.outputs();
    let want_out = [1, 3, r as i64, r as i64];
    let Some(image) = outs.iter().find(|o| o.name() == OUTPUT_NAME) else {
        let names: Vec<&str> = outs.iter().map(|o| o.name()).collect();
        return Err(model_err(path, format!("no output named `{OUTPUT_NAME}` (outputs: {names:?})")));
    };
    match dims_of(image) {
        Some((TensorElementType::Float32, d)) if d == want_out => Ok(()),
        Some((ty, d)) => Err(model_err(
            path,
            format!("output `{OUTPUT_NAME}` is {ty:?} {d:?}, expected Float32 {want_out:?} (puppetcam.resolution = {r})"),
        )),
        None => Err(model_err(path, format!("output `{OUTPUT_NAME}` is not a tensor"))),
    }
}

/// base64 PNG -> RGB frame, within the contract's size limit.
fn decode_portrait(b64: &str) -> std::result::Result<Frame, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("not valid base64: {e}"))?;
    // Dimensions from the header are checked before decoding (imageio): a small blob can claim
    // a huge image. The contract's side is a recommendation; up to the avatar's limit is used.
    let f = crate::imageio::decode_bounded(&bytes, crate::avatar::file::SHOT_LIMITS)?;
    let (w, h) = (f.width, f.height);
    if w.max(h) > MAX_PORTRAIT_SIDE {
        log::warn!("portrait is {w}x{h}, larger than the contract's {MAX_PORTRAIT_SIDE} px; using it anyway");
    }
    if !f.len_ok() {
        return Err(format!("decoded portrait has {} bytes for {w}x{h}", f.data.len()));
    }
    Ok(f)
}

/// The contract check without inference: a one-thread CPU session reads the metadata and the
/// tensor shapes, then is dropped. The avatar watcher runs this on every replacement while the
/// live session keeps running, so it must not touch the GPU or build TensorRT engines; a file
/// that passes is then loaded (and warmed up) by the generator thread itself.
pub fn validate_contract(path: &Path) -> Result<AvatarMeta> {
    if !path.is_file() {
        return Err(model_err(path, "avatar file not found"));
    }
    let opts = RuntimeOptions { intra_threads: 1, ..RuntimeOptions::cpu() };
    let (session, _) = build_session(path, &opts, &format!("avatar check {}", path.display()))?;
    read_contract(&session, path)
}

/// Validates an avatar file on CPU without keeping the session (used by `check`).
pub fn validate(path: &Path, opts: &RuntimeOptions) -> Result<AvatarMeta> {
    let g = Generator::open(path, opts)?;
    Ok(g.meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_clamped_and_nan_safe() {
        // r = 1: one pixel, channels R, G, B
        assert_eq!(nchw_to_rgb(&[-3.0, 3.0, f32::NAN], 1), vec![0, 255, 0]);
        assert_eq!(nchw_to_rgb(&[0.0, -1.0, 1.0], 1), vec![128, 0, 255]);
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    #[test]
    fn contract_check_accepts_the_fixture_and_names_what_is_wrong() {
        let meta = validate_contract(&fixture("generator_ok.onnx")).unwrap();
        assert_eq!(meta.name, "fixture-avatar");
        let e = validate_contract(&fixture("generator_missing_crop_box.onnx")).unwrap_err().to_string();
        assert!(e.contains("puppetcam.crop_box"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.onnx");
        std::fs::write(&junk, b"not an onnx file").unwrap();
        assert!(validate_contract(&junk).is_err());
        assert!(validate_contract(&dir.path().join("missing.onnx")).is_err());
    }

    #[test]
    fn bad_base64_portrait_is_an_error_not_a_panic() {
        assert!(decode_portrait("###").is_err());
        use base64::Engine as _;
        let junk = base64::engine::general_purpose::STANDARD.encode(b"definitely not a png");
        assert!(decode_portrait(&junk).is_err());
    }
}
