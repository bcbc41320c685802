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
    /// Explicit `libonnxruntime` path (config `runtime.ort_library`); else the lookup of
    /// `crate::paths::Env::ort_library_candidates` (`ORT_DYLIB_PATH`, installed, venv).
    pub ort_library: Option<PathBuf>,
    /// Providers in order of preference; the first that builds a session wins.
    pub providers: Vec<Provider>,
    /// TensorRT engine cache: building an engine takes minutes, so it is cached on disk
    /// (default `crate::paths::Env::trt_cache_dir`: systemd's CacheDirectory= or the XDG cache).
    pub trt_cache_dir: PathBuf,
    /// fp16 kernels on TensorRT (the generator tolerates it; halves latency on most GPUs).
    pub fp16: bool,
    /// When false, ending up on CPU although a GPU provider was asked for is an error.
    pub allow_cpu_fallback: bool,
    /// ORT intra-op threads for this session; 0 = ORT's default (all cores).
    pub intra_threads: usize,
    /// Let idle intra-op threads spin (ORT's default). Off for the face models' extra thread:
    /// a spinning thread would take the core the generator is working on.
    pub intra_spinning: bool,
    pub device_id: i32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            ort_library: None,
            providers: Provider::ALL.to_vec(),
            trt_cache_dir: crate::paths::Env::current().trt_cache_dir(),
            fp16: true,
            allow_cpu_fallback: true,
            intra_threads: 0,
            intra_spinning: true,
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

/// Where `libonnxruntime` is looked for, in order, for `lib` given explicitly or not
/// (`crate::paths` has the order and the layouts it supports).
pub fn library_candidates(lib: Option<&Path>) -> Vec<PathBuf> {
    crate::paths::Env::current().ort_library_candidates(lib)
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
            "ONNX Runtime library not found (tried: {}). Run scripts/setup.sh, install the puppetcam package, set ORT_DYLIB_PATH, or set runtime.ort_library in the config",
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
        // The engine cache is created only for a runtime that has TensorRT, so CPU-only
        // machines get no empty cache directories.
        Provider::TensorRT if !p.compiled_in() => Err(ort::Error::new("TensorRT execution provider is not enabled in this build")),
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
    if !o.intra_spinning {
        b = b.with_intra_op_spinning(false).map_err(|e| Error::Ort(e.to_string()))?;
    }
    Ok(b)
}

/// Builds a session for `model` on the first provider in `o.providers` that works.
///
/// Each attempt registers the provider (plus the later GPU ones, so TensorRT can hand unsupported
/// nodes to CUDA) and commits the session; a failure moves on to the next provider. In
/// [`Mode::Auto`] a GPU provider that cannot work on this machine (CPU-only ONNX Runtime, no
/// NVIDIA device) is not tried at all. The outcome is logged as one line whose level
/// [`verdict`] decides; `purpose` names the model in messages.
pub fn build_session(model: &Path, o: &RuntimeOptions, purpose: &str) -> Result<(Session, EpStatus)> {
    build_session_from(ModelBytes::File(model), o, purpose)
}

/// Where a model comes from: a file, or bytes in memory (a refiner inside an avatar file; the
/// `&str` names it in messages).
#[derive(Clone, Copy, Debug)]
pub enum ModelBytes<'a> {
    File(&'a Path),
    Memory(&'a [u8], &'a str),
}

/// [`build_session`] for a model in a file or in memory.
pub fn build_session_from(src: ModelBytes<'_>, o: &RuntimeOptions, purpose: &str) -> Result<(Session, EpStatus)> {
    let named;
    let model: &Path = match src {
        ModelBytes::File(p) => p,
        ModelBytes::Memory(_, name) => {
            named = std::path::PathBuf::from(name);
            &named
        }
    };
    if let ModelBytes::File(p) = src {
        if !p.is_file() {
            return Err(Error::Model { path: p.to_path_buf(), msg: "file not found".into() });
        }
    }
    if o.providers.is_empty() {
        return Err(Error::Config { key: "runtime.providers".into(), msg: "empty provider list".into() });
    }
    ensure_ort_loaded(o.ort_library.as_deref())?;
    let mode = o.mode();
    let gpu = o.providers.iter().any(|p| *p != Provider::Cpu) && nvidia_device_present();
    let pre = |p: Provider| precheck(p, mode, p.compiled_in(), gpu);
    let mut misses: Vec<(Provider, Miss)> = Vec::new();
    for (i, &p) in o.providers.iter().enumerate() {
        if let Some(m) = pre(p) {
            log::debug!("{purpose}: not trying {}: {}", p.name(), m.describe());
            misses.push((p, m));
            continue;
        }
        let mut b = new_builder(o)?;
        if let Err(why) = register(&mut b, p, o) {
            log::debug!("{purpose}: execution provider {} failed to register: {why}", p.name());
            misses.push((p, Miss::Failed(why)));
            continue;
        }
        for &later in o.providers[i + 1..].iter().filter(|&&q| q != Provider::Cpu && pre(q).is_none()) {
            if let Err(why) = register(&mut b, later, o) {
                log::warn!("{purpose}: secondary provider {} not registered: {why}", later.name());
            }
        }
        let committed = match src {
            ModelBytes::File(p) => b.commit_from_file(p),
            ModelBytes::Memory(bytes, _) => b.commit_from_memory(bytes),
        };
        match committed {
            Ok(session) => {
                let v = verdict(purpose, mode, o.allow_cpu_fallback, o.providers[0], p, &misses);
                log::log!(v.level, "{}", v.message);
                if v.fatal {
                    return Err(Error::Ort(v.message));
                }
                return Ok((session, EpStatus { active: p.name().to_string(), fallback_reason: v.fallback_reason }));
            }
            Err(e) => {
                let why = e.to_string();
                // A model ORT cannot parse fails on every provider: report it as a model error.
                if p == Provider::Cpu || looks_like_model_error(&why) {
                    log::error!("{purpose}: session on {} failed: {why}", p.name());
                    return Err(Error::Model { path: model.to_path_buf(), msg: why });
                }
                log::debug!("{purpose}: session on {} failed: {why}", p.name());
                misses.push((p, Miss::Failed(why)));
            }
        }
    }
    let reasons = misses.iter().map(|(p, m)| format!("{}: {}", p.name(), m.describe())).collect::<Vec<_>>().join("; ");
    let msg = format!("{purpose}: no execution provider could run {}: {reasons}", model.display());
    log::error!("{msg}");
    Err(Error::Ort(msg))
}

/// How the provider list came about. The default list (TensorRT, CUDA, CPU) with CPU fallback
/// allowed is `Auto`: use a GPU when the machine has one, CPU is a normal outcome. Any other list,
/// or `allow_cpu_fallback = false`, asks for providers on purpose: not getting them is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Explicit,
}

impl RuntimeOptions {
    pub fn mode(&self) -> Mode {
        if self.providers == Provider::ALL && self.allow_cpu_fallback {
            Mode::Auto
        } else {
            Mode::Explicit
        }
    }
}

/// Why a provider was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    /// The loaded ONNX Runtime has no such provider (the CPU-only build).
    NotInBuild,
    /// No NVIDIA device on this machine.
    NoDevice,
    /// Present, but registering it or creating the session failed: ORT's reason.
    Failed(String),
}

/// What to tell a user who wants an NVIDIA GPU used.
pub const GPU_HINT: &str = "for an NVIDIA GPU install onnxruntime-gpu==1.31.1 (scripts/setup.sh does when nvidia-smi works; README \"GPU\")";

impl Miss {
    pub fn describe(&self) -> String {
        match self {
            Miss::NotInBuild => "not in this ONNX Runtime build (CPU-only)".into(),
            Miss::NoDevice => "no NVIDIA GPU found".into(),
            Miss::Failed(why) => match missing_library(why) {
                Some(lib) => format!("missing {lib} ({}): {}", library_hint(lib), first_line(why)),
                None => first_line(why).to_string(),
            },
        }
    }

    /// Expected on a machine without a usable NVIDIA set-up, as opposed to a broken one.
    fn benign(&self) -> bool {
        matches!(self, Miss::NotInBuild | Miss::NoDevice)
    }
}

/// Before trying `p`: a GPU provider the loaded runtime lacks is never tried (ORT would only say
/// "not enabled in this build"); in `Auto` mode neither is one without an NVIDIA device. An
/// explicitly requested provider is tried on any device: the user asked, and a device check can
/// miss exotic set-ups, so ORT's own answer is the one reported.
pub fn precheck(p: Provider, mode: Mode, compiled_in: bool, nvidia_device: bool) -> Option<Miss> {
    match p {
        Provider::Cpu => None,
        _ if !compiled_in => Some(Miss::NotInBuild),
        _ if mode == Mode::Auto && !nvidia_device => Some(Miss::NoDevice),
        _ => None,
    }
}

/// The one log line (and status) for a session that ended up on `active` after `misses`.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub level: log::Level,
    pub message: String,
    /// The session must not be used (CPU fallback forbidden).
    pub fatal: bool,
    /// Shown in the status page and /metrics: a provider the user could expect did not work.
    pub fallback_reason: Option<String>,
}

/// Decides how loudly to report where a session runs. In `Auto` mode, a machine that simply
/// has no GPU path (CPU-only runtime or no NVIDIA device) gets one INFO line with a hint; a GPU
/// provider that is present but fails is an ERROR with the reason, also in the status. Providers
/// asked for explicitly that do not work are an ERROR, and landing on CPU with
/// `allow_cpu_fallback = false` is fatal.
pub fn verdict(purpose: &str, mode: Mode, allow_cpu_fallback: bool, first: Provider, active: Provider, misses: &[(Provider, Miss)]) -> Verdict {
    if misses.is_empty() {
        return Verdict { level: log::Level::Info, message: format!("{purpose}: running on {}", active.name()), fatal: false, fallback_reason: None };
    }
    if mode == Mode::Auto && misses.iter().all(|(_, m)| m.benign()) {
        // The hint only helps where the runtime lacks the GPU providers; with the GPU build
        // already there, the missing piece is the device.
        let message = if misses.iter().all(|(_, m)| *m == Miss::NotInBuild) {
            format!("{purpose}: CPU-only ONNX Runtime, running on {}; {GPU_HINT}", active.name())
        } else {
            format!("{purpose}: no NVIDIA GPU, running on {}", active.name())
        };
        return Verdict {
            level: log::Level::Info,
            message,
            fatal: false,
            fallback_reason: None,
        };
    }
    let reasons = misses.iter().map(|(p, m)| format!("{}: {}", p.name(), m.describe())).collect::<Vec<_>>().join("; ");
    let hint = if misses.iter().any(|(_, m)| *m == Miss::NotInBuild) { format!("; {GPU_HINT}") } else { String::new() };
    if active == Provider::Cpu && first != Provider::Cpu && !allow_cpu_fallback {
        return Verdict {
            level: log::Level::Error,
            message: format!("{purpose}: would fall back to CPU, which runtime.allow_cpu_fallback = false forbids ({reasons}){hint}"),
            fatal: true,
            fallback_reason: Some(reasons),
        };
    }
    Verdict {
        level: log::Level::Error,
        message: format!("{purpose}: running on {} instead of {} ({reasons}){hint}", active.name(), first.name()),
        fatal: false,
        fallback_reason: Some(reasons),
    }
}

/// Whether this machine has an NVIDIA device: the driver's /proc entry or its device nodes
/// (`/dev/dxg` is the GPU of WSL2).
pub fn nvidia_device_present() -> bool {
    ["/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"].iter().any(|p| Path::new(p).exists())
}

/// The shared library a loader error says is missing (`libcublasLt.so.13: cannot open shared
/// object file`), as a file name.
pub fn missing_library(why: &str) -> Option<&str> {
    let before = &why[..why.find(": cannot open shared object file")?];
    let token = before.rsplit([' ', '\'', '"', '\t', '\n']).next()?;
    let name = token.rsplit('/').next()?;
    name.starts_with("lib").then_some(name)
}

/// Which NVIDIA component ships a library ONNX Runtime's GPU providers need.
pub fn library_hint(lib: &str) -> &'static str {
    let l = lib.to_ascii_lowercase();
    if l.starts_with("libcuda.so") {
        "the NVIDIA driver"
    } else if l.starts_with("libcudnn") {
        "cuDNN 9 for CUDA 13"
    } else if l.starts_with("libnvinfer") || l.starts_with("libnvonnxparser") {
        "TensorRT 10"
    } else if ["libcudart", "libcublas", "libcufft", "libcurand", "libnvrtc", "libnvjitlink"].iter().any(|p| l.starts_with(p)) {
        "the CUDA 13 runtime libraries"
    } else if l.starts_with("libonnxruntime_providers") {
        "the provider plug-in next to libonnxruntime: an incomplete onnxruntime-gpu install"
    } else {
        "a library the provider depends on"
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
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

    fn opts(providers: &[Provider], allow_cpu_fallback: bool) -> RuntimeOptions {
        RuntimeOptions { providers: providers.to_vec(), allow_cpu_fallback, ..RuntimeOptions::default() }
    }

    const GPUS: [Provider; 2] = [Provider::TensorRT, Provider::Cuda];

    /// The misses `build_session` collects for `o` on a machine described by the two flags when
    /// every GPU provider it tries fails with `fail`.
    fn misses(o: &RuntimeOptions, compiled_in: bool, device: bool, fail: &str) -> Vec<(Provider, Miss)> {
        o.providers
            .iter()
            .filter(|p| **p != Provider::Cpu)
            .map(|&p| (p, precheck(p, o.mode(), compiled_in, device).unwrap_or_else(|| Miss::Failed(fail.into()))))
            .collect()
    }

    #[test]
    fn mode_is_auto_only_for_the_default_list_with_fallback() {
        assert_eq!(RuntimeOptions::default().mode(), Mode::Auto);
        assert_eq!(opts(&Provider::ALL, false).mode(), Mode::Explicit);
        assert_eq!(opts(&[Provider::Cuda, Provider::Cpu], true).mode(), Mode::Explicit);
        assert_eq!(opts(&[Provider::Cpu], true).mode(), Mode::Explicit);
    }

    #[test]
    fn cpu_only_runtime_in_auto_mode_is_one_info_line_with_a_hint() {
        let o = RuntimeOptions::default();
        let m = misses(&o, false, true, "unused");
        assert_eq!(m, vec![(Provider::TensorRT, Miss::NotInBuild), (Provider::Cuda, Miss::NotInBuild)]);
        let v = verdict("generator x", o.mode(), o.allow_cpu_fallback, Provider::TensorRT, Provider::Cpu, &m);
        assert_eq!(v.level, log::Level::Info);
        assert!(!v.fatal && v.fallback_reason.is_none(), "{v:?}");
        assert!(v.message.starts_with("generator x: CPU-only ONNX Runtime, running on CPU"), "{}", v.message);
        assert!(v.message.contains("onnxruntime-gpu==1.31.1"), "{}", v.message);
    }

    #[test]
    fn gpu_runtime_without_nvidia_device_in_auto_mode_is_info_and_not_tried() {
        let o = RuntimeOptions::default();
        let m = misses(&o, true, false, "must not be tried");
        assert_eq!(m, vec![(Provider::TensorRT, Miss::NoDevice), (Provider::Cuda, Miss::NoDevice)]);
        let v = verdict("g", o.mode(), true, Provider::TensorRT, Provider::Cpu, &m);
        assert_eq!(v.level, log::Level::Info);
        assert_eq!(v.message, "g: no NVIDIA GPU, running on CPU");
        assert!(v.fallback_reason.is_none());
    }

    #[test]
    fn gpu_provider_present_but_failing_stays_a_loud_error_in_status() {
        let o = RuntimeOptions::default();
        let why = "Failed to load library libonnxruntime_providers_tensorrt.so with error: libnvinfer.so.10: cannot open shared object file: No such file or directory";
        let m = misses(&o, true, true, why);
        assert!(m.iter().all(|(_, x)| matches!(x, Miss::Failed(_))));
        let v = verdict("g", o.mode(), true, Provider::TensorRT, Provider::Cpu, &m);
        assert_eq!(v.level, log::Level::Error);
        assert!(!v.fatal);
        assert!(v.message.starts_with("g: running on CPU instead of TensorRT (TensorRT: missing libnvinfer.so.10 (TensorRT 10)"), "{}", v.message);
        let reason = v.fallback_reason.expect("shown in status and /metrics");
        assert!(reason.contains("CUDA: missing libnvinfer.so.10"), "{reason}");
        // TensorRT broken, CUDA fine: still an error naming both.
        let v = verdict("g", o.mode(), true, Provider::TensorRT, Provider::Cuda, &m[..1]);
        assert_eq!(v.level, log::Level::Error);
        assert!(v.message.starts_with("g: running on CUDA instead of TensorRT"), "{}", v.message);
    }

    #[test]
    fn explicit_gpu_request_that_fails_is_an_error_and_fatal_without_cpu_fallback() {
        for first in GPUS {
            for (compiled_in, device) in [(false, true), (true, false), (true, true)] {
                // With CPU fallback allowed: an error, the run goes on on CPU.
                let o = opts(&[first, Provider::Cpu], true);
                let m = misses(&o, compiled_in, device, "CUDA failure 100: no CUDA-capable device is detected");
                // Explicitly asked for: tried even when no device was seen.
                assert_eq!(m[0].1 == Miss::NotInBuild, !compiled_in);
                let v = verdict("g", o.mode(), true, first, Provider::Cpu, &m);
                assert_eq!((v.level, v.fatal), (log::Level::Error, false), "{v:?}");
                assert!(v.message.contains(&format!("instead of {}", first.name())), "{}", v.message);
                assert!(v.fallback_reason.is_some());
                assert_eq!(v.message.contains("onnxruntime-gpu"), !compiled_in, "{}", v.message);
                // Without: fatal.
                let o = opts(&[first, Provider::Cpu], false);
                let v = verdict("g", o.mode(), false, first, Provider::Cpu, &misses(&o, compiled_in, device, "boom"));
                assert_eq!((v.level, v.fatal), (log::Level::Error, true), "{v:?}");
                assert!(v.message.contains("allow_cpu_fallback = false forbids"), "{}", v.message);
            }
        }
        // The default list with fallback forbidden is explicit too: a CPU-only runtime is fatal.
        let o = opts(&Provider::ALL, false);
        let v = verdict("g", o.mode(), false, Provider::TensorRT, Provider::Cpu, &misses(&o, false, false, ""));
        assert!(v.fatal && v.level == log::Level::Error, "{v:?}");
        // Landing on a GPU (TensorRT missing, CUDA working) is not a CPU fallback: not fatal.
        let o = opts(&[Provider::TensorRT, Provider::Cuda], false);
        let v = verdict("g", o.mode(), false, Provider::TensorRT, Provider::Cuda, &[(Provider::TensorRT, Miss::Failed("x".into()))]);
        assert_eq!((v.level, v.fatal), (log::Level::Error, false));
    }

    #[test]
    fn nothing_missed_is_plain_info() {
        for (o, active) in [(opts(&[Provider::Cpu], false), Provider::Cpu), (RuntimeOptions::default(), Provider::TensorRT)] {
            let v = verdict("g", o.mode(), o.allow_cpu_fallback, o.providers[0], active, &[]);
            assert_eq!(v, Verdict { level: log::Level::Info, message: format!("g: running on {}", active.name()), fatal: false, fallback_reason: None });
        }
    }

    #[test]
    fn missing_libraries_are_named_with_their_component() {
        let cases = [
            // Verbatim from onnxruntime-gpu 1.31.1 on a machine without CUDA 13 installed.
            ("/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /v/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory", "libcublasLt.so.13", "CUDA 13 runtime"),
            ("Failed to load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory", "libcublasLt.so.13", "CUDA 13"),
            ("libcudnn.so.9: cannot open shared object file: No such file or directory", "libcudnn.so.9", "cuDNN 9"),
            ("Failed to load library /x/capi/libonnxruntime_providers_cuda.so with error: /x/capi/libonnxruntime_providers_cuda.so: cannot open shared object file", "libonnxruntime_providers_cuda.so", "incomplete"),
            ("error: libcuda.so.1: cannot open shared object file", "libcuda.so.1", "driver"),
        ];
        for (why, lib, hint) in cases {
            assert_eq!(missing_library(why), Some(lib), "{why}");
            assert!(library_hint(lib).contains(hint), "{lib}: {}", library_hint(lib));
            assert!(Miss::Failed(why.into()).describe().starts_with(&format!("missing {lib} (")));
        }
        assert_eq!(missing_library("CUDA failure 100: no CUDA-capable device is detected"), None);
    }

    /// On the CPU-only runtime CI has: the default options give CPU quietly (no fallback reason
    /// in the status), explicit CUDA without fallback fails.
    #[test]
    fn cpu_runtime_end_to_end() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generator_ok.onnx");
        if ensure_ort_loaded(None).is_err() || Provider::Cuda.compiled_in() {
            eprintln!("skipped: needs the CPU-only ONNX Runtime");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI has the CPU-only ONNX Runtime");
            return;
        }
        let (_, st) = build_session(&model, &RuntimeOptions::default(), "probe").unwrap();
        assert_eq!(st, EpStatus { active: "CPU".into(), fallback_reason: None });
        let (_, st) = build_session(&model, &opts(&[Provider::Cuda, Provider::Cpu], true), "probe").unwrap();
        assert_eq!(st.active, "CPU");
        assert!(st.fallback_reason.as_deref().is_some_and(|r| r.contains("CUDA: not in this ONNX Runtime build")), "{st:?}");
        let e = build_session(&model, &opts(&[Provider::Cuda, Provider::Cpu], false), "probe").unwrap_err();
        assert!(e.to_string().contains("allow_cpu_fallback = false forbids"), "{e}");

        // Neither sessions nor `check`'s probes leave a TensorRT cache directory behind here.
        let dir = tempfile::tempdir().unwrap();
        let o = RuntimeOptions { trt_cache_dir: dir.path().join("trt"), ..opts(&[Provider::TensorRT, Provider::Cpu], true) };
        build_session(&model, &o, "probe").unwrap();
        let reports = available_providers(&model, &o).unwrap();
        assert!(reports.iter().any(|r| r.provider == Provider::TensorRT && r.usable.is_err()));
        assert!(!dir.path().join("trt").exists());
    }
}
