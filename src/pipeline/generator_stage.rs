//! The generator stage's thread: driver landmarks in, output frames out, one avatar loaded.
//!
//! Reloads (a replaced avatar file, SIGHUP) never pause the output: the new avatar loads on a
//! helper thread while the running one keeps producing frames, and it replaces the running one
//! only once it loaded (it is proven). A load that takes longer than [`RELOAD_TIMEOUT`] is
//! abandoned with an error; the running avatar stays. The loop runs under `supervise`: after a
//! panic, the avatar is loaded again from its file (its state may be half-updated), or the
//! previous one kept if that fails, and frames go on.
use super::avatar_stage::Avatar;
use super::presence::{self, Presence, PresenceParams, SwitchFade};
use super::supervise::{self, Faults};
use super::{Control, EaseTimes, FaceMsg, GenSettings, LatestSender, OutMsg, Pacing, Reply, StageHook};
use super::Calibration;
use crate::core::raster::RASTER_BYTES;
use crate::core::retarget::{NeutralStatus, RetargetParams};
use crate::core::types::Frame;
use crate::ep::RuntimeOptions;
use crate::error::{Error, Result};
use crate::stats::PipelineStats;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest an avatar load may take before the reload is given up (a 32-shot avatar with a
/// refiner loads in a few seconds; TensorRT engine builds are cached after the first start).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What loading an avatar depends on.
#[derive(Clone)]
pub(crate) struct LoadCtx {
    pub(crate) runtime: RuntimeOptions,
    pub(crate) out_w: u32,
    pub(crate) out_h: u32,
    /// How a warp avatar's portrait fills the output (`[output] fit`).
    pub(crate) fit: crate::core::fit::Fit,
    pub(crate) ease: EaseTimes,
    pub(crate) retarget: Option<RetargetParams>,
    pub(crate) calibration: Option<Calibration>,
}

impl LoadCtx {
    /// These settings with a reconfiguration's applied.
    fn with(&self, s: GenSettings) -> LoadCtx {
        LoadCtx { runtime: s.runtime, retarget: s.retarget, calibration: s.calibration, ease: s.ease, ..self.clone() }
    }
}

pub(crate) struct GenCtx {
    pub(crate) stats: Arc<PipelineStats>,
    pub(crate) load: LoadCtx,
    pub(crate) fps: f64,
    pub(crate) pacing: Pacing,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) hook: Option<StageHook>,
    pub(crate) faults: Arc<Faults>,
    /// How long a reload may take ([`RELOAD_TIMEOUT`]; tests shorten it).
    pub(crate) reload_timeout: Duration,
    pub(crate) presence: PresenceParams,
}

/// A reload in progress on its helper thread.
struct Pending {
    path: PathBuf,
    load: LoadCtx,
    /// A live switch: cross-fade from the old avatar.
    crossfade: bool,
    reply: Reply,
    started: Instant,
    rx: Receiver<Result<Avatar>>,
}

/// Starts loading `path` with `load` on a helper thread.
fn start_load(path: PathBuf, load: LoadCtx, crossfade: bool, reply: Reply) -> Pending {
    let (tx, rx) = bounded(1);
    // Kept here to report a failed spawn through the same channel as any other load error.
    let spawn_failed = tx.clone();
    let (p, l) = (path.clone(), load.clone());
    let spawned = std::thread::Builder::new().name("pc-avatar-load".into()).spawn(move || {
        let mut raster = vec![0u8; RASTER_BYTES];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Avatar::load(&p, &l, &mut raster)))
            .unwrap_or_else(|e| Err(Error::Invalid(format!("loading the avatar panicked: {}", crate::error::panic_message(e.as_ref())))));
        let _ = tx.send(r);
    });
    if let Err(e) = spawned {
        let _ = spawn_failed.send(Err(Error::Invalid(format!("cannot start the avatar loader thread: {e}"))));
    }
    Pending { path, load, crossfade, reply, started: Instant::now(), rx }
}

/// The state that outlives a restart of the loop.
struct State {
    av: Avatar,
    /// The file `av` came from: a restart after a panic loads it again.
    path: PathBuf,
    raster: Vec<u8>,
    pending: Option<Pending>,
    face_present: bool,
    failing: bool,
    last_good: Arc<Frame>,
    last_t: Option<Instant>,
    /// Pause and face-lost still (survives a restart: a pause is the user's choice).
    presence: Presence,
    /// The cross-fade of a live avatar switch, while it runs.
    fade: Option<SwitchFade>,
    /// The last frame sent out, with the still and fades applied (what a switch fades from).
    last_out: Arc<Frame>,
    neutral_resets: u64,
    /// Eye contact as switched by the control API (`None`: as the config says). Applied to every
    /// avatar loaded later (a switch, a restart after a panic) until the daemon restarts.
    eye_contact: Option<bool>,
}

pub(super) fn generator_thread(
    avatar_path: PathBuf,
    mut ctx: GenCtx,
    rx: Receiver<FaceMsg>,
    control: Receiver<Control>,
    tx: LatestSender<OutMsg>,
    ready: Sender<(&'static str, Result<()>)>,
) -> Result<()> {
    let mut raster = vec![0u8; RASTER_BYTES];
    // Published before the stage reports ready, so the status never shows a started pipeline
    // without its avatar.
    let opened = Avatar::load(&avatar_path, &ctx.load, &mut raster).inspect(|a| a.publish(&ctx));
    let Some(av) = super::report_ready("generator", opened, ready, &ctx.stop) else { return Ok(()) };
    // Live: the idle portrait goes out first, so the output shows the avatar before any face
    // arrives. Offline runs emit exactly one frame per input frame, so they skip it.
    if ctx.pacing == Pacing::Realtime && !tx.send(OutMsg { frame: av.idle.clone(), captured: None }) {
        return Ok(());
    }
    let last_good = av.idle.clone();
    let presence = Presence::new(ctx.presence);
    let mut st = State {
        av,
        path: avatar_path,
        raster,
        pending: None,
        face_present: false,
        failing: false,
        last_out: last_good.clone(),
        last_good,
        last_t: None,
        presence,
        fade: None,
        neutral_resets: 0,
        eye_contact: None,
    };
    let mut control = control;
    let stats = ctx.stats.clone();
    let stop = ctx.stop.clone();
    supervise::supervise(&stats.generator, &stop, |restarted| {
        if restarted {
            // The panic may have left the avatar's filters half-updated: start it afresh.
            match Avatar::load(&st.path, &ctx.load, &mut st.raster) {
                Ok(a) => {
                    st.av = a;
                    if let Some(on) = st.eye_contact {
                        st.av.set_eye_contact(on);
                    }
                    st.av.publish(&ctx);
                }
                Err(e) => log::error!("generator: reloading {} after the panic failed ({e}); keeping the avatar in memory", st.path.display()),
            }
            st.last_good = st.av.idle.clone();
        }
        generator_loop(&mut ctx, &mut st, &rx, &mut control, &tx)
    })
}

fn generator_loop(ctx: &mut GenCtx, st: &mut State, rx: &Receiver<FaceMsg>, control: &mut Receiver<Control>, tx: &LatestSender<OutMsg>) -> Result<()> {
    loop {
        let loaded = st.pending.as_ref().map_or_else(crossbeam_channel::never, |p| p.rx.clone());
        let msg = crossbeam_channel::select! {
            recv(control) -> c => {
                match c {
                    Ok(Control::Reload(path, settings, crossfade, reply)) => {
                        if st.pending.is_some() {
                            let _ = reply.send(Err(Error::Invalid("another avatar reload is still in progress".into())));
                        } else {
                            let load = settings.map_or_else(|| ctx.load.clone(), |s| ctx.load.with(s));
                            log::info!("avatar: loading {} (the running avatar stays until it is ready)", path.display());
                            st.pending = Some(start_load(path, load, crossfade, reply));
                        }
                    }
                    Ok(Control::Pause(paused, reply)) => {
                        if paused != st.presence.paused() {
                            log::info!("{}", if paused { "paused: holding the still of the portrait" } else { "resumed: the live face again" });
                        }
                        st.presence.set_paused(paused);
                        publish_look(ctx, st);
                        let _ = reply.send(Ok(()));
                    }
                    Ok(Control::NeutralNow(reply)) => {
                        let r = if st.av.relearn_neutral() {
                            st.neutral_resets += 1;
                            log::info!("neutral now: learning the driver's neutral from the next steady frames");
                            st.av.publish(ctx);
                            publish_look(ctx, st);
                            Ok(())
                        } else {
                            Err(Error::Invalid("retargeting is off ([retarget] enabled = false): there is no driver neutral to take".into()))
                        };
                        let _ = reply.send(r);
                    }
                    Ok(Control::EyeContact(on, reply)) => {
                        let r = if st.av.set_eye_contact(on) {
                            st.eye_contact = Some(on);
                            log::info!("eye contact {}", if on { "on: the portrait looks into the camera while you look at the screen" } else { "off" });
                            publish_look(ctx, st);
                            Ok(())
                        } else {
                            Err(Error::Invalid("retargeting is off ([retarget] enabled = false): there are no eyes to turn to the camera".into()))
                        };
                        let _ = reply.send(r);
                    }
                    // The handle is gone: stop polling it (a closed channel is always ready).
                    Err(_) => *control = crossbeam_channel::never(),
                }
                continue;
            }
            recv(loaded) -> r => {
                let p = st.pending.take().expect("a pending reload");
                let r = r.unwrap_or_else(|_| Err(Error::Invalid("the avatar loader ended without an answer".into())));
                finish_reload(ctx, st, p, r);
                continue;
            }
            recv(rx) -> m => match m { Ok(m) => m, Err(_) => return Ok(()) },
            default(Duration::from_millis(200)) => {
                check_reload_timeout(ctx, st);
                continue;
            }
        };
        check_reload_timeout(ctx, st);
        if let Some(hook) = &ctx.hook {
            hook();
        }
        ctx.faults.tick(supervise::GENERATOR);
        let t0 = Instant::now();
        // Time since the previous frame, for the fades (offline: one frame period).
        let look_dt = match ctx.pacing {
            Pacing::EveryFrame => (1.0 / ctx.fps) as f32,
            Pacing::Realtime => st.last_t.map_or(0.0, |t: Instant| (t0 - t).as_secs_f32()),
        };
        let (captured, frame) = match msg {
            FaceMsg::Waiting(why) => {
                log::warn!("generator: showing the waiting-for-camera notice ({why})");
                st.face_present = false;
                let notice = super::notice::placeholder(&st.av.idle).map(Arc::new).unwrap_or_else(|_| st.av.idle.clone());
                st.last_good = notice.clone();
                if !tx.send(OutMsg { frame: notice, captured: None }) {
                    return Ok(());
                }
                continue;
            }
            FaceMsg::SourceLost => {
                st.face_present = false;
                st.last_good = st.av.idle.clone();
                if !tx.send(OutMsg { frame: st.av.idle.clone(), captured: None }) {
                    return Ok(());
                }
                continue;
            }
            FaceMsg::Face { lm, captured } => {
                // Offline runs advance by one frame period so the result is reproducible.
                let now = Instant::now();
                let dt = match ctx.pacing {
                    Pacing::EveryFrame => (1.0 / ctx.fps) as f32,
                    Pacing::Realtime => st.last_t.map_or(0.0, |t: Instant| (now - t).as_secs_f32()),
                };
                st.last_t = Some(now);
                let before = st.av.retarget_status();
                let frame = st.av.frame(lm.as_ref(), dt, &mut st.raster);
                let used = matches!(frame, Ok((_, true)));
                let after = st.av.retarget_status();
                if after != before {
                    if after == Some(NeutralStatus::Learned) {
                        log::info!("retarget: driver neutral learned from the first steady frames");
                    }
                    st.av.publish(ctx);
                }
                if used {
                    st.face_present = true;
                } else if st.face_present && frame.is_ok() {
                    st.face_present = false;
                    ctx.stats.face_lost.fetch_add(1, Ordering::Relaxed);
                    log::info!("face lost; easing back to the neutral pose");
                }
                (captured, frame.map(|(f, _)| f))
            }
        };
        let out = match frame {
            Ok(f) => {
                if st.failing {
                    log::info!("generator recovered");
                    st.failing = false;
                }
                let f = Arc::new(Frame { pts: Duration::ZERO, seq: ctx.stats.generator.frames.load(Ordering::Relaxed), ..f });
                st.last_good = f.clone();
                let f = apply_look(ctx, st, f, look_dt);
                ctx.stats.generator.record(t0.elapsed());
                f
            }
            Err(e) => {
                ctx.stats.generator.error_one();
                if !st.failing {
                    log::error!("generator failed: {e}; repeating the last good frame until it recovers");
                    st.failing = true;
                }
                st.last_good.clone()
            }
        };
        st.last_out = out.clone();
        if !tx.send(OutMsg { frame: out, captured: Some(captured) }) {
            return Ok(());
        }
    }
}

/// The live frame with the still (pause, lost face), the mark and a switch's cross-fade on it.
/// Returns `f` itself when nothing is drawn (no copy on the common path).
fn apply_look(ctx: &GenCtx, st: &mut State, f: Arc<Frame>, dt: f32) -> Arc<Frame> {
    let look = st.presence.update(st.face_present, dt);
    let mut out = f;
    if look.still > 0.0 {
        let m = Arc::make_mut(&mut out);
        presence::blend_into(m, &st.av.idle, look.still);
        presence::draw_mark(m, look.mark);
    }
    if let Some(fade) = st.fade.as_mut() {
        if !fade.apply(Arc::make_mut(&mut out), dt) {
            st.fade = None;
        }
    }
    publish_look(ctx, st);
    out
}

/// Shows the pause/still/fade state in the status (only when it changed).
fn publish_look(ctx: &GenCtx, st: &State) {
    let look = crate::stats::LookStatus {
        paused: st.presence.paused(),
        still: (st.presence_weight() * 100.0).round() / 100.0,
        face_mark: st.presence_mark() > 0.0,
        switching: st.fade.is_some(),
        neutral_resets: st.neutral_resets,
        eye_contact: st.av.eye_contact(),
    };
    if *ctx.stats.look.read() != look {
        *ctx.stats.look.write() = look;
    }
}

impl State {
    fn presence_weight(&self) -> f32 {
        self.presence.weights().0
    }
    fn presence_mark(&self) -> f32 {
        self.presence.weights().1
    }
}

/// Swaps in a loaded avatar (and its settings), or reports why not; the running one stays on
/// failure.
fn finish_reload(ctx: &mut GenCtx, st: &mut State, p: Pending, r: Result<Avatar>) {
    let r = match r {
        Ok(new) => {
            log::info!("avatar reloaded from {} in {:.1} s", p.path.display(), p.started.elapsed().as_secs_f64());
            ctx.load = p.load;
            st.av = new;
            if let Some(on) = st.eye_contact {
                st.av.set_eye_contact(on);
            }
            st.path = p.path;
            st.last_good = st.av.idle.clone();
            if p.crossfade {
                // From what the camera showed last, so the switch never jumps.
                st.fade = Some(SwitchFade::new(st.last_out.clone(), ctx.presence.switch_fade_s));
            }
            st.av.publish(ctx);
            Ok(())
        }
        Err(e) => {
            log::error!("avatar reload from {} failed, keeping '{}': {e}", p.path.display(), st.av.name());
            Err(e)
        }
    };
    let _ = p.reply.send(r);
}

/// Gives up a reload that takes too long: its result, if it ever comes, is dropped.
fn check_reload_timeout(ctx: &GenCtx, st: &mut State) {
    if st.pending.as_ref().is_some_and(|p| p.started.elapsed() > ctx.reload_timeout) {
        let p = st.pending.take().expect("checked");
        let e = Error::Invalid(format!(
            "loading {} took longer than {:.0} s; keeping '{}'",
            p.path.display(),
            ctx.reload_timeout.as_secs_f64(),
            st.av.name()
        ));
        log::error!("avatar reload: {e}");
        let _ = p.reply.send(Err(e));
    }
}
