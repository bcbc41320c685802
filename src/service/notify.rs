//! systemd integration through sd_notify: READY=1 once the source delivered a frame and the avatar
//! is loaded, periodic STATUS= lines, WATCHDOG=1 pings only while liveness (per stage, see
//! `liveness`) does not call the daemon unhealthy (so systemd restarts a hung pipeline),
//! RELOADING=1 around SIGHUP reloads and STOPPING=1 on shutdown. Everything is a no-op when
//! NOTIFY_SOCKET is unset (not started by systemd).
use super::liveness::{Liveness, Status};
use crate::stats::PipelineStats;
use parking_lot::Mutex;
use sd_notify::NotifyState;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where notifications go. Captured once at start so that tests (and a later `remove_var`) do
/// not race on the process environment.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    None,
    Path(PathBuf),
    /// Linux abstract socket ("@name" in NOTIFY_SOCKET).
    Abstract(Vec<u8>),
}

/// Sends sd_notify messages; cloning shares nothing but the target address.
#[derive(Clone, Debug)]
pub struct Notifier {
    target: Target,
}

impl Notifier {
    /// Reads NOTIFY_SOCKET; a disabled notifier when it is unset or empty.
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(s) => Notifier::with_socket(&s),
            None => Notifier::disabled(),
        }
    }

    /// Notifier for an explicit socket address (same syntax as NOTIFY_SOCKET).
    pub fn with_socket(addr: &OsStr) -> Notifier {
        let b = addr.as_bytes();
        let target = if b.is_empty() {
            Target::None
        } else if b[0] == b'@' {
            Target::Abstract(b[1..].to_vec())
        } else {
            Target::Path(PathBuf::from(addr))
        };
        Notifier { target }
    }

    pub fn disabled() -> Notifier {
        Notifier { target: Target::None }
    }

    pub fn enabled(&self) -> bool {
        self.target != Target::None
    }

    /// Sends one datagram with the given states, newline separated (sd_notify's wire format;
    /// the crate's `NotifyState` formats each line). Failures are logged, never fatal: a daemon
    /// must not die because the service manager went away.
    pub fn send(&self, states: &[NotifyState]) -> bool {
        let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
        match self.send_raw(msg.as_bytes()) {
            Ok(sent) => sent,
            Err(e) => {
                log::warn!("sd_notify {:?}: {e}", msg.trim_end());
                false
            }
        }
    }

    fn send_raw(&self, msg: &[u8]) -> std::io::Result<bool> {
        let sock = UnixDatagram::unbound()?;
        match &self.target {
            Target::None => return Ok(false),
            Target::Path(p) => sock.connect(p)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.connect_addr(&addr)?
            }
        }
        sock.send(msg)?;
        Ok(true)
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// RELOADING=1; systemd >= 253 requires MONOTONIC_USEC in the same message.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(m) => self.send(&[NotifyState::Reloading, m, NotifyState::Status("reloading")]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status("reloading")]),
        };
    }

    /// READY=1 again after a reload, with the outcome as status.
    pub fn ready_after_reload(&self, outcome: &str) {
        self.ready(outcome);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping: draining the pipeline")]);
    }
}

/// Watchdog configuration; `from_env` reads WATCHDOG_USEC/WATCHDOG_PID set by systemd.
#[derive(Clone, Debug)]
pub struct WatchdogConfig {
    /// Ping interval (half of WatchdogSec); `None` when systemd asked for no watchdog.
    pub ping_every: Option<Duration>,
    /// How often STATUS= is refreshed.
    pub status_every: Duration,
    /// Loop granularity.
    pub tick: Duration,
}

impl WatchdogConfig {
    pub fn from_env() -> WatchdogConfig {
        let mut usec = 0u64;
        let ping_every = if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
            // Ping at half the deadline, as sd_watchdog_enabled(3) recommends.
            Some(Duration::from_micros(usec / 2).max(Duration::from_millis(50)))
        } else {
            None
        };
        WatchdogConfig { ping_every, status_every: Duration::from_secs(2), tick: Duration::from_millis(100) }
    }
}

/// One STATUS= line: fps, EP (with fallback), face state, source/sink state.
pub fn status_line(stats: &PipelineStats, fps: f64, face_lost_now: bool) -> String {
    let ep = stats.ep.read().clone();
    let mut s = format!("{fps:.1} fps, EP {}", if ep.active.is_empty() { "loading" } else { &ep.active });
    if ep.fallback_reason.is_some() {
        s.push_str(" (FALLBACK)");
    }
    s.push_str(if face_lost_now { ", face lost" } else { ", face tracked" });
    let src = stats.source_state.read().clone();
    if !src.is_empty() {
        s.push_str(&format!(", source: {src}"));
    }
    let sink = stats.sink_state.read().clone();
    if !sink.is_empty() {
        s.push_str(&format!(", sink: {sink}"));
    }
    // Only the state word (and learning progress): the full calibration source is on /status,
    // and systemctl status truncates long lines.
    let rt = stats.retarget_state.read().clone();
    let short = rt.split([':', '(']).next().unwrap_or("").trim();
    if !short.is_empty() {
        s.push_str(&format!(", retarget {short}"));
    }
    s
}

const MODE_RUNNING: u8 = 0;
const MODE_DRAINING: u8 = 1;

/// The notifier thread: READY, STATUS and progress-gated WATCHDOG pings.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    mode: Arc<AtomicU8>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Watchdog {
    /// Starts with the watchdog settings systemd put in the environment.
    pub fn start(notifier: Notifier, liveness: Arc<Liveness>, stats: Arc<PipelineStats>) -> Watchdog {
        Self::start_with(notifier, liveness, stats, WatchdogConfig::from_env())
    }

    pub fn start_with(notifier: Notifier, liveness: Arc<Liveness>, stats: Arc<PipelineStats>, cfg: WatchdogConfig) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let mode = Arc::new(AtomicU8::new(MODE_RUNNING));
        let (stop2, mode2) = (stop.clone(), mode.clone());
        let thread = std::thread::Builder::new()
            .name("svc-watchdog".into())
            .spawn(move || run(notifier, liveness, stats, cfg, stop2, mode2))
            .ok();
        Watchdog { stop, mode, thread: Mutex::new(thread) }
    }

    /// Shutdown has begun: keep pinging unconditionally while the pipeline drains.
    pub fn set_draining(&self) {
        self.mode.store(MODE_DRAINING, Ordering::Relaxed);
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    notifier: Notifier,
    liveness: Arc<Liveness>,
    stats: Arc<PipelineStats>,
    cfg: WatchdogConfig,
    stop: Arc<AtomicBool>,
    mode: Arc<AtomicU8>,
) {
    let mut ready = false;
    let mut last_ping = Instant::now();
    let mut last_status: Option<Instant> = None;
    let mut face_lost_at_status = stats.face_lost.load(Ordering::Relaxed);
    let mut warned_stall = false;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let snap = liveness.snapshot();
        let face_lost_now = |at: u64| stats.face_lost.load(Ordering::Relaxed) != at || snap.face == "lost";
        if !ready && snap.readiness.ready() {
            ready = true;
            face_lost_at_status = stats.face_lost.load(Ordering::Relaxed);
            notifier.ready(&status_line(&stats, snap.fps, face_lost_now(face_lost_at_status)));
            last_status = Some(now);
            if stats.source_lost.load(Ordering::Relaxed) {
                log::info!("avatar loaded, camera not there yet: service ready (degraded, waiting for the camera)");
            } else {
                log::info!("source delivers and the avatar is loaded: service ready");
            }
        }
        if ready && last_status.map_or(true, |t| now.duration_since(t) >= cfg.status_every) {
            let mut line = status_line(&stats, snap.fps, face_lost_now(face_lost_at_status));
            if let (Status::Degraded | Status::Unhealthy, Some(r)) = (snap.status, &snap.reason) {
                line = format!("{}: {r}; {line}", snap.status.as_str().to_uppercase());
            }
            notifier.status(&line);
            face_lost_at_status = stats.face_lost.load(Ordering::Relaxed);
            last_status = Some(now);
        } else if !ready && last_status.map_or(true, |t| now.duration_since(t) >= cfg.status_every) {
            notifier.status(snap.reason.as_deref().unwrap_or("starting"));
            last_status = Some(now);
        }
        if let Some(every) = cfg.ping_every {
            if now.duration_since(last_ping) >= every {
                let draining = mode.load(Ordering::Relaxed) == MODE_DRAINING;
                // Before READY the start is bounded by TimeoutStartSec (model loading, TensorRT
                // engine builds), so ping unconditionally; afterwards only while not unhealthy.
                if !ready || draining || snap.status != Status::Unhealthy {
                    notifier.watchdog();
                    warned_stall = false;
                } else if !warned_stall {
                    log::error!(
                        "unhealthy: {}; withholding the watchdog ping (systemd restarts the service)",
                        snap.reason.as_deref().unwrap_or("?")
                    );
                    warned_stall = true;
                }
                last_ping = now;
            }
        }
        std::thread::sleep(cfg.tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_address_forms() {
        assert!(!Notifier::with_socket(OsStr::new("")).enabled());
        assert_eq!(Notifier::with_socket(OsStr::new("@abc")).target, Target::Abstract(b"abc".to_vec()));
        assert_eq!(Notifier::with_socket(OsStr::new("/run/x")).target, Target::Path("/run/x".into()));
        assert!(!Notifier::disabled().send(&[NotifyState::Ready]), "disabled notifier must not claim to send");
    }

    #[test]
    fn status_line_mentions_fallback_and_face() {
        let s = PipelineStats::default();
        s.ep.write().active = "CPU".into();
        s.ep.write().fallback_reason = Some("CUDA: libcudart missing".into());
        *s.source_state.write() = "streaming".into();
        let l = status_line(&s, 29.97, true);
        assert_eq!(l, "30.0 fps, EP CPU (FALLBACK), face lost, source: streaming");
        *s.retarget_state.write() = crate::pipeline::retarget_state_text(
            Some(crate::core::retarget::NeutralStatus::Learning { have: 4, need: 30 }),
            "",
        );
        assert!(status_line(&s, 30.0, false).ends_with(", retarget provisional 4/30"), "{}", status_line(&s, 30.0, false));
        *s.retarget_state.write() = crate::pipeline::retarget_state_text(Some(crate::core::retarget::NeutralStatus::Profile), "profile /p.toml (camera:0, t)");
        assert!(status_line(&s, 30.0, false).ends_with(", retarget profile"), "{}", status_line(&s, 30.0, false));
    }
}
