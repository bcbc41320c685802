//! Two-stage configuration (ripgrep style): `RawConfig` is what the TOML file says (every field
//! optional, unknown keys rejected), `Config::resolve` validates each value against a named range
//! and fills defaults, so the rest of the daemon only ever sees a complete, valid `Config`.
//! Every error names the offending key (`output.fps`) and what would be valid.
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::colour::PixFormat;
use crate::core::retarget::RetargetParams;
use crate::face::iris::IrisKind;
use crate::error::{Error, Result};
use crate::sink::SinkSpec;
use crate::source::SourceSpec;

// ---------------------------------------------------------------------------------------------
// Stage 1: raw, as written.

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub source: Option<RawSource>,
    pub output: Option<RawOutput>,
    pub avatar: Option<RawAvatar>,
    pub runtime: Option<RawRuntime>,
    pub face: Option<RawFace>,
    pub retarget: Option<RawRetarget>,
    pub service: Option<RawService>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub kind: Option<String>,
    pub device: Option<String>,
    pub path: Option<PathBuf>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub fps: Option<i64>,
    #[serde(rename = "loop")]
    pub looping: Option<bool>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub kind: Option<String>,
    pub device: Option<PathBuf>,
    pub path: Option<PathBuf>,
    pub format: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub fps: Option<i64>,
    pub every: Option<i64>,
    pub face_lost_mark: Option<bool>,
    pub fit: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawAvatar {
    pub path: Option<PathBuf>,
    /// A portrait image to animate (a warp avatar is made from it and cached); wins over `path`.
    pub portrait: Option<PathBuf>,
    pub library: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub providers: Option<Vec<String>>,
    pub trt_cache_dir: Option<PathBuf>,
    pub fp16: Option<bool>,
    pub threads: Option<i64>,
    pub allow_cpu_fallback: Option<bool>,
    pub ort_library: Option<PathBuf>,
    pub device_id: Option<i64>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawFace {
    pub model_dir: Option<PathBuf>,
    pub min_score: Option<f64>,
    pub iris: Option<bool>,
    pub iris_model: Option<String>,
    pub iris_alternate: Option<bool>,
    pub iris_lids: Option<bool>,
    pub threads: Option<i64>,
    pub one_euro: Option<RawOneEuro>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawOneEuro {
    pub min_cutoff: Option<f64>,
    pub beta: Option<f64>,
    pub d_cutoff: Option<f64>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRetarget {
    pub enabled: Option<bool>,
    pub profile: Option<PathBuf>,
    pub max_roll_deg: Option<f64>,
    pub head_3d: Option<bool>,
    pub max_yaw_deg: Option<f64>,
    pub max_pitch_deg: Option<f64>,
    pub max_translation: Option<f64>,
    pub min_scale: Option<f64>,
    pub max_scale: Option<f64>,
    pub pose_smoothing: Option<f64>,
    pub expression_gain: Option<f64>,
    pub mouth_gain: Option<f64>,
    pub learn_frames: Option<i64>,
    pub learn_max_motion: Option<f64>,
    pub eye_contact: Option<bool>,
    pub ease_hold_s: Option<f64>,
    pub ease_out_s: Option<f64>,
    pub ease_in_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub enabled: Option<bool>,
    pub token_file: Option<PathBuf>,
    pub max_upload_mb: Option<i64>,
    pub bind: Option<String>,
    pub allow_remote: Option<bool>,
    pub preview_fps: Option<f64>,
    pub max_preview_clients: Option<i64>,
    pub watch_avatar: Option<bool>,
    pub stall_timeout_s: Option<f64>,
    pub source_lost_timeout_s: Option<f64>,
}

/// Keys each table accepts, for error messages that name the full key (`output.fsp`).
const SCHEMA: &[(&str, &[&str])] = &[
    ("", &["source", "output", "avatar", "runtime", "face", "retarget", "service"]),
    ("source", &["kind", "device", "path", "width", "height", "fps", "loop"]),
    ("output", &["kind", "device", "path", "format", "width", "height", "fps", "every", "face_lost_mark", "fit"]),
    ("avatar", &["path", "portrait", "library"]),
    ("runtime", &["providers", "trt_cache_dir", "fp16", "threads", "allow_cpu_fallback", "ort_library", "device_id"]),
    ("face", &["model_dir", "min_score", "iris", "iris_model", "iris_alternate", "iris_lids", "threads", "one_euro"]),
    ("face.one_euro", &["min_cutoff", "beta", "d_cutoff"]),
    (
        "retarget",
        &[
            "enabled", "profile", "max_roll_deg", "head_3d", "max_yaw_deg", "max_pitch_deg", "max_translation", "min_scale", "max_scale",
            "pose_smoothing", "expression_gain", "mouth_gain", "learn_frames", "learn_max_motion", "eye_contact", "ease_hold_s", "ease_out_s", "ease_in_s",
        ],
    ),
    (
        "service",
        &[
            "enabled", "bind", "allow_remote", "preview_fps", "max_preview_clients", "watch_avatar", "stall_timeout_s", "source_lost_timeout_s",
            "token_file", "max_upload_mb",
        ],
    ),
];

/// Keys that used to exist, with what to do instead (an old config gets a useful error).
const REMOVED: &[(&str, &str)] = &[(
    "source.realtime",
    "was removed: it never took effect. A file source is paced by the output: at its own speed into a virtual camera, flat out when rendering to a file",
)];

/// Reports the first key that is not in `SCHEMA`, with its dotted path.
fn check_keys(table: &toml::Table, prefix: &str) -> Result<()> {
    let known = SCHEMA.iter().find(|(p, _)| *p == prefix).map(|(_, k)| *k);
    for (k, v) in table {
        let full = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if let Some((_, why)) = REMOVED.iter().find(|(key, _)| *key == full) {
            return Err(Error::Config { key: full, msg: why.to_string() });
        }
        match known {
            Some(keys) if keys.contains(&k.as_str()) => {}
            Some(keys) => {
                return Err(Error::Config { key: full, msg: format!("unknown key (expected one of: {})", keys.join(", ")) })
            }
            None => return Err(Error::Config { key: full, msg: "unknown key".into() }),
        }
        if let toml::Value::Table(t) = v {
            check_keys(t, &full)?;
        }
    }
    Ok(())
}

/// The dotted key at byte `offset` of a TOML text (for type errors, which toml reports by span).
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let mut section = String::new();
    let mut key = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') && !t.starts_with("[[") {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        if pos + line.len() > offset {
            if let Some((k, _)) = t.split_once('=') {
                key = k.trim().to_string();
            }
            break;
        }
        pos += line.len();
    }
    match (section.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    }
}

impl RawConfig {
    /// Parses TOML text. Unknown keys and wrong types name their key.
    pub fn parse(text: &str) -> Result<RawConfig> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
            key: e.span().map(|s| key_at(text, s.start)).unwrap_or_default(),
            msg: format!("not valid TOML: {}", e.message()),
        })?;
        check_keys(&table, "")?;
        toml::from_str(text).map_err(|e: toml::de::Error| Error::Config {
            key: e.span().map(|s| key_at(text, s.start)).unwrap_or_default(),
            msg: e.message().to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 2: resolved and validated.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Camera,
    File,
    Image,
    Synthetic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    V4l2,
    Y4m,
    Png,
    Null,
}

/// Execution providers the daemon knows, in the order the user prefers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderName {
    TensorRt,
    Cuda,
    Cpu,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// Camera path, index or name.
    pub device: String,
    /// Video or image path (required for `file` and `image`).
    pub path: Option<PathBuf>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub looping: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutputConfig {
    pub kind: OutputKind,
    /// v4l2loopback device.
    pub device: PathBuf,
    /// y4m file (`-` = stdout) or PNG directory.
    pub path: PathBuf,
    pub format: PixFormat,
    pub width: u32,
    pub height: u32,
    /// The output's rate cap; when not set (`fps_set` false) the live output follows the source's
    /// rate and this (30) is only used when the source tells none.
    pub fps: u32,
    pub fps_set: bool,
    /// PNG sink: keep one frame of every `every`.
    pub every: u32,
    /// Draw the small face-not-found mark on the still shown while the face is lost.
    pub face_lost_mark: bool,
    /// How a portrait fills an output of another aspect ratio (`core::fit`).
    pub fit: crate::core::fit::Fit,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeConfig {
    pub providers: Vec<ProviderName>,
    pub trt_cache_dir: PathBuf,
    pub fp16: bool,
    /// ORT intra-op threads; 0 = ORT's default.
    pub threads: u32,
    pub allow_cpu_fallback: bool,
    pub ort_library: Option<PathBuf>,
    pub device_id: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaceConfig {
    /// Directory of the face ONNX models; `None` searches the usual places.
    pub model_dir: Option<PathBuf>,
    pub min_score: f32,
    pub iris: bool,
    /// Live output: the distilled iris model on both eyes every frame (default), or MediaPipe's.
    pub iris_model: IrisKind,
    /// Live output with MediaPipe's iris model (or without the distilled file): run it on one
    /// open eye per frame, taking turns, and carry the other (`face::iris_schedule`); false runs
    /// both eyes every frame.
    pub iris_alternate: bool,
    /// Read the lids from the iris model's eye contour (blinks reach the portrait) instead of the
    /// 468-point mesh, which barely closes them.
    pub iris_lids: bool,
    /// ORT intra-op threads of the landmark and iris models (1..=8).
    pub threads: u32,
    pub min_cutoff: f32,
    pub beta: f32,
    pub d_cutoff: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetargetConfig {
    pub enabled: bool,
    /// Calibration profile written by `puppetcam calibrate`.
    pub profile: Option<PathBuf>,
    /// The retargeter's parameters, each validated against its named range.
    pub params: RetargetParams,
    /// Face lost: hold the last pose this long, then ease to neutral over `ease_out_s`;
    /// face back: blend in over `ease_in_s`.
    pub ease_hold_s: f32,
    pub ease_out_s: f32,
    pub ease_in_s: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// A non-loopback `bind` is refused unless this is set (the preview shows the camera).
    pub allow_remote: bool,
    /// Upper bound of the MJPEG preview frame rate per client.
    pub preview_fps: f32,
    pub max_preview_clients: u32,
    /// Reload the avatar when its file is replaced (after the generator's contract check).
    pub watch_avatar: bool,
    /// A stage with work waiting that makes no progress this long makes the daemon unhealthy
    /// (/health 503, no watchdog pings).
    pub stall_timeout_s: f32,
    /// A lost camera is "degraded" (reopened with backoff) and unhealthy after this long.
    pub source_lost_timeout_s: f32,
    /// The control API's token file; `None`: beside the config file (see `control::token`).
    pub token_file: Option<PathBuf>,
    /// Largest upload the control API accepts (all images of one create together), MiB.
    pub max_upload_mb: u32,
}

/// The complete, validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub source: SourceConfig,
    pub output: OutputConfig,
    pub avatar: PathBuf,
    /// `[avatar] portrait`: an image to animate through a cached warp avatar.
    pub portrait: Option<PathBuf>,
    /// `[avatar] library`: the avatar library's directory; `None`: the standard place
    /// (`$STATE_DIRECTORY/avatars`, `$XDG_DATA_HOME/puppetcam/avatars`, ...).
    pub library: Option<PathBuf>,
    pub runtime: RuntimeConfig,
    pub face: FaceConfig,
    pub retarget: RetargetConfig,
    pub service: ServiceConfig,
}

// Named ranges: each is the single place a limit is stated, and errors quote it.
pub const SOURCE_WIDTH: RangeInclusive<i64> = 16..=7680;
pub const SOURCE_HEIGHT: RangeInclusive<i64> = 16..=4320;
pub const SOURCE_FPS: RangeInclusive<i64> = 1..=240;
pub const OUTPUT_WIDTH: RangeInclusive<i64> = 64..=3840;
pub const OUTPUT_HEIGHT: RangeInclusive<i64> = 64..=2160;
pub const OUTPUT_FPS: RangeInclusive<i64> = 1..=120;
pub const PNG_EVERY: RangeInclusive<i64> = 1..=1_000_000;
pub const THREADS: RangeInclusive<i64> = 0..=256;
pub const DEVICE_ID: RangeInclusive<i64> = 0..=64;
/// `[face] threads`: intra-op threads of the landmark and iris models.
pub const FACE_THREADS: RangeInclusive<i64> = 1..=8;
pub const UNIT: RangeInclusive<f64> = 0.0..=1.0;
pub const ONE_EURO_CUTOFF: RangeInclusive<f64> = 0.001..=100.0;
/// Per inter-ocular distance per second; values in (0, 1) were the old per-pixel unit.
pub const ONE_EURO_BETA: RangeInclusive<f64> = 0.0..=1000.0;
pub const ROLL_DEG: RangeInclusive<f64> = 0.0..=60.0;
pub const YAW_DEG: RangeInclusive<f64> = 0.0..=60.0;
pub const PITCH_DEG: RangeInclusive<f64> = 0.0..=45.0;
pub const EXPRESSION_GAIN: RangeInclusive<f64> = 0.0..=2.0;
pub const MOUTH_GAIN: RangeInclusive<f64> = 0.25..=3.0;
pub const MAX_TRANSLATION: RangeInclusive<f64> = 0.0..=1.0;
pub const MIN_SCALE: RangeInclusive<f64> = 0.1..=1.0;
pub const MAX_SCALE: RangeInclusive<f64> = 1.0..=4.0;
/// Below 1: a weight of 1 would freeze the head pose.
pub const POSE_SMOOTHING: RangeInclusive<f64> = 0.0..=0.99;
pub const LEARN_FRAMES: RangeInclusive<i64> = 3..=1000;
pub const LEARN_MAX_MOTION: RangeInclusive<f64> = 0.001..=1.0;
pub const EASE_S: RangeInclusive<f64> = 0.0..=10.0;
pub const PREVIEW_FPS: RangeInclusive<f64> = 0.1..=60.0;
pub const PREVIEW_CLIENTS: RangeInclusive<i64> = 1..=64;
/// Above 1 s so a busy CPU does not look hung; below the units' WatchdogSec=10 by default.
pub const STALL_TIMEOUT_S: RangeInclusive<f64> = 0.5..=3600.0;
pub const SOURCE_LOST_TIMEOUT_S: RangeInclusive<f64> = 1.0..=86400.0;
/// Uploads are held in memory while they are checked: 32 photos of a few MB fit in the default.
pub const MAX_UPLOAD_MB: RangeInclusive<i64> = 1..=1024;

fn cfg_err(key: &str, msg: impl Into<String>) -> Error {
    Error::Config { key: key.to_string(), msg: msg.into() }
}

fn int_in(key: &str, v: Option<i64>, default: i64, range: RangeInclusive<i64>) -> Result<u32> {
    let v = v.unwrap_or(default);
    if !range.contains(&v) {
        return Err(cfg_err(key, format!("{v} is out of range {}..={}", range.start(), range.end())));
    }
    Ok(v as u32)
}

fn even(key: &str, v: u32) -> Result<u32> {
    if v % 2 != 0 {
        return Err(cfg_err(key, format!("{v} must be even (YUYV/I420 share chroma between pixel pairs)")));
    }
    Ok(v)
}

fn float_in(key: &str, v: Option<f64>, default: f64, range: RangeInclusive<f64>) -> Result<f32> {
    let v = v.unwrap_or(default);
    if !v.is_finite() || !range.contains(&v) {
        return Err(cfg_err(key, format!("{v} is out of range {}..={}", range.start(), range.end())));
    }
    Ok(v as f32)
}

fn choice<T: Copy>(key: &str, v: Option<&str>, default: T, options: &[(&str, T)]) -> Result<T> {
    let Some(s) = v else { return Ok(default) };
    let lower = s.to_ascii_lowercase();
    options.iter().find(|(n, _)| *n == lower).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        cfg_err(key, format!("`{s}` is not one of {}", names.join(", ")))
    })
}

fn nonempty_path(key: &str, p: Option<PathBuf>) -> Result<Option<PathBuf>> {
    match p {
        Some(p) if p.as_os_str().is_empty() => Err(cfg_err(key, "must not be empty")),
        other => Ok(other),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(RawConfig::default()).expect("the defaults are valid")
    }
}

impl Config {
    /// Validates `raw` and fills defaults.
    pub fn resolve(raw: RawConfig) -> Result<Config> {
        let s = raw.source.unwrap_or_default();
        let kind = choice(
            "source.kind",
            s.kind.as_deref(),
            SourceKind::Camera,
            &[("camera", SourceKind::Camera), ("file", SourceKind::File), ("image", SourceKind::Image), ("synthetic", SourceKind::Synthetic)],
        )?;
        let path = nonempty_path("source.path", s.path)?;
        if matches!(kind, SourceKind::File | SourceKind::Image) && path.is_none() {
            return Err(cfg_err("source.path", format!("is required when source.kind = {}", if kind == SourceKind::File { "file" } else { "image" })));
        }
        let device = s.device.unwrap_or_else(|| "/dev/video0".into());
        if device.trim().is_empty() {
            return Err(cfg_err("source.device", "must not be empty"));
        }
        let source = SourceConfig {
            kind,
            device,
            path,
            width: int_in("source.width", s.width, 1280, SOURCE_WIDTH)?,
            height: int_in("source.height", s.height, 720, SOURCE_HEIGHT)?,
            fps: int_in("source.fps", s.fps, 30, SOURCE_FPS)?,
            looping: s.looping.unwrap_or(false),
        };

        let o = raw.output.unwrap_or_default();
        let okind = choice(
            "output.kind",
            o.kind.as_deref(),
            OutputKind::V4l2,
            &[("v4l2", OutputKind::V4l2), ("y4m", OutputKind::Y4m), ("png", OutputKind::Png), ("null", OutputKind::Null)],
        )?;
        let default_path = match okind {
            OutputKind::Png => "out/frames",
            _ => "-",
        };
        let output = OutputConfig {
            kind: okind,
            device: nonempty_path("output.device", o.device)?.unwrap_or_else(|| PathBuf::from("/dev/video10")),
            path: nonempty_path("output.path", o.path)?.unwrap_or_else(|| PathBuf::from(default_path)),
            format: choice("output.format", o.format.as_deref(), PixFormat::Yuyv, &[("yuyv", PixFormat::Yuyv), ("i420", PixFormat::I420)])?,
            width: even("output.width", int_in("output.width", o.width, 1280, OUTPUT_WIDTH)?)?,
            height: even("output.height", int_in("output.height", o.height, 720, OUTPUT_HEIGHT)?)?,
            fps_set: o.fps.is_some(),
            fps: int_in("output.fps", o.fps, 30, OUTPUT_FPS)?,
            every: int_in("output.every", o.every, 1, PNG_EVERY)?,
            face_lost_mark: o.face_lost_mark.unwrap_or(true),
            fit: {
                use crate::core::fit::Fit;
                choice("output.fit", o.fit.as_deref(), Fit::default(), &[("contain", Fit::Contain), ("cover", Fit::Cover), ("blur", Fit::Blur)])?
            },
        };

        let a = raw.avatar.unwrap_or_default();
        let avatar = nonempty_path("avatar.path", a.path)?.unwrap_or_else(|| PathBuf::from("onnx/default_avatar.pcav"));
        let portrait = nonempty_path("avatar.portrait", a.portrait)?;
        let library = nonempty_path("avatar.library", a.library)?;

        let r = raw.runtime.unwrap_or_default();
        let providers = match r.providers {
            None => vec![ProviderName::TensorRt, ProviderName::Cuda, ProviderName::Cpu],
            Some(list) => {
                if list.is_empty() {
                    return Err(cfg_err("runtime.providers", "must name at least one of tensorrt, cuda, cpu"));
                }
                let mut out = Vec::new();
                for p in &list {
                    let v = choice(
                        "runtime.providers",
                        Some(p.as_str()),
                        ProviderName::Cpu,
                        &[("tensorrt", ProviderName::TensorRt), ("cuda", ProviderName::Cuda), ("cpu", ProviderName::Cpu)],
                    )?;
                    if out.contains(&v) {
                        return Err(cfg_err("runtime.providers", format!("`{p}` is listed twice")));
                    }
                    out.push(v);
                }
                out
            }
        };
        let runtime = RuntimeConfig {
            providers,
            trt_cache_dir: nonempty_path("runtime.trt_cache_dir", r.trt_cache_dir)?.unwrap_or_else(|| crate::paths::Env::current().trt_cache_dir()),
            fp16: r.fp16.unwrap_or(true),
            threads: int_in("runtime.threads", r.threads, 0, THREADS)?,
            allow_cpu_fallback: r.allow_cpu_fallback.unwrap_or(true),
            ort_library: nonempty_path("runtime.ort_library", r.ort_library)?,
            device_id: int_in("runtime.device_id", r.device_id, 0, DEVICE_ID)?,
        };

        let f = raw.face.unwrap_or_default();
        let e = f.one_euro.unwrap_or_default();
        let od = crate::core::one_euro::OneEuroParams::default();
        if let Some(b) = e.beta.filter(|b| *b > 0.0 && *b < 1.0) {
            return Err(cfg_err(
                "face.one_euro.beta",
                format!("{b} looks like the old per-pixel setting; beta is now per inter-ocular distance per second (default {}, 0 = no speed adaptation)", od.beta),
            ));
        }
        let face = FaceConfig {
            model_dir: nonempty_path("face.model_dir", f.model_dir)?,
            min_score: float_in("face.min_score", f.min_score, 0.5, UNIT)?,
            iris: f.iris.unwrap_or(true),
            iris_model: choice("face.iris_model", f.iris_model.as_deref(), IrisKind::Distilled, &[("distilled", IrisKind::Distilled), ("mediapipe", IrisKind::MediaPipe)])?,
            iris_alternate: f.iris_alternate.unwrap_or(true),
            iris_lids: f.iris_lids.unwrap_or(true),
            threads: int_in("face.threads", f.threads, 1, FACE_THREADS)?,
            min_cutoff: float_in("face.one_euro.min_cutoff", e.min_cutoff, od.min_cutoff.into(), ONE_EURO_CUTOFF)?,
            beta: float_in("face.one_euro.beta", e.beta, od.beta.into(), ONE_EURO_BETA)?,
            d_cutoff: float_in("face.one_euro.d_cutoff", e.d_cutoff, od.d_cutoff.into(), ONE_EURO_CUTOFF)?,
        };

        let t = raw.retarget.unwrap_or_default();
        let rd = RetargetParams::default();
        let retarget = RetargetConfig {
            enabled: t.enabled.unwrap_or(true),
            profile: nonempty_path("retarget.profile", t.profile)?,
            // Defaults come from the retargeter itself so the two cannot drift apart.
            params: RetargetParams {
                max_roll_deg: float_in("retarget.max_roll_deg", t.max_roll_deg, f64::from(rd.max_roll_deg), ROLL_DEG)?,
                head_3d: t.head_3d.unwrap_or(rd.head_3d),
                max_yaw_deg: float_in("retarget.max_yaw_deg", t.max_yaw_deg, f64::from(rd.max_yaw_deg), YAW_DEG)?,
                max_pitch_deg: float_in("retarget.max_pitch_deg", t.max_pitch_deg, f64::from(rd.max_pitch_deg), PITCH_DEG)?,
                max_translation: float_in("retarget.max_translation", t.max_translation, f64::from(rd.max_translation), MAX_TRANSLATION)?,
                min_scale: float_in("retarget.min_scale", t.min_scale, f64::from(rd.min_scale), MIN_SCALE)?,
                max_scale: float_in("retarget.max_scale", t.max_scale, f64::from(rd.max_scale), MAX_SCALE)?,
                pose_smoothing: float_in("retarget.pose_smoothing", t.pose_smoothing, f64::from(rd.pose_smoothing), POSE_SMOOTHING)?,
                expression_gain: float_in("retarget.expression_gain", t.expression_gain, f64::from(rd.expression_gain), EXPRESSION_GAIN)?,
                mouth_gain: float_in("retarget.mouth_gain", t.mouth_gain, f64::from(rd.mouth_gain), MOUTH_GAIN)?,
                learn_frames: int_in("retarget.learn_frames", t.learn_frames, rd.learn_frames as i64, LEARN_FRAMES)? as usize,
                learn_max_motion: float_in("retarget.learn_max_motion", t.learn_max_motion, f64::from(rd.learn_max_motion), LEARN_MAX_MOTION)?,
                eye_contact: t.eye_contact.unwrap_or(rd.eye_contact),
            },
            ease_hold_s: float_in("retarget.ease_hold_s", t.ease_hold_s, 0.2, EASE_S)?,
            ease_out_s: float_in("retarget.ease_out_s", t.ease_out_s, 0.3, EASE_S)?,
            ease_in_s: float_in("retarget.ease_in_s", t.ease_in_s, 0.15, EASE_S)?,
        };

        let v = raw.service.unwrap_or_default();
        let bind_text = v.bind.unwrap_or_else(|| "127.0.0.1:8765".into());
        let bind: SocketAddr = bind_text
            .parse()
            .map_err(|e| cfg_err("service.bind", format!("`{bind_text}` is not an address:port ({e})")))?;
        let allow_remote = v.allow_remote.unwrap_or(false);
        let enabled = v.enabled.unwrap_or(true);
        if enabled && !bind.ip().is_loopback() && !allow_remote {
            // Checked here too (not only when the server starts) so `check` and tests see it.
            return Err(cfg_err(
                "service.bind",
                format!("{bind} is not a loopback address; the preview would be visible on the network (set service.allow_remote = true to allow it)"),
            ));
        }
        let service = ServiceConfig {
            enabled,
            bind,
            allow_remote,
            preview_fps: float_in("service.preview_fps", v.preview_fps, 10.0, PREVIEW_FPS)?,
            max_preview_clients: int_in("service.max_preview_clients", v.max_preview_clients, 4, PREVIEW_CLIENTS)?,
            watch_avatar: v.watch_avatar.unwrap_or(true),
            stall_timeout_s: float_in("service.stall_timeout_s", v.stall_timeout_s, 5.0, STALL_TIMEOUT_S)?,
            source_lost_timeout_s: float_in("service.source_lost_timeout_s", v.source_lost_timeout_s, 60.0, SOURCE_LOST_TIMEOUT_S)?,
            token_file: nonempty_path("service.token_file", v.token_file)?,
            max_upload_mb: int_in("service.max_upload_mb", v.max_upload_mb, 64, MAX_UPLOAD_MB)?,
        };

        Ok(Config { source, output, avatar, portrait, library, runtime, face, retarget, service })
    }

    /// Parses and resolves TOML text.
    pub fn from_toml(text: &str) -> Result<Config> {
        Config::resolve(RawConfig::parse(text)?)
    }

    /// Reads, parses and resolves a TOML file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Config::from_toml(&text).map_err(|e| match e {
            Error::Config { key, msg } => Error::Config { key, msg: format!("{msg} (in {})", path.display()) },
            other => other,
        })
    }

    /// The frame source this config describes.
    pub fn source_spec(&self) -> SourceSpec {
        let s = &self.source;
        let path = s.path.clone().unwrap_or_default();
        match s.kind {
            SourceKind::Camera => SourceSpec::Camera { device: s.device.clone(), width: s.width, height: s.height, fps: s.fps },
            // Pacing is the plan's decision (`Plan::into_spec`), from the output.
            SourceKind::File => SourceSpec::File { path, looping: s.looping, realtime: false },
            SourceKind::Image => SourceSpec::Image { path, fps: s.fps },
            SourceKind::Synthetic => SourceSpec::Synthetic { width: s.width, height: s.height, fps: s.fps },
        }
    }

    /// The sink this config describes.
    pub fn sink_spec(&self) -> SinkSpec {
        let o = &self.output;
        match o.kind {
            OutputKind::V4l2 => SinkSpec::V4l2 { device: o.device.clone(), format: o.format },
            OutputKind::Y4m => SinkSpec::Y4m { path: o.path.clone() },
            OutputKind::Png => SinkSpec::Png { dir: o.path.clone(), every: o.every },
            OutputKind::Null => SinkSpec::Null,
        }
    }
}

/// The config file name inside the config directories.
pub const CONFIG_FILE: &str = "puppetcam.toml";
/// The system-wide config (also where the system unit's `XDG_CONFIG_HOME=/etc` points).
pub const SYSTEM_CONFIG: &str = "/etc/puppetcam/puppetcam.toml";

/// A config file found by [`locate_config`], with which rule found it (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundConfig {
    pub path: PathBuf,
    pub from: &'static str,
}

/// The places `run` looks for a config when `--config` is not given, in order:
/// `$PUPPETCAM_CONFIG`, `$XDG_CONFIG_HOME/puppetcam/puppetcam.toml` (else
/// `~/.config/puppetcam/puppetcam.toml`), `/etc/puppetcam/puppetcam.toml`.
pub fn config_candidates(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Vec<FoundConfig> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut out = Vec::new();
    if let Some(p) = var("PUPPETCAM_CONFIG") {
        out.push(FoundConfig { path: p, from: "$PUPPETCAM_CONFIG" });
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        out.push(FoundConfig { path: x.join("puppetcam").join(CONFIG_FILE), from: "$XDG_CONFIG_HOME" });
    } else if let Some(h) = var("HOME") {
        out.push(FoundConfig { path: h.join(".config/puppetcam").join(CONFIG_FILE), from: "~/.config" });
    }
    let sys = FoundConfig { path: PathBuf::from(SYSTEM_CONFIG), from: "/etc" };
    if !out.iter().any(|c| c.path == sys.path) {
        out.push(sys);
    }
    out
}

/// The first existing candidate of [`config_candidates`], `Ok(None)` when there is none. A
/// `$PUPPETCAM_CONFIG` that names a missing file is an error rather than a silent fall-through:
/// someone asked for exactly that file.
pub fn locate_config_with(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Result<Option<FoundConfig>> {
    for c in config_candidates(env) {
        if c.path.is_file() {
            return Ok(Some(c));
        }
        if c.from == "$PUPPETCAM_CONFIG" {
            return Err(cfg_err("PUPPETCAM_CONFIG", format!("{} does not exist or is not a file", c.path.display())));
        }
    }
    Ok(None)
}

/// [`locate_config_with`] on the process environment.
pub fn locate_config() -> Result<Option<FoundConfig>> {
    locate_config_with(&|k| std::env::var_os(k))
}

impl Display for ProviderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProviderName::TensorRt => "tensorrt",
            ProviderName::Cuda => "cuda",
            ProviderName::Cpu => "cpu",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (String, String) {
        match Config::from_toml(text) {
            Err(Error::Config { key, msg }) => (key, msg),
            other => panic!("expected a config error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.source.kind, SourceKind::Camera);
        assert_eq!(c.source.device, "/dev/video0");
        assert_eq!((c.output.kind, c.output.width, c.output.height, c.output.fps), (OutputKind::V4l2, 1280, 720, 30));
        assert_eq!(c.output.format, PixFormat::Yuyv);
        assert_eq!(c.avatar, PathBuf::from("onnx/default_avatar.pcav"));
        assert_eq!(c.portrait, None);
        assert_eq!(c.runtime.providers, vec![ProviderName::TensorRt, ProviderName::Cuda, ProviderName::Cpu]);
        assert!(c.runtime.allow_cpu_fallback);
        assert_eq!(c.service.bind, "127.0.0.1:8765".parse().unwrap());
        assert_eq!(Config::from_toml("").unwrap(), c);
    }

    #[test]
    fn full_file_parses() {
        let c = Config::from_toml(
            r#"
            [source]
            kind = "file"
            path = "clip.mp4"
            loop = true
            [output]
            kind = "y4m"
            path = "-"
            format = "i420"
            width = 640
            height = 480
            fps = 25
            [avatar]
            path = "a.onnx"
            [runtime]
            providers = ["cuda", "cpu"]
            threads = 4
            fp16 = false
            allow_cpu_fallback = false
            [face]
            min_score = 0.7
            [face.one_euro]
            min_cutoff = 2.0
            beta = 10.0
            [retarget]
            enabled = false
            max_translation = 0.3
            min_scale = 0.5
            max_scale = 2.0
            pose_smoothing = 0.5
            learn_frames = 10
            learn_max_motion = 0.1
            eye_contact = true
            ease_hold_s = 1.0
            ease_out_s = 2.0
            ease_in_s = 0.5
            [service]
            bind = "0.0.0.0:9000"
            allow_remote = true
            enabled = false
            preview_fps = 5.0
            max_preview_clients = 2
            watch_avatar = false
            stall_timeout_s = 2.5
            source_lost_timeout_s = 30
            "#,
        )
        .unwrap();
        assert_eq!(c.source_spec(), SourceSpec::File { path: "clip.mp4".into(), looping: true, realtime: false });
        assert_eq!(c.sink_spec(), SinkSpec::Y4m { path: "-".into() });
        assert_eq!((c.output.width, c.output.height, c.output.fps, c.output.format), (640, 480, 25, PixFormat::I420));
        assert_eq!(c.runtime.providers, vec![ProviderName::Cuda, ProviderName::Cpu]);
        assert_eq!((c.runtime.threads, c.runtime.fp16, c.runtime.allow_cpu_fallback), (4, false, false));
        assert_eq!((c.face.min_score, c.face.min_cutoff, c.face.beta), (0.7, 2.0, 10.0));
        assert!(!c.retarget.enabled && !c.service.enabled);
        let r = &c.retarget;
        let p = &r.params;
        assert_eq!((p.max_translation, p.min_scale, p.max_scale, p.pose_smoothing), (0.3, 0.5, 2.0, 0.5));
        assert_eq!((p.learn_frames, p.learn_max_motion), (10, 0.1));
        assert!(p.eye_contact && !Config::from_toml("").unwrap().retarget.params.eye_contact);
        assert_eq!((r.ease_hold_s, r.ease_out_s, r.ease_in_s), (1.0, 2.0, 0.5));
        assert_eq!(c.service.bind.port(), 9000);
        assert!(c.service.allow_remote && !c.service.watch_avatar);
        assert_eq!((c.service.preview_fps, c.service.max_preview_clients), (5.0, 2));
        assert_eq!((c.service.stall_timeout_s, c.service.source_lost_timeout_s), (2.5, 30.0));
    }

    #[test]
    fn config_lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let env = |pairs: Vec<(&'static str, PathBuf)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone().into_os_string())
        };
        let xdg = d.join("xdg");
        let home = d.join("home");
        let explicit = d.join("explicit.toml");
        let all = || vec![("PUPPETCAM_CONFIG", explicit.clone()), ("XDG_CONFIG_HOME", xdg.clone()), ("HOME", home.clone())];
        let c = config_candidates(&env(all()));
        let paths: Vec<_> = c.iter().map(|c| c.path.clone()).collect();
        assert_eq!(paths, vec![explicit.clone(), xdg.join("puppetcam/puppetcam.toml"), PathBuf::from(SYSTEM_CONFIG)]);
        // Without XDG_CONFIG_HOME: ~/.config.
        let c = config_candidates(&env(vec![("HOME", home.clone())]));
        assert_eq!(c[0].path, home.join(".config/puppetcam/puppetcam.toml"));
        // The system unit's XDG_CONFIG_HOME=/etc gives the system path once.
        let c = config_candidates(&env(vec![("XDG_CONFIG_HOME", PathBuf::from("/etc"))]));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, PathBuf::from(SYSTEM_CONFIG));

        // Found in order of existence; an explicit but missing file is an error.
        assert!(matches!(locate_config_with(&env(all())), Err(Error::Config { key, .. }) if key == "PUPPETCAM_CONFIG"));
        std::fs::create_dir_all(home.join(".config/puppetcam")).unwrap();
        std::fs::write(home.join(".config/puppetcam/puppetcam.toml"), "").unwrap();
        let found = locate_config_with(&env(vec![("HOME", home.clone())])).unwrap().unwrap();
        assert_eq!((found.path, found.from), (home.join(".config/puppetcam/puppetcam.toml"), "~/.config"));
        std::fs::write(&explicit, "").unwrap();
        assert_eq!(locate_config_with(&env(all())).unwrap().unwrap().path, explicit);
        let none = locate_config_with(&env(vec![("XDG_CONFIG_HOME", xdg.clone())])).unwrap();
        assert!(none.is_none() || none.unwrap().path == PathBuf::from(SYSTEM_CONFIG));
    }

    #[test]
    fn removed_source_realtime_is_named_with_the_reason() {
        // It used to parse and then be overwritten by the pacing: a key that silently did nothing.
        let (k, m) = err("[source]\nkind = \"file\"\npath = \"a.mp4\"\nrealtime = false\n");
        assert_eq!(k, "source.realtime");
        assert!(m.contains("removed") && m.contains("paced by the output"), "{m}");
    }

    #[test]
    fn remote_bind_needs_allow_remote() {
        let (k, m) = err("[service]\nbind = \"0.0.0.0:9000\"");
        assert_eq!(k, "service.bind");
        assert!(m.contains("allow_remote"), "{m}");
        assert!(Config::from_toml("[service]\nbind = \"[::1]:9000\"").is_ok());
        // A server that is off exposes nothing.
        assert!(Config::from_toml("[service]\nenabled = false\nbind = \"0.0.0.0:9000\"").is_ok());
    }

    #[test]
    fn out_of_range_numbers_name_key_and_range() {
        let (k, m) = err("[output]\nfps = 500\n");
        assert_eq!(k, "output.fps");
        assert_eq!(m, "500 is out of range 1..=120");
        let e = Config::from_toml("[output]\nfps = 500\n").unwrap_err().to_string();
        assert_eq!(e, "config: `output.fps`: 500 is out of range 1..=120");
        for (text, key) in [
            ("[output]\nwidth = 32", "output.width"),
            ("[output]\nwidth = 4000", "output.width"),
            ("[output]\nheight = 10000", "output.height"),
            ("[output]\nfps = 0", "output.fps"),
            ("[output]\nevery = 0", "output.every"),
            ("[source]\nwidth = 8", "source.width"),
            ("[source]\nfps = 1000", "source.fps"),
            ("[source]\nfps = -1", "source.fps"),
            ("[runtime]\nthreads = 1000", "runtime.threads"),
            ("[face]\nthreads = 0", "face.threads"),
            ("[face]\nthreads = 9", "face.threads"),
            ("[runtime]\ndevice_id = -2", "runtime.device_id"),
            ("[face]\nmin_score = 1.5", "face.min_score"),
            ("[face]\nmin_score = -0.1", "face.min_score"),
            ("[face]\nmin_score = nan", "face.min_score"),
            ("[face.one_euro]\nmin_cutoff = 0.0", "face.one_euro.min_cutoff"),
            ("[face.one_euro]\nbeta = -1.0", "face.one_euro.beta"),
            ("[face.one_euro]\nd_cutoff = inf", "face.one_euro.d_cutoff"),
            ("[retarget]\nexpression_gain = 3", "retarget.expression_gain"),
            ("[retarget]\nmouth_gain = 0.1", "retarget.mouth_gain"),
            ("[retarget]\nmax_translation = 1.5", "retarget.max_translation"),
            ("[retarget]\nmin_scale = 0.0", "retarget.min_scale"),
            ("[retarget]\nmin_scale = 1.1", "retarget.min_scale"),
            ("[retarget]\nmax_scale = 0.9", "retarget.max_scale"),
            ("[retarget]\nmax_scale = 5", "retarget.max_scale"),
            ("[retarget]\npose_smoothing = 1.0", "retarget.pose_smoothing"),
            ("[retarget]\npose_smoothing = -0.1", "retarget.pose_smoothing"),
            ("[retarget]\nlearn_frames = 2", "retarget.learn_frames"),
            ("[retarget]\nlearn_frames = 100000", "retarget.learn_frames"),
            ("[retarget]\nlearn_max_motion = 0", "retarget.learn_max_motion"),
            ("[retarget]\nease_hold_s = -1", "retarget.ease_hold_s"),
            ("[retarget]\nease_out_s = 11", "retarget.ease_out_s"),
            ("[retarget]\nease_in_s = nan", "retarget.ease_in_s"),
            ("[service]\npreview_fps = 0", "service.preview_fps"),
            ("[service]\npreview_fps = 61", "service.preview_fps"),
            ("[service]\nmax_preview_clients = 0", "service.max_preview_clients"),
            ("[service]\nmax_preview_clients = 65", "service.max_preview_clients"),
            ("[service]\nstall_timeout_s = 0.1", "service.stall_timeout_s"),
            ("[service]\nsource_lost_timeout_s = 0", "service.source_lost_timeout_s"),
        ] {
            let (k, m) = err(text);
            assert_eq!(k, key, "{text}");
            assert!(m.contains("out of range"), "{text}: {m}");
        }
    }

    #[test]
    fn old_per_pixel_beta_is_refused_with_the_new_unit() {
        let (k, m) = err("[face.one_euro]\nbeta = 0.03");
        assert_eq!(k, "face.one_euro.beta");
        assert!(m.contains("inter-ocular distance per second"), "{m}");
    }

    #[test]
    fn odd_output_size_rejected() {
        let (k, m) = err("[output]\nwidth = 641");
        assert_eq!(k, "output.width");
        assert!(m.contains("even"), "{m}");
        assert_eq!(err("[output]\nheight = 481").0, "output.height");
    }

    #[test]
    fn unknown_keys_are_named() {
        let (k, m) = err("[output]\nfsp = 30\n");
        assert_eq!(k, "output.fsp");
        assert!(m.contains("unknown key") && m.contains("fps"), "{m}");
        assert_eq!(err("[outptu]\nfps = 30\n").0, "outptu");
        assert_eq!(err("[face.one_euro]\nbeta2 = 1.0\n").0, "face.one_euro.beta2");
        assert_eq!(err("top = 1\n").0, "top");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let (k, m) = err("[output]\nfps = \"thirty\"\n");
        assert_eq!(k, "output.fps", "{m}");
        let (k, _) = err("[runtime]\nfp16 = 1\n");
        assert_eq!(k, "runtime.fp16");
        assert_eq!(err("[retarget]\neye_contact = \"yes\"\n").0, "retarget.eye_contact");
        let (k, _) = err("[source\nkind = 1");
        assert!(k.is_empty() || k.starts_with("source"), "{k}");
    }

    #[test]
    fn choices_are_checked() {
        let (k, m) = err("[source]\nkind = \"webcam\"");
        assert_eq!(k, "source.kind");
        assert!(m.contains("camera, file, image, synthetic"), "{m}");
        assert_eq!(err("[output]\nkind = \"rtmp\"").0, "output.kind");
        assert_eq!(err("[output]\nformat = \"nv12\"").0, "output.format");
        assert_eq!(err("[face]\niris_model = \"tiny\"").0, "face.iris_model");
        assert_eq!(Config::from_toml("[face]\niris_model = \"MediaPipe\"").unwrap().face.iris_model, IrisKind::MediaPipe);
        assert_eq!(Config::from_toml("").unwrap().face.iris_model, IrisKind::Distilled);
        assert_eq!(err("[runtime]\nproviders = [\"rocm\"]").0, "runtime.providers");
        assert_eq!(err("[runtime]\nproviders = []").0, "runtime.providers");
        assert_eq!(err("[runtime]\nproviders = [\"cpu\", \"cpu\"]").0, "runtime.providers");
        // Case-insensitive.
        assert_eq!(Config::from_toml("[output]\nformat = \"I420\"").unwrap().output.format, PixFormat::I420);
    }

    #[test]
    fn dependent_requirements() {
        let (k, m) = err("[source]\nkind = \"file\"");
        assert_eq!(k, "source.path");
        assert!(m.contains("required"), "{m}");
        assert_eq!(err("[source]\nkind = \"image\"").0, "source.path");
        assert_eq!(err("[source]\nkind = \"file\"\npath = \"\"").0, "source.path");
        assert_eq!(err("[source]\ndevice = \" \"").0, "source.device");
        assert_eq!(err("[service]\nbind = \"localhost\"").0, "service.bind");
        assert_eq!(err("[avatar]\npath = \"\"").0, "avatar.path");
        assert_eq!(err("[avatar]\nportrait = \"\"").0, "avatar.portrait");
    }

    #[test]
    fn specs_follow_kinds() {
        let c = Config::from_toml("[source]\nkind = \"synthetic\"\nwidth = 320\nheight = 240\nfps = 15").unwrap();
        assert_eq!(c.source_spec(), SourceSpec::Synthetic { width: 320, height: 240, fps: 15 });
        let c = Config::from_toml("[source]\nkind = \"image\"\npath = \"p.jpg\"").unwrap();
        assert_eq!(c.source_spec(), SourceSpec::Image { path: "p.jpg".into(), fps: 30 });
        assert_eq!(Config::default().source_spec(), SourceSpec::Camera { device: "/dev/video0".into(), width: 1280, height: 720, fps: 30 });
        let c = Config::from_toml("[output]\nkind = \"png\"\nevery = 5").unwrap();
        assert_eq!(c.sink_spec(), SinkSpec::Png { dir: "out/frames".into(), every: 5 });
        assert_eq!(Config::from_toml("[output]\nkind = \"null\"").unwrap().sink_spec(), SinkSpec::Null);
        assert_eq!(
            Config::default().sink_spec(),
            SinkSpec::V4l2 { device: "/dev/video10".into(), format: PixFormat::Yuyv }
        );
    }

    #[test]
    fn load_reports_missing_file_and_example_parses() {
        assert!(matches!(Config::load(Path::new("/nonexistent/puppetcam.toml")), Err(Error::Io { .. })));
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("puppetcam.example.toml");
        let c = Config::load(&example).unwrap();
        assert_eq!(c, Config::default(), "the example documents the defaults");
    }
}
