//! Command-line interface: clap definitions and the command implementations behind
//! `puppetcam run | demo | devices | check | bench | landmarks | calibrate | install-service`.
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use puppetcam::calibrate::CalibrateArgs;
use puppetcam::core::colour::PixFormat;
use puppetcam::ep::Provider;
use puppetcam::error::Error;
use puppetcam::face::extract::ExtractArgs;
use puppetcam::pipeline::{DriverSpec, Pipeline, Plan};
use puppetcam::config::{config_candidates, locate_config, Config, FoundConfig};
use puppetcam::service::reload;
use puppetcam::service::{LoopExit, Service, ServiceOptions};
use puppetcam::sink::SinkSpec;
use puppetcam::source::SourceSpec;
use puppetcam::stats::PipelineStats;
use std::path::PathBuf;
use std::sync::Arc;

use crate::{bench, check};

#[derive(Debug, Parser)]
#[command(name = "puppetcam", version, about = "Animate a portrait from your webcam and expose it as a virtual camera")]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: driver -> face -> generator -> output (flags override the config).
    Run(RunArgs),
    /// Animate the default avatar with the embedded driver into out/demo.y4m (no camera, no GPU).
    Demo(DemoArgs),
    /// List cameras and v4l2loopback outputs.
    Devices,
    /// Check ONNX Runtime, execution providers, devices and models; exit 1 if something required fails.
    Check(CheckArgs),
    /// Measure per-stage latency of the real pipeline with a null output.
    Bench(BenchArgs),
    /// Write face landmarks of a video or image as JSON lines (used by training).
    Landmarks(ExtractArgs),
    /// Record your neutral face into a calibration profile.
    Calibrate(CalibrateArgs),
    /// Write the systemd unit that runs `puppetcam run` (user unit unless --system) and print
    /// the commands that enable it.
    InstallService(InstallServiceArgs),
    /// Make and inspect avatars.
    #[command(subcommand)]
    Avatar(AvatarCommand),
    /// Control the running daemon: avatars, pause, neutral now, status (docs/api.md).
    Ctl(crate::ctl::CtlArgs),
    /// Cut the refiner's training crops from a talking-head clip (used by training).
    #[command(hide = true)]
    RefinerData(puppetcam::refine::data::RefinerDataArgs),
}

#[derive(Debug, Subcommand)]
pub enum AvatarCommand {
    /// Make a warp avatar from a portrait (the first image, the one that is animated) and
    /// optionally more shots of the same face (K = 1..32; e.g. an open-mouth shot gives real
    /// teeth). Takes seconds.
    Create(AvatarCreateArgs),
    /// Add the measured depth of each shot's face mesh to an avatar made before version 3 (the
    /// head then turns in 3-D on the portrait's own shape, not a template's). Re-detects the
    /// landmarks on the stored images and refuses if they no longer match the stored mesh.
    Depth(AvatarDepthArgs),
}

#[derive(Debug, Args)]
pub struct AvatarDepthArgs {
    /// Avatar file (`.pcav`) to read.
    pub avatar: PathBuf,
    /// Where to write the upgraded avatar (default: in place, atomically).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AvatarCreateArgs {
    /// Images: the portrait first, then more shots of the same face.
    #[arg(required = true, num_args = 1..=32)]
    pub images: Vec<PathBuf>,
    /// Avatar file to write (`.pcav`).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace `--out` if it exists (without it, an existing file is refused, like `calibrate`).
    #[arg(long)]
    pub force: bool,
    /// Name shown in the status page (default: the portrait's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Fine-tuning steps of the learned refiner on these shots (paper section 3.3; needs the
    /// training extras). 0: the meta-learned refiner feed-forward, in seconds.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// No learned refiner: a warp-only avatar (deterministic eye and mouth fallbacks).
    #[arg(long)]
    pub no_refiner: bool,
    /// Export the fine-tuned refiner in fp16 (for GPUs; on a CPU fp32 is as fast).
    #[arg(long)]
    pub fp16: bool,
}

#[derive(Debug, Args)]
pub struct InstallServiceArgs {
    /// System unit (/etc/systemd/system, dedicated user) instead of the user unit.
    #[arg(long)]
    pub system: bool,
    /// Print the unit and the commands, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Directory to write the unit into (default: the standard one for the variant).
    #[arg(long)]
    pub unit_dir: Option<PathBuf>,
    /// Arguments for `puppetcam run` in the unit, after `--` (e.g. `-- --config /etc/puppetcam.toml`).
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

/// Flags shared by commands that build a pipeline.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Driver: `embedded` (animated face, no camera), `cartoon` (drawn face through the face
    /// tracker), a camera (`/dev/video0`, `camera:0`), a video file (`file:F`, `loop:F` or a path),
    /// or a still image (`image:F`).
    #[arg(long)]
    pub source: Option<String>,
    /// Output: `/dev/videoN` (v4l2loopback), a `.y4m` file (`-` for stdout), `png:DIR`, `null`.
    #[arg(long)]
    pub output: Option<String>,
    /// Avatar file: a warp avatar (`.pcav`, from `puppetcam avatar create`) or a generator ONNX
    /// (docs/generator-contract.md).
    #[arg(long)]
    pub avatar: Option<PathBuf>,
    /// Output size, e.g. 1280x720.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Output frames per second.
    #[arg(long)]
    pub fps: Option<u32>,
    /// Run the generator on CPU only (no TensorRT/CUDA attempts).
    #[arg(long)]
    pub cpu: bool,
    /// Animate this portrait image (repeat for more shots of the same face): a warp avatar is
    /// made from it and cached by content hash in $XDG_CACHE_HOME/puppetcam/avatars.
    #[arg(long)]
    pub portrait: Vec<PathBuf>,
    /// The driver's neutral face: a still photo of you with a relaxed face, or a calibration
    /// profile (`.toml`). Without it the neutral is estimated from the first frames.
    #[arg(long)]
    pub neutral: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (TOML); defaults apply to anything it leaves out. Without it: $PUPPETCAM_CONFIG,
    /// $XDG_CONFIG_HOME/puppetcam/puppetcam.toml (~/.config/...), /etc/puppetcam/puppetcam.toml;
    /// with none of them, the first camera and the first v4l2loopback output.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Stop after this many frames (embedded driver).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Serve /health, /metrics and /preview on this address (e.g. 127.0.0.1:8765).
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the video.
    #[arg(long, default_value = "out/demo.y4m")]
    pub out: PathBuf,
    /// Number of frames (at 25 fps).
    #[arg(long, default_value_t = 200)]
    pub frames: u64,
    /// Avatar file (default: the bundled onnx/default_avatar.pcav).
    #[arg(long)]
    pub avatar: Option<PathBuf>,
    /// Use a video file as the driver instead of the embedded animation.
    #[arg(long)]
    pub driver: Option<PathBuf>,
    /// CPU only.
    #[arg(long)]
    pub cpu: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Config file whose avatar, devices and runtime settings to check.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Avatar ONNX file to validate (default: the configured / default avatar).
    #[arg(long)]
    pub avatar: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Config file (TOML): bench runs the same plan as `run` with it (flags override), into a
    /// null output.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Frames to measure (after a warm-up of 10).
    #[arg(long, default_value_t = 200)]
    pub frames: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Live mode: the driver runs at its own pace (file timestamps, camera clock) and stages keep
    /// only the latest frame, as in `run`; end-to-end is then the latency a camera user sees.
    /// Default: flat out, every frame processed (throughput).
    #[arg(long)]
    pub live: bool,
    /// Keep one core busy with another process while measuring (a call app, a browser): the
    /// figures under load.
    #[arg(long)]
    pub load: bool,
    /// With --live and a video source: deliver its frames at this rate, like a webcam negotiated
    /// at it (e.g. 30 or 60), whatever rate the clip was recorded at. The output follows it
    /// unless --fps caps it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub camera_fps: Option<u32>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("`{s}`: expected WIDTHxHEIGHT, e.g. 1280x720"))?;
    let p = |v: &str| v.trim().parse::<u32>().map_err(|_| format!("`{s}`: `{v}` is not a number"));
    let (w, h) = (p(w)?, p(h)?);
    if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
        return Err(format!("`{s}`: width and height must be even and non-zero"));
    }
    Ok((w, h))
}

/// Parses a `--source` value.
pub fn parse_source(s: &str, fps: u32, frames: Option<u64>) -> Result<DriverSpec, Error> {
    let bad = |msg: String| Error::Config { key: "source".into(), msg };
    let s = s.trim();
    if s.is_empty() {
        return Err(bad("empty source".into()));
    }
    let (kind, rest) = match s.split_once(':') {
        Some((k, r)) if ["file", "loop", "image", "camera"].contains(&k) => (k, r),
        _ => ("", s),
    };
    let path = PathBuf::from(rest);
    let is_image = || {
        path.extension().and_then(|e| e.to_str()).is_some_and(|e| ["jpg", "jpeg", "png", "bmp", "webp"].contains(&e.to_ascii_lowercase().as_str()))
    };
    Ok(match kind {
        "file" => DriverSpec::Source(SourceSpec::File { path, looping: false, realtime: false }),
        "loop" => DriverSpec::Source(SourceSpec::File { path, looping: true, realtime: true }),
        "image" => DriverSpec::Source(SourceSpec::Image { path, fps }),
        "camera" => DriverSpec::Source(SourceSpec::Camera { device: rest.to_string(), width: 640, height: 480, fps }),
        _ if s == "embedded" || s == "synthetic" => DriverSpec::Embedded { frames },
        _ if s == "cartoon" => DriverSpec::Source(SourceSpec::Synthetic { width: 640, height: 480, fps }),
        _ if s.starts_with("/dev/video") || s.chars().all(|c| c.is_ascii_digit()) => {
            DriverSpec::Source(SourceSpec::Camera { device: s.to_string(), width: 640, height: 480, fps })
        }
        _ if is_image() => DriverSpec::Source(SourceSpec::Image { path, fps }),
        _ => DriverSpec::Source(SourceSpec::File { path, looping: false, realtime: false }),
    })
}

/// Parses an `--output` value.
pub fn parse_output(s: &str) -> Result<SinkSpec, Error> {
    let s = s.trim();
    if s == "null" {
        return Ok(SinkSpec::Null);
    }
    if let Some(dir) = s.strip_prefix("png:") {
        return Ok(SinkSpec::Png { dir: dir.into(), every: 1 });
    }
    if let Some(p) = s.strip_prefix("y4m:") {
        return Ok(SinkSpec::Y4m { path: p.into() });
    }
    if s == "-" || s.ends_with(".y4m") {
        return Ok(SinkSpec::Y4m { path: s.into() });
    }
    if s.starts_with("/dev/video") || s.starts_with("/dev/v4l/") {
        return Ok(SinkSpec::V4l2 { device: s.into(), format: PixFormat::Yuyv });
    }
    Err(Error::Config {
        key: "output".into(),
        msg: format!("`{s}` is not an output: use /dev/videoN, a .y4m file, png:DIR or null"),
    })
}

/// Applies command-line overrides to a plan.
pub fn apply_overrides(plan: &mut Plan, a: &PipelineArgs, frames: Option<u64>) -> Result<(), Error> {
    if let Some(fps) = a.fps {
        if !(1..=240).contains(&fps) {
            return Err(Error::Config { key: "output.fps".into(), msg: format!("--fps {fps} is not in 1..=240") });
        }
        plan.fps = fps;
        plan.fps_follows_source = false;
    }
    if let Some(s) = &a.source {
        plan.driver = parse_source(s, plan.fps, frames)?;
    } else if let (Some(n), DriverSpec::Embedded { frames }) = (frames, &mut plan.driver) {
        *frames = Some(n);
    }
    if let Some(o) = &a.output {
        plan.sink = parse_output(o)?;
    }
    if let Some(p) = &a.avatar {
        plan.avatar = p.clone();
    }
    if let Some((w, h)) = a.size {
        plan.width = w;
        plan.height = h;
    }
    if a.cpu {
        plan.runtime.providers = vec![Provider::Cpu];
    }
    if !a.portrait.is_empty() {
        plan.portraits = a.portrait.clone();
    }
    if let Some(n) = &a.neutral {
        let models = plan.models()?;
        let iris_lids = plan.tracker.iris && plan.tracker.iris_lids;
        plan.calibration = Some(puppetcam::pipeline::Calibration::from_neutral(n, &models, iris_lids)?);
    }
    Ok(())
}

/// The plan for `run` and `bench`: config file (when given) then flags.
fn load_plan(config: Option<&PathBuf>) -> anyhow::Result<Plan> {
    Ok(match config {
        Some(path) => Plan::from_config(&Config::load(path)?)?,
        None => Plan::demo(),
    })
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    // ort logs through `tracing` (-> log); its info lines are noise at our info level.
    let filter = format!("{level},ort=warn");
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).format_timestamp_millis().init();
}

/// Parses the command line and runs the command. `Ok(code)` is the exit code for a command that
/// ran to its verdict (e.g. `check` finding a failure is 1).
pub fn main_with_args() -> anyhow::Result<u8> {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match cli.command {
        Command::Run(a) => cmd_run(a),
        Command::Demo(a) => cmd_demo(a),
        Command::Devices => check::cmd_devices(),
        Command::Check(a) => check::cmd_check(a.config.as_ref(), a.avatar.as_deref()),
        Command::Bench(a) => {
            let mut plan = load_plan(a.config.as_ref())?;
            apply_overrides(&mut plan, &a.pipeline, None)?;
            bench::cmd_bench(plan, a.frames, a.json, a.live, a.load, a.camera_fps)
        }
        Command::InstallService(a) => cmd_install_service(a),
        Command::Landmarks(a) => {
            puppetcam::face::extract::run(&a)?;
            Ok(0)
        }
        Command::Calibrate(a) => {
            puppetcam::calibrate::run(&a)?;
            Ok(0)
        }
        Command::Avatar(AvatarCommand::Create(a)) => cmd_avatar_create(a),
        Command::Avatar(AvatarCommand::Depth(a)) => cmd_avatar_depth(a),
        Command::Ctl(a) => crate::ctl::cmd_ctl(a),
        Command::RefinerData(a) => {
            let (pairs, shots) = puppetcam::refine::data::run(&a)?;
            log::info!("{}: {pairs} pairs, {shots} shots written to {}", a.video.display(), a.out.display());
            Ok(0)
        }
    }
}

fn cmd_avatar_create(a: AvatarCreateArgs) -> anyhow::Result<u8> {
    // Before minutes of fine-tuning, not after.
    puppetcam::durable::refuse_overwrite(&a.out, a.force, "avatar create: output")?;
    let models = puppetcam::face::FaceModels::locate()?;
    let name = a.name.clone().unwrap_or_else(|| a.images[0].file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "avatar".into()));
    let t0 = std::time::Instant::now();
    let (mut av, reports) = puppetcam::avatar::create::create(&a.images, &name, &models)?;
    use puppetcam::refine::personalise::{personalise, Mode};
    let mode = match (a.no_refiner, a.steps) {
        (true, _) => Mode::Off,
        (false, 0) => Mode::FeedForward,
        (false, n) => Mode::FineTune { steps: n, fp16: a.fp16 },
    };
    let how = personalise(&mut av, mode, &puppetcam::ep::RuntimeOptions::cpu())?;
    av.save(&a.out).with_context(|| format!("avatar create: cannot write {}", a.out.display()))?;
    for (k, r) in reports.iter().enumerate() {
        println!(
            "{} {}: {}x{}, {} face(s) found, irises {}",
            if k == 0 { "portrait" } else { "shot    " },
            r.path.display(),
            r.width,
            r.height,
            r.faces_found,
            if r.has_iris { "yes" } else { "no" }
        );
    }
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    println!("refiner: {how}");
    println!(
        "wrote {} (warp avatar `{name}`, {} shot(s), {:.1} MB) in {:.1} s",
        a.out.display(),
        av.shots.len(),
        size as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}

fn cmd_avatar_depth(a: AvatarDepthArgs) -> anyhow::Result<u8> {
    let models = puppetcam::face::FaceModels::locate()?;
    let mut av = puppetcam::avatar::WarpAvatar::load(&a.avatar)?;
    let worst = puppetcam::avatar::create::add_depth(&mut av, &models).with_context(|| format!("avatar depth: {}", a.avatar.display()))?;
    let out = a.out.as_ref().unwrap_or(&a.avatar);
    av.save(out).with_context(|| format!("avatar depth: cannot write {}", out.display()))?;
    println!("wrote {} ({} shot(s) with depth; re-detected meshes within {worst:.2} px of the stored ones)", out.display(), av.shots.len());
    Ok(0)
}

fn cmd_install_service(a: InstallServiceArgs) -> anyhow::Result<u8> {
    use puppetcam::service::install::{describe, install, InstallOptions};
    // The unit must name this very binary by absolute path (systemd has no PATH lookup worth
    // relying on), so take it from the running process.
    let binary = std::env::current_exe().context("install-service: cannot find the puppetcam binary's path")?;
    let binary = binary.canonicalize().unwrap_or(binary);
    let opts = InstallOptions { system: a.system, dry_run: a.dry_run, binary, run_args: a.run_args, unit_dir: a.unit_dir };
    let plan = install(&opts).context("install-service")?;
    print!("{}", describe(&plan));
    Ok(0)
}

fn cmd_demo(a: DemoArgs) -> anyhow::Result<u8> {
    let mut plan = Plan::demo();
    plan.sink = SinkSpec::Y4m { path: a.out.clone() };
    plan.driver = match &a.driver {
        Some(p) => DriverSpec::Source(SourceSpec::File { path: p.clone(), looping: false, realtime: false }),
        None => DriverSpec::Embedded { frames: Some(a.frames) },
    };
    if let Some(p) = a.avatar {
        plan.avatar = p;
    }
    if a.cpu {
        plan.runtime.providers = vec![Provider::Cpu];
    }
    let avatar = plan.avatar.clone();
    let stats = Arc::new(PipelineStats::default());
    let t0 = std::time::Instant::now();
    Pipeline::start_plan(plan, stats.clone())
        .with_context(|| format!("demo: cannot start with avatar {}", avatar.display()))?
        .wait()
        .context("demo failed")?;
    let n = stats.output.frames.load(std::sync::atomic::Ordering::Relaxed);
    let ep = stats.ep.read().clone();
    println!(
        "wrote {} ({n} frames, 640x480 @ 25 fps) in {:.1} s; avatar '{}' on {}{}",
        a.out.display(),
        t0.elapsed().as_secs_f64(),
        stats.avatar_name.read(),
        ep.active,
        ep.fallback_reason.map(|r| format!(" (fallback: {r})")).unwrap_or_default()
    );
    println!("open it with: ffplay {0}   or   mpv {0}", a.out.display());
    Ok(0)
}

/// The config `run` uses: `--config`, else the first of the standard places that exists
/// (`config::locate_config`), else none.
fn run_config(a: &RunArgs) -> anyhow::Result<Option<(Config, FoundConfig)>> {
    let found = match &a.config {
        Some(p) => Some(FoundConfig { path: p.clone(), from: "--config" }),
        None => locate_config()?,
    };
    Ok(match found {
        Some(f) => {
            log::info!("config: {} (from {})", f.path.display(), f.from);
            Some((Config::load(&f.path)?, f))
        }
        None => None,
    })
}

/// Cameras and v4l2loopback outputs `run` may pick when neither a config nor a flag says which.
pub struct Detected {
    pub cameras: Vec<PathBuf>,
    pub loopbacks: Vec<PathBuf>,
}

fn detect_devices() -> Detected {
    let devs = check::video_devices();
    let (loop_devs, cams): (Vec<_>, Vec<_>) = devs.into_iter().partition(|d| d.loopback);
    Detected { cameras: cams.into_iter().map(|d| d.path).collect(), loopbacks: loop_devs.into_iter().map(|d| d.path).collect() }
}

/// `run`'s plan: the config (the defaults when there is none), the flags on top and, without a
/// config, the first camera and the first v4l2loopback output for what the flags leave open.
/// Never the embedded demo: that is `puppetcam demo`.
pub fn run_plan(cfg: Option<&Config>, a: &PipelineArgs, frames: Option<u64>, detect: &dyn Fn() -> Detected) -> Result<Plan, Error> {
    let mut plan = match cfg {
        Some(c) => Plan::from_config(c)?,
        None => Plan { avatar: puppetcam::pipeline::default_avatar(), ..Plan::from_config(&Config::default())? },
    };
    apply_overrides(&mut plan, a, frames)?;
    if cfg.is_some() || (a.source.is_some() && a.output.is_some()) {
        return Ok(plan);
    }
    let found = detect();
    let looked = config_candidates(&|k| std::env::var_os(k)).iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>().join(", ");
    let create = format!(
        "no config file found (looked for {looked}); create one from puppetcam.example.toml \
         (e.g. ~/.config/puppetcam/puppetcam.toml), or pass --config, --source and --output; `puppetcam demo` needs no hardware"
    );
    if a.source.is_none() {
        let Some(cam) = found.cameras.first() else {
            return Err(Error::Config { key: "source".into(), msg: format!("no camera found (no /dev/video* that is not a v4l2loopback output); {create}") });
        };
        if let DriverSpec::Source(SourceSpec::Camera { device, .. }) = &mut plan.driver {
            *device = cam.display().to_string();
        }
        log::info!("no config: using the first camera {}", cam.display());
    }
    if a.output.is_none() {
        let Some(out) = found.loopbacks.first() else {
            return Err(Error::Config {
                key: "output".into(),
                msg: format!(
                    "no v4l2loopback output found: load the module (sudo modprobe v4l2loopback exclusive_caps=1 \
                     card_label=puppetcam video_nr=10, see docs/service.md) or pass --output; {create}"
                ),
            });
        };
        if let SinkSpec::V4l2 { device, .. } = &mut plan.sink {
            *device = out.clone();
        }
        log::info!("no config: writing to the first v4l2loopback output {}", out.display());
    }
    Ok(plan)
}

/// HTTP: from the config's [service], or --http; off when there is no config file so that
/// flag-only runs never fight over a port.
fn service_options(cfg: Option<&Config>, plan: &Plan, http: Option<std::net::SocketAddr>) -> Result<ServiceOptions, Error> {
    match cfg {
        Some(c) => ServiceOptions::from_config(&c.service, &plan.avatar, http),
        None => match http {
            Some(addr) => ServiceOptions::for_daemon(true, addr, false, Some(plan.avatar.clone())),
            None => ServiceOptions::for_daemon(false, "127.0.0.1:8765".parse().expect("literal address"), false, Some(plan.avatar.clone())),
        },
    }
}

/// The control API's shared state: the avatar library, the token (created on the first start),
/// the upload limit; from the config (defaults without one).
fn control_hub(loaded: Option<&(Config, FoundConfig)>, plan: &Plan, stats: &Arc<PipelineStats>) -> anyhow::Result<Arc<puppetcam::control::ControlHub>> {
    use puppetcam::control::{library, token, ControlHub, ControlOptions};
    let default_cfg = Config::default();
    let cfg = loaded.map(|(c, _)| c).unwrap_or(&default_cfg);
    let data = puppetcam::paths::Env::current().data_dir();
    let cands = token::candidates(cfg.service.token_file.as_deref(), loaded.map(|(_, f)| f.path.as_path()), &data);
    let (tok, _) = token::load_or_create(&cands).map_err(|e| anyhow::anyhow!("control API: {e}"))?;
    let opts = ControlOptions {
        library: cfg.library.clone().unwrap_or_else(library::default_dir),
        configured: plan.avatar.clone(),
        token: tok,
        max_upload: u64::from(cfg.service.max_upload_mb) << 20,
        models: plan.face_models.clone(),
        default_steps: 200,
    };
    let lib = opts.library.clone();
    let hub = ControlHub::new(opts, stats.clone()).map_err(|e| anyhow::anyhow!("control API: {e}"))?;
    log::info!("avatar library: {}", lib.display());
    Ok(hub)
}

fn cmd_run(a: RunArgs) -> anyhow::Result<u8> {
    let loaded = run_config(&a)?;
    let mut plan = run_plan(loaded.as_ref().map(|(c, _)| c), &a.pipeline, a.frames, &detect_devices)?;
    // `--portrait` / `[avatar] portrait`: make (or find) the warp avatar now, so that the
    // watcher and the status page see the file that is actually animated.
    plan.resolve_portraits()?;
    let mut svc_opts = service_options(loaded.as_ref().map(|(c, _)| c), &plan, a.http)?;
    let stats = Arc::new(PipelineStats::default());
    let hub = match &svc_opts.http {
        Some(_) => Some(control_hub(loaded.as_ref(), &plan, &stats)?),
        None => None,
    };
    svc_opts.control = hub.clone();
    let service = Service::start(&svc_opts, stats.clone()).context("cannot start the service helpers")?;
    let mut running = plan.clone();
    let handle = Pipeline::start_plan(plan, stats.clone())?;
    if let Some(h) = &hub {
        h.attach(handle.controller());
    }
    if let Some(addr) = service.http_addr() {
        log::info!("status on http://{addr}/ (health, metrics, preview)");
    }
    let exit = service.run_loop(
        || handle.is_finished(),
        |changed| match changed {
            // The watched avatar file was replaced by a valid one.
            Some(p) => {
                handle.reload_avatar(p)?;
                running.avatar = p.to_path_buf();
                if let Some(h) = &hub {
                    h.set_live(p);
                }
                Ok(format!("avatar {} loaded", p.display()))
            }
            // SIGHUP: re-read the whole config and apply what changed.
            None => {
                let new_cfg = run_config(&a).map_err(|e| Error::Invalid(format!("{e:#}")))?;
                let mut new_plan = run_plan(new_cfg.as_ref().map(|(c, _)| c), &a.pipeline, a.frames, &detect_devices)?;
                new_plan.resolve_portraits()?;
                let opts = service_options(new_cfg.as_ref().map(|(c, _)| c), &new_plan, a.http)?;
                let report = reload::apply(&handle, &service, &running, &new_plan, &opts)?;
                if let (Some(h), true) = (&hub, report.running.avatar != running.avatar) {
                    h.set_live(&report.running.avatar);
                }
                running = report.running.clone();
                Ok(report.summary())
            }
        },
    );
    service.stopping();
    if let Some(h) = &hub {
        h.detach();
    }
    let r = match exit {
        LoopExit::Shutdown => {
            log::info!("shutting down");
            handle.shutdown()
        }
        LoopExit::PipelineEnded => handle.wait(),
    };
    service.shutdown();
    r?;
    Ok(0)
}

/// Maps an error to the process exit code: 2 for usage/config mistakes, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(Error::Config { .. }) = cause.downcast_ref::<Error>() {
            return 2;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sources_parse() {
        assert_eq!(parse_source("embedded", 25, Some(3)).unwrap(), DriverSpec::Embedded { frames: Some(3) });
        assert!(matches!(parse_source("/dev/video2", 30, None).unwrap(), DriverSpec::Source(SourceSpec::Camera { .. })));
        assert!(matches!(parse_source("0", 30, None).unwrap(), DriverSpec::Source(SourceSpec::Camera { .. })));
        assert!(matches!(parse_source("a.JPG", 30, None).unwrap(), DriverSpec::Source(SourceSpec::Image { .. })));
        assert!(matches!(
            parse_source("loop:x.mp4", 30, None).unwrap(),
            DriverSpec::Source(SourceSpec::File { looping: true, .. })
        ));
        assert!(matches!(parse_source("clip.mp4", 30, None).unwrap(), DriverSpec::Source(SourceSpec::File { looping: false, .. })));
        assert!(parse_source(" ", 30, None).is_err());
    }

    #[test]
    fn outputs_parse() {
        assert_eq!(parse_output("null").unwrap(), SinkSpec::Null);
        assert!(matches!(parse_output("/dev/video10").unwrap(), SinkSpec::V4l2 { .. }));
        assert_eq!(parse_output("out/a.y4m").unwrap(), SinkSpec::Y4m { path: "out/a.y4m".into() });
        assert!(matches!(parse_output("png:frames").unwrap(), SinkSpec::Png { .. }));
        let e = parse_output("out.mp4").unwrap_err();
        assert!(e.to_string().contains("`output`"), "{e}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1280x720"), Ok((1280, 720)));
        assert!(parse_size("1281x720").is_err());
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn config_errors_exit_2() {
        let e = anyhow::Error::new(Error::Config { key: "output.fps".into(), msg: "bad".into() }).context("loading");
        assert_eq!(exit_code(&e), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }
}
