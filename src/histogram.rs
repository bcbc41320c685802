//! A lock-free latency histogram with caller-chosen bucket bounds, exposed in Prometheus form.
//! The per-stage histograms (`stats::BUCKETS_US`) span 250 us to 1 s for every stage, which is too
//! coarse where lip sync is decided: end-to-end latency gets its own buckets, 5 ms apart around
//! the 35 ms target and the 45 ms at which viewers notice audio leading video (issue 19).
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bounds (milliseconds) of the end-to-end latency buckets; +Inf is implied after the last.
pub const END_TO_END_MS: [u32; 17] = [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 100, 150, 250, 500];

pub struct Histogram {
    bounds_us: Vec<u64>,
    /// One counter per bound plus the +Inf bucket; not cumulative (each sample counted once).
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

impl Histogram {
    /// `bounds_ms` must be increasing (checked in tests of the constants that use it).
    pub fn new_ms(bounds_ms: &[u32]) -> Histogram {
        let bounds_us: Vec<u64> = bounds_ms.iter().map(|&b| u64::from(b) * 1000).collect();
        let counts = (0..=bounds_us.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds_us, counts, sum_us: AtomicU64::new(0) }
    }

    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = self.bounds_us.iter().position(|&b| us <= b).unwrap_or(self.bounds_us.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// `(upper bound in seconds, cumulative count)`, the last with bound `+Inf`; the last count is
    /// the total, so a scraper always sees `+Inf == _count`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                acc += c.load(Ordering::Relaxed);
                (self.bounds_us.get(i).map_or(f64::INFINITY, |&b| b as f64 / 1e6), acc)
            })
            .collect()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_increase_and_samples_land_in_their_bucket() {
        assert!(END_TO_END_MS.windows(2).all(|w| w[0] < w[1]));
        let h = Histogram::new_ms(&END_TO_END_MS);
        for ms in [3, 35, 36, 44, 2000] {
            h.record(Duration::from_millis(ms));
        }
        let c = h.cumulative();
        assert_eq!(c.len(), END_TO_END_MS.len() + 1);
        let at = |le: f64| c.iter().find(|(b, _)| (*b - le).abs() < 1e-9).unwrap().1;
        assert_eq!(at(0.005), 1);
        assert_eq!(at(0.035), 2, "35 ms is in the le=0.035 bucket");
        assert_eq!(at(0.045), 4);
        assert_eq!(at(0.5), 4);
        assert_eq!(c.last().unwrap(), &(f64::INFINITY, 5));
        assert!((h.sum_seconds() - 2.118).abs() < 1e-9);
    }
}
