//! Face-lost easing: hold the last frame through a tracker hiccup, then ease to the portrait's
//! neutral, and back to the live face when it returns, so that the output never freezes on a
//! distorted frame nor jumps.
use super::retargeter::Posed;
use super::Shape68;
use crate::core::geometry::{smoothstep, wrap_angle, Similarity};
use crate::core::types::Iris;

/// What the face-lost easer can blend: a 68-point shape or a retargeted mesh with its pose.
pub trait Blend: Clone {
    /// `self` moved a fraction `w` of the way to `other`.
    fn blend(&self, other: &Self, w: f32) -> Self;
    fn is_finite(&self) -> bool;
}

fn lerp_iris(a: Option<[Iris; 2]>, b: Option<[Iris; 2]>, w: f32) -> Option<[Iris; 2]> {
    match (a, b) {
        (Some(x), Some(y)) => Some([0, 1].map(|k| Iris {
            cx: x[k].cx + (y[k].cx - x[k].cx) * w,
            cy: x[k].cy + (y[k].cy - x[k].cy) * w,
            r: x[k].r + (y[k].r - x[k].r) * w,
        })),
        _ => b,
    }
}

impl Blend for Shape68 {
    fn blend(&self, b: &Self, w: f32) -> Self {
        let mut pts = self.pts68;
        for (p, q) in pts.iter_mut().zip(b.pts68.iter()) {
            p[0] += (q[0] - p[0]) * w;
            p[1] += (q[1] - p[1]) * w;
        }
        Shape68 { pts68: pts, iris: lerp_iris(self.iris, b.iris, w) }
    }
    fn is_finite(&self) -> bool {
        Shape68::is_finite(self)
    }
}

impl Blend for Posed {
    fn blend(&self, b: &Self, w: f32) -> Self {
        if self.pts.len() != b.pts.len() {
            return b.clone();
        }
        let pts = self.pts.iter().zip(&b.pts).map(|(p, q)| [p[0] + (q[0] - p[0]) * w, p[1] + (q[1] - p[1]) * w]).collect();
        let (x, y) = (self.pose, b.pose);
        let w64 = w as f64;
        let pose = Similarity {
            scale: x.scale + (y.scale - x.scale) * w64,
            angle: x.angle + wrap_angle(y.angle - x.angle) * w64,
            tx: x.tx + (y.tx - x.tx) * w64,
            ty: x.ty + (y.ty - x.ty) * w64,
        };
        Posed { pts, iris: lerp_iris(self.iris, b.iris, w), pose }
    }
    fn is_finite(&self) -> bool {
        self.pts.iter().all(|p| p[0].is_finite() && p[1].is_finite())
            && self.pose.is_finite()
            && self.iris.map_or(true, |ir| ir.iter().all(|i| i.cx.is_finite() && i.cy.is_finite() && i.r.is_finite()))
    }
}

/// Phase of the face-lost easing, for status and tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EasePhase {
    /// Passing the retargeted landmarks through.
    Tracking,
    /// Face just lost: holding the last landmarks for a moment (brief tracker drop-outs).
    Holding,
    /// Easing towards the portrait's neutral.
    EasingOut,
    /// Resting at the neutral face.
    Neutral,
    /// Face back: blending from where we were to the live landmarks.
    EasingIn,
}

/// Eases to the portrait's neutral face when the driver's face is lost and back when it
/// returns, so that the output never freezes on a distorted frame nor jumps.
#[derive(Clone, Debug)]
pub struct FaceLostEaser<T: Blend = Shape68> {
    neutral: T,
    hold_s: f32,
    out_s: f32,
    in_s: f32,
    phase: EasePhase,
    t: f32,
    from: T,
    last: T,
}

impl<T: Blend> FaceLostEaser<T> {
    /// `hold_s`: keep the last frame this long before easing (tracker hiccups);
    /// `ease_out_s` / `ease_in_s`: durations of the smoothstep blends (0.3-0.5 s is natural).
    pub fn new(neutral: T, hold_s: f32, ease_out_s: f32, ease_in_s: f32) -> Self {
        let pos = |v: f32| if v.is_finite() { v.max(0.0) } else { 0.0 };
        FaceLostEaser {
            neutral: neutral.clone(),
            hold_s: pos(hold_s),
            out_s: pos(ease_out_s),
            in_s: pos(ease_in_s),
            phase: EasePhase::Neutral,
            t: 0.0,
            from: neutral.clone(),
            last: neutral,
        }
    }

    pub fn phase(&self) -> EasePhase {
        self.phase
    }

    /// Advances by `dt` seconds with this frame's retargeted landmarks (`None`: no face).
    pub fn update(&mut self, input: Option<&T>, dt: f32) -> T {
        let dt = if dt.is_finite() { dt.max(0.0) } else { 0.0 };
        let input = input.filter(|s| Blend::is_finite(*s));
        let out = match (input, self.phase) {
            (Some(s), EasePhase::Tracking | EasePhase::Holding) => {
                self.phase = EasePhase::Tracking;
                s.clone()
            }
            (Some(s), EasePhase::EasingOut | EasePhase::Neutral) => {
                self.phase = EasePhase::EasingIn;
                self.from = self.last.clone();
                self.t = 0.0;
                self.blend_in(s)
            }
            (Some(s), EasePhase::EasingIn) => {
                self.t += dt;
                self.blend_in(s)
            }
            (None, EasePhase::Tracking) => {
                self.phase = EasePhase::Holding;
                self.t = 0.0;
                self.from = self.last.clone();
                self.hold_or_ease()
            }
            (None, EasePhase::EasingIn) => {
                self.phase = EasePhase::EasingOut;
                self.t = 0.0;
                self.from = self.last.clone();
                self.hold_or_ease()
            }
            (None, EasePhase::Holding | EasePhase::EasingOut) => {
                self.t += dt;
                self.hold_or_ease()
            }
            (None, EasePhase::Neutral) => self.neutral.clone(),
        };
        self.last = out.clone();
        out
    }

    fn blend_in(&mut self, s: &T) -> T {
        if self.in_s <= 0.0 || self.t >= self.in_s {
            self.phase = EasePhase::Tracking;
            return s.clone();
        }
        self.from.blend(s, smoothstep(self.t / self.in_s))
    }

    fn hold_or_ease(&mut self) -> T {
        if self.phase == EasePhase::Holding {
            if self.t < self.hold_s {
                return self.from.clone();
            }
            self.phase = EasePhase::EasingOut;
            self.t -= self.hold_s;
        }
        if self.out_s <= 0.0 || self.t >= self.out_s {
            self.phase = EasePhase::Neutral;
            return self.neutral.clone();
        }
        self.from.blend(&self.neutral, smoothstep(self.t / self.out_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn shape_at(v: f32) -> Shape68 {
        Shape68 { pts68: [[v, v]; 68], iris: Some([Iris { cx: v, cy: v, r: 2.0 }; 2]) }
    }

    #[test]
    fn easer_eases_to_neutral_and_back() {
        let neutral = shape_at(0.0);
        let mut e = FaceLostEaser::new(neutral, 0.1, 0.4, 0.3);
        let live = shape_at(10.0);
        let dt = 1.0 / 30.0;
        // Starts at neutral, blends in when a face appears.
        assert_eq!(e.update(None, dt), neutral);
        let first = e.update(Some(&live), dt);
        assert_eq!(e.phase(), EasePhase::EasingIn);
        assert!(first.pts68[0][0] < 1.0);
        let mut prev = first.pts68[0][0];
        for _ in 0..12 {
            let o = e.update(Some(&live), dt);
            assert!(o.pts68[0][0] >= prev - 1e-6);
            prev = o.pts68[0][0];
        }
        assert_eq!(e.phase(), EasePhase::Tracking);
        assert_eq!(e.update(Some(&live), dt), live);
        // Lost: hold for 0.1 s, then ease monotonically to neutral within ~0.4 s, and stay.
        let mut xs = vec![];
        for _ in 0..25 {
            xs.push(e.update(None, dt).pts68[0][0]);
        }
        assert_eq!(xs[0], 10.0);
        assert_eq!(xs[1], 10.0);
        assert!(xs.windows(2).all(|w| w[1] <= w[0] + 1e-6), "{xs:?}");
        let neutral_at = xs.iter().position(|&x| x == 0.0).unwrap();
        assert!(neutral_at >= 14 && neutral_at <= 17, "{neutral_at} {xs:?}");
        assert_eq!(e.phase(), EasePhase::Neutral);
        // The middle of the ease is a blend, not a jump.
        assert!(xs.iter().any(|&x| x > 2.0 && x < 8.0));
        assert_eq!(e.update(None, dt), neutral);
        // Face back mid-ease: continues from where it was (no jump).
        let mut e = FaceLostEaser::new(neutral, 0.0, 0.4, 0.3);
        e.update(Some(&live), 1.0);
        e.update(Some(&live), dt);
        e.update(None, 0.2);
        let mid = e.update(None, 0.0).pts68[0][0];
        assert!(mid > 0.0 && mid < 10.0, "{mid}");
        let back = e.update(Some(&live), 0.0).pts68[0][0];
        assert!((back - mid).abs() < 1e-4, "{back} vs {mid}");
    }

    #[test]
    fn easer_ignores_non_finite_input_and_bad_dt() {
        let neutral = shape_at(0.0);
        let mut e = FaceLostEaser::new(neutral, f32::NAN, -1.0, 0.3);
        let mut bad = shape_at(5.0);
        bad.pts68[0][0] = f32::NAN;
        let o = e.update(Some(&bad), f32::NAN);
        assert!(o.is_finite());
        assert_eq!(o, neutral);
        // Zero durations jump straight to the destination.
        let mut e = FaceLostEaser::new(neutral, 0.0, 0.0, 0.0);
        assert_eq!(e.update(Some(&shape_at(3.0)), 0.0), shape_at(3.0));
        assert_eq!(e.update(None, 0.0), neutral);
    }
}
