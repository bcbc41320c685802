//! ONNX Runtime loading (once per process) and execution-provider selection (TensorRT -> CUDA -> CPU).
//!
//! This is the one place that loads `libonnxruntime`: every session (face models, generator,
//! `check`) goes through [`ensure_ort_loaded`]. A provider that fails to register or to build its
//! session is never skipped silently: the reason is logged at `error!`/`warn!` and returned in an
//! [`EpStatus`] so status pages and `/metrics` show it too.
use crate::error::{Error, Result};
use crate::stats::EpStatus;
use ort::environment::Environment;
use ort::ep::ExecutionProvider as _;
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An execution provider the daemon knows how to configure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    TensorRT,
    Cuda,
    Cpu,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::TensorRT, Provider::Cuda, Provider::Cpu];

    /// Display name, as stored in `EpStatus::active`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::TensorRT => "TensorRT",
            Provider::Cuda => "CUDA",
            Provider::Cpu => "CPU",
        }
    }

    /// Parses a config spelling (`tensorrt`/`trt`, `cuda`, `cpu`; case-insensitive).
    pub fn parse(s: &str) -> Option<Provider> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Some(Provider::TensorRT),
            "cuda" => Some(Provider::Cuda),
            "cpu" => Some(Provider::Cpu),
            _ => None,
        }
    }

    /// Whether the loaded ONNX Runtime was compiled with this provider (it may still fail to load).
    pub fn compiled_in(self) -> bool {
        let r = match self {
            Provider::TensorRT => ort::ep::TensorRT::is_available(),
            Provider::Cuda => ort::ep::CUDA::is_available(),
            Provider::Cpu => ort::ep::CPU::is_available(),
        };
        r.unwrap_or(false)
    }
}

/// Session options shared by every model: provider order and its knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeOptions {
    /// Explicit `libonnxruntime` path (config `runtime.ort_library`); else `ORT_DYLIB_PATH`, the
    /// project's `.venv`, then next to the executable.
    pub ort_library: Option<PathBuf>,
    /// Providers in order of preference; the first that builds a session wins.
    pub providers: Vec<Provider>,
    /// TensorRT engine cache: building an engine takes minutes, so it is cached on disk.
    pub trt_cache_dir: PathBuf,
    /// fp16 kernels on TensorRT (the generator tolerates it; halves latency on most GPUs).
    pub fp16: bool,
    /// When false, ending up on CPU although a GPU provider was asked for is an error.
    pub allow_cpu_fallback: bool,
    /// ORT intra-op threads for this session; 0 = ORT's default (all cores).
    pub intra_threads: usize,
    pub device_id: i32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            ort_library: None,
            providers: Provider::ALL.to_vec(),
            trt_cache_dir: PathBuf::from(".cache/trt"),
            fp16: true,
            allow_cpu_fallback: true,
            intra_threads: 0,
            device_id: 0,
        }
    }
}

impl RuntimeOptions {
    /// CPU only (tests, `bench --cpu`, face models on small machines).
    pub fn cpu() -> Self {
        RuntimeOptions { providers: vec![Provider::Cpu], ..Default::default() }
    }
}

struct Loaded {
    env: Environment,
    path: PathBuf,
    version: String,
}

static ORT: OnceLock<std::result::Result<Loaded, String>> = OnceLock::new();

/// Where `libonnxruntime` is looked for, in order, for `lib` given explicitly or not.
pub fn library_candidates(lib: Option<&Path>) -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = lib {
        c.push(p.to_path_buf());
        // An explicit path is a decision: do not silently use another library.
        return c;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        c.push(PathBuf::from(p));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/puppetcam -> repository root two levels up.
        for anc in exe.ancestors().skip(1).take(4) {
            roots.push(anc.to_path_buf());
        }
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for root in &roots {
        c.extend(venv_libs(&root.join(".venv")));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            c.push(dir.join("libonnxruntime.so"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    c.retain(|p| seen.insert(p.clone()));
    c
}

/// `libonnxruntime.so*` inside a Python venv's onnxruntime wheel.
fn venv_libs(venv: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(lib) = std::fs::read_dir(venv.join("lib")) else { return out };
    for py in lib.flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        let Ok(entries) = std::fs::read_dir(&capi) else { continue };
        let mut libs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
            .collect();
        libs.sort();
        out.extend(libs.into_iter().rev());
    }
    out
}

/// Loads ONNX Runtime once and creates the process-wide environment. Later calls return the same
/// environment (a different `lib` after the first load is ignored, with a warning).
pub fn ensure_ort_loaded(lib: Option<&Path>) -> Result<&'static Environment> {
    let loaded = ORT.get_or_init(|| load(lib));
    match loaded {
        Ok(l) => {
            if let Some(p) = lib {
                if p != l.path {
                    log::warn!("ONNX Runtime already loaded from {}; ignoring {}", l.path.display(), p.display());
                }
            }
            Ok(&l.env)
        }
        Err(e) => Err(Error::Ort(e.clone())),
    }
}

/// The environment, loading ORT from the default places if nothing loaded it yet.
pub fn environment() -> Result<&'static Environment> {
    ensure_ort_loaded(None)
}

/// `(path, version)` of the loaded library, `None` before [`ensure_ort_loaded`] succeeded.
pub fn loaded_library() -> Option<(PathBuf, String)> {
    match ORT.get() {
        Some(Ok(l)) => Some((l.path.clone(), l.version.clone())),
        _ => None,
    }
}

fn load(lib: Option<&Path>) -> std::result::Result<Loaded, String> {
    let candidates = library_candidates(lib);
    let Some(path) = candidates.iter().find(|p| p.is_file()).cloned() else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "ONNX Runtime library not found (tried: {}). Run scripts/setup.sh, set ORT_DYLIB_PATH, or set runtime.ort_library in the config",
            if tried.is_empty() { "nothing".to_string() } else { tried.join(", ") }
        ));
    };
    // Errors from ort's own loader are reported with the path; a panic here would be a bug in ort,
    // but the daemon must not die from a broken library file, so it is caught.
    let builder = std::panic::catch_unwind(|| ort::init_from(&path))
        .map_err(|_| format!("loading {} panicked", path.display()))?
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    let env = builder.with_name("puppetcam").build().map_err(|e| format!("cannot create the ORT environment: {e}"))?;
    let version = version_from_build_info(ort::info()).unwrap_or_else(|| version_from_path(&path));
    log::info!("ONNX Runtime {version} loaded from {}", path.display());
    Ok(Loaded { env, path, version })
}

/// `ORT Build Info: git-branch=rel-1.31.1, ...` -> `1.31.1`.
fn version_from_build_info(info: &str) -> Option<String> {
    let b = info.split("git-branch=").nth(1)?;
    let b = b.split([',', ' ']).next()?;
    let v = b.strip_prefix("rel-").unwrap_or(b);
    v.chars().next().filter(|c| c.is_ascii_digit()).map(|_| v.to_string())
}

/// `libonnxruntime.so.1.31.1` -> `1.31.1`, else "unknown".
fn version_from_path(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split(".so.").nth(1))
        .map(str::to_string)
        .unwrap_or_else(|| "unknown".into())
}

/// Registers one provider on `b`, returning ORT's reason when it fails.
fn register(b: &mut SessionBuilder, p: Provider, o: &RuntimeOptions) -> std::result::Result<(), String> {
    let r = match p {
        Provider::TensorRT => {
            if let Err(e) = std::fs::create_dir_all(&o.trt_cache_dir) {
                return Err(format!("cannot create engine cache {}: {e}", o.trt_cache_dir.display()));
            }
            ort::ep::TensorRT::default()
                .with_device_id(o.device_id)
                .with_fp16(o.fp16)
                .with_engine_cache(true)
                .with_engine_cache_path(o.trt_cache_dir.display())
                .with_timing_cache(true)
                .with_timing_cache_path(o.trt_cache_dir.display())
                .register(b)
        }
        Provider::Cuda => ort::ep::CUDA::default().with_device_id(o.device_id).register(b),
        Provider::Cpu => ort::ep::CPU::default().register(b),
    };
    r.map_err(|e| e.to_string())
}

fn new_builder(o: &RuntimeOptions) -> Result<SessionBuilder> {
    let env = ensure_ort_loaded(o.ort_library.as_deref())?;
    let mut b = Session::builder(env)?;
    if o.intra_threads > 0 {
        b = b.with_intra_threads(o.intra_threads).map_err(|e| Error::Ort(e.to_string()))?;
    }
    Ok(b)
}

/// Builds a session for `model` on the first provider in `o.providers` that works.
///
/// Each attempt registers the provider (plus the later GPU ones, so TensorRT can hand unsupported
/// nodes to CUDA) and commits the session; a registration or commit failure moves on to the next
/// provider and is logged at `error!` with ORT's reason. `purpose` names the model in messages.
pub fn build_session(model: &Path, o: &RuntimeOptions, purpose: &str) -> Result<(Session, EpStatus)> {
    if !model.is_file() {
        return Err(Error::Model { path: model.to_path_buf(), msg: "file not found".into() });
    }
    if o.providers.is_empty() {
        return Err(Error::Config { key: "runtime.providers".into(), msg: "empty provider list".into() });
    }
    let mut reasons: Vec<String> = Vec::new();
    for (i, &p) in o.providers.iter().enumerate() {
        let mut b = new_builder(o)?;
        if let Err(why) = register(&mut b, p, o) {
            log::error!("{purpose}: execution provider {} failed to register: {why}", p.name());
            reasons.push(format!("{}: {why}", p.name()));
            continue;
        }
        for &later in o.providers[i + 1..].iter().filter(|&&q| q != Provider::Cpu) {
            if let Err(why) = register(&mut b, later, o) {
                log::warn!("{purpose}: secondary provider {} not registered: {why}", later.name());
            }
        }
        let status = EpStatus {
            active: p.name().to_string(),
            fallback_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        };
        match b.commit_from_file(model) {
            Ok(session) => {
                if let Some(why) = &status.fallback_reason {
                    if p == Provider::Cpu && !o.allow_cpu_fallback {
                        let msg = format!(
                            "{purpose}: would fall back to CPU, which runtime.allow_cpu_fallback = false forbids ({why})"
                        );
                        log::error!("{msg}");
                        return Err(Error::Ort(msg));
                    }
                    log::error!("{purpose}: running on {} instead of {} ({why})", p.name(), o.providers[0].name());
                } else {
                    log::info!("{purpose}: running on {}", p.name());
                }
                return Ok((session, status));
            }
            Err(e) => {
                let why = e.to_string();
                log::error!("{purpose}: session on {} failed: {why}", p.name());
                // A model ORT cannot parse fails on every provider: report it as a model error.
                if p == Provider::Cpu || looks_like_model_error(&why) {
                    return Err(Error::Model { path: model.to_path_buf(), msg: why });
                }
                reasons.push(format!("{}: {why}", p.name()));
            }
        }
    }
    Err(Error::Ort(format!("{purpose}: no execution provider could run {}: {}", model.display(), reasons.join("; "))))
}

/// ORT errors that mean the file itself is bad, not the provider.
fn looks_like_model_error(why: &str) -> bool {
    ["INVALID_PROTOBUF", "INVALID_GRAPH", "Protobuf parsing failed", "No graph was found", "NO_SUCHFILE"]
        .iter()
        .any(|k| why.contains(k))
}

/// One line of `check`: whether a provider is compiled in and actually builds a session.
#[derive(Clone, Debug)]
pub struct ProviderReport {
    pub provider: Provider,
    pub compiled_in: bool,
    /// `Ok(())` when a session on this provider alone was created for the probe model.
    pub usable: std::result::Result<(), String>,
}

/// Probes each provider by building a session for `probe_model` on it alone (with
/// `allow_cpu_fallback` irrelevant: each probe names exactly one provider).
pub fn available_providers(probe_model: &Path, o: &RuntimeOptions) -> Result<Vec<ProviderReport>> {
    ensure_ort_loaded(o.ort_library.as_deref())?;
    let mut out = Vec::new();
    for p in Provider::ALL {
        let compiled_in = p.compiled_in();
        let usable = (|| -> std::result::Result<(), String> {
            let mut b = new_builder(o).map_err(|e| e.to_string())?;
            register(&mut b, p, o)?;
            b.commit_from_file(probe_model).map(|_| ()).map_err(|e| e.to_string())
        })();
        out.push(ProviderReport { provider: p, compiled_in, usable });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(&p.name().to_lowercase()), Some(p));
        }
        assert_eq!(Provider::parse(" TRT "), Some(Provider::TensorRT));
        assert_eq!(Provider::parse("rocm"), None);
    }

    #[test]
    fn version_parsing() {
        assert_eq!(
            version_from_build_info("ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc").as_deref(),
            Some("1.31.1")
        );
        assert_eq!(version_from_build_info("ORT Build Info: git-branch=main, x"), None);
        assert_eq!(version_from_path(Path::new("/x/libonnxruntime.so.1.31.1")), "1.31.1");
        assert_eq!(version_from_path(Path::new("/x/onnxruntime.dll")), "unknown");
    }

    #[test]
    fn explicit_library_is_the_only_candidate() {
        let c = library_candidates(Some(Path::new("/nonexistent/libonnxruntime.so")));
        assert_eq!(c, vec![PathBuf::from("/nonexistent/libonnxruntime.so")]);
    }
}
