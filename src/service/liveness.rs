//! Liveness per stage. A sampler thread watches each stage's own progress counter (new capture
//! frames, face results, generated frames, frames written) so that /health, the watchdog, /metrics
//! and the status page agree on whether the daemon really works. The output alone cannot tell:
//! in realtime mode it repeats the last frame on every tick, so a hung face or generator stage
//! would look healthy forever. `stats` has counters but no timestamps, and readers must not touch
//! the hot path, hence sampling.
//!
//! Rules (docs/service.md, "Health"):
//! - before the source delivered a frame and the avatar is loaded the daemon is *starting*;
//! - a stage with work waiting (its upstream produced something it has not consumed) that makes
//!   no progress for `stall_after` is *stalled*: unhealthy, and the watchdog stops pinging;
//!   the clocked output of realtime mode must progress on every tick, work or not;
//! - a live source that is lost (being reopened with backoff), or missing since the start, is
//!   *degraded* for as long as it is gone: the process is sound and the output flows (the
//!   portrait, then a "waiting for camera" notice after `source_lost_after`), and a restart could
//!   not bring a camera back, so the watchdog keeps being fed; a lost face is normal and only
//!   reported.
use crate::stats::PipelineStats;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the counters are sampled; health resolution is this fine.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// fps is averaged over this window.
const FPS_WINDOW: Duration = Duration::from_secs(2);

/// The stages in pipeline order; each one's upstream is the one before it.
pub const STAGES: [&str; 4] = ["capture", "face", "generator", "output"];

/// The thresholds (`[service] stall_timeout_s`, `source_lost_timeout_s`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LivenessConfig {
    /// A stage with work waiting (or the clocked output) that makes no progress this long is hung.
    pub stall_after: Duration,
    /// A lost live source is reported as "waiting for camera" after this long (it stays
    /// degraded, never unhealthy: see the module comment).
    pub source_lost_after: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        // Below WatchdogSec=10 of the units, so a hang stops the pings well before systemd's
        // deadline; a camera gets a minute before the output says it is waiting for it.
        LivenessConfig { stall_after: Duration::from_secs(5), source_lost_after: Duration::from_secs(60) }
    }
}

/// The overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the first camera frame and/or the avatar.
    Starting,
    Ok,
    /// Working with a handicap (the source is lost or missing and being reopened): HTTP 200,
    /// watchdog pings.
    Degraded,
    /// HTTP 503 and no watchdog pings, so systemd restarts the daemon.
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }

    /// What /health answers 200 for.
    pub fn is_up(self) -> bool {
        matches!(self, Status::Ok | Status::Degraded)
    }
}

/// One stage's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageState {
    /// Progressing, or busy with work that arrived less than `stall_after` ago.
    Ok,
    /// Nothing to do (e.g. downstream of a lost camera).
    Idle,
    /// The source is lost and being reopened (capture only).
    Lost,
    /// Work waiting (or a clock tick due) and no progress for `stall_after`.
    Stalled,
}

impl StageState {
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Ok => "ok",
            StageState::Idle => "idle",
            StageState::Lost => "lost",
            StageState::Stalled => "stalled",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct StageView {
    pub name: &'static str,
    pub state: StageState,
    /// Time since the stage's counter last advanced (`None` while starting).
    pub since_progress: Option<Duration>,
}

/// What READY=1 waits for (reported in /status.json).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The source delivered its first frame, or the camera is missing and waited for (the
    /// service then runs degraded: ready, with the notice on the output).
    pub source: bool,
    /// The generator loaded the avatar.
    pub avatar: bool,
}

impl Readiness {
    pub fn of(stats: &PipelineStats) -> Readiness {
        Readiness {
            source: stats.capture.frames.load(Ordering::Relaxed) > 0 || stats.source_lost.load(Ordering::Relaxed),
            avatar: stats.avatar_loaded.load(Ordering::Relaxed),
        }
    }

    pub fn ready(self) -> bool {
        self.source && self.avatar
    }

    /// "waiting for the first source frame and the avatar", for reasons and status lines.
    pub fn waiting_for(self) -> String {
        match (self.source, self.avatar) {
            (false, false) => "the first source frame and the avatar".into(),
            (false, true) => "the first source frame".into(),
            (true, false) => "the avatar".into(),
            (true, true) => "nothing".into(),
        }
    }
}

/// A point-in-time view.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Frames the sink received so far.
    pub frames: u64,
    /// Output frames per second over the last ~2 s.
    pub fps: f64,
    /// Time since the output frame counter last advanced; `None` before the first frame.
    pub since_last_frame: Option<Duration>,
    /// Output frames flowed within `stall_after` (the fps is shown only then).
    pub flowing: bool,
    pub status: Status,
    /// Why the status is not `Ok`.
    pub reason: Option<String>,
    pub stages: Vec<StageView>,
    /// "tracked", "lost" or "unknown": reported, never unhealthy.
    pub face: &'static str,
    pub readiness: Readiness,
    /// How long the source has been lost, while it is.
    pub source_lost_for: Option<Duration>,
}

impl Snapshot {
    pub fn stage(&self, name: &str) -> Option<&StageView> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// Progress bookkeeping of one stage.
#[derive(Clone, Copy, Debug)]
struct Track {
    count: u64,
    last_change: Instant,
    /// Upstream's count when this stage last progressed.
    upstream_seen: u64,
    /// Since when upstream has produced work this stage has not consumed.
    pending_since: Option<Instant>,
}

struct State {
    samples: VecDeque<(Instant, u64)>,
    last_change: Option<Instant>,
    last_frames: u64,
    /// `None` until ready (and again during reloads, which restart the clocks).
    tracks: Option<[Track; 4]>,
    lost_since: Option<Instant>,
}

/// Shared liveness tracker; cheap to query from any thread.
pub struct Liveness {
    stats: Arc<PipelineStats>,
    cfg: Mutex<LivenessConfig>,
    state: Mutex<State>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The counter that means "the pipeline delivered a frame".
pub fn frames_delivered(stats: &PipelineStats) -> u64 {
    stats.output.frames.load(Ordering::Relaxed)
}

/// Stage `i`'s progress counter. The generator counts failed frames too: a failing generator is
/// not hung (its errors are counted and the last good frame repeats).
fn progress(stats: &PipelineStats, i: usize) -> u64 {
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    match i {
        0 => l(&stats.capture.frames),
        1 => l(&stats.face.frames),
        2 => l(&stats.generator.frames) + l(&stats.generator.errors),
        _ => l(&stats.output.frames),
    }
}

fn fresh_tracks(stats: &PipelineStats, now: Instant) -> [Track; 4] {
    std::array::from_fn(|i| Track {
        count: progress(stats, i),
        last_change: now,
        upstream_seen: if i == 0 { 0 } else { progress(stats, i - 1) },
        pending_since: None,
    })
}

impl Liveness {
    /// Creates the tracker and starts its sampler thread.
    pub fn start(stats: Arc<PipelineStats>, cfg: LivenessConfig) -> Arc<Liveness> {
        let l = Arc::new(Self::new(stats, cfg));
        let weak = Arc::downgrade(&l);
        let h = std::thread::Builder::new()
            .name("svc-liveness".into())
            .spawn(move || loop {
                // A weak reference so a forgotten `stop` cannot keep the tracker alive forever.
                let Some(l) = weak.upgrade() else { return };
                if l.stop.load(Ordering::Relaxed) {
                    return;
                }
                l.sample(Instant::now());
                drop(l);
                std::thread::sleep(SAMPLE_EVERY);
            })
            .ok();
        *l.thread.lock() = h;
        l
    }

    /// A tracker without a thread; `sample` is driven by hand (unit tests).
    pub fn new(stats: Arc<PipelineStats>, cfg: LivenessConfig) -> Liveness {
        Liveness {
            stats,
            cfg: Mutex::new(cfg),
            state: Mutex::new(State { samples: VecDeque::new(), last_change: None, last_frames: 0, tracks: None, lost_since: None }),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        }
    }

    pub fn config(&self) -> LivenessConfig {
        *self.cfg.lock()
    }

    /// New thresholds (SIGHUP).
    pub fn set_config(&self, cfg: LivenessConfig) {
        *self.cfg.lock() = cfg;
    }

    /// Takes one sample of the counters at time `now`.
    pub fn sample(&self, now: Instant) {
        let stats = &*self.stats;
        let frames = frames_delivered(stats);
        let mut s = self.state.lock();
        if frames != s.last_frames {
            s.last_frames = frames;
            s.last_change = Some(now);
        }
        s.samples.push_back((now, frames));
        while s.samples.len() > 2 && s.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > FPS_WINDOW) {
            s.samples.pop_front();
        }

        if stats.source_lost.load(Ordering::Relaxed) {
            s.lost_since.get_or_insert(now);
        } else {
            s.lost_since = None;
        }
        if !Readiness::of(stats).ready() || stats.reloading.load(Ordering::SeqCst) > 0 {
            // Start-up is bounded by TimeoutStartSec; a reload may rebuild engines or reopen
            // devices: the stage clocks restart afterwards.
            s.tracks = None;
            return;
        }
        let Some(tracks) = s.tracks.as_mut() else {
            s.tracks = Some(fresh_tracks(stats, now));
            return;
        };
        for (i, t) in tracks.iter_mut().enumerate() {
            let c = progress(stats, i);
            let up = if i == 0 { 0 } else { progress(stats, i - 1) };
            if c != t.count {
                t.count = c;
                t.last_change = now;
                t.upstream_seen = up;
                t.pending_since = None;
            } else if i > 0 && up != t.upstream_seen && t.pending_since.is_none() {
                t.pending_since = Some(now);
            }
        }
    }

    /// The current view, as of `now` (from the samples taken so far).
    pub fn snapshot_at(&self, now: Instant) -> Snapshot {
        let stats = &*self.stats;
        let cfg = self.config();
        let s = self.state.lock();
        let fps = match (s.samples.front(), s.samples.back()) {
            (Some(&(t0, f0)), Some(&(t1, f1))) if t1 > t0 => (f1.saturating_sub(f0)) as f64 / (t1 - t0).as_secs_f64(),
            _ => 0.0,
        };
        let since = s.last_change.map(|t| now.saturating_duration_since(t));
        let flowing = since.is_some_and(|d| d <= cfg.stall_after);
        let readiness = Readiness::of(stats);
        let source_lost_for = s.lost_since.map(|t| now.saturating_duration_since(t));
        let paced = stats.paced.load(Ordering::Relaxed);
        let stall = cfg.stall_after;

        let stages: Vec<StageView> = STAGES
            .iter()
            .enumerate()
            .map(|(i, &name)| {
                let Some(t) = s.tracks.as_ref().map(|t| t[i]) else {
                    return StageView { name, state: StageState::Ok, since_progress: None };
                };
                let quiet = now.saturating_duration_since(t.last_change);
                let state = if i == 0 {
                    if source_lost_for.is_some() {
                        StageState::Lost
                    } else if quiet > stall {
                        StageState::Stalled
                    } else {
                        StageState::Ok
                    }
                } else if t.pending_since.is_some_and(|p| now.saturating_duration_since(p) > stall) || (i == 3 && paced && quiet > stall) {
                    StageState::Stalled
                } else if t.pending_since.is_none() && quiet > stall {
                    StageState::Idle
                } else {
                    StageState::Ok
                };
                StageView { name, state, since_progress: Some(quiet) }
            })
            .collect();

        let source_state = || {
            let st = stats.source_state.read().clone();
            if st.is_empty() {
                "unknown".to_string()
            } else {
                st
            }
        };
        let (status, reason) = if s.tracks.is_none() && !readiness.ready() {
            (Status::Starting, Some(format!("starting: waiting for {} (source: {})", readiness.waiting_for(), source_state())))
        } else if let Some(v) = stages.iter().find(|v| v.state == StageState::Stalled) {
            let secs = v.since_progress.unwrap_or_default().as_secs_f64();
            let detail = match v.name {
                "capture" => format!("no frame from the source for {secs:.1} s (source: {})", source_state()),
                "output" if paced => format!("no frame written for {secs:.1} s (sink: {})", stats.sink_state.read()),
                _ => format!("work waiting, no progress for {secs:.1} s"),
            };
            (Status::Unhealthy, Some(format!("{} stage stalled: {detail}", v.name)))
        } else if let Some(lost) = source_lost_for {
            let secs = lost.as_secs_f64();
            if lost > cfg.source_lost_after {
                (Status::Degraded, Some(format!("waiting for camera (gone for {secs:.0} s; the output shows a notice): {}", source_state())))
            } else {
                (Status::Degraded, Some(format!("source lost {secs:.1} s ago, reopening: {}", source_state())))
            }
        } else {
            // Includes "ready, but the first sample after it (or after a reload) has not run yet".
            (Status::Ok, None)
        };
        Snapshot {
            frames: s.last_frames,
            fps: if flowing { fps } else { 0.0 },
            since_last_frame: since,
            flowing,
            status,
            reason,
            stages,
            face: stats.face_state_text(),
            readiness,
            source_lost_for,
        }
    }

    /// Samples now and returns the view: callers (the watchdog in particular) never act on a
    /// stale verdict, even if the sampler thread died.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        self.sample(now);
        self.snapshot_at(now)
    }

    pub fn stall_after(&self) -> Duration {
        self.config().stall_after
    }

    /// Stops the sampler thread (idempotent).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LivenessConfig {
        LivenessConfig { stall_after: Duration::from_secs(2), source_lost_after: Duration::from_secs(10) }
    }

    fn ready(stats: &PipelineStats) {
        stats.avatar_loaded.store(true, Ordering::Relaxed);
        stats.capture.record(Duration::from_millis(1));
    }

    #[test]
    fn flow_fps_and_stall() {
        let stats = Arc::new(PipelineStats::default());
        let l = Liveness::new(stats.clone(), cfg());
        let t0 = Instant::now();
        l.sample(t0);
        let s = l.snapshot_at(t0);
        assert!(!s.flowing, "no frame yet must not count as flowing");
        assert_eq!(s.since_last_frame, None);
        // 10 frames per 100 ms for one second = 100 fps.
        for i in 1..=10 {
            for _ in 0..10 {
                stats.output.record(Duration::from_millis(1));
            }
            l.sample(t0 + Duration::from_millis(100 * i));
        }
        let s = l.snapshot_at(t0 + Duration::from_millis(1000));
        assert!(s.flowing);
        assert_eq!(s.frames, 100);
        assert!((s.fps - 100.0).abs() < 1e-6, "fps {}", s.fps);
        // Nothing for 3 s: stalled, fps reported as 0.
        l.sample(t0 + Duration::from_millis(4000));
        let s = l.snapshot_at(t0 + Duration::from_millis(4000));
        assert!(!s.flowing);
        assert_eq!(s.fps, 0.0);
        assert_eq!(s.since_last_frame, Some(Duration::from_millis(3000)));
    }

    #[test]
    fn starting_until_source_frame_and_avatar() {
        let stats = Arc::new(PipelineStats::default());
        let l = Liveness::new(stats.clone(), cfg());
        let t0 = Instant::now();
        // Output frames alone (the black start-up frame) do not make the daemon ready.
        stats.output.record(Duration::from_millis(1));
        l.sample(t0);
        let s = l.snapshot_at(t0);
        assert_eq!(s.status, Status::Starting);
        assert!(s.reason.as_deref().unwrap().contains("the first source frame and the avatar"), "{:?}", s.reason);
        stats.avatar_loaded.store(true, Ordering::Relaxed);
        l.sample(t0);
        assert!(l.snapshot_at(t0).reason.unwrap().contains("waiting for the first source frame ("));
        stats.capture.record(Duration::from_millis(1));
        l.sample(t0);
        assert_eq!(l.snapshot_at(t0).status, Status::Ok);
    }

    /// Steady flow through all four stages for `ms`, sampled every 100 ms from `t`.
    fn flow(stats: &PipelineStats, l: &Liveness, t: &mut Instant, ms: u64, stages: &[usize]) {
        for _ in 0..ms / 100 {
            for &i in stages {
                [&stats.capture, &stats.face, &stats.generator, &stats.output][i].record(Duration::from_millis(1));
            }
            *t += Duration::from_millis(100);
            l.sample(*t);
        }
    }

    #[test]
    fn a_hung_stage_with_work_waiting_is_unhealthy_an_idle_one_is_not() {
        for hung in 1..4 {
            let stats = Arc::new(PipelineStats::default());
            let l = Liveness::new(stats.clone(), cfg());
            ready(&stats);
            let mut t = Instant::now();
            l.sample(t);
            flow(&stats, &l, &mut t, 1000, &[0, 1, 2, 3]);
            assert_eq!(l.snapshot_at(t).status, Status::Ok);
            // Stage `hung` stops; the ones before it keep producing.
            let upstream: Vec<usize> = (0..hung).collect();
            flow(&stats, &l, &mut t, 1500, &upstream);
            assert_eq!(l.snapshot_at(t).status, Status::Ok, "stage {hung}: within the stall window");
            flow(&stats, &l, &mut t, 1000, &upstream);
            let s = l.snapshot_at(t);
            assert_eq!(s.status, Status::Unhealthy, "stage {hung}");
            assert_eq!(s.stages[hung].state, StageState::Stalled, "{s:?}");
            assert!(s.reason.as_deref().unwrap().starts_with(&format!("{} stage stalled", STAGES[hung])), "{:?}", s.reason);
        }

        // Downstream of a source that stops, stages are idle, and the capture stage is the one named.
        let stats = Arc::new(PipelineStats::default());
        let l = Liveness::new(stats.clone(), cfg());
        ready(&stats);
        let mut t = Instant::now();
        l.sample(t);
        flow(&stats, &l, &mut t, 1000, &[0, 1, 2, 3]);
        flow(&stats, &l, &mut t, 2500, &[3]);
        let s = l.snapshot_at(t);
        assert_eq!((s.stages[1].state, s.stages[2].state), (StageState::Idle, StageState::Idle));
        assert_eq!(s.stages[0].state, StageState::Stalled);
        assert!(s.reason.unwrap().starts_with("capture stage stalled: no frame from the source"));
    }

    #[test]
    fn clocked_output_must_tick_and_reloads_restart_the_clocks() {
        let stats = Arc::new(PipelineStats::default());
        stats.paced.store(true, Ordering::Relaxed);
        let l = Liveness::new(stats.clone(), cfg());
        ready(&stats);
        let mut t = Instant::now();
        l.sample(t);
        flow(&stats, &l, &mut t, 1000, &[0, 1, 2, 3]);
        // Source lost: nothing to generate, but a paced output still has to write.
        stats.source_lost.store(true, Ordering::Relaxed);
        flow(&stats, &l, &mut t, 3000, &[3]);
        let s = l.snapshot_at(t);
        assert_eq!(s.status, Status::Degraded, "{s:?}");
        assert_eq!(s.stages[0].state, StageState::Lost);
        flow(&stats, &l, &mut t, 2500, &[]);
        let s = l.snapshot_at(t);
        assert_eq!(s.status, Status::Unhealthy);
        assert!(s.reason.unwrap().starts_with("output stage stalled: no frame written"));

        // A reload pauses the verdict; afterwards every stage gets a fresh stall window.
        let guard = stats.reload_guard();
        flow(&stats, &l, &mut t, 3000, &[]);
        assert_ne!(l.snapshot_at(t).status, Status::Unhealthy);
        drop(guard);
        stats.source_lost.store(false, Ordering::Relaxed);
        flow(&stats, &l, &mut t, 1000, &[]);
        assert_eq!(l.snapshot_at(t).status, Status::Ok);
    }

    #[test]
    fn a_lost_source_stays_degraded_and_says_it_waits_for_the_camera() {
        let stats = Arc::new(PipelineStats::default());
        let l = Liveness::new(stats.clone(), cfg());
        ready(&stats);
        let mut t = Instant::now();
        l.sample(t);
        flow(&stats, &l, &mut t, 1000, &[0, 1, 2, 3]);
        stats.source_lost.store(true, Ordering::Relaxed);
        *stats.source_state.write() = "lost: unplugged".into();
        flow(&stats, &l, &mut t, 9000, &[3]);
        let s = l.snapshot_at(t);
        assert_eq!(s.status, Status::Degraded);
        assert!(s.reason.unwrap().contains("lost: unplugged"));
        // Long gone: still degraded (a restart cannot bring a camera back), and it says so.
        flow(&stats, &l, &mut t, 100_000, &[3]);
        let s = l.snapshot_at(t);
        assert_eq!(s.status, Status::Degraded);
        let r = s.reason.unwrap();
        assert!(r.starts_with("waiting for camera (gone for 10") && r.contains("lost: unplugged"), "{r}");
        // Back: healthy again at once.
        stats.source_lost.store(false, Ordering::Relaxed);
        flow(&stats, &l, &mut t, 200, &[0, 1, 2, 3]);
        assert_eq!(l.snapshot_at(t).status, Status::Ok);
    }

    #[test]
    fn a_camera_missing_at_start_is_ready_and_degraded() {
        let stats = Arc::new(PipelineStats::default());
        let l = Liveness::new(stats.clone(), cfg());
        stats.avatar_loaded.store(true, Ordering::Relaxed);
        assert_eq!(l.snapshot().status, Status::Starting);
        // The capture stage waits for the camera: no frame yet, but the service is up.
        stats.source_lost.store(true, Ordering::Relaxed);
        *stats.source_state.write() = "waiting for camera: no such device".into();
        let s = l.snapshot();
        assert!(s.readiness.ready());
        assert_eq!(s.status, Status::Degraded, "{s:?}");
        assert!(s.reason.unwrap().contains("waiting for camera: no such device"));
    }
}
