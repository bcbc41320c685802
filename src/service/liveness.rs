//! Frame-flow liveness: a sampler thread watches the output frame counter so /health, the
//! watchdog and the status page agree on "frames are flowing" and on the current fps. `stats`
//! has counters but no timestamps, and readers must not touch the hot path, hence sampling.
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

/// A point-in-time view of frame flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Frames the sink received so far.
    pub frames: u64,
    /// Frames per second over the last ~2 s.
    pub fps: f64,
    /// Time since the frame counter last advanced; `None` before the first frame.
    pub since_last_frame: Option<Duration>,
    /// Frames flowed within `stall_after`.
    pub flowing: bool,
}

struct State {
    samples: VecDeque<(Instant, u64)>,
    last_change: Option<Instant>,
    last_frames: u64,
}

/// Shared liveness tracker; cheap to query from any thread.
pub struct Liveness {
    stats: Arc<PipelineStats>,
    stall_after: Duration,
    state: Mutex<State>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The counter that means "the pipeline delivered a frame".
pub fn frames_delivered(stats: &PipelineStats) -> u64 {
    stats.output.frames.load(Ordering::Relaxed)
}

impl Liveness {
    /// Creates the tracker and starts its sampler thread.
    pub fn start(stats: Arc<PipelineStats>, stall_after: Duration) -> Arc<Liveness> {
        let l = Arc::new(Self::new(stats, stall_after));
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
    pub fn new(stats: Arc<PipelineStats>, stall_after: Duration) -> Liveness {
        Liveness {
            stats,
            stall_after,
            state: Mutex::new(State { samples: VecDeque::new(), last_change: None, last_frames: 0 }),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        }
    }

    /// Takes one sample of the frame counter at time `now`.
    pub fn sample(&self, now: Instant) {
        let frames = frames_delivered(&self.stats);
        let mut s = self.state.lock();
        if frames != s.last_frames {
            s.last_frames = frames;
            s.last_change = Some(now);
        }
        s.samples.push_back((now, frames));
        while s.samples.len() > 2 && s.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > FPS_WINDOW) {
            s.samples.pop_front();
        }
    }

    /// The current view, as of `now`.
    pub fn snapshot_at(&self, now: Instant) -> Snapshot {
        let s = self.state.lock();
        let fps = match (s.samples.front(), s.samples.back()) {
            (Some(&(t0, f0)), Some(&(t1, f1))) if t1 > t0 => (f1.saturating_sub(f0)) as f64 / (t1 - t0).as_secs_f64(),
            _ => 0.0,
        };
        let since = s.last_change.map(|t| now.saturating_duration_since(t));
        let flowing = since.is_some_and(|d| d <= self.stall_after);
        Snapshot { frames: s.last_frames, fps: if flowing { fps } else { 0.0 }, since_last_frame: since, flowing }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_at(Instant::now())
    }

    pub fn stall_after(&self) -> Duration {
        self.stall_after
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

    #[test]
    fn flow_fps_and_stall() {
        let stats = Arc::new(PipelineStats::default());
        let l = Liveness::new(stats.clone(), Duration::from_secs(2));
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
}
