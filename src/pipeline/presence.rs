//! What the camera shows around the live face (issue 20): the still of the portrait at rest
//! while paused, or once the face has been lost for a grace period (then with a small
//! "face not found" mark that can be switched off), faded in and out; and the short cross-fade
//! after a live avatar switch. Pure: a state machine over (paused, face present, dt) and
//! per-pixel blends, no I/O, so the generator thread only asks it what to draw.
use crate::core::types::Frame;
use std::sync::Arc;

/// How the still fades and when a lost face counts as gone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PresenceParams {
    /// Seconds of a fade between the live face and the still (both ways).
    pub fade_s: f32,
    /// A face lost this long shows the still; shorter drop-outs (a hand in front of the face, a
    /// tracker miss) stay with the face-lost easing the avatar already does.
    pub lost_grace_s: f32,
    /// Draw the face-not-found mark on the still shown for a lost face.
    pub mark: bool,
    /// Seconds of the cross-fade after a live avatar switch.
    pub switch_fade_s: f32,
}

impl Default for PresenceParams {
    fn default() -> Self {
        PresenceParams { fade_s: 0.4, lost_grace_s: 1.5, mark: true, switch_fade_s: 0.3 }
    }
}

/// What to draw on top of the live frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Look {
    /// Weight of the still, 0 (live) ..= 1 (still only).
    pub still: f32,
    /// Weight of the face-not-found mark (0: none).
    pub mark: f32,
}

/// The still's state between frames.
#[derive(Clone, Debug)]
pub struct Presence {
    params: PresenceParams,
    paused: bool,
    /// How long the face has been missing (0 while present).
    lost_for: f32,
    /// Current weight of the still; moves towards its target at 1/fade_s per second.
    still: f32,
    /// Current weight of the mark (follows `still` while the face is lost).
    mark: f32,
}

impl Presence {
    pub fn new(params: PresenceParams) -> Presence {
        Presence { params, paused: false, lost_for: 0.0, still: 0.0, mark: 0.0 }
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn params(&self) -> PresenceParams {
        self.params
    }

    /// The current weights of the still and of the mark.
    pub fn weights(&self) -> (f32, f32) {
        (self.still, self.mark)
    }

    /// Advances by `dt` seconds with the face present or not; returns what to draw.
    pub fn update(&mut self, face_present: bool, dt: f32) -> Look {
        let dt = if dt.is_finite() { dt.max(0.0) } else { 0.0 };
        self.lost_for = if face_present { 0.0 } else { self.lost_for + dt };
        let lost = !face_present && self.lost_for >= self.params.lost_grace_s;
        let target = if self.paused || lost { 1.0 } else { 0.0 };
        let step = if self.params.fade_s > 0.0 { dt / self.params.fade_s } else { 1.0 };
        self.still = approach(self.still, target, step);
        // The mark says why the still is there: a lost face, not a pause the user chose.
        let mark_target = if lost && !self.paused && self.params.mark { 1.0 } else { 0.0 };
        self.mark = approach(self.mark, mark_target, step);
        Look { still: self.still, mark: self.mark }
    }
}

fn approach(v: f32, target: f32, step: f32) -> f32 {
    if v < target {
        (v + step).min(target)
    } else {
        (v - step).max(target)
    }
}

/// The cross-fade from the last frame of the previous avatar to the new one's frames.
#[derive(Clone, Debug)]
pub struct SwitchFade {
    from: Arc<Frame>,
    t: f32,
    dur: f32,
}

impl SwitchFade {
    pub fn new(from: Arc<Frame>, dur: f32) -> SwitchFade {
        SwitchFade { from, t: 0.0, dur: dur.max(1e-3) }
    }

    /// Blends `frame` with the old avatar's last frame, `dt` after the previous call; false once
    /// the fade is over (the caller drops it).
    pub fn apply(&mut self, frame: &mut Frame, dt: f32) -> bool {
        self.t += if dt.is_finite() { dt.max(0.0) } else { 0.0 };
        let w = (self.t / self.dur).clamp(0.0, 1.0);
        if w < 1.0 {
            blend_into(frame, &self.from, 1.0 - w);
        }
        w < 1.0
    }
}

/// `dst = dst * (1 - w) + other * w`, in place; a size mismatch leaves `dst` as it is (an avatar
/// at another output size cannot happen in one pipeline, but a blend must never panic).
pub fn blend_into(dst: &mut Frame, other: &Frame, w: f32) {
    if dst.width != other.width || dst.height != other.height || dst.data.len() != other.data.len() || !(w > 0.0) {
        return;
    }
    if w >= 1.0 {
        dst.data.copy_from_slice(&other.data);
        return;
    }
    let a = (w * 256.0).round() as u32;
    for (d, o) in dst.data.iter_mut().zip(&other.data) {
        *d = ((u32::from(*d) * (256 - a) + u32::from(*o) * a + 128) >> 8) as u8;
    }
}

/// Draws the face-not-found mark: a small ring crossed by a slash in the bottom-right corner,
/// light grey over a soft dark halo, at `alpha`. About 1/18 of the frame's height: visible in a
/// call's thumbnail, small enough not to cover the portrait.
pub fn draw_mark(f: &mut Frame, alpha: f32) {
    if !(alpha > 0.0) || !f.len_ok() || f.width < 16 || f.height < 16 {
        return;
    }
    let (w, h) = (f.width as i32, f.height as i32);
    let r = (h as f32 / 36.0).max(5.0);
    let margin = (r * 1.2) as i32;
    let (cx, cy) = ((w - margin) as f32 - r, (h - margin) as f32 - r);
    let thick = (r / 4.0).max(1.5);
    let x0 = (cx - r - thick - 2.0).floor().max(0.0) as i32;
    let x1 = (cx + r + thick + 2.0).ceil().min((w - 1) as f32) as i32;
    let y0 = (cy - r - thick - 2.0).floor().max(0.0) as i32;
    let y1 = (cy + r + thick + 2.0).ceil().min((h - 1) as f32) as i32;
    let (s, c) = (std::f32::consts::FRAC_1_SQRT_2, std::f32::consts::FRAC_1_SQRT_2);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let d = (dx * dx + dy * dy).sqrt();
            let ring = (d - r).abs();
            // The slash from top-left to bottom-right, inside the ring.
            let slash = if d <= r { (dx * s - dy * c).abs() } else { f32::INFINITY };
            let dist = ring.min(slash);
            // Coverage with a one-pixel soft edge; the halo is twice as wide and dark.
            let ink = (thick / 2.0 + 0.5 - dist).clamp(0.0, 1.0);
            let halo = (thick + 1.5 - dist).clamp(0.0, 1.0) * 0.5;
            if ink <= 0.0 && halo <= 0.0 {
                continue;
            }
            let i = ((y * w + x) * 3) as usize;
            for ch in 0..3 {
                let v = f32::from(f.data[i + ch]);
                let dark = v * (1.0 - halo * alpha);
                let out = dark + (225.0 - dark) * ink * alpha;
                f.data[i + ch] = out.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(v: u8) -> Frame {
        Frame { width: 64, height: 48, data: vec![v; 64 * 48 * 3], ..Frame::black(64, 48) }
    }

    #[test]
    fn pause_fades_the_still_in_and_out() {
        let mut p = Presence::new(PresenceParams { fade_s: 0.4, ..Default::default() });
        assert_eq!(p.update(true, 0.1).still, 0.0);
        p.set_paused(true);
        let a = p.update(true, 0.1).still;
        assert!((a - 0.25).abs() < 1e-6, "{a}");
        for _ in 0..5 {
            p.update(true, 0.1);
        }
        let l = p.update(true, 0.1);
        assert_eq!(l, Look { still: 1.0, mark: 0.0 }, "a pause shows the still without the mark");
        p.set_paused(false);
        let b = p.update(true, 0.2).still;
        assert!((b - 0.5).abs() < 1e-6, "{b}");
        assert_eq!(p.update(true, 1.0).still, 0.0);
    }

    #[test]
    fn a_lost_face_shows_the_still_with_its_mark_only_after_the_grace_period() {
        let params = PresenceParams { fade_s: 0.2, lost_grace_s: 1.0, mark: true, ..Default::default() };
        let mut p = Presence::new(params);
        for _ in 0..9 {
            assert_eq!(p.update(false, 0.1).still, 0.0, "inside the grace period");
        }
        // A brief return resets the grace period.
        p.update(true, 0.1);
        for _ in 0..9 {
            assert_eq!(p.update(false, 0.1).still, 0.0);
        }
        let mut l = p.update(false, 0.1);
        for _ in 0..3 {
            l = p.update(false, 0.1);
        }
        assert_eq!(l, Look { still: 1.0, mark: 1.0 });
        // Back: eases out over the fade.
        l = p.update(true, 0.1);
        assert!((l.still - 0.5).abs() < 1e-6 && (l.mark - 0.5).abs() < 1e-6, "{l:?}");
        // The mark switched off: still, no mark.
        let mut q = Presence::new(PresenceParams { mark: false, ..params });
        for _ in 0..20 {
            l = q.update(false, 0.1);
        }
        assert_eq!(l, Look { still: 1.0, mark: 0.0 });
        // Nonsense time steps change nothing.
        assert_eq!(q.update(false, f32::NAN), l);
    }

    #[test]
    fn blends_and_switch_fade() {
        let mut a = solid(0);
        blend_into(&mut a, &solid(200), 0.5);
        assert!(a.data.iter().all(|&v| v == 100));
        let mut b = solid(10);
        blend_into(&mut b, &Frame::black(32, 32), 0.5);
        assert!(b.data.iter().all(|&v| v == 10), "size mismatch leaves the frame alone");
        let mut fade = SwitchFade::new(Arc::new(solid(200)), 0.3);
        let mut f = solid(0);
        assert!(fade.apply(&mut f, 0.1));
        // One third of the way: 2/3 of the old frame.
        assert!(f.data.iter().all(|&v| (132..=135).contains(&v)), "{}", f.data[0]);
        let mut g = solid(0);
        assert!(!fade.apply(&mut g, 0.25));
        assert!(g.data.iter().all(|&v| v == 0), "after the fade the new frame is untouched");
    }

    #[test]
    fn the_mark_is_small_and_in_the_corner() {
        let mut f = solid(100);
        let w = 640;
        f = Frame { width: w, height: 360, data: vec![100; (w * 360 * 3) as usize], ..f };
        draw_mark(&mut f, 1.0);
        let changed: Vec<(u32, u32)> = (0..360u32)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| f.data[((y * w + x) * 3) as usize] != 100)
            .collect();
        assert!(!changed.is_empty());
        assert!(changed.len() < (w * 360 / 100) as usize, "{} pixels changed", changed.len());
        assert!(changed.iter().all(|&(x, y)| x > w * 3 / 4 && y > 360 * 3 / 4), "outside the bottom-right corner");
        let mut none = solid(100);
        draw_mark(&mut none, 0.0);
        assert!(none.data.iter().all(|&v| v == 100));
    }
}
