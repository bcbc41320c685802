//! Stage supervision. A panic in a stage thread (a bug, a library assertion on odd input) must
//! not end the daemon: "faults never stop the output" (docs/ARCHITECTURE.md). Each stage's loop
//! runs under [`supervise`]: a panic is caught, logged with the stage's name, counted in the
//! stage's `restarts` (/metrics `puppetcam_stage_restarts_total`), and the loop runs again after
//! a backoff, told that it restarts so it can drop state the panic may have left half-updated.
//!
//! Also the fault injection that proves it: `PUPPETCAM_FAULT=panic:<stage>@<n>[,...]` makes a
//! stage panic once at its n-th frame (tests/pipeline.rs). It is read once per pipeline start and
//! costs one relaxed atomic add per frame when unset.
use crate::error::{panic_message, Result};
use crate::stats::StageStats;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// First wait before a restart; doubles per consecutive panic up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A stage that ran this long before panicking starts again from the first backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Runs `body(restarted)` until it returns; restarts it after a panic (see the module comment).
/// Returns `Ok(())` without restarting once `stop` is set.
pub(super) fn supervise(stage: &StageStats, stop: &AtomicBool, mut body: impl FnMut(bool) -> Result<()>) -> Result<()> {
    let mut restarted = false;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let t0 = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| body(restarted))) {
            Ok(r) => return r,
            Err(p) => {
                stage.restarts.fetch_add(1, Ordering::Relaxed);
                if t0.elapsed() > STABLE_AFTER {
                    backoff = FIRST_BACKOFF;
                }
                log::error!("pipeline: the {} stage panicked: {}; restarting it in {backoff:?}", stage.name, panic_message(p.as_ref()));
                super::sleep_unless_stopped(backoff, stop);
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                restarted = true;
            }
        }
    }
}

/// Injected faults, by stage (index in `service::liveness::STAGES` order).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    at: [Option<u64>; 4],
    seen: [AtomicU64; 4],
}

pub(crate) const CAPTURE: usize = 0;
pub(crate) const FACE: usize = 1;
pub(crate) const GENERATOR: usize = 2;
pub(crate) const OUTPUT: usize = 3;
const NAMES: [&str; 4] = ["capture", "face", "generator", "output"];

impl Faults {
    /// From `PUPPETCAM_FAULT`; malformed entries are logged and ignored.
    pub(crate) fn from_env() -> Faults {
        std::env::var("PUPPETCAM_FAULT").map(|v| Self::parse(&v)).unwrap_or_default()
    }

    fn parse(spec: &str) -> Faults {
        let mut f = Faults::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parsed = part.strip_prefix("panic:").and_then(|r| r.split_once('@')).and_then(|(stage, n)| {
                let i = NAMES.iter().position(|s| *s == stage)?;
                Some((i, n.parse::<u64>().ok().filter(|&n| n > 0)?))
            });
            match parsed {
                Some((i, n)) => {
                    log::warn!("PUPPETCAM_FAULT: the {} stage will panic at its frame {n} (fault injection for tests)", NAMES[i]);
                    f.at[i] = Some(n);
                }
                None => log::warn!("PUPPETCAM_FAULT: ignoring `{part}` (expected panic:<capture|face|generator|output>@<frame>)"),
            }
        }
        f
    }

    /// Counts a frame of `stage`; panics when it is the one asked for.
    pub(crate) fn tick(&self, stage: usize) {
        if let Some(at) = self.at[stage] {
            let n = self.seen[stage].fetch_add(1, Ordering::Relaxed) + 1;
            if n == at {
                panic!("injected fault: the {} stage panics at its frame {n}", NAMES[stage]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn a_panicking_body_is_restarted_and_counted() {
        let st = StageStats::new("face");
        let stop = AtomicBool::new(false);
        let mut runs = Vec::new();
        let r = supervise(&st, &stop, |restarted| {
            runs.push(restarted);
            if runs.len() < 3 {
                panic!("boom {}", runs.len());
            }
            Err(Error::Invalid("done".into()))
        });
        assert_eq!(runs, vec![false, true, true]);
        assert_eq!(st.restarts.load(Ordering::Relaxed), 2);
        // An error is the body's answer, not a panic: returned, not retried.
        assert!(r.unwrap_err().to_string().contains("done"));
        // Once stopping, a panic ends the stage quietly.
        stop.store(true, Ordering::SeqCst);
        assert!(supervise(&st, &stop, |_| panic!("late")).is_ok());
        assert_eq!(st.restarts.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn faults_fire_once_at_their_frame() {
        let f = Faults::parse("panic:face@3, panic:output@1, bogus, panic:nowhere@2, panic:capture@0");
        assert_eq!(f.at, [None, Some(3), None, Some(1)]);
        f.tick(FACE);
        f.tick(FACE);
        assert!(catch_unwind(|| f.tick(FACE)).is_err());
        f.tick(FACE); // only once
        assert!(catch_unwind(|| f.tick(OUTPUT)).is_err());
        f.tick(GENERATOR);
        f.tick(CAPTURE);
        assert!(Faults::parse("").at.iter().all(Option::is_none));
    }
}
