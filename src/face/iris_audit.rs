//! Whether the distilled iris model may answer for this face: MediaPipe's iris model checks it
//! now and then on the same crop, and while they disagree MediaPipe's model answers instead.
//!
//! The distilled model (`iris_fast.onnx`) learned from a few dozen people; MediaPipe's from far
//! more. On a face unlike any it saw it can be wrong where MediaPipe's is right (before it was
//! trained with drawn-on spectacles, a held-out wearer's irises were 4.4 % of the inter-ocular
//! distance off, against 0.5 % on other held-out faces). So the tracker checks it: on the first
//! frames of a track (one eye a frame) and then every [`AUDIT_EVERY`] frames, MediaPipe's model
//! runs on the same input. When the median disagreement of the last checks exceeds
//! [`DISTRUST_ABOVE`], the face stage goes back to MediaPipe's model (on its own schedule) and
//! keeps measuring the distilled one beside it, cheaply, on every crop MediaPipe's sees; it is
//! trusted again once a full window agrees within [`TRUST_BELOW`]. A new track starts trusted.
//! A closed eye is never checked: neither model's iris means anything under the lid.
use std::collections::VecDeque;

/// Checks of a new track: one per frame for this many frames (eyes in turn), so a face the
/// distilled model gets wrong is caught within the first frames.
pub const AUDIT_FIRST: u32 = 4;
/// Then one check every this many frames: MediaPipe's model costs about 3.8 ms, so a check once a
/// second at 30 fps adds about 0.13 ms a frame on average, and falls on fewer than 5 % of frames
/// (it does not move the face stage's p95). A face that changes mid-track (glasses put on) is
/// caught after three checks.
pub const AUDIT_EVERY: u32 = 30;
/// The last this many checks decide.
pub const WINDOW: usize = 8;
/// Fewest checks before the distilled model is given up.
pub const MIN_AUDITS: usize = 3;
/// Median disagreement (iris centres, over the inter-ocular distance) above which MediaPipe's
/// model takes over. Held-out faces the distilled model knows: 0.5-0.8 % mean, 1.2-2 % p95.
pub const DISTRUST_ABOVE: f32 = 0.02;
/// ... and below which (over a full window) the distilled model answers again.
pub const TRUST_BELOW: f32 = 0.01;

#[derive(Clone, Debug)]
pub struct IrisAudit {
    /// Frames since the track started (saturating).
    frames: u32,
    /// Frames since the last check.
    since: u32,
    errs: VecDeque<f32>,
    trusted: bool,
    /// The eye the next check goes to.
    eye: usize,
}

impl Default for IrisAudit {
    fn default() -> Self {
        IrisAudit { frames: 0, since: 0, errs: VecDeque::with_capacity(WINDOW), trusted: true, eye: 0 }
    }
}

impl IrisAudit {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new track: trusted again, no checks yet.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    pub fn trusted(&self) -> bool {
        self.trusted
    }

    /// Called once per frame while trusted, with which eyes are open: the eye to check this frame,
    /// if any. A due check waits for an open eye.
    pub fn due(&mut self, open: [bool; 2]) -> Option<usize> {
        self.frames = self.frames.saturating_add(1);
        self.since = self.since.saturating_add(1);
        if self.frames > AUDIT_FIRST && self.since < AUDIT_EVERY {
            return None;
        }
        let k = if open[self.eye] { self.eye } else if open[1 - self.eye] { 1 - self.eye } else { return None };
        self.eye = 1 - k;
        self.since = 0;
        Some(k)
    }

    /// Records one check's disagreement (over the inter-ocular distance; non-finite counts as
    /// total disagreement). Returns the new trust when it changed.
    pub fn record(&mut self, err: f32) -> Option<bool> {
        let err = if err.is_finite() { err } else { f32::INFINITY };
        if self.errs.len() == WINDOW {
            self.errs.pop_front();
        }
        self.errs.push_back(err);
        let m = self.median();
        let flip = if self.trusted { self.errs.len() >= MIN_AUDITS && m > DISTRUST_ABOVE } else { self.errs.len() == WINDOW && m < TRUST_BELOW };
        if flip {
            self.trusted = !self.trusted;
            self.errs.clear();
            self.since = 0;
            return Some(self.trusted);
        }
        None
    }

    /// Median of the window's disagreements (0 when empty).
    pub fn median(&self) -> f32 {
        let mut v: Vec<f32> = self.errs.iter().copied().collect();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_track_is_checked_every_frame_then_every_few() {
        let mut a = IrisAudit::new();
        let first: Vec<_> = (0..AUDIT_FIRST).map(|_| a.due([true, true])).collect();
        assert_eq!(first, vec![Some(0), Some(1), Some(0), Some(1)]);
        let later: Vec<_> = (0..3 * AUDIT_EVERY).map(|_| a.due([true, true])).collect();
        let checks: Vec<usize> = later.iter().enumerate().filter_map(|(i, e)| e.map(|_| i)).collect();
        assert_eq!(checks, vec![AUDIT_EVERY as usize - 1, 2 * AUDIT_EVERY as usize - 1, 3 * AUDIT_EVERY as usize - 1]);
    }

    #[test]
    fn closed_eyes_are_not_checked_and_the_check_waits() {
        let mut a = IrisAudit::new();
        assert_eq!(a.due([false, true]), Some(1), "the open eye is checked");
        assert_eq!(a.due([false, false]), None);
        for _ in 0..2 * AUDIT_EVERY {
            a.due([false, false]);
        }
        assert_eq!(a.due([true, false]), Some(0), "an overdue check runs on the next open eye");
    }

    #[test]
    fn disagreement_hands_over_and_agreement_hands_back() {
        let mut a = IrisAudit::new();
        assert_eq!(a.record(0.05), None);
        assert_eq!(a.record(0.004), None, "one wild check among good ones does not decide");
        assert_eq!(a.record(0.006), None);
        assert!(a.trusted());
        let mut b = IrisAudit::new();
        assert_eq!(b.record(0.04), None);
        assert_eq!(b.record(0.03), None);
        assert_eq!(b.record(0.05), Some(false), "three bad checks give it up");
        assert!(!b.trusted());
        for i in 0..WINDOW - 1 {
            assert_eq!(b.record(0.004), None, "check {i}: a full window must agree first");
        }
        assert_eq!(b.record(0.004), Some(true));
        // NaN counts as disagreement.
        let mut c = IrisAudit::new();
        for _ in 0..2 {
            c.record(f32::NAN);
        }
        assert_eq!(c.record(f32::NAN), Some(false));
        c.reset();
        assert!(c.trusted() && c.median() == 0.0);
    }

    #[test]
    fn between_the_thresholds_nothing_changes() {
        let mut a = IrisAudit::new();
        for _ in 0..3 * WINDOW {
            assert_eq!(a.record(0.015), None);
        }
        assert!(a.trusted());
    }
}
