//! Which eyes the iris model runs on in a frame, and the iris of an eye it skipped.
//!
//! The iris model costs more per eye than the whole 468-point mesh (107 against 70 MFLOP; about
//! 3.9 ms against 4.0 ms on one core of the project's CPU), so running it on both eyes every frame
//! made up two thirds of the face stage (issue 19). Live, [`IrisSchedule::Alternate`] runs it on
//! one eye per frame, taking turns, and on neither eye while that eye is closed (the lids hide
//! the iris; the renderer clips it by them anyway). An eye the model skips keeps its last iris
//! *relative to its eye crop*, placed in this frame's crop: it follows the head exactly and
//! lags only in gaze, by one frame (two while the other eye is closed and this one not).
//! An eye whose crop has not changed since the model last ran on it (a steady gaze, the usual
//! case in a call) is not run again either: the model would see the same pixels.
//! [`IrisSchedule::EveryFrame`] is MediaPipe's own pipeline, kept for `puppetcam landmarks`, the
//! training data and the parity tests against MediaPipe.
use super::iris::{eye_openness, EyeIris, Lids};
use crate::core::types::Iris;

/// Below this lid opening (over the eye's width) an eye counts as closed: open eyes are
/// typically 0.2-0.35 on MediaPipe's mesh and a blink goes well under 0.1; a squint stays above,
/// so its iris keeps being measured.
pub const CLOSED_BELOW: f32 = 0.12;

/// How often the iris model runs per eye.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IrisSchedule {
    /// Both eyes, every frame (MediaPipe's pipeline).
    #[default]
    EveryFrame,
    /// One open eye per frame, taking turns; the other carried (see the module comment).
    Alternate,
}

/// The per-track state of the schedule: whose turn it is and each eye's last iris.
#[derive(Clone, Debug, Default)]
pub struct IrisPlanner {
    schedule: IrisSchedule,
    turn: usize,
    last: [Option<[f32; 3]>; 2],
    /// Each eye's last lid contour in crop units, carried like the iris.
    last_lids: [Option<Lids>; 2],
    /// Each eye's model input when the model last ran on it (`Alternate` only).
    last_input: [Option<Vec<f32>>; 2],
}

/// An eye crop counts as changed (the model runs on it) when more than this many of its 64x64
/// pixels differ by more than [`STILL_LEVEL`] from the crop the model last saw: an iris moving by
/// one pixel changes a crescent of about 30 pixels by far more than that, camera noise and
/// compression change single pixels by a few levels. The crop follows the head (it is cut along
/// this frame's eye corners), so a still gaze in a moving head stays unchanged.
pub const STILL_PIXELS: usize = 12;
/// In input units (pixel values / 255): 24 levels of 255.
pub const STILL_LEVEL: f32 = 24.0 / 255.0;

/// Whether two iris inputs (3 planes of the same size) differ in more than [`STILL_PIXELS`] pixels
/// by more than [`STILL_LEVEL`] in any channel.
pub fn crop_changed(a: &[f32], b: &[f32]) -> bool {
    if a.len() != b.len() || a.len() % 3 != 0 {
        return true;
    }
    let plane = a.len() / 3;
    let mut n = 0;
    for i in 0..plane {
        let d = (0..3).map(|c| (a[c * plane + i] - b[c * plane + i]).abs()).fold(0.0f32, f32::max);
        if d > STILL_LEVEL {
            n += 1;
            if n > STILL_PIXELS {
                return true;
            }
        }
    }
    false
}

impl IrisPlanner {
    pub fn new(schedule: IrisSchedule) -> Self {
        IrisPlanner { schedule, ..Default::default() }
    }

    /// Forgets the carried irises (a new track: the old face's gaze means nothing).
    pub fn reset(&mut self) {
        self.last = [None, None];
        self.last_lids = [None, None];
        self.last_input = [None, None];
    }

    /// Whether the model needs to run on eye `k` whose input this frame is `input`: always with
    /// `EveryFrame`; with `Alternate` only when the crop changed since the model last ran on it
    /// (a still eye keeps its iris). Remembers `input` when it says yes.
    pub fn needs_model(&mut self, k: usize, input: &[f32]) -> bool {
        if self.schedule == IrisSchedule::EveryFrame {
            return true;
        }
        let changed = self.last[k].is_none() || self.last_input[k].as_deref().map_or(true, |prev| crop_changed(prev, input));
        if changed {
            self.last_input[k] = Some(input.to_vec());
        }
        changed
    }

    /// Which eyes to run the model on for this frame's `mesh`. An eye without a carried iris
    /// always runs, so the first frame of a track has both.
    pub fn plan(&mut self, mesh: &[[f32; 3]]) -> [bool; 2] {
        match self.schedule {
            IrisSchedule::EveryFrame => [true, true],
            IrisSchedule::Alternate => {
                let open = [0, 1].map(|k| eye_openness(mesh, k).map_or(true, |o| o >= CLOSED_BELOW));
                let mut run = [false; 2];
                let k = self.turn;
                if open[k] {
                    run[k] = true;
                    self.turn = 1 - k;
                } else if open[1 - k] {
                    // This eye is closed: the other one takes the frame, and the turn stays.
                    run[1 - k] = true;
                }
                for e in 0..2 {
                    run[e] |= self.last[e].is_none();
                }
                run
            }
        }
    }

    /// Records the model's output for eye `k`.
    pub fn remember(&mut self, k: usize, eye: &EyeIris) {
        self.last[k] = Some(eye.rel);
        self.last_lids[k] = eye.lids_rel;
    }

    /// The carried iris of eye `k`, placed in this frame's eye crop `roi`.
    pub fn carried(&self, k: usize, roi: &super::roi::RotRect) -> Option<Iris> {
        self.last[k].map(|rel| EyeIris::place(rel, roi))
    }

    /// The carried lid contour of eye `k`, placed in this frame's eye crop `roi`.
    pub fn carried_lids(&self, k: usize, roi: &super::roi::RotRect) -> Option<Lids> {
        self.last_lids[k].as_ref().map(|rel| EyeIris::place_lids(rel, roi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::landmarks::MESH_POINTS;

    /// A mesh whose eyes are 30 px wide and open `o` (lid distance over width).
    fn mesh(open: [f32; 2]) -> Vec<[f32; 3]> {
        let mut m = vec![[0.0f32; 3]; MESH_POINTS];
        for (k, (a, b, up, lo)) in [(33, 133, 159, 145), (362, 263, 386, 374)].into_iter().enumerate() {
            let x0 = 100.0 * k as f32;
            m[a] = [x0, 50.0, 0.0];
            m[b] = [x0 + 30.0, 50.0, 0.0];
            m[up] = [x0 + 15.0, 50.0 - 15.0 * open[k], 0.0];
            m[lo] = [x0 + 15.0, 50.0 + 15.0 * open[k], 0.0];
        }
        m
    }

    fn seen(p: &mut IrisPlanner, run: [bool; 2]) {
        for k in 0..2 {
            if run[k] {
                p.remember(k, &EyeIris { iris: Iris::default(), rel: [0.5, 0.5, 0.1], lids: None, lids_rel: None });
            }
        }
    }

    #[test]
    fn every_frame_runs_both_eyes_always() {
        let mut p = IrisPlanner::new(IrisSchedule::EveryFrame);
        for open in [[0.3, 0.3], [0.0, 0.0]] {
            let run = p.plan(&mesh(open));
            seen(&mut p, run);
            assert_eq!(run, [true, true]);
        }
    }

    #[test]
    fn alternate_takes_turns_after_a_first_frame_with_both() {
        let mut p = IrisPlanner::new(IrisSchedule::Alternate);
        let m = mesh([0.3, 0.3]);
        let mut runs = Vec::new();
        for _ in 0..5 {
            let run = p.plan(&m);
            seen(&mut p, run);
            runs.push(run);
        }
        assert_eq!(runs[0], [true, true], "nothing to carry yet");
        assert_eq!(&runs[1..], &[[false, true], [true, false], [false, true], [true, false]]);
        p.reset();
        assert_eq!(p.plan(&m), [true, true], "a new track starts with both eyes");
    }

    #[test]
    fn closed_eyes_are_skipped() {
        let mut p = IrisPlanner::new(IrisSchedule::Alternate);
        let run = p.plan(&mesh([0.3, 0.3]));
        seen(&mut p, run);
        // A blink: no model run at all.
        assert_eq!(p.plan(&mesh([0.02, 0.03])), [false, false]);
        // One eye closed (a wink): the open one runs every frame.
        let wink = mesh([0.3, 0.02]);
        for _ in 0..3 {
            assert_eq!(p.plan(&wink), [true, false]);
        }
    }

    #[test]
    fn a_still_eye_is_not_run_again() {
        let mut p = IrisPlanner::new(IrisSchedule::Alternate);
        let crop = vec![0.5f32; 3 * 64 * 64];
        assert!(p.needs_model(0, &crop), "nothing carried yet");
        p.remember(0, &EyeIris { iris: Iris::default(), rel: [0.5, 0.5, 0.1], lids: None, lids_rel: None });
        let mut noisy = crop.clone();
        for i in (0..noisy.len()).step_by(97) {
            noisy[i] += 0.05; // noise: many pixels, a few levels
        }
        assert!(!p.needs_model(0, &noisy));
        let mut moved = crop.clone();
        for i in 0..40 {
            moved[2000 + i] = 0.1; // an iris edge: a few dozen pixels, far off
        }
        assert!(p.needs_model(0, &moved));
        assert!(!p.needs_model(0, &moved), "compared with the crop the model last saw");
        let mut every = IrisPlanner::new(IrisSchedule::EveryFrame);
        every.remember(0, &EyeIris { iris: Iris::default(), rel: [0.5, 0.5, 0.1], lids: None, lids_rel: None });
        assert!(every.needs_model(0, &crop) && every.needs_model(0, &crop));
        assert!(crop_changed(&crop, &crop[..30]), "inputs of another size always differ");
    }

    #[test]
    fn carried_iris_follows_the_crop() {
        let mut p = IrisPlanner::new(IrisSchedule::Alternate);
        p.remember(0, &EyeIris { iris: Iris::default(), rel: [0.5, 0.5, 0.1], lids: None, lids_rel: None });
        let roi = super::super::roi::RotRect { cx: 10.0, cy: 20.0, w: 30.0, h: 30.0, angle: 0.0 };
        let moved = super::super::roi::RotRect { cx: 40.0, ..roi };
        assert_eq!(p.carried(0, &roi), Some(Iris { cx: 10.0, cy: 20.0, r: 3.0 }));
        assert_eq!(p.carried(0, &moved).map(|i| i.cx), Some(40.0));
        assert_eq!(p.carried(1, &roi), None);
    }

    /// A skipped eye's lids are carried like its iris, in crop units, and a new track forgets them.
    #[test]
    fn carried_lids_follow_the_crop() {
        let mut p = IrisPlanner::new(IrisSchedule::Alternate);
        let mut rel: Lids = [[0.5f32, 0.5]; super::super::iris::LID_POINTS];
        rel[0] = [0.25, 0.5];
        rel[8] = [0.75, 0.5];
        p.remember(0, &EyeIris { iris: Iris::default(), rel: [0.5, 0.5, 0.1], lids: None, lids_rel: Some(rel) });
        let roi = super::super::roi::RotRect { cx: 10.0, cy: 20.0, w: 40.0, h: 40.0, angle: 0.0 };
        let turned = super::super::roi::RotRect { angle: std::f32::consts::FRAC_PI_2, ..roi };
        let l = p.carried_lids(0, &roi).unwrap();
        assert_eq!((l[0], l[8], l[4]), ([0.0, 20.0], [20.0, 20.0], [10.0, 20.0]));
        let t = p.carried_lids(0, &turned).unwrap();
        assert!((t[0][0] - 10.0).abs() < 1e-4 && (t[0][1] - 10.0).abs() < 1e-4, "{:?}", t[0]);
        assert_eq!(p.carried_lids(1, &roi), None);
        p.reset();
        assert_eq!(p.carried_lids(0, &roi), None);
    }
}
