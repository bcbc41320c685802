//! One Euro filter (Casiez et al., CHI 2012): a low-pass filter whose cutoff rises with speed,
//! so landmarks stay still when the head is still (no jitter) and follow quick motion (little lag).
//!
//! Pure: time is passed in by the caller (frame timestamps), never read from a clock, so the
//! filter behaves the same on a live camera and on a file.

/// Filter parameters. Units: `min_cutoff` and `d_cutoff` in Hz; `beta` in 1/(unit of speed):
/// how much each unit/s of speed raises the cutoff. Landmarks measure speed in inter-ocular
/// distances per second (`OneEuroBank::filter_scaled`), so one setting fits any face size and
/// camera resolution.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OneEuroParams {
    /// Cutoff when the signal is still; lower = smoother but laggier.
    pub min_cutoff: f32,
    /// Speed coefficient; higher = less lag during fast motion.
    pub beta: f32,
    /// Cutoff of the derivative estimate.
    pub d_cutoff: f32,
}

impl Default for OneEuroParams {
    /// For the 468 landmarks with speed in inter-ocular distances (IOD) per second. Chosen on 24
    /// training clips (docs/quality.md, "Landmark smoothing") against MediaPipe's per-frame
    /// detections, whose noise is independent of the tracker's: the error of the smoothed track
    /// is 1.5 % above the raw track's while the jitter of still faces drops 29 %; the previous
    /// per-pixel setting (1.5 Hz, 0.03 per px/s, 1 Hz) lagged speech by enough to add 52 %.
    /// Lips moving at 0.1 IOD/s already lift the cutoff from 2 Hz to 5 Hz.
    fn default() -> Self {
        OneEuroParams { min_cutoff: 2.0, beta: 30.0, d_cutoff: 8.0 }
    }
}

impl OneEuroParams {
    /// Checks the parameters are usable (finite, cutoffs > 0, beta >= 0).
    pub fn validate(&self) -> crate::Result<()> {
        let ok = self.min_cutoff.is_finite()
            && self.min_cutoff > 0.0
            && self.d_cutoff.is_finite()
            && self.d_cutoff > 0.0
            && self.beta.is_finite()
            && self.beta >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(crate::Error::Invalid(format!(
                "One Euro parameters must be finite with min_cutoff > 0, d_cutoff > 0, beta >= 0 (got {self:?})"
            )))
        }
    }
}

/// Smoothing factor of an exponential low-pass with cutoff `cutoff` Hz sampled every `dt` s.
fn alpha(cutoff: f32, dt: f32) -> f32 {
    let tau = 1.0 / (2.0 * std::f32::consts::PI * cutoff);
    1.0 / (1.0 + tau / dt)
}

/// One Euro filter of a single scalar signal.
#[derive(Clone, Debug)]
pub struct OneEuro {
    params: OneEuroParams,
    /// (last filtered value, last filtered derivative, last time in seconds)
    state: Option<(f32, f32, f64)>,
}

impl OneEuro {
    pub fn new(params: OneEuroParams) -> Self {
        OneEuro { params, state: None }
    }

    /// Forgets the history: the next sample passes through unchanged (used when the face is lost,
    /// so a new face does not glide in from where the old one was).
    pub fn reset(&mut self) {
        self.state = None;
    }

    /// Filters sample `x` taken at time `t` seconds. A sample whose time does not advance (same
    /// timestamp, clock going back, or NaN) is treated as if 1 ms passed, so the filter neither
    /// divides by zero nor produces NaN from a bad clock.
    pub fn filter(&mut self, x: f32, t: f64) -> f32 {
        self.filter_scaled(x, t, 1.0)
    }

    /// [`Self::filter`] with the speed measured in units of `1 / speed_scale` (e.g. `speed_scale`
    /// = 1 / face size in pixels: speed in face sizes per second). A non-finite or non-positive
    /// scale counts as 1.
    pub fn filter_scaled(&mut self, x: f32, t: f64, speed_scale: f32) -> f32 {
        let speed_scale = if speed_scale.is_finite() && speed_scale > 0.0 { speed_scale } else { 1.0 };
        let Some((prev_x, prev_dx, prev_t)) = self.state else {
            self.state = Some((x, 0.0, t));
            return x;
        };
        let mut dt = (t - prev_t) as f32;
        if !(dt.is_finite() && dt > 0.0) {
            dt = 1e-3;
        }
        let dx = (x - prev_x) / dt * speed_scale;
        let a_d = alpha(self.params.d_cutoff, dt);
        let edx = prev_dx + a_d * (dx - prev_dx);
        let cutoff = self.params.min_cutoff + self.params.beta * edx.abs();
        let a = alpha(cutoff, dt);
        let y = prev_x + a * (x - prev_x);
        let t_keep = if t.is_finite() && t > prev_t { t } else { prev_t + dt as f64 };
        self.state = Some((y, edx, t_keep));
        y
    }
}

/// One filter per coordinate of a fixed-size point set (e.g. 468 x 3 landmark coordinates).
#[derive(Clone, Debug)]
pub struct OneEuroBank {
    params: OneEuroParams,
    filters: Vec<OneEuro>,
}

impl OneEuroBank {
    pub fn new(params: OneEuroParams) -> Self {
        OneEuroBank { params, filters: Vec::new() }
    }

    pub fn reset(&mut self) {
        self.filters.clear();
    }

    /// Filters `values` in place; a change in their count restarts the bank (a different point set
    /// cannot continue the old one's history).
    pub fn filter(&mut self, values: &mut [f32], t: f64) {
        self.filter_scaled(values, t, 1.0);
    }

    /// [`Self::filter`] with speeds in units of `1 / speed_scale` (see [`OneEuro::filter_scaled`]).
    pub fn filter_scaled(&mut self, values: &mut [f32], t: f64, speed_scale: f32) {
        if self.filters.len() != values.len() {
            self.filters = vec![OneEuro::new(self.params); values.len()];
        }
        for (v, f) in values.iter_mut().zip(self.filters.iter_mut()) {
            *v = f.filter_scaled(*v, t, speed_scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A setting for signals in pixels (speed in px/s), as the generic tests use.
    fn px() -> OneEuroParams {
        OneEuroParams { min_cutoff: 1.5, beta: 0.03, d_cutoff: 1.0 }
    }

    fn rng(seed: &mut u64) -> f32 {
        // xorshift: deterministic noise without a dependency.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 10_000) as f32 / 10_000.0 - 0.5
    }

    #[test]
    fn first_sample_passes_through() {
        let mut f = OneEuro::new(px());
        assert_eq!(f.filter(42.0, 0.0), 42.0);
    }

    #[test]
    fn constant_signal_stays_constant() {
        let mut f = OneEuro::new(px());
        for i in 0..100 {
            let y = f.filter(5.0, i as f64 / 30.0);
            assert!((y - 5.0).abs() < 1e-6);
        }
    }

    #[test]
    fn reduces_jitter_of_a_still_point() {
        let mut f = OneEuro::new(px());
        let mut seed = 12345u64;
        let (mut raw_var, mut out_var) = (0.0f32, 0.0f32);
        for i in 0..300 {
            let x = 100.0 + 2.0 * rng(&mut seed);
            let y = f.filter(x, i as f64 / 30.0);
            if i > 30 {
                raw_var += (x - 100.0).powi(2);
                out_var += (y - 100.0).powi(2);
            }
        }
        assert!(out_var < raw_var / 4.0, "filtered variance {out_var} vs raw {raw_var}");
    }

    #[test]
    fn fast_motion_lags_less_with_higher_beta() {
        // A ramp at 300 px/s: the lag after 1 s must shrink as beta grows.
        let lag = |beta: f32| {
            let mut f = OneEuro::new(OneEuroParams { beta, ..px() });
            let mut y = 0.0;
            for i in 0..=30 {
                y = f.filter(300.0 * i as f32 / 30.0, i as f64 / 30.0);
            }
            300.0 - y
        };
        let (slow, fast) = (lag(0.0), lag(0.1));
        assert!(fast < slow * 0.5, "lag beta=0.1 {fast} vs beta=0 {slow}");
        assert!(fast >= 0.0);
    }

    #[test]
    fn reset_forgets_history() {
        let mut f = OneEuro::new(px());
        f.filter(0.0, 0.0);
        f.filter(0.0, 0.033);
        f.reset();
        assert_eq!(f.filter(500.0, 0.066), 500.0);
    }

    #[test]
    fn non_advancing_time_gives_finite_output() {
        let mut f = OneEuro::new(px());
        f.filter(1.0, 1.0);
        let y = f.filter(2.0, 1.0);
        assert!(y.is_finite() && (1.0..=2.0).contains(&y));
        let y = f.filter(3.0, 0.5);
        assert!(y.is_finite());
        let y = f.filter(3.0, f64::NAN);
        assert!(y.is_finite());
    }

    #[test]
    fn bank_filters_each_coordinate_independently_and_resizes() {
        let mut b = OneEuroBank::new(px());
        let mut v = [0.0, 100.0];
        b.filter(&mut v, 0.0);
        let mut w = [10.0, 100.0];
        b.filter(&mut w, 1.0 / 30.0);
        assert!(w[0] > 0.0 && w[0] < 10.0);
        assert_eq!(w[1], 100.0);
        let mut three = [7.0, 8.0, 9.0];
        b.filter(&mut three, 2.0 / 30.0);
        assert_eq!(three, [7.0, 8.0, 9.0]);
    }

    #[test]
    fn scaled_speed_makes_the_filter_resolution_independent() {
        // The same face motion filmed at twice the resolution: twice the pixels and twice the
        // face size, so the same speed in face sizes per second and exactly twice the output.
        let mut seed = 7u64;
        let xs: Vec<f32> = (0..120).map(|i| 10.0 * (i as f32 * 0.7).sin() + 0.5 * rng(&mut seed)).collect();
        let (mut a, mut b) = (OneEuro::new(OneEuroParams::default()), OneEuro::new(OneEuroParams::default()));
        for (i, &x) in xs.iter().enumerate() {
            let t = i as f64 / 30.0;
            let ya = a.filter_scaled(x, t, 1.0 / 60.0);
            let yb = b.filter_scaled(2.0 * x, t, 1.0 / 120.0);
            assert!((yb - 2.0 * ya).abs() < 1e-3, "{ya} {yb}");
        }
    }

    #[test]
    fn default_setting_smooths_a_still_face_and_follows_speech() {
        // Face of 60 px inter-ocular distance. Still: +-0.3 px noise must shrink; speech: a lip
        // moving 6 px at 4 Hz must keep most of its amplitude.
        let scale = 1.0 / 60.0;
        let mut f = OneEuro::new(OneEuroParams::default());
        let mut seed = 99u64;
        let (mut raw, mut out) = (0.0f32, 0.0f32);
        for i in 0..300 {
            let x = 100.0 + 0.6 * rng(&mut seed);
            let y = f.filter_scaled(x, i as f64 / 30.0, scale);
            if i > 30 {
                raw += (x - 100.0).powi(2);
                out += (y - 100.0).powi(2);
            }
        }
        assert!(out < raw * 0.7, "still: filtered {out} vs raw {raw}");
        let mut f = OneEuro::new(OneEuroParams::default());
        let mut peak = 0.0f32;
        for i in 0..120 {
            let t = i as f64 / 30.0;
            let y = f.filter_scaled(100.0 + 3.0 * (std::f64::consts::TAU * 4.0 * t).sin() as f32, t, scale);
            if i > 30 {
                peak = peak.max(y - 100.0);
            }
        }
        assert!(peak > 3.0 * 0.8, "speech amplitude kept: {peak} of 3");
    }

    #[test]
    fn validate_rejects_bad_parameters() {
        assert!(OneEuroParams::default().validate().is_ok());
        assert!(OneEuroParams { min_cutoff: 0.0, ..Default::default() }.validate().is_err());
        assert!(OneEuroParams { beta: -1.0, ..Default::default() }.validate().is_err());
        assert!(OneEuroParams { d_cutoff: f32::NAN, ..Default::default() }.validate().is_err());
    }
}
