//! The running daemon: capture -> face -> generator -> output threads joined by bounded channels
//! of closed enums (docs/ARCHITECTURE.md). Live mode keeps the latest frame (a full channel drops
//! its oldest message and counts it); offline mode (a file rendered to a file) blocks instead so
//! every input frame becomes exactly one output frame.
pub mod avatar_stage;
mod generator_stage;
mod output_stage;
pub mod notice;
pub mod presence;
mod controller;
mod supervise;
pub mod compose;
pub mod timeline;
pub mod plan;
pub mod rate;
pub mod synthetic;

pub use generator_stage::RELOAD_TIMEOUT;
pub use controller::Controller;
pub use plan::{default_avatar, DriverSpec, Plan};
use generator_stage::{generator_thread, GenCtx, LoadCtx};
use output_stage::output_thread;

use crate::core::types::{FaceLandmarks, Frame};
use crate::ep::RuntimeOptions;
use crate::error::{Error, Result};
use crate::sink::FrameSink;
use crate::source::FrameSource;
use crate::stats::{PipelineStats, StageStats, FACE_LOST, FACE_TRACKED, FACE_UNKNOWN};
use crate::core::retarget::{NeutralStatus, RetargetParams, Shape68};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Anything that turns a frame into landmarks (the face tracker; tests use closures).
pub trait FaceStage: Send {
    fn process(&mut self, frame: &Frame) -> Result<Option<FaceLandmarks>>;
    /// Forgets the tracked face and the filter state: called when the source was reopened, whose
    /// frames are unrelated to the last ones seen.
    fn reset(&mut self) {}
    /// Where the last `process` spent its time, for stages that measure it (the face tracker).
    fn profile(&self) -> Option<crate::face::FaceProfile> {
        None
    }
}

impl FaceStage for crate::face::FaceTracker {
    fn process(&mut self, frame: &Frame) -> Result<Option<FaceLandmarks>> {
        crate::face::FaceTracker::process(self, frame)
    }
    fn reset(&mut self) {
        crate::face::FaceTracker::reset(self)
    }
    fn profile(&self) -> Option<crate::face::FaceProfile> {
        Some(crate::face::FaceTracker::profile(self))
    }
}

impl<F: FnMut(&Frame) -> Result<Option<FaceLandmarks>> + Send> FaceStage for F {
    fn process(&mut self, frame: &Frame) -> Result<Option<FaceLandmarks>> {
        self(frame)
    }
}

/// Opens the source; called again to reconnect after a disconnect.
pub type SourceFactory = Arc<dyn Fn() -> Result<Box<dyn FrameSource>> + Send + Sync>;
/// Builds the face stage inside the face thread (it owns its ORT sessions).
pub type FaceFactory = Box<dyn FnOnce() -> Result<Box<dyn FaceStage>> + Send>;
/// Opens the sink for `(width, height, fps)` inside the output thread.
pub type SinkFactory = Box<dyn FnOnce(u32, u32, f64) -> Result<Box<dyn FrameSink>> + Send>;

/// Where the driving landmarks come from.
pub enum Driver {
    /// Frames from a source, landmarks from the face stage. `live` sources (cameras) are reopened
    /// with backoff when they fail; a failing file ends the pipeline with its error.
    Video { source: SourceFactory, face: FaceFactory, live: bool },
    /// The embedded animated face ([`synthetic`]); `frames: None` runs until shutdown.
    Synthetic { frames: Option<u64> },
}

/// How the output is clocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// Write each frame as it arrives, at most at the output rate, repeating the last frame when
    /// the generator is late; channels keep only the latest frame (virtual camera).
    Realtime,
    /// Write every generated frame, never drop (rendering a file to a file, bench).
    EveryFrame,
}

/// Everything `Pipeline::start_spec` needs; `Pipeline::start` builds it from the config.
pub struct PipelineSpec {
    pub driver: Driver,
    pub avatar: PathBuf,
    pub runtime: RuntimeOptions,
    pub sink: SinkFactory,
    pub out_width: u32,
    pub out_height: u32,
    /// The output rate: a cap on the source's rate, or (with `follow_source_fps`) only the rate
    /// used when the source tells none (`rate`).
    pub fps: f64,
    /// Live output at the source's own rate (no `fps` configured).
    pub follow_source_fps: bool,
    pub pacing: Pacing,
    /// Longest wait between two reconnection attempts of a live source.
    pub reconnect_max_backoff: Duration,
    /// A live source lost this long puts a "waiting for camera" notice on the output (at once
    /// when it is missing at start); until then the idle portrait covers a brief unplug.
    pub source_notice_after: Duration,
    /// Hold / ease-out / ease-in times of the return to the neutral pose when the face is lost.
    pub ease: EaseTimes,
    /// Identity-preserving retargeting (`core::retarget`); `None` drives the avatar with the
    /// driver's own landmarks mapped through the driver's crop box.
    pub retarget: Option<RetargetParams>,
    /// The driver's neutral face from a calibration profile; `None` makes the retargeter learn it
    /// from the first steady frames (the embedded driver always uses its own rest face).
    pub calibration: Option<Calibration>,
    /// Called by the generator stage before each frame. `None` in the daemon; the liveness tests
    /// inject a hang here, since the generator has no trait object to swap (tests/pipeline.rs).
    pub generator_hook: Option<StageHook>,
    /// Longest an avatar reload may take before it is given up ([`RELOAD_TIMEOUT`]).
    pub reload_timeout: Duration,
    /// Pause still, face-lost still and mark, avatar-switch cross-fade (`presence`).
    pub presence: presence::PresenceParams,
    /// How a warp avatar's portrait fills the output (`[output] fit`, `core::fit`).
    pub fit: crate::core::fit::Fit,
}

/// See [`PipelineSpec::generator_hook`].
pub type StageHook = Arc<dyn Fn() + Send + Sync>;

/// Face-lost easing (`core::retarget::FaceLostEaser`), seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EaseTimes {
    /// Keep the last pose this long first (brief tracker drop-outs should not twitch the face).
    pub hold_s: f32,
    pub out_s: f32,
    pub in_s: f32,
}

impl Default for EaseTimes {
    fn default() -> Self {
        EaseTimes { hold_s: 0.2, out_s: 0.3, in_s: 0.15 }
    }
}

/// A driver neutral loaded from a calibration profile, with where it came from (for status).
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// e.g. `profile /home/me/.local/share/puppetcam/profile.toml (camera:/dev/video0, 2024-...)`.
    pub source: String,
    pub neutral: Shape68,
    /// The neutral's 468-point mesh, when known (profiles from this version, neutral photos):
    /// warp avatars retarget on the mesh.
    pub mesh: Option<Vec<[f32; 2]>>,
    /// The mesh's depth (neutral photos): the head pose of the neutral is then known exactly.
    pub depth: Option<Vec<f32>>,
}

impl Calibration {
    /// `--neutral PATH`: a calibration profile (`.toml`) or a still photo of the driver's
    /// relaxed face (its landmarks, mesh included, become the neutral). `iris_lids`: whether the
    /// face stage reads the lids from the iris model (see `Calibration::load`).
    pub fn from_neutral(path: &Path, models: &crate::face::FaceModels, iris_lids: bool) -> Result<Calibration> {
        let is_toml = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if is_toml {
            return Self::load(path, iris_lids);
        }
        let img = crate::imageio::read_image(path)?;
        let mut lm = crate::face::still::StillLandmarker::new(models)?;
        let face = lm
            .landmarks(&img)?
            .ok_or_else(|| Error::Invalid(format!("--neutral {}: no face found in the photo", path.display())))?;
        if let Err(why) = crate::core::retarget::NeutralLimits::default().check(&face.landmarks.pts68) {
            log::warn!("--neutral {}: this face may not be neutral ({why}); expressions are measured from it", path.display());
        }
        Ok(Calibration {
            source: format!("photo {}", path.display()),
            neutral: Shape68 { pts68: face.landmarks.pts68, iris: face.landmarks.iris },
            mesh: Some(face.landmarks.mesh.iter().map(|p| [p[0], p[1]]).collect()),
            depth: Some(face.landmarks.mesh.iter().map(|p| p[2]).collect()),
        })
    }

    /// Loads and validates a profile written by `puppetcam calibrate`, for a face stage whose
    /// lids come from the iris model (`iris_lids`) or from the mesh (see `Profile::shape_for`).
    pub fn load(path: &Path, iris_lids: bool) -> Result<Calibration> {
        let p = crate::calibrate::Profile::load(path).map_err(|e| match e {
            Error::Io { source, .. } => Error::Config {
                key: "retarget.profile".into(),
                msg: format!("cannot read calibration profile {}: {source}", path.display()),
            },
            Error::Invalid(m) => Error::Config { key: "retarget.profile".into(), msg: m },
            other => other,
        })?;
        let (neutral, note) = p.shape_for(iris_lids);
        if let Some(n) = note {
            log::warn!("calibration profile {}: {n}", path.display());
        }
        Ok(Calibration { source: format!("profile {} ({}, {})", path.display(), p.source, p.created), neutral, mesh: None, depth: None })
    }
}

/// The `retarget_state` status text for a retargeter state.
pub fn retarget_state_text(status: Option<NeutralStatus>, calibration: &str) -> String {
    match status {
        None => "off (driver landmarks used as they are)".into(),
        Some(NeutralStatus::Profile) => format!("profile: {calibration}"),
        Some(NeutralStatus::Learning { have, need }) => {
            format!("provisional {have}/{need}: no calibration profile; a running estimate of the neutral drives the portrait until {need} steady frames are seen")
        }
        Some(NeutralStatus::Learned) => "learned: no calibration profile, neutral learned from the first steady frames".into(),
    }
}

impl PipelineSpec {
    fn validate(&self) -> Result<()> {
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 240.0) {
            return Err(Error::Config { key: "output.fps".into(), msg: format!("must be in (0, 240], got {}", self.fps) });
        }
        if self.out_width == 0 || self.out_height == 0 || self.out_width > 7680 || self.out_height > 4320 {
            return Err(Error::Config {
                key: "output.width".into(),
                msg: format!("output size {}x{} is not usable", self.out_width, self.out_height),
            });
        }
        if self.out_width % 2 != 0 || self.out_height % 2 != 0 {
            // YUYV/I420 sinks subsample chroma by two.
            return Err(Error::Config {
                key: "output.width".into(),
                msg: format!("output size {}x{} must be even", self.out_width, self.out_height),
            });
        }
        Ok(())
    }
}

enum CaptureMsg {
    Frame { frame: Frame, captured: Instant },
    SourceLost(String),
    /// The live source has been gone for long (or was missing at start): show the notice.
    Waiting(String),
}

enum FaceMsg {
    Face { lm: Option<FaceLandmarks>, captured: Instant },
    SourceLost,
    Waiting(String),
}

struct OutMsg {
    frame: Arc<Frame>,
    /// Capture time of the frame this output came from; `None` for idle frames.
    captured: Option<Instant>,
}

/// Reply channel of a control request: the outcome, after the stage applied it (or refused).
type Reply = Sender<Result<()>>;

enum Control {
    /// Load the avatar at the path; with settings, also switch the generator to those (SIGHUP).
    /// `true`: a live switch, cross-faded from the old avatar (control API).
    Reload(PathBuf, Option<GenSettings>, bool, Reply),
    /// Hold the still of the portrait (true) or go back to the live face (false), with a fade.
    Pause(bool, Reply),
    /// Learn the driver's neutral again from the next steady frames.
    NeutralNow(Reply),
    /// Eye contact on (true) or off, from now on and for every avatar loaded later.
    EyeContact(bool, Reply),
}

/// What a reconfiguration can change in the generator stage besides the avatar file.
#[derive(Clone, Debug)]
pub struct GenSettings {
    pub runtime: RuntimeOptions,
    pub retarget: Option<RetargetParams>,
    pub calibration: Option<Calibration>,
    pub ease: EaseTimes,
}

/// Replace the source: the capture stage closes the old one, opens this, and the face stage
/// starts a new track. `live` as in `Driver::Video`.
struct SourceSwap(SourceFactory, bool, Reply);
/// Replace the face stage (new tracker parameters or models).
struct FaceSwap(FaceFactory, Reply);
/// Replace the sink; the old one is closed only once the new one opened.
struct SinkSwap(SinkFactory, Reply);

/// Sender that, in live mode, drops the oldest queued message instead of blocking.
struct LatestSender<T> {
    tx: Sender<T>,
    /// A receiver clone used only to evict the oldest message; `None` in offline mode, where a
    /// clone would keep the channel open and turn a dead consumer into a deadlock.
    evict: Option<Receiver<T>>,
    stats: Arc<PipelineStats>,
    stage: fn(&PipelineStats) -> &StageStats,
}

impl<T> LatestSender<T> {
    fn new(tx: Sender<T>, rx: &Receiver<T>, pacing: Pacing, stats: &Arc<PipelineStats>, stage: fn(&PipelineStats) -> &StageStats) -> Self {
        let evict = (pacing == Pacing::Realtime).then(|| rx.clone());
        LatestSender { tx, evict, stats: stats.clone(), stage }
    }

    /// False when the consumer is gone.
    fn send(&self, mut msg: T) -> bool {
        let Some(evict) = &self.evict else { return self.tx.send(msg).is_ok() };
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Full(m)) => {
                    if evict.try_recv().is_ok() {
                        (self.stage)(&self.stats).drop_one();
                    }
                    msg = m;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }
}

/// Entry point: see [`Pipeline::start`] and [`Pipeline::start_spec`].
pub struct Pipeline;

/// A running pipeline. Dropping it without `shutdown`/`wait` detaches the threads after asking
/// them to stop.
pub struct PipelineHandle {
    stop: Arc<AtomicBool>,
    control: Sender<Control>,
    /// `None` with the embedded driver (no capture or face thread).
    source_ctl: Option<Sender<SourceSwap>>,
    face_ctl: Option<Sender<FaceSwap>>,
    sink_ctl: Sender<SinkSwap>,
    threads: Vec<(&'static str, JoinHandle<Result<()>>)>,
    stats: Arc<PipelineStats>,
    reload_timeout: Duration,
}

impl Pipeline {
    /// Starts the pipeline a validated config describes.
    pub fn start(cfg: &crate::config::Config, stats: Arc<PipelineStats>) -> Result<PipelineHandle> {
        Self::start_plan(Plan::from_config(cfg)?, stats)
    }

    /// Starts a pipeline described by a [`Plan`] (config + flags resolved).
    pub fn start_plan(plan: Plan, stats: Arc<PipelineStats>) -> Result<PipelineHandle> {
        Self::start_spec(plan.into_spec()?, stats)
    }

    /// Starts the pipeline described by `spec`. Returns once every stage has built its resources
    /// (source opened, face models and generator loaded, sink opened) so that a bad file or device
    /// is reported here rather than from a thread later.
    pub fn start_spec(spec: PipelineSpec, stats: Arc<PipelineStats>) -> Result<PipelineHandle> {
        spec.validate()?;
        // ONNX Runtime is loaded once per process: from the configured library, before any stage
        // thread can load it from the default places first.
        crate::ep::ensure_ort_loaded(spec.runtime.ort_library.as_deref())?;
        let PipelineSpec {
            driver,
            avatar,
            runtime,
            sink,
            out_width,
            out_height,
            fps,
            follow_source_fps,
            pacing,
            reconnect_max_backoff,
            source_notice_after,
            ease,
            retarget,
            calibration,
            generator_hook,
            reload_timeout,
            presence,
            fit,
        } = spec;
        // Test-only fault injection (`PUPPETCAM_FAULT`, see `supervise`).
        let faults = Arc::new(supervise::Faults::from_env());
        stats.paced.store(pacing == Pacing::Realtime, Ordering::Relaxed);
        // The embedded driver's rest face is known, so retargeting needs no learning phase.
        let calibration = match driver {
            Driver::Synthetic { .. } => {
                Some(Calibration { source: "embedded driver's rest face".into(), neutral: synthetic::neutral_shape(), mesh: None, depth: None })
            }
            Driver::Video { .. } => calibration,
        };
        if retarget.is_some() {
            match &calibration {
                Some(c) => log::info!("retarget: driver neutral from {}", c.source),
                None => log::info!("retarget: no calibration profile; learning the driver's neutral from the first steady frames (run `puppetcam calibrate` to skip this)"),
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = bounded::<(&'static str, Result<()>)>(8);
        let (face_tx, face_rx) = bounded::<FaceMsg>(1);
        let (out_tx, out_rx) = bounded::<OutMsg>(2);
        let (control_tx, control_rx) = bounded::<Control>(4);
        let (sink_ctl, sink_ctl_rx) = bounded::<SinkSwap>(1);
        let (mut source_ctl, mut face_ctl) = (None, None);
        let mut threads = Vec::new();
        let mut expected = 0;

        // Capture (+ face) threads, or the synthetic driver.
        match driver {
            Driver::Video { source, face, live } => {
                let (cap_tx, cap_rx) = bounded::<CaptureMsg>(1);
                let cap_tx = LatestSender::new(cap_tx, &cap_rx, pacing, &stats, |s| &s.face);
                let (sc, sc_rx) = bounded::<SourceSwap>(1);
                let (fc, fc_rx) = bounded::<FaceSwap>(1);
                (source_ctl, face_ctl) = (Some(sc), Some(fc));
                let ctx = CaptureCtx {
                    stop: stop.clone(),
                    stats: stats.clone(),
                    live,
                    max_backoff: reconnect_max_backoff,
                    notice_after: source_notice_after,
                    swap: sc_rx,
                    faults: faults.clone(),
                };
                let ready = ready_tx.clone();
                threads.push(("capture", spawn("capture", move || capture_thread(source, cap_tx, ctx, ready))?));
                let face_tx = LatestSender::new(face_tx, &face_rx, pacing, &stats, |s| &s.generator);
                let (st, ready, stop2, fl) = (stats.clone(), ready_tx.clone(), stop.clone(), faults.clone());
                threads.push(("face", spawn("face", move || face_thread(face, cap_rx, fc_rx, face_tx, st, ready, stop2, fl))?));
                expected += 2;
            }
            Driver::Synthetic { frames } => {
                let face_tx = LatestSender::new(face_tx, &face_rx, pacing, &stats, |s| &s.generator);
                let (st, stop2, ready) = (stats.clone(), stop.clone(), ready_tx.clone());
                let paced = pacing == Pacing::Realtime;
                threads.push(("capture", spawn("capture", move || synthetic_thread(frames, fps, paced, face_tx, st, stop2, ready))?));
                expected += 1;
            }
        }
        let gen_ctx = GenCtx {
            stats: stats.clone(),
            load: LoadCtx { runtime, out_w: out_width, out_h: out_height, fit, ease, retarget, calibration },
            fps,
            pacing,
            stop: stop.clone(),
            hook: generator_hook,
            faults: faults.clone(),
            reload_timeout,
            presence,
        };
        let out_tx = LatestSender::new(out_tx, &out_rx, pacing, &stats, |s| &s.output);
        let ready = ready_tx.clone();
        threads.push(("generator", spawn("generator", move || generator_thread(avatar, gen_ctx, face_rx, control_rx, out_tx, ready))?));
        let (st, stop2, ready) = (stats.clone(), stop.clone(), ready_tx);
        let rate = rate::OutputRate { fps, follow_source: follow_source_fps };
        threads.push((
            "output",
            spawn("output", move || output_thread(sink, out_width, out_height, rate, pacing, out_rx, sink_ctl_rx, st, stop2, ready, faults))?,
        ));
        expected += 2;

        let handle = PipelineHandle { stop, control: control_tx, source_ctl, face_ctl, sink_ctl, threads, stats, reload_timeout };
        for _ in 0..expected {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((stage, Err(e))) => {
                    log::error!("pipeline: {stage} stage failed to start: {e}");
                    // Other stages may still be building; stop them and collect their threads.
                    let _ = handle.shutdown();
                    return Err(e);
                }
                // A stage thread ended without reporting: it panicked; its join says why.
                Err(_) => {
                    let r = handle.shutdown();
                    return Err(r.err().unwrap_or_else(|| Error::Invalid("a pipeline stage exited during start-up".into())));
                }
            }
        }
        // Every stage reported ready, the generator included: the avatar is loaded. With the
        // source's first frame this is what READY=1 waits for (service::liveness::Readiness).
        handle.stats.avatar_loaded.store(true, Ordering::SeqCst);
        Ok(handle)
    }
}

fn spawn(name: &str, f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<JoinHandle<Result<()>>> {
    std::thread::Builder::new()
        .name(format!("pc-{name}"))
        .spawn(f)
        .map_err(|e| Error::Invalid(format!("cannot spawn the {name} thread: {e}")))
}

impl PipelineHandle {
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    /// The flag the service's signal handler can set to stop the pipeline.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// True once every stage thread has ended (finite source at EOF, or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|(_, t)| t.is_finished())
    }

    /// Swaps the avatar without touching the source or the sink. The new avatar loads beside
    /// the running one, which keeps producing frames (no pause, so liveness needs no grace); on
    /// failure or after the reload timeout the old avatar keeps running and the error is returned.
    pub fn reload_avatar(&self, path: &Path) -> Result<()> {
        self.controller().reload(path, None, false)
    }

    /// A cloneable handle on the generator's controls (live avatar switch, pause, neutral now)
    /// for the control API, which outlives no pipeline: its requests fail once the stage ended.
    pub fn controller(&self) -> Controller {
        Controller::new(self.control.clone(), self.reload_timeout)
    }

    /// Loads the avatar at `path` with new generator settings (runtime, retargeting, easing); on
    /// failure the running avatar and settings stay.
    pub fn reconfigure_generator(&self, path: &Path, settings: GenSettings) -> Result<()> {
        self.controller().reload(path, Some(settings), false)
    }

    /// Swaps the source (SIGHUP with a changed `[source]`). If the new one does not open, the
    /// old one is reopened and the error returned.
    pub fn replace_source(&self, factory: SourceFactory, live: bool) -> Result<()> {
        let ctl = self.source_ctl.as_ref().ok_or_else(|| Error::Invalid("the embedded driver has no source to replace".into()))?;
        let _reloading = self.stats.reload_guard();
        let (tx, rx) = bounded(1);
        ctl.send(SourceSwap(factory, live, tx)).map_err(|_| Error::Invalid("the capture stage is not running".into()))?;
        Self::await_reply(rx, "capture")
    }

    /// Swaps the face stage (new tracker settings or models); on failure the old one stays.
    pub fn replace_face(&self, factory: FaceFactory) -> Result<()> {
        let ctl = self.face_ctl.as_ref().ok_or_else(|| Error::Invalid("the embedded driver has no face stage".into()))?;
        let _reloading = self.stats.reload_guard();
        let (tx, rx) = bounded(1);
        ctl.send(FaceSwap(factory, tx)).map_err(|_| Error::Invalid("the face stage is not running".into()))?;
        Self::await_reply(rx, "face")
    }

    /// Swaps the sink at the running size and fps; on failure the old one stays open.
    pub fn replace_sink(&self, factory: SinkFactory) -> Result<()> {
        let _reloading = self.stats.reload_guard();
        let (tx, rx) = bounded(1);
        self.sink_ctl.send(SinkSwap(factory, tx)).map_err(|_| Error::Invalid("the output stage is not running".into()))?;
        Self::await_reply(rx, "output")
    }

    fn await_reply(rx: Receiver<Result<()>>, stage: &str) -> Result<()> {
        // A camera read may block for a few seconds before the stage looks at its mailbox.
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(Error::Invalid(format!("the {stage} stage did not answer within 30 s"))),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Invalid(format!("the {stage} stage ended during the reload"))),
        }
    }

    /// Asks the stages to stop and waits for them.
    pub fn shutdown(self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.wait()
    }

    /// Waits for the stages to end by themselves (finite sources) and returns the first error,
    /// in pipeline order.
    pub fn wait(mut self) -> Result<()> {
        let mut first: Option<Error> = None;
        for (name, t) in std::mem::take(&mut self.threads) {
            let r = t.join().unwrap_or_else(|p| Err(Error::Invalid(format!("the {name} thread panicked: {}", crate::error::panic_message(p.as_ref())))));
            if let Err(e) = r {
                if first.is_none() {
                    first = Some(e);
                } else {
                    log::warn!("pipeline: {name}: {e}");
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Sets the stop flag when a stage ends with an error, so the other stages wind down too.
fn stop_on_err(stop: &AtomicBool, r: Result<()>) -> Result<()> {
    if r.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    r
}

/// A stage thread's start-up handshake: reports to `start` whether the stage's resource opened.
/// On failure it also raises `stop` so the stages already running wind down, and returns `None`
/// for the thread to end. `ready` is consumed, so `start` sees each stage report exactly once.
fn report_ready<T>(stage: &'static str, opened: Result<T>, ready: Sender<(&'static str, Result<()>)>, stop: &AtomicBool) -> Option<T> {
    match opened {
        Ok(v) => {
            let _ = ready.send((stage, Ok(())));
            Some(v)
        }
        Err(e) => {
            stop.store(true, Ordering::SeqCst);
            let _ = ready.send((stage, Err(e)));
            None
        }
    }
}

struct CaptureCtx {
    stop: Arc<AtomicBool>,
    stats: Arc<PipelineStats>,
    live: bool,
    max_backoff: Duration,
    notice_after: Duration,
    swap: Receiver<SourceSwap>,
    faults: Arc<supervise::Faults>,
}

fn capture_thread(factory: SourceFactory, tx: LatestSender<CaptureMsg>, mut ctx: CaptureCtx, ready: Sender<(&'static str, Result<()>)>) -> Result<()> {
    let opened = factory().inspect(|s| {
        log::info!("source: {}", s.describe());
        *ctx.stats.source_state.write() = format!("streaming: {}", s.describe());
    });
    // Settled whether or not the source opened: the output waits for this to open its sink.
    ctx.stats.set_source_fps(opened.as_ref().ok().and_then(|s| s.fps()));
    // A camera missing at start is waited for, not fatal: the service runs degraded (the
    // virtual camera shows the portrait with a notice) and animates once the camera appears. A
    // restart could not bring it back, and one that exits would end in systemd's start limit.
    let (opened, waiting) = match opened {
        Err(e) if ctx.live && !matches!(e, Error::Config { .. }) => {
            log::error!("camera not available: {e}; waiting for it (the virtual camera shows the portrait with a notice meanwhile)");
            *ctx.stats.source_state.write() = format!("waiting for camera: {e}");
            ctx.stats.source_lost.store(true, Ordering::SeqCst);
            (Ok(None), Some(e.to_string()))
        }
        other => (other.map(Some), None),
    };
    let Some(s) = report_ready("capture", opened, ready, &ctx.stop) else { return Ok(()) };
    if let Some(why) = waiting {
        if !tx.send(CaptureMsg::Waiting(why)) {
            return Ok(());
        }
    }
    let mut src = s;
    let mut factory = factory;
    let (stats, stop) = (ctx.stats.clone(), ctx.stop.clone());
    let r = supervise::supervise(&stats.capture, &stop, |restarted| {
        if restarted {
            // Whatever the source was doing when the stage panicked, reopen it.
            src = None;
            if !tx.send(CaptureMsg::SourceLost("capture stage restarted".into())) {
                return Ok(());
            }
        }
        capture_loop(&mut factory, &mut src, &tx, &mut ctx)
    });
    *ctx.stats.source_state.write() = match &r {
        Ok(()) => "ended".into(),
        Err(e) => format!("failed: {e}"),
    };
    stop_on_err(&ctx.stop, r)
}

fn capture_loop(
    factory: &mut SourceFactory,
    src: &mut Option<Box<dyn FrameSource>>,
    tx: &LatestSender<CaptureMsg>,
    ctx: &mut CaptureCtx,
) -> Result<()> {
    let mut backoff = Duration::from_millis(250);
    let mut clock = timeline::MonotonicPts::default();
    // Since when the source is gone, and whether the output shows the notice yet.
    let mut lost_since: Option<Instant> = src.is_none().then(Instant::now);
    let mut noticed = src.is_none();
    // A reopened source counts as back only with its first frame: a camera node that opens but
    // stays silent (a stalled webcam, a loopback device without its writer) is still lost, not
    // a stalled capture stage (which would make liveness restart the daemon).
    let mut awaiting_first = false;
    while !ctx.stop.load(Ordering::SeqCst) {
        if let Ok(SourceSwap(new, live, reply)) = ctx.swap.try_recv() {
            // Close first: the new source may be the same device at another size.
            *src = None;
            match new() {
                Ok(s) => {
                    log::info!("source replaced: {}", s.describe());
                    *ctx.stats.source_state.write() = format!("streaming: {}", s.describe());
                    ctx.stats.set_source_fps(s.fps());
                    ctx.stats.source_lost.store(false, Ordering::SeqCst);
                    (*factory, ctx.live) = (new, live);
                    *src = Some(s);
                    let _ = reply.send(Ok(()));
                }
                // The old source is reopened by the reconnect path below.
                Err(e) => {
                    log::error!("new source failed to open, reopening the previous one: {e}");
                    let _ = reply.send(Err(e));
                }
            }
            clock.new_session();
            if !tx.send(CaptureMsg::SourceLost("source replaced".into())) {
                break;
            }
            continue;
        }
        let Some(s) = src.as_mut() else {
            let since = *lost_since.get_or_insert_with(Instant::now);
            if !noticed && since.elapsed() >= ctx.notice_after {
                noticed = true;
                let why = ctx.stats.source_state.read().clone();
                if !tx.send(CaptureMsg::Waiting(why)) {
                    break;
                }
            }
            sleep_unless_stopped(backoff, &ctx.stop);
            if ctx.stop.load(Ordering::SeqCst) {
                break;
            }
            match factory() {
                Ok(s) => {
                    log::info!("source reopened, waiting for its first frame: {}", s.describe());
                    ctx.stats.set_source_fps(s.fps());
                    *ctx.stats.source_state.write() = format!("reopened, waiting for frames: {}", s.describe());
                    awaiting_first = true;
                    // The new session's timestamps start again from its own zero.
                    clock.new_session();
                    *src = Some(s);
                }
                Err(e) => {
                    // Each failed reopen is a capture error (docs/service.md), so /metrics shows
                    // the retrying.
                    ctx.stats.capture.error_one();
                    log::debug!("source still unavailable: {e}");
                    *ctx.stats.source_state.write() = format!("waiting for camera, reopening: {e}");
                    backoff = (backoff * 2).min(ctx.max_backoff.max(Duration::from_millis(250)));
                }
            }
            continue;
        };
        let t0 = Instant::now();
        match s.next_frame() {
            Ok(Some(mut frame)) => {
                ctx.faults.tick(supervise::CAPTURE);
                if awaiting_first {
                    awaiting_first = false;
                    (lost_since, noticed) = (None, false);
                    backoff = Duration::from_millis(250);
                    log::warn!("source reconnected: {}", s.describe());
                    *ctx.stats.source_state.write() = format!("streaming: {}", s.describe());
                    ctx.stats.source_reconnects.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.source_lost.store(false, Ordering::SeqCst);
                }
                frame.pts = clock.map(frame.pts);
                ctx.stats.capture.record(t0.elapsed());
                if !frame.len_ok() {
                    ctx.stats.capture.error_one();
                    log::warn!("source gave a {}x{} frame with {} bytes; skipped", frame.width, frame.height, frame.data.len());
                    continue;
                }
                if !tx.send(CaptureMsg::Frame { frame, captured: Instant::now() }) {
                    break;
                }
            }
            Ok(None) => {
                log::info!("source: end of stream");
                break;
            }
            Err(e) => {
                ctx.stats.capture.error_one();
                let disconnected = matches!(e, Error::SourceDisconnected(_));
                if !ctx.live && !disconnected {
                    return Err(e);
                }
                if !ctx.live {
                    log::info!("source ended: {e}");
                    break;
                }
                if awaiting_first {
                    // Reopened but silent, and silent again: still the same loss (no new
                    // notice to the stages, no new error line every few seconds).
                    awaiting_first = false;
                    log::debug!("reopened source still silent: {e}");
                    *ctx.stats.source_state.write() = format!("waiting for camera, reopening: {e}");
                    *src = None;
                    continue;
                }
                log::error!("source lost: {e}; reconnecting (the output shows the idle portrait meanwhile)");
                *ctx.stats.source_state.write() = format!("lost: {e}");
                ctx.stats.source_lost.store(true, Ordering::SeqCst);
                *src = None;
                if !tx.send(CaptureMsg::SourceLost(e.to_string())) {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

#[allow(clippy::too_many_arguments)]
fn face_thread(
    factory: FaceFactory,
    rx: Receiver<CaptureMsg>,
    swap: Receiver<FaceSwap>,
    tx: LatestSender<FaceMsg>,
    stats: Arc<PipelineStats>,
    ready: Sender<(&'static str, Result<()>)>,
    stop: Arc<AtomicBool>,
    faults: Arc<supervise::Faults>,
) -> Result<()> {
    let Some(mut face) = report_ready("face", factory(), ready, &stop) else { return Ok(()) };
    let mut swap = swap;
    supervise::supervise(&stats.face, &stop, |restarted| {
        if restarted {
            // The tracker's ROI and filters may be half-updated: start the track afresh.
            face.reset();
        }
        face_loop(&mut face, &rx, &mut swap, &tx, &stats, &faults)
    })
}

fn face_loop(
    face: &mut Box<dyn FaceStage>,
    rx: &Receiver<CaptureMsg>,
    swap: &mut Receiver<FaceSwap>,
    tx: &LatestSender<FaceMsg>,
    stats: &PipelineStats,
    faults: &supervise::Faults,
) -> Result<()> {
    let mut failing = false;
    loop {
        let msg = crossbeam_channel::select! {
            recv(swap) -> m => {
                let Ok(FaceSwap(new, reply)) = m else {
                    // The handle is gone: stop polling it (a closed channel is always ready).
                    *swap = crossbeam_channel::never();
                    continue;
                };
                let r = new().map(|f| {
                    *face = f;
                    log::info!("face stage replaced (new tracker settings)");
                });
                let _ = reply.send(r);
                continue;
            }
            recv(rx) -> m => match m { Ok(m) => m, Err(_) => break },
        };
        let out = match msg {
            CaptureMsg::Frame { frame, captured } => {
                faults.tick(supervise::FACE);
                let t0 = Instant::now();
                let lm = match face.process(&frame) {
                    Ok(lm) => {
                        failing = false;
                        let state = if lm.is_some() { FACE_TRACKED } else { FACE_LOST };
                        stats.face_state.store(state, Ordering::Relaxed);
                        lm
                    }
                    Err(e) => {
                        stats.face.error_one();
                        if !failing {
                            log::error!("face tracker failed: {e} (treated as no face until it recovers)");
                            failing = true;
                        }
                        None
                    }
                };
                stats.face.record(t0.elapsed());
                if let Some(p) = face.profile() {
                    stats.face_parts.record(&p);
                }
                FaceMsg::Face { lm, captured }
            }
            CaptureMsg::Waiting(why) => {
                face.reset();
                stats.face_state.store(FACE_UNKNOWN, Ordering::Relaxed);
                FaceMsg::Waiting(why)
            }
            CaptureMsg::SourceLost(why) => {
                // The reopened source's frames are unrelated to the last ones: no tracked ROI or
                // filter state may carry over (a stale One Euro state freezes the landmarks).
                log::debug!("face: source lost ({why}); the tracker restarts with the next frame");
                face.reset();
                stats.face_state.store(FACE_UNKNOWN, Ordering::Relaxed);
                FaceMsg::SourceLost
            }
        };
        if !tx.send(out) {
            break;
        }
    }
    Ok(())
}

fn synthetic_thread(
    frames: Option<u64>,
    fps: f64,
    paced: bool,
    tx: LatestSender<FaceMsg>,
    stats: Arc<PipelineStats>,
    stop: Arc<AtomicBool>,
    ready: Sender<(&'static str, Result<()>)>,
) -> Result<()> {
    *stats.source_state.write() = "synthetic driver".into();
    stats.set_source_fps(Some(fps));
    let _ = ready.send(("capture", Ok(())));
    drop(ready);
    let start = Instant::now();
    let mut i: u64 = 0;
    while !stop.load(Ordering::SeqCst) && frames.map_or(true, |n| i < n) {
        let t = i as f64 / fps;
        if paced {
            let due = start + Duration::from_secs_f64(t);
            sleep_unless_stopped(due.saturating_duration_since(Instant::now()), &stop);
        }
        let t0 = Instant::now();
        let lm = synthetic::landmarks_at(t);
        stats.capture.record(t0.elapsed());
        stats.face.record(Duration::ZERO);
        stats.face_state.store(FACE_TRACKED, Ordering::Relaxed);
        if !tx.send(FaceMsg::Face { lm: Some(lm), captured: Instant::now() }) {
            break;
        }
        i += 1;
    }
    Ok(())
}

