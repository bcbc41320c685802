//! Eye contact (`[retarget] eye_contact`): the portrait looks into the camera while the driver
//! looks at the screen, and still follows the driver's deliberate glances away.
//!
//! Why: a webcam sits above the screen, so a driver reading the call looks below the lens, and
//! without this option the portrait's eyes show exactly that: a person who looks away. The
//! retargeter moves the portrait's iris by the driver's offset from its *neutral* iris, which
//! hides the problem only when the neutral was learned while the driver looked at the screen; a
//! neutral photo or calibration profile taken looking at the lens, or a portrait that itself looks
//! aside, shows it. So eye contact keeps its own reference, the **screen gaze**: the per-eye,
//! per-coordinate median of the driver's iris position over the last `SCREEN_WINDOW` open-eye
//! frames (where the driver looks most is the screen; a glance of a second or two does not move a
//! median over five). That reference is drawn as the portrait looking into the camera (its iris
//! where a frontal-gaze portrait has it in its own eye opening, `FRONTAL_BIAS`), and the driver's
//! departures from it are passed on as before (same gain and clamps), so a glance aside or up
//! still moves the portrait's eyes. Lids and blinks are not touched here.
//!
//! Positions are in eye coordinates (`super::eyes`: origin at corner a, x along a->b, y across,
//! pointing down in an upright face, unit = the eye's width). Pure, no I/O.
use super::eyes::{to_eye, EyeModel};
use super::openness::{self, Eye};
use super::Pts68;
use crate::core::types::Iris;
use std::collections::VecDeque;

/// Frames of driver gaze the screen reference is the median of: about 5 s at 30 fps. Long
/// enough that a deliberate glance (up to about half of it) leaves the median where the driver
/// looks most; short enough that moving the call's window or sitting differently is followed
/// within seconds.
pub(super) const SCREEN_WINDOW: usize = 150;

/// Frames before the screen reference is trusted with the full weight: a median over fewer
/// frames would follow the first glance. Until then the weight ramps up with the frames seen.
pub(super) const SCREEN_MIN_FRAMES: usize = 15;

/// Per-frame step of the eye-contact weight when the option is switched (control API): the
/// irises glide to their new place over 8 frames (~0.25 s) instead of jumping.
pub(super) const SWITCH_STEP: f64 = 0.125;

/// Frames whose eye opening is below this fraction of the neutral's are not gaze samples: the
/// iris model is unreliable under a closing lid, and a blink is not a look.
pub(super) const MIN_OPEN_FOR_GAZE: f64 = 0.6;

/// Where a portrait looking into the camera has its iris centre, relative to the centre of its
/// eye opening (x: towards the nose, y: down; eye widths). Measured: the median over the 28
/// portraits of data/portraits (most of them look at the painter or the lens), re-detected with
/// `puppetcam landmarks`: nasal -0.024, vertical -0.030 (the upper lid covers more of the iris
/// than the lower one, so the iris sits a little above the opening's middle).
pub(super) const FRONTAL_BIAS: [f64; 2] = [-0.024, -0.030];

/// The point of `eye` a portrait looking into the camera has its iris centre on, in eye
/// coordinates of the face `p`: the middle of the corner line, the vertical middle of the lid
/// points (68-point lids: 37, 38 over 41, 40), plus [`FRONTAL_BIAS`]. `None` for degenerate eyes.
pub(super) fn camera_gaze(p: &Pts68, eye: Eye) -> Option<[f64; 2]> {
    let [_, _, u1, u2, l2, l1] = eye.indices();
    let mut y = 0.0;
    for i in [u1, u2, l2, l1] {
        y += to_eye(p, eye, [p[i][0] as f64, p[i][1] as f64])?[1];
    }
    // Corner a is the outer corner of the subject's right eye and the inner corner of the left
    // (`Eye::indices`), so "towards the nose" is +x for the right eye and -x for the left.
    let nasal = match eye {
        Eye::Right => 1.0,
        Eye::Left => -1.0,
    };
    let c = [0.5 + nasal * FRONTAL_BIAS[0], y / 4.0 + FRONTAL_BIAS[1]];
    (c[0].is_finite() && c[1].is_finite()).then_some(c)
}

/// The screen-gaze reference and the switch of the option. See the module documentation.
#[derive(Clone, Debug)]
pub(super) struct EyeContact {
    on: bool,
    /// 0 (off) ..= 1 (on); moves by `SWITCH_STEP` per frame towards `on`.
    weight: f64,
    /// Recent open-eye gaze samples: both irises in their eye's coordinates.
    history: VecDeque<[[f64; 2]; 2]>,
}

impl EyeContact {
    /// Starts switched `on` or off at full weight (no glide at start).
    pub(super) fn new(on: bool) -> EyeContact {
        EyeContact { on, weight: if on { 1.0 } else { 0.0 }, history: VecDeque::with_capacity(SCREEN_WINDOW) }
    }

    pub(super) fn is_on(&self) -> bool {
        self.on
    }

    /// Switches the option; the irises glide over the next frames.
    pub(super) fn set(&mut self, on: bool) {
        self.on = on;
    }

    /// Records one frame's gaze (`None`: no usable sample: no irises, or a blinking eye). Kept
    /// while the option is off too, so that switching it on has a reference at once.
    pub(super) fn observe(&mut self, sample: Option<[[f64; 2]; 2]>) {
        if let Some(s) = sample.filter(|s| s.iter().flatten().all(|v| v.is_finite())) {
            if self.history.len() == SCREEN_WINDOW {
                self.history.pop_front();
            }
            self.history.push_back(s);
        }
    }

    /// Advances the switch by one frame and returns the weight of eye contact for this frame:
    /// the switch's glide times the trust in the reference (ramping up over the first
    /// `SCREEN_MIN_FRAMES` samples).
    pub(super) fn step(&mut self) -> f64 {
        let goal = if self.on { 1.0 } else { 0.0 };
        self.weight = if self.weight < goal { (self.weight + SWITCH_STEP).min(goal) } else { (self.weight - SWITCH_STEP).max(goal) };
        self.weight * (self.history.len() as f64 / SCREEN_MIN_FRAMES as f64).min(1.0)
    }

    /// The screen gaze: per eye and coordinate, the median of the recent samples.
    pub(super) fn screen(&self) -> Option<[[f64; 2]; 2]> {
        if self.history.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = Vec::with_capacity(self.history.len());
        let mut out = [[0.0; 2]; 2];
        for (e, eye) in out.iter_mut().enumerate() {
            for (c, x) in eye.iter_mut().enumerate() {
                v.clear();
                v.extend(self.history.iter().map(|s| s[e][c]));
                v.sort_by(|a, b| a.total_cmp(b));
                let n = v.len();
                *x = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
            }
        }
        Some(out)
    }

    /// Frames of gaze in the reference.
    #[cfg(test)]
    fn samples(&self) -> usize {
        self.history.len()
    }
}

/// One frame's gaze sample: both irises in their eye's coordinates, when the driver has irises
/// and both eyes are open (at least `MIN_OPEN_FOR_GAZE` of the neutral's opening).
pub(super) fn gaze_sample(p68: &Pts68, iris: Option<&[Iris; 2]>, neutral: &[EyeModel; 2]) -> Option<[[f64; 2]; 2]> {
    let iris = iris?;
    let mut out = [[0.0; 2]; 2];
    for eye in Eye::BOTH {
        let e = eye as usize;
        let ear = openness::eye(p68, eye)? as f64;
        if !(neutral[e].ear > 1e-6 && ear / neutral[e].ear >= MIN_OPEN_FOR_GAZE) {
            return None;
        }
        out[e] = to_eye(p68, eye, [iris[e].cx as f64, iris[e].cy as f64])?;
    }
    Some(out)
}

/// What the eye transfer needs of eye contact for one frame: the weight, the driver's screen
/// gaze and the portrait's camera gaze, per eye in eye coordinates.
#[derive(Clone, Copy, Debug)]
pub(super) struct Contact {
    pub(super) weight: f64,
    pub(super) screen: [[f64; 2]; 2],
    pub(super) camera: [[f64; 2]; 2],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::retarget::tests::Face;

    #[test]
    fn the_screen_gaze_is_where_the_driver_looks_most_and_ignores_glances() {
        let mut ec = EyeContact::new(true);
        assert!(ec.screen().is_none());
        let screen = [[0.5, 0.06], [0.5, 0.06]];
        let glance = [[0.7, -0.05], [0.7, -0.05]];
        // 4 s at the screen, then a 1.5-s glance, in a 5-s window: the median stays.
        for k in 0..(SCREEN_WINDOW + 45) {
            ec.observe(Some(if k < SCREEN_WINDOW { screen } else { glance }));
        }
        assert_eq!(ec.samples(), SCREEN_WINDOW);
        assert_eq!(ec.screen().unwrap(), screen);
        // Looking elsewhere for longer than half the window moves it there (the window moved).
        for _ in 0..SCREEN_WINDOW / 2 {
            ec.observe(Some(glance));
        }
        assert_eq!(ec.screen().unwrap(), glance);
        // Unusable samples are skipped, not recorded.
        let mut ec = EyeContact::new(true);
        ec.observe(None);
        ec.observe(Some([[f64::NAN, 0.0], [0.5, 0.0]]));
        assert_eq!(ec.samples(), 0);
        ec.observe(Some(screen));
        ec.observe(Some(glance));
        let m = ec.screen().unwrap();
        assert!((m[0][0] - 0.6).abs() < 1e-12 && (m[1][1] - 0.005).abs() < 1e-12, "even count: mean of the middle two {m:?}");
    }

    #[test]
    fn the_switch_glides_and_the_reference_earns_its_weight() {
        let mut ec = EyeContact::new(false);
        assert_eq!(ec.step(), 0.0);
        ec.set(true);
        assert!(ec.is_on());
        // No samples yet: no weight whatever the switch.
        assert_eq!(ec.step(), 0.0);
        for _ in 0..SCREEN_MIN_FRAMES {
            ec.observe(Some([[0.5, 0.0]; 2]));
        }
        let mut ws = vec![];
        for _ in 0..10 {
            ws.push(ec.step());
        }
        assert!(ws.windows(2).all(|w| w[1] >= w[0]) && ws[0] > 0.0 && ws[0] < 0.5, "{ws:?}");
        assert_eq!(*ws.last().unwrap(), 1.0);
        ec.set(false);
        let w = ec.step();
        assert!(w > 0.5 && w < 1.0, "{w}");
        for _ in 0..10 {
            ec.step();
        }
        assert_eq!(ec.step(), 0.0);
        // Few samples: partial weight.
        let mut ec = EyeContact::new(true);
        for _ in 0..SCREEN_MIN_FRAMES / 3 {
            ec.observe(Some([[0.5, 0.0]; 2]));
        }
        let w = ec.step();
        assert!((w - (SCREEN_MIN_FRAMES / 3) as f64 / SCREEN_MIN_FRAMES as f64).abs() < 1e-12, "{w}");
    }

    /// The output's irises in its own eye coordinates, relative to where the portrait looks
    /// into the camera (`camera`), and relative to the middle of the eye opening.
    fn offsets(out: &crate::core::retarget::Shape68, camera: [[f64; 2]; 2]) -> [([f64; 2], [f64; 2]); 2] {
        let ir = out.iris.unwrap();
        [Eye::Right, Eye::Left].map(|eye| {
            let e = eye as usize;
            let c = to_eye(&out.pts68, eye, [ir[e].cx as f64, ir[e].cy as f64]).unwrap();
            let mid = camera_gaze(&out.pts68, eye).unwrap();
            let mid = [mid[0] - [1.0, -1.0][e] * FRONTAL_BIAS[0], mid[1] - FRONTAL_BIAS[1]];
            ([c[0] - camera[e][0], c[1] - camera[e][1]], [c[0] - mid[0], c[1] - mid[1]])
        })
    }

    fn norm(v: [f64; 2]) -> f64 {
        (v[0] * v[0] + v[1] * v[1]).sqrt()
    }

    /// A driver whose neutral (a photo, a profile) looks into its camera, then 6 s of looking at
    /// the screen (irises 0.09 eye width lower), with a 1-s glance aside (0.15 width) and a blink;
    /// portraits looking at the camera and looking aside. Returns per frame the output and the
    /// driver's gaze phase.
    fn drive(on: bool, portrait_iris_dx: f32) -> (Vec<crate::core::retarget::Shape68>, [[f64; 2]; 2]) {
        use crate::core::retarget::{RetargetParams, Retargeter, Shape68};
        let t = Face::neutral();
        let target = Shape68 { pts68: t.pts(), iris: Some(t.iris(portrait_iris_dx * t.ew, 0.0)) };
        let d = Face::other();
        let params = RetargetParams { pose_smoothing: 0.0, eye_contact: on, ..Default::default() };
        let mut r = Retargeter::new(target, Some(d.shape()), params).unwrap();
        let camera = r.t_camera.unwrap();
        let outs = (0..180)
            .map(|k| {
                let (dx, dy) = if (120..150).contains(&k) { (0.15, 0.09) } else { (0.0, 0.09) };
                let f = if k == 100 { Face { eh: [1.0, 1.0], ..d } } else { d };
                r.retarget(&f.pts(), Some(&f.iris(dx * d.ew, dy * d.ew))).unwrap()
            })
            .collect();
        (outs, camera)
    }

    #[test]
    fn eye_contact_looks_into_the_camera_at_screen_gaze_and_keeps_glances() {
        for portrait_dx in [0.0f32, 0.12] {
            let (off, camera) = drive(false, portrait_dx);
            let (on, _) = drive(true, portrait_dx);
            // Screen-gaze frames once the reference is established (not the blink, the glance, or
            // the frames right after them).
            let screen: Vec<usize> = (30..100).chain(160..180).collect();
            let mean = |outs: &[crate::core::retarget::Shape68], rel: usize| {
                screen.iter().map(|&k| offsets(&outs[k], camera).iter().map(|o| norm([o.0, o.1][rel])).sum::<f64>() / 2.0).sum::<f64>() / screen.len() as f64
            };
            let (off_cam, on_cam) = (mean(&off, 0), mean(&on, 0));
            let (off_mid, on_mid) = (mean(&off, 1), mean(&on, 1));
            assert!(off_cam > 0.08, "portrait dx {portrait_dx}: without eye contact the portrait looks down/aside: {off_cam}");
            assert!(on_cam < 0.5 * off_cam && on_cam < 1e-6, "portrait dx {portrait_dx}: from the camera gaze {off_cam} -> {on_cam}");
            assert!(on_mid < 0.5 * off_mid, "portrait dx {portrait_dx}: from the eye's middle {off_mid} -> {on_mid}");
            // A deliberate glance still moves the iris, as far as without eye contact.
            let glance = |outs: &[crate::core::retarget::Shape68]| {
                let g = offsets(&outs[140], camera);
                let s = offsets(&outs[90], camera);
                [g[0].0[0] - s[0].0[0], g[1].0[0] - s[1].0[0]]
            };
            for (a, b) in glance(&on).iter().zip(glance(&off)) {
                assert!(*a > 0.14 && (a - b).abs() < 1e-6, "glance moved the iris by {a} (without eye contact {b})");
            }
            // Lids (the blink included) and every other point are unchanged: only the irises move.
            for (a, b) in on.iter().zip(&off) {
                assert_eq!(a.pts68, b.pts68);
            }
        }
    }

    #[test]
    fn camera_gaze_is_the_middle_of_the_opening_with_the_frontal_bias() {
        // The synthetic face's eyes are symmetric about their corner line: the middle of the
        // opening is (0.5, 0); the bias points towards the nose and up.
        let p = Face::neutral().pts();
        let r = camera_gaze(&p, Eye::Right).unwrap();
        let l = camera_gaze(&p, Eye::Left).unwrap();
        assert!((r[0] - (0.5 + FRONTAL_BIAS[0])).abs() < 1e-9 && (r[1] - FRONTAL_BIAS[1]).abs() < 1e-9, "{r:?}");
        assert!((l[0] - (0.5 - FRONTAL_BIAS[0])).abs() < 1e-9 && (l[1] - FRONTAL_BIAS[1]).abs() < 1e-9, "{l:?}");
        // A lower lid hanging lower moves the middle down.
        let mut q = p;
        q[40][1] += 6.0;
        q[41][1] += 6.0;
        assert!(camera_gaze(&q, Eye::Right).unwrap()[1] > r[1] + 0.05);
        assert!(camera_gaze(&[[0.0; 2]; 68], Eye::Left).is_none());
    }
}
