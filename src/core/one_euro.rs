//! One Euro filter (Casiez et al., CHI 2012): a low-pass filter whose cutoff rises with speed,
//! so landmarks stay still when the head is still (no jitter) and follow quick motion (little lag).
//!
//! Pure: time is passed in by the caller (frame timestamps), never read from a clock, so the
//! filter behaves the same on a live camera and on a file.

/// Filter parameters. Units: `min_cutoff` and `d_cutoff` in Hz; `beta` in 1/(unit of the signal)
/// (pixels for landmarks), i.e. how much each pixel/s of speed raises the cutoff.
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
    /// Tuned for 468 landmarks in pixels of a 640x480 webcam at 30 fps: still faces stop jittering
    /// (sub-pixel noise is cut at 1.5 Hz) while a head turn at ~300 px/s lifts the cutoff to ~10 Hz.
    fn default() -> Self {
        OneEuroParams { min_cutoff: 1.5, beta: 0.03, d_cutoff: 1.0 }
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
        let Some((prev_x, prev_dx, prev_t)) = self.state else {
            self.state = Some((x, 0.0, t));
            return x;
        };
        let mut dt = (t - prev_t) as f32;
        if !(dt.is_finite() && dt > 0.0) {
            dt = 1e-3;
        }
        let dx = (x - prev_x) / dt;
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
        if self.filters.len() != values.len() {
            self.filters = vec![OneEuro::new(self.params); values.len()];
        }
        for (v, f) in values.iter_mut().zip(self.filters.iter_mut()) {
            *v = f.filter(*v, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> f32 {
        // xorshift: deterministic noise without a dependency.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 10_000) as f32 / 10_000.0 - 0.5
    }

    #[test]
    fn first_sample_passes_through() {
        let mut f = OneEuro::new(OneEuroParams::default());
        assert_eq!(f.filter(42.0, 0.0), 42.0);
    }

    #[test]
    fn constant_signal_stays_constant() {
        let mut f = OneEuro::new(OneEuroParams::default());
        for i in 0..100 {
            let y = f.filter(5.0, i as f64 / 30.0);
            assert!((y - 5.0).abs() < 1e-6);
        }
    }

    #[test]
    fn reduces_jitter_of_a_still_point() {
        let mut f = OneEuro::new(OneEuroParams::default());
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
            let mut f = OneEuro::new(OneEuroParams { beta, ..Default::default() });
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
        let mut f = OneEuro::new(OneEuroParams::default());
        f.filter(0.0, 0.0);
        f.filter(0.0, 0.033);
        f.reset();
        assert_eq!(f.filter(500.0, 0.066), 500.0);
    }

    #[test]
    fn non_advancing_time_gives_finite_output() {
        let mut f = OneEuro::new(OneEuroParams::default());
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
        let mut b = OneEuroBank::new(OneEuroParams::default());
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
    fn validate_rejects_bad_parameters() {
        assert!(OneEuroParams::default().validate().is_ok());
        assert!(OneEuroParams { min_cutoff: 0.0, ..Default::default() }.validate().is_err());
        assert!(OneEuroParams { beta: -1.0, ..Default::default() }.validate().is_err());
        assert!(OneEuroParams { d_cutoff: f32::NAN, ..Default::default() }.validate().is_err());
    }
}
