//! Keeping a live source's time line continuous across reopens. A reopened camera starts its
//! timestamps from zero again; the face tracker's One Euro filter sees time run backwards, clamps
//! the step and smooths so hard that the landmarks barely move. The capture stage therefore maps
//! each session's timestamps onto one monotonic time line: a new session continues where the old
//! one stopped, plus the wall-clock time the source was away.
use std::time::{Duration, Instant};

/// Smallest step between two mapped timestamps (keeps them strictly increasing).
const MIN_STEP: Duration = Duration::from_micros(1);

#[derive(Debug, Default)]
pub struct MonotonicPts {
    /// Added to the current session's timestamps; `None` until its first frame.
    offset: Option<Duration>,
    /// Last mapped timestamp and when it was handed out.
    last: Option<(Duration, Instant)>,
}

impl MonotonicPts {
    /// The source was reopened: its next timestamp starts a new session.
    pub fn new_session(&mut self) {
        self.offset = None;
    }

    /// Maps a source timestamp onto the monotonic time line.
    pub fn map(&mut self, pts: Duration) -> Duration {
        self.map_at(pts, Instant::now())
    }

    pub fn map_at(&mut self, pts: Duration, now: Instant) -> Duration {
        let offset = *self.offset.get_or_insert_with(|| match self.last {
            // First frame of a later session: continue after the last one by the time away.
            Some((last, at)) => (last + now.saturating_duration_since(at).max(MIN_STEP)).saturating_sub(pts),
            None => Duration::ZERO,
        });
        let mut out = pts + offset;
        if let Some((last, _)) = self.last {
            if out <= last {
                out = last + MIN_STEP;
            }
        }
        self.last = Some((out, now));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_continue_the_time_line() {
        let mut m = MonotonicPts::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(m.map_at(ms(0), t0), ms(0));
        assert_eq!(m.map_at(ms(33), t0 + ms(33)), ms(33));
        assert_eq!(m.map_at(ms(66), t0 + ms(66)), ms(66));
        // Reopened 2 s later, the camera counts from 0 again.
        m.new_session();
        assert_eq!(m.map_at(ms(0), t0 + ms(2066)), ms(2066));
        assert_eq!(m.map_at(ms(33), t0 + ms(2099)), ms(2099));
        // A source whose clock jumps back within a session still never goes backwards.
        let back = m.map_at(ms(10), t0 + ms(2100));
        assert!(back > ms(2099), "{back:?}");
    }
}
