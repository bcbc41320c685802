//! `puppetcam devices` and `puppetcam check`: what the machine offers (cameras, v4l2loopback
//! outputs, ONNX Runtime, execution providers) and whether the models are usable, one line each.
use anyhow::Context;
use puppetcam::ep::{self, Provider, RuntimeOptions};
use puppetcam::face::{FaceModels, FaceTracker};
use puppetcam::generator::Generator;
use puppetcam::pipeline::{plan, DriverSpec, Plan};
use puppetcam::sink::SinkSpec;
use puppetcam::source::SourceSpec;
use std::path::{Path, PathBuf};

/// One `/dev/videoN` node.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoDevice {
    pub path: PathBuf,
    pub name: String,
    /// A v4l2loopback node (a virtual camera we can write to).
    pub loopback: bool,
}

/// Video nodes from sysfs (no device is opened, so listing never disturbs a running camera).
pub fn video_devices() -> Vec<VideoDevice> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/video4linux") else { return out };
    for e in entries.flatten() {
        let node = e.file_name().to_string_lossy().into_owned();
        if !node.starts_with("video") {
            continue;
        }
        let sys = e.path();
        let name = std::fs::read_to_string(sys.join("name")).map(|s| s.trim().to_string()).unwrap_or_default();
        // v4l2loopback devices are virtual (no bus device behind them).
        let real = std::fs::canonicalize(&sys).unwrap_or(sys.clone());
        let loopback = real.to_string_lossy().contains("/virtual/") || name.to_ascii_lowercase().contains("loopback");
        out.push(VideoDevice { path: PathBuf::from("/dev").join(&node), name, loopback });
    }
    out.sort_by_key(|d| {
        let n = d.path.to_string_lossy().trim_start_matches("/dev/video").parse::<u32>().unwrap_or(u32::MAX);
        n
    });
    out
}

pub fn cmd_devices() -> anyhow::Result<u8> {
    let devs = video_devices();
    let (outputs, cams): (Vec<_>, Vec<_>) = devs.iter().partition(|d| d.loopback);
    println!("cameras:");
    if cams.is_empty() {
        println!("  none found (no /dev/video* capture devices); use --source embedded or a video file");
    }
    for d in &cams {
        println!("  {}  {}", d.path.display(), d.name);
    }
    println!("virtual-camera outputs (v4l2loopback):");
    if outputs.is_empty() {
        println!("  none found; load the module: sudo modprobe v4l2loopback exclusive_caps=1 card_label=puppetcam video_nr=10");
    }
    for d in &outputs {
        println!("  {}  {}", d.path.display(), d.name);
    }
    Ok(0)
}

struct Report {
    failed_required: usize,
}

/// The verdict of one `check` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    Ok,
    /// Required and broken: `check` exits 1.
    Fail,
    /// Broken, but nothing needs it.
    Optional,
    /// Not available here, and that is expected (e.g. GPU providers on a CPU-only machine).
    Skip,
}

impl Report {
    fn line(&mut self, ok: bool, required: bool, what: &str, detail: &str) {
        let tag = match (ok, required) {
            (true, _) => Tag::Ok,
            (false, true) => Tag::Fail,
            (false, false) => Tag::Optional,
        };
        self.tagged(tag, what, detail);
    }

    fn tagged(&mut self, tag: Tag, what: &str, detail: &str) {
        let t = match tag {
            Tag::Ok => "OK  ",
            Tag::Fail => "FAIL",
            Tag::Optional => "FAIL (optional)",
            Tag::Skip => "SKIP",
        };
        println!("{t} {what}: {detail}");
        if tag == Tag::Fail {
            self.failed_required += 1;
        }
    }
}

/// The `check` line for one execution provider. `required`: the config cannot run without it
/// (CPU always; the first GPU provider when CPU fallback is forbidden). A GPU provider that cannot
/// work on this machine in auto mode is SKIP with the reason and the hint, not a failure; one
/// that is present but broken says which library is missing.
pub fn provider_line(p: &ep::ProviderReport, mode: ep::Mode, nvidia_device: bool, required: bool) -> (Tag, String) {
    if let Ok(()) = &p.usable {
        return (Tag::Ok, "session created".into());
    }
    let why = p.usable.as_ref().err().map(String::as_str).unwrap_or_default();
    let miss = if p.provider == Provider::Cpu {
        ep::Miss::Failed(why.to_string())
    } else {
        match ep::precheck(p.provider, ep::Mode::Auto, p.compiled_in, nvidia_device) {
            Some(m) => m,
            None => ep::Miss::Failed(why.to_string()),
        }
    };
    let benign = matches!(miss, ep::Miss::NotInBuild | ep::Miss::NoDevice);
    let mut detail = miss.describe();
    if miss == ep::Miss::NotInBuild {
        detail.push_str(&format!("; {}", ep::GPU_HINT));
    }
    let tag = if required {
        Tag::Fail
    } else if benign && mode == ep::Mode::Auto {
        Tag::Skip
    } else {
        Tag::Optional
    };
    (tag, detail)
}

/// Fixture or avatar used to probe providers: any small contract model will do.
fn probe_model(avatar: &Path) -> Option<PathBuf> {
    // A checkout's small fixture is quickest; an installed system probes with the avatar itself.
    // A warp avatar runs no network: probe with the face detector then.
    let env = puppetcam::paths::Env::current();
    env.find_data(puppetcam::paths::FIXTURE_AVATAR)
        .or_else(|| (avatar.is_file() && !puppetcam::avatar::file::path_is_warp_avatar(avatar)).then(|| avatar.to_path_buf()))
        .or_else(|| env.face_model_dirs().into_iter().map(|d| d.join(puppetcam::face::DETECTOR_FILE)).find(|p| p.is_file()))
}

pub fn cmd_check(config: Option<&PathBuf>, avatar: Option<&Path>) -> anyhow::Result<u8> {
    let plan = match config {
        Some(p) => plan::from_config_file(p).with_context(|| format!("check: config {}", p.display()))?,
        None => Plan::demo(),
    };
    let avatar = avatar.map(Path::to_path_buf).unwrap_or_else(|| plan.avatar.clone());
    let mut r = Report { failed_required: 0 };
    let rt = plan.runtime.clone();

    // ONNX Runtime library.
    match ep::ensure_ort_loaded(rt.ort_library.as_deref()) {
        Ok(_) => {
            let (path, version) = ep::loaded_library().unwrap_or_default();
            r.line(true, true, "ONNX Runtime", &format!("{version} from {}", path.display()));
        }
        Err(e) => {
            r.line(false, true, "ONNX Runtime", &e.to_string());
            println!("(nothing else can be checked without ONNX Runtime)");
            return Ok(1);
        }
    }

    // GPU and execution providers: each one alone, on a small contract model.
    let nvidia = ep::nvidia_device_present();
    let mode = rt.mode();
    match (nvidia, nvidia_name()) {
        (true, name) => r.tagged(Tag::Ok, "NVIDIA GPU", &name.unwrap_or_else(|| "device nodes present".into())),
        (false, _) => r.tagged(Tag::Skip, "NVIDIA GPU", "none found (no /proc/driver/nvidia, no /dev/nvidia*)"),
    }
    let wanted_gpu = rt.providers.iter().any(|p| *p != Provider::Cpu);
    match probe_model(&avatar) {
        Some(probe) => match ep::available_providers(&probe, &rt) {
            Ok(reports) => {
                for p in reports {
                    // CPU is what everything falls back to; GPUs are required only when the
                    // config forbids falling back.
                    let required = p.provider == Provider::Cpu || (!rt.allow_cpu_fallback && wanted_gpu && rt.providers.first() == Some(&p.provider));
                    let (tag, detail) = provider_line(&p, mode, nvidia, required);
                    r.tagged(tag, &format!("execution provider {}", p.provider.name()), &detail);
                }
            }
            Err(e) => r.line(false, true, "execution providers", &e.to_string()),
        },
        None => r.line(false, true, "execution providers", "no model to probe with (no fixture and no avatar file)"),
    }

    // Devices the plan needs, and what exists.
    let devs = video_devices();
    let cams: Vec<_> = devs.iter().filter(|d| !d.loopback).collect();
    let outs: Vec<_> = devs.iter().filter(|d| d.loopback).collect();
    let list = |v: &[&VideoDevice]| v.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>().join(", ");
    match &plan.driver {
        DriverSpec::Source(SourceSpec::Camera { device, .. }) => {
            let ok = device.chars().all(|c| c.is_ascii_digit()) && !cams.is_empty() || Path::new(device).exists();
            r.line(ok, true, "camera", &if ok { device.clone() } else { format!("{device} not found (cameras: {})", or_none(&list(&cams))) });
        }
        other => r.line(!cams.is_empty(), false, "cameras", &if cams.is_empty() { format!("none found (driver: {})", driver_name(other)) } else { list(&cams) }),
    }
    match &plan.sink {
        SinkSpec::V4l2 { device, .. } => {
            let ok = device.exists();
            r.line(ok, true, "virtual camera", &if ok { device.display().to_string() } else { format!("{} missing (v4l2loopback outputs: {})", device.display(), or_none(&list(&outs))) });
        }
        _ => r.line(!outs.is_empty(), false, "v4l2loopback outputs", &or_none(&list(&outs))),
    }

    // Face models (needed by every camera/video driver).
    let face_required = matches!(plan.driver, DriverSpec::Source(_));
    match FaceModels::locate() {
        // The live set-up's tracker: loads (and shape-checks) the iris model the run will use.
        Ok(m) => match FaceTracker::new(&m, plan.tracker) {
            Ok(t) => {
                let iris = match (t.has_iris(), t.distilled_iris_trusted()) {
                    (false, _) => ", no iris model",
                    (true, Some(_)) if m.iris.is_some() => ", distilled iris model checked by MediaPipe's",
                    (true, Some(_)) => ", distilled iris model",
                    (true, None) => ", MediaPipe's iris model",
                };
                r.line(true, face_required, "face models", &format!("{} (+ landmarks{iris})", m.detector.display()))
            }
            Err(e) => r.line(false, face_required, "face models", &e.to_string()),
        },
        Err(e) => r.line(false, face_required, "face models", &e.to_string()),
    }

    // The avatar. A warp avatar: the file's full validation and the renderer built at the
    // configured size. A generator: full contract validation and one inference, on CPU.
    let cpu = RuntimeOptions { providers: vec![Provider::Cpu], ..rt.clone() };
    if puppetcam::avatar::file::path_is_warp_avatar(&avatar) {
        let made = puppetcam::avatar::WarpAvatar::load(&avatar)
            .and_then(|a| puppetcam::avatar::WarpRenderer::new(&a, plan.width, plan.height).map(|_| a))
            .and_then(|a| {
                // The refiner: one dry run on the CPU checks its ONNX contract.
                if let Some(r) = &a.refiner {
                    puppetcam::refine::Refiner::from_blob(r, &cpu)
                        .map_err(|e| puppetcam::Error::Invalid(format!("{}: its refiner does not load: {e}", avatar.display())))?;
                }
                Ok(a)
            });
        match made {
            Ok(a) => r.line(
                true,
                true,
                "avatar",
                &format!(
                    "{}: warp avatar '{}', {} shot(s), portrait {}x{}{}",
                    avatar.display(),
                    a.name,
                    a.shots.len(),
                    a.shots[0].image.width,
                    a.shots[0].image.height,
                    a.refiner.as_ref().map(|r| format!(", refiner ({})", r.info)).unwrap_or_else(|| ", no refiner".into())
                ),
            ),
            Err(e) => r.line(false, true, "avatar", &e.to_string()),
        }
    } else {
    match Generator::open(&avatar, &cpu) {
        Ok(g) => {
            let m = g.meta();
            let stand_in = avatar.ends_with("tests/fixtures/generator_ok.onnx");
            r.line(
                true,
                true,
                "avatar",
                &format!(
                    "{}: '{}' {}x{} {}, portrait {}x{}{}",
                    avatar.display(),
                    m.name,
                    m.resolution,
                    m.resolution,
                    m.precision,
                    m.portrait.width,
                    m.portrait.height,
                    if stand_in { " (test fixture standing in for onnx/default_avatar.onnx)" } else { "" }
                ),
            );
        }
        Err(e) => r.line(false, true, "avatar", &e.to_string()),
    }
    }

    if r.failed_required > 0 {
        println!("{} required check(s) failed", r.failed_required);
        Ok(1)
    } else {
        println!("all required checks passed");
        Ok(0)
    }
}

/// The GPU's model name from the driver's /proc entry, when there is one.
fn nvidia_name() -> Option<String> {
    let gpus = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
    let info = gpus.flatten().next()?.path().join("information");
    let text = std::fs::read_to_string(info).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Model:")).map(|m| m.trim().to_string())
}

fn or_none(s: &str) -> String {
    if s.is_empty() { "none found".into() } else { s.into() }
}

fn driver_name(d: &DriverSpec) -> &'static str {
    match d {
        DriverSpec::Embedded { .. } => "embedded animation",
        DriverSpec::Source(SourceSpec::File { .. }) => "video file",
        DriverSpec::Source(SourceSpec::Image { .. }) => "image",
        DriverSpec::Source(SourceSpec::Synthetic { .. }) => "cartoon",
        DriverSpec::Source(SourceSpec::Camera { .. }) => "camera",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ep::{Mode, ProviderReport};

    fn report(provider: Provider, compiled_in: bool, usable: Result<(), &str>) -> ProviderReport {
        ProviderReport { provider, compiled_in, usable: usable.map_err(str::to_string) }
    }

    #[test]
    fn cpu_only_machine_skips_gpu_providers_with_a_hint() {
        let p = report(Provider::Cuda, false, Err("CUDA execution provider is not enabled in this build"));
        let (tag, detail) = provider_line(&p, Mode::Auto, false, false);
        assert_eq!(tag, Tag::Skip);
        assert!(detail.starts_with("not in this ONNX Runtime build (CPU-only); for an NVIDIA GPU install onnxruntime-gpu"), "{detail}");
        // GPU build, no device.
        let (tag, detail) = provider_line(&report(Provider::TensorRT, true, Err("x")), Mode::Auto, false, false);
        assert_eq!((tag, detail.as_str()), (Tag::Skip, "no NVIDIA GPU found"));
    }

    #[test]
    fn broken_gpu_provider_names_the_missing_library() {
        let why = "Failed to load library libonnxruntime_providers_cuda.so with error: libcudnn.so.9: cannot open shared object file: No such file or directory";
        let (tag, detail) = provider_line(&report(Provider::Cuda, true, Err(why)), Mode::Auto, true, false);
        assert_eq!(tag, Tag::Optional);
        assert!(detail.starts_with("missing libcudnn.so.9 (cuDNN 9 for CUDA 13)"), "{detail}");
    }

    #[test]
    fn required_or_explicit_gpu_provider_is_not_skipped() {
        let p = report(Provider::Cuda, false, Err("not enabled"));
        assert_eq!(provider_line(&p, Mode::Auto, false, true).0, Tag::Fail);
        assert_eq!(provider_line(&p, Mode::Explicit, false, false).0, Tag::Optional);
        assert_eq!(provider_line(&report(Provider::Cpu, true, Err("boom")), Mode::Auto, false, true).0, Tag::Fail);
        assert_eq!(provider_line(&report(Provider::Cpu, true, Ok(())), Mode::Auto, false, true), (Tag::Ok, "session created".into()));
    }
}
