//! The live output's frame rate. A webcam delivers 30 fps (or 25, or 60) whatever the config
//! says, and an output clocked at another rate either drops frames (30 into 25: judder) or
//! repeats them; so by default the output follows the source's own rate (the camera's
//! negotiated fps, the file's rate). A configured `[output] fps` (or `--fps`) still caps it: a
//! faster source then loses the frames closest together, evenly (the token bucket of
//! `output_stage`), and a slower one is written at its own rate, without padding repeats.
use crate::stats::PipelineStats;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Highest rate the output takes from a source (what `PipelineSpec::validate` allows for `fps`).
pub const MAX_FPS: f64 = 240.0;

/// How long the output waits for the source to open before opening the sink: a camera takes up
/// to a second or two; one missing at start makes the output use the configured rate.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputRate {
    /// The configured rate: the cap, or the rate when the source tells none.
    pub fps: f64,
    /// No rate was configured: follow the source (`fps` is then only the fallback).
    pub follow_source: bool,
}

impl OutputRate {
    /// The rate to write at, given the source's rate if known.
    pub fn effective(&self, source: Option<f64>) -> f64 {
        // A file may claim a fraction of a frame per second: sinks take whole rates from 1.
        match source.filter(|s| s.is_finite() && *s > 0.0).map(|s| s.clamp(1.0, MAX_FPS)) {
            Some(s) if self.follow_source => s,
            Some(s) => s.min(self.fps),
            None => self.fps,
        }
    }

    /// The rate for the source `stats` reports now.
    pub fn now(&self, stats: &PipelineStats) -> f64 {
        self.effective(stats.source_fps())
    }
}

/// Waits until the capture stage has tried to open its source (so its rate is known), `stop` is
/// raised, or `timeout` passes.
pub fn wait_until_settled(stats: &PipelineStats, stop: &AtomicBool, timeout: Duration) {
    let end = Instant::now() + timeout;
    while !stats.source_rate_settled.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_source_unless_capped() {
        let follow = OutputRate { fps: 30.0, follow_source: true };
        assert_eq!(follow.effective(Some(25.0)), 25.0, "a 25 fps file is written at 25");
        assert_eq!(follow.effective(Some(60.0)), 60.0, "a 60 fps camera is written at 60");
        assert_eq!(follow.effective(None), 30.0, "no rate known: the configured one");
        assert_eq!(follow.effective(Some(f64::NAN)), 30.0);
        assert_eq!(follow.effective(Some(1000.0)), MAX_FPS);
        assert_eq!(follow.effective(Some(0.2)), 1.0, "no rate under one frame per second");
        let capped = OutputRate { fps: 30.0, follow_source: false };
        assert_eq!(capped.effective(Some(60.0)), 30.0, "the configured fps caps a faster source");
        assert_eq!(capped.effective(Some(25.0)), 25.0, "and does not pad a slower one");
        assert_eq!(capped.effective(None), 30.0);
    }

    #[test]
    fn the_published_source_rate_is_read_back() {
        let stats = PipelineStats::default();
        let r = OutputRate { fps: 30.0, follow_source: true };
        assert_eq!(r.now(&stats), 30.0);
        assert!(!stats.source_rate_settled.load(Ordering::SeqCst));
        stats.set_source_fps(Some(59.94));
        assert_eq!(r.now(&stats), 59.94);
        assert!(stats.source_rate_settled.load(Ordering::SeqCst));
        stats.set_source_fps(None);
        assert_eq!(r.now(&stats), 30.0, "a reopened source that tells no rate");
        // Settled: no wait at all, whatever the timeout.
        wait_until_settled(&stats, &AtomicBool::new(false), Duration::from_secs(3600));
    }
}
