//! Live pipeline statistics shared by the stages (writers), `bench`, status and /metrics (readers).
//! Lock-free counters and fixed-bucket latency histograms so the hot path never blocks.
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds (microseconds) of the latency histogram buckets; the last bucket is +Inf.
pub const BUCKETS_US: [u64; 16] =
    [250, 500, 1_000, 2_000, 4_000, 6_000, 8_000, 12_000, 16_000, 25_000, 33_000, 50_000, 100_000, 250_000, 1_000_000, u64::MAX];

/// Per-stage counters: processed frames, dropped frames, a latency histogram and a sample ring
/// for exact percentiles in `bench`.
pub struct StageStats {
    pub name: &'static str,
    pub frames: AtomicU64,
    pub drops: AtomicU64,
    pub errors: AtomicU64,
    /// Times the stage panicked and was restarted by its supervisor (`pipeline::supervise`).
    pub restarts: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len()],
    sum_us: AtomicU64,
    /// Recent latencies (microseconds), bounded, for median/p99.
    recent: Mutex<std::collections::VecDeque<u32>>,
}

const RECENT_CAP: usize = 4096;

impl StageStats {
    pub fn new(name: &'static str) -> Self {
        StageStats {
            name,
            frames: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
            recent: Mutex::new(std::collections::VecDeque::with_capacity(RECENT_CAP)),
        }
    }

    /// Records one processed frame that took `d`.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        let i = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len() - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let mut r = self.recent.lock();
        if r.len() == RECENT_CAP {
            r.pop_front();
        }
        r.push_back(us.min(u32::MAX as u64) as u32);
    }

    pub fn drop_one(&self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error_one(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (Prometheus style: each count includes the smaller buckets).
    pub fn cumulative_buckets(&self) -> Vec<(u64, u64)> {
        let mut acc = 0;
        BUCKETS_US
            .iter()
            .zip(self.buckets.iter())
            .map(|(&b, c)| {
                acc += c.load(Ordering::Relaxed);
                (b, acc)
            })
            .collect()
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// Percentile (0..=100) of the recent latencies in microseconds, `None` before any sample.
    pub fn percentile_us(&self, p: f64) -> Option<f64> {
        let r = self.recent.lock();
        percentile(r.iter().map(|&v| v as f64).collect(), p)
    }

    /// Forgets the recent samples (bench drops its warm-up this way).
    pub fn reset_recent(&self) {
        self.recent.lock().clear();
    }
}

/// Nearest-rank-with-interpolation percentile of `v` (sorted inside), `None` when empty.
pub fn percentile(mut v: Vec<f64>, p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

/// Pearson correlation of two equally long series; `NaN` when either is constant or empty
/// (no linear relation can be measured), which callers' threshold checks then reject.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Which execution provider the generator actually runs on, and why if it is not the first choice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpStatus {
    /// e.g. "TensorRT", "CUDA", "CPU"; empty before the generator loaded.
    pub active: String,
    /// Set when a preferred provider failed and a later one was used: the loud fallback reason.
    pub fallback_reason: Option<String>,
}

/// What the control API changed in the output, as the generator applies it (status page).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LookStatus {
    /// Paused: the still of the portrait is held.
    pub paused: bool,
    /// Weight of the still in the output, 0 (live) ..= 1 (still only), rounded to 0.01.
    pub still: f32,
    /// The face-not-found mark is on the output.
    pub face_mark: bool,
    /// A live avatar switch is cross-fading.
    pub switching: bool,
    /// Times "neutral now" was asked for.
    pub neutral_resets: u64,
    /// Eye contact is on (`[retarget] eye_contact`, or switched by the control API).
    pub eye_contact: bool,
}

/// All statistics of one running pipeline.
pub struct PipelineStats {
    pub started: Instant,
    pub capture: StageStats,
    pub face: StageStats,
    pub generator: StageStats,
    pub output: StageStats,
    /// Time from capture to sink write, per frame.
    pub end_to_end: StageStats,
    /// The same with buckets around the lip-sync thresholds, for /metrics.
    pub end_to_end_hist: crate::histogram::Histogram,
    /// Where the face stage's time goes (`face::FaceProfile`), per frame.
    pub face_parts: FaceParts,
    /// The frame rate the open source delivers (camera's negotiated rate, file's rate), as f64
    /// bits; 0 while unknown. The live output follows it (`pipeline::rate`).
    pub source_fps_bits: AtomicU64,
    /// Set once the capture stage tried to open its source (whether or not that told a rate):
    /// the output opens its sink after this, at the rate it then knows.
    pub source_rate_settled: AtomicBool,
    pub face_lost: AtomicU64,
    pub source_reconnects: AtomicU64,
    /// Set by the capture stage while a live source is lost and being reopened; liveness calls
    /// that "degraded" and, after `[service] source_lost_timeout_s`, unhealthy.
    pub source_lost: AtomicBool,
    /// The face stage's latest verdict: [`FACE_UNKNOWN`], [`FACE_TRACKED`] or [`FACE_LOST`]. A lost
    /// face is a normal state (the portrait eases to neutral), reported but never unhealthy.
    pub face_state: AtomicU8,
    /// The generator has loaded an avatar (set once the pipeline started); with the first
    /// captured frame this is what READY=1 waits for.
    pub avatar_loaded: AtomicBool,
    /// The output is clocked (realtime pacing): it must write every tick, whatever upstream does.
    pub paced: AtomicBool,
    /// Reloads in progress (avatar swap, SIGHUP reconfiguration): stages may legitimately pause,
    /// so liveness does not count that time as a hang.
    pub reloading: AtomicU32,
    pub ep: RwLock<EpStatus>,
    /// Short human-readable states for status pages ("streaming", "camera lost: ...").
    pub source_state: RwLock<String>,
    pub sink_state: RwLock<String>,
    pub avatar_name: RwLock<String>,
    /// Retargeter state and where the driver's neutral comes from: `profile: <file> ...`,
    /// `learning 12/30: ...`, `learned: ...` or `off ...` (see `pipeline::retarget_state_text`).
    pub retarget_state: RwLock<String>,
    /// Pause, face-lost still, cross-fade (issue 20's control API).
    pub look: RwLock<LookStatus>,
    /// The latest output frame, for the MJPEG preview.
    pub preview: Mutex<Option<std::sync::Arc<crate::core::types::Frame>>>,
}

impl Default for PipelineStats {
    fn default() -> Self {
        PipelineStats {
            started: Instant::now(),
            capture: StageStats::new("capture"),
            face: StageStats::new("face"),
            generator: StageStats::new("generator"),
            output: StageStats::new("output"),
            end_to_end: StageStats::new("end_to_end"),
            end_to_end_hist: crate::histogram::Histogram::new_ms(&crate::histogram::END_TO_END_MS),
            face_parts: FaceParts::default(),
            source_fps_bits: AtomicU64::new(0),
            source_rate_settled: AtomicBool::new(false),
            face_lost: AtomicU64::new(0),
            source_reconnects: AtomicU64::new(0),
            source_lost: AtomicBool::new(false),
            face_state: AtomicU8::new(FACE_UNKNOWN),
            avatar_loaded: AtomicBool::new(false),
            paced: AtomicBool::new(false),
            reloading: AtomicU32::new(0),
            ep: RwLock::new(EpStatus::default()),
            source_state: RwLock::new(String::new()),
            sink_state: RwLock::new(String::new()),
            avatar_name: RwLock::new(String::new()),
            retarget_state: RwLock::new(String::new()),
            look: RwLock::new(LookStatus::default()),
            preview: Mutex::new(None),
        }
    }
}

/// The face stage's parts (`face::FaceProfile`): the detector only on frames it ran, the others
/// every frame the tracker ran (iris as the sum over the eyes it ran on, 0 when none).
pub struct FaceParts {
    pub detector: StageStats,
    pub landmark_crop: StageStats,
    pub landmark_model: StageStats,
    pub iris_crop: StageStats,
    pub iris_model: StageStats,
    pub other: StageStats,
    /// Eyes the iris model ran on, in all.
    pub iris_runs: AtomicU64,
    /// Runs of MediaPipe's iris model that checked the distilled one (`face::iris_audit`).
    pub iris_checks: AtomicU64,
}

impl Default for FaceParts {
    fn default() -> Self {
        FaceParts {
            detector: StageStats::new("detector"),
            landmark_crop: StageStats::new("landmark_crop"),
            landmark_model: StageStats::new("landmark_model"),
            iris_crop: StageStats::new("iris_crop"),
            iris_model: StageStats::new("iris_model"),
            other: StageStats::new("other"),
            iris_runs: AtomicU64::new(0),
            iris_checks: AtomicU64::new(0),
        }
    }
}

impl FaceParts {
    pub fn all(&self) -> [&StageStats; 6] {
        [&self.detector, &self.landmark_crop, &self.landmark_model, &self.iris_crop, &self.iris_model, &self.other]
    }

    pub fn record(&self, p: &crate::face::FaceProfile) {
        if let Some(d) = p.detector {
            self.detector.record(d);
        }
        self.landmark_crop.record(p.landmark_crop);
        self.landmark_model.record(p.landmark_model);
        self.iris_crop.record(p.iris_crop);
        self.iris_model.record(p.iris_model);
        self.other.record(p.other);
        self.iris_runs.fetch_add(u64::from(p.iris_runs), Ordering::Relaxed);
        self.iris_checks.fetch_add(u64::from(p.iris_checks), Ordering::Relaxed);
    }
}

/// `PipelineStats::face_state` values.
pub const FACE_UNKNOWN: u8 = 0;
pub const FACE_TRACKED: u8 = 1;
pub const FACE_LOST: u8 = 2;

impl PipelineStats {
    pub fn stages(&self) -> [&StageStats; 5] {
        [&self.capture, &self.face, &self.generator, &self.output, &self.end_to_end]
    }

    /// "tracked", "lost" or "unknown" (no frame looked at yet).
    pub fn face_state_text(&self) -> &'static str {
        match self.face_state.load(Ordering::Relaxed) {
            FACE_TRACKED => "tracked",
            FACE_LOST => "lost",
            _ => "unknown",
        }
    }

    /// The source's frame rate, once the capture stage knows it.
    pub fn source_fps(&self) -> Option<f64> {
        let v = f64::from_bits(self.source_fps_bits.load(Ordering::Relaxed));
        (v.is_finite() && v > 0.0).then_some(v)
    }

    /// Publishes the open source's rate (`None`: it does not tell) and marks the rate settled.
    pub fn set_source_fps(&self, fps: Option<f64>) {
        let v = fps.filter(|f| f.is_finite() && *f > 0.0).unwrap_or(0.0);
        self.source_fps_bits.store(v.to_bits(), Ordering::Relaxed);
        self.source_rate_settled.store(true, Ordering::SeqCst);
    }

    /// Marks a reload in progress until the guard is dropped (see `reloading`).
    pub fn reload_guard(&self) -> ReloadGuard<'_> {
        self.reloading.fetch_add(1, Ordering::SeqCst);
        ReloadGuard(self)
    }
}

/// Ends a reload window on drop, also when the reload failed or panicked.
pub struct ReloadGuard<'a>(&'a PipelineStats);

impl Drop for ReloadGuard<'_> {
    fn drop(&mut self) {
        self.0.reloading.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_and_handles_empty() {
        assert_eq!(percentile(vec![], 50.0), None);
        assert_eq!(percentile(vec![3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(vec![0.0, 10.0], 25.0), Some(2.5));
        assert_eq!(percentile(vec![5.0], 99.0), Some(5.0));
    }

    #[test]
    fn pearson_detects_linear_relations() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 0.99796).abs() < 1e-4);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(pearson(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let s = StageStats::new("t");
        s.record(Duration::from_micros(100));
        s.record(Duration::from_micros(700));
        s.record(Duration::from_secs(5));
        let b = s.cumulative_buckets();
        assert_eq!(b[0], (250, 1));
        assert_eq!(b[2], (1_000, 2));
        assert_eq!(b.last().unwrap().1, 3);
        assert_eq!(s.frames.load(Ordering::Relaxed), 3);
        assert_eq!(s.percentile_us(0.0), Some(100.0));
    }
}
