//! Learning the driver's neutral on line, without a calibration profile: a provisional neutral
//! from the first frame (a running robust estimate over the recent frames, so that the portrait
//! moves at once), the final one from the first window of steady neutral frames, and the blend
//! of the neutral in use towards each newer estimate, shape and pose (so that a change never
//! shows as a jump).
use super::neutral::{estimate_points, NeutralLimits, NeutralStatus, CLOSED_SHARE_STEADY};
use super::openness;
use super::retargeter::{DriverNeutral, Retargeter};
use crate::core::geometry::Pt;
use crate::core::types::Iris;
use crate::error::Result;

/// Largest number of recent frames the provisional neutral is estimated from (5 s at 30 fps):
/// long enough to hold several closed-lip moments of a person who talks without pause.
const PROVISIONAL_WINDOW: usize = 150;
/// The provisional neutral is the median of this share of those frames, the most closed-mouth
/// ones. A talking driver closes the lips briefly (m, b, p, pauses): r3_May_5s shows closed lips
/// in under a tenth of its frames, so a quarter gave a neutral with lips parted by 0.1 of the
/// inter-ocular distance, and the portrait's mouth opened 0.1 less than the driver's.
const PROVISIONAL_CLOSED_SHARE: f32 = 0.08;
/// The provisional estimate is refreshed every this many frames (after the first few).
const PROVISIONAL_EVERY: usize = 5;
/// Per-frame fraction by which the neutral in use moves towards a new estimate: changes of the
/// neutral reach the output over ~10 frames instead of as a jump.
const NEUTRAL_BLEND: f32 = 0.25;
/// The rest opening is this quantile of the recent frames' mouth openness (the provisional
/// window): the median of the most closed share that
/// the provisional neutral is the median of (`PROVISIONAL_CLOSED_SHARE`). A person who talks
/// closes the lips for every m, b and p; one who keeps still keeps them closed. A higher
/// quantile took a second of lips held parted after talking for the rest mouth.
const REST_MOUTH_QUANTILE: f32 = PROVISIONAL_CLOSED_SHARE / 2.0;
/// Frames needed before the rest opening is trusted.
const REST_MOUTH_MIN_FRAMES: usize = 10;
/// A frame (or a learned neutral) counts as a rest mouth up to this much (inner-lip gap over
/// mouth width) above the rest opening. MediaPipe reads closed lips at 0.00-0.05 (lp_d18 at
/// rest drifts over that range) and lips held parted on a vowel from about 0.12, so a held
/// "a" or an open smile is not a rest mouth. Without this, r3_May_5s (a talking driver who
/// holds her mouth half open for a second) was learned with parted lips, and every later
/// opening rendered 0.1 IOD smaller. 0.03 kept lp_d18's resting lips out of learning.
const REST_MOUTH_TOL: f32 = 0.06;

impl Retargeter {

    /// Forgets a learned neutral and starts learning again (no effect with a profile).
    pub fn relearn(&mut self) {
        if self.status != NeutralStatus::Profile {
            self.relearn_now();
        }
    }

    /// "Neutral now" (control API): forgets the neutral in use, a profile's too, and learns it
    /// again from the next steady frames; the provisional neutral drives the portrait meanwhile.
    pub fn relearn_now(&mut self) {
        self.driver = None;
        self.goal = None;
        self.learn_pts.clear();
        self.learn_iris.clear();
        self.recent.clear();
        self.since_estimate = 0;
        self.pose = None;
        self.status = NeutralStatus::Learning { have: 0, need: self.params.learn_frames };
    }

    /// Without a profile: the steady-frame window (the final, learned neutral) and the running
    /// provisional estimate (so that the portrait moves from the first frame). A learned neutral
    /// whose mouth is more open than where the driver's mouth rests is given up and learned
    /// again (the provisional estimate drives meanwhile, blended in).
    pub(super) fn observe(&mut self, p: &[Pt], iris: Option<&[Iris; 2]>) -> Result<()> {
        if self.status == NeutralStatus::Profile {
            return Ok(());
        }
        let p68 = self.topo.sub(p);
        let mouth = openness::mouth(&p68);
        // Recent frames are kept once learned too, so that a relearn starts from a full window.
        self.recent.push_back((p.to_vec(), iris.copied(), mouth));
        if self.recent.len() > PROVISIONAL_WINDOW {
            self.recent.pop_front();
        }
        let rest = self.rest_mouth();
        self.since_estimate += 1;
        if self.status == NeutralStatus::Learned {
            let neutral_mouth = self.driver_neutral().and_then(|n| openness::mouth(&n));
            match (rest, neutral_mouth) {
                (Some(r), Some(n)) if n > r + REST_MOUTH_TOL => {
                    self.learn_pts.clear();
                    self.learn_iris.clear();
                    self.since_estimate = PROVISIONAL_EVERY;
                }
                _ => return Ok(()),
            }
        }
        let need = self.params.learn_frames;
        let at_rest = NeutralLimits::default().check(&p68).is_ok()
            && match (mouth, rest) {
                (Some(m), Some(r)) => m <= r + REST_MOUTH_TOL,
                _ => true,
            };
        if !at_rest {
            // Learning wants consecutive neutral frames: start over.
            self.learn_pts.clear();
            self.learn_iris.clear();
        } else {
            self.learn_pts.push(p.to_vec());
            self.learn_iris.push(iris.copied());
            if self.learn_pts.len() >= need {
                match estimate_points(&self.topo, &self.learn_pts, &self.learn_iris, CLOSED_SHARE_STEADY) {
                    Ok(est) if est.nonrigid <= self.params.learn_max_motion => {
                        self.set_goal(DriverNeutral { pts: est.pts, iris: est.iris })?;
                        self.learn_pts = Vec::new();
                        self.learn_iris = Vec::new();
                        self.status = NeutralStatus::Learned;
                        return Ok(());
                    }
                    _ => {
                        // Too much expression change: keep the newer half and keep collecting.
                        self.learn_pts.drain(..need / 2);
                        self.learn_iris.drain(..need / 2);
                    }
                }
            }
        }
        self.status = NeutralStatus::Learning { have: self.learn_pts.len(), need };
        // Provisional: a robust running estimate over the recent frames, whatever their
        // expression (the per-coordinate median of a talking face is close to its rest).
        if self.driver.is_none() {
            self.driver = Some(self.driver_model(&DriverNeutral { pts: p.to_vec(), iris: iris.copied() })?);
            self.since_estimate = 0;
        } else if self.since_estimate >= PROVISIONAL_EVERY || self.recent.len() <= PROVISIONAL_EVERY {
            self.since_estimate = 0;
            let (pts, irs): (Vec<Vec<Pt>>, Vec<Option<[Iris; 2]>>) = self.recent.iter().map(|(p, i, _)| (p.clone(), *i)).unzip();
            if let Ok(est) = estimate_points(&self.topo, &pts, &irs, PROVISIONAL_CLOSED_SHARE) {
                self.set_goal(DriverNeutral { pts: est.pts, iris: est.iris })?;
            }
        }
        Ok(())
    }

    /// Where the driver's mouth rests: a low quantile of the recent frames' openness, once
    /// enough frames were seen.
    fn rest_mouth(&self) -> Option<f32> {
        let mut v: Vec<f32> = self.recent.iter().filter_map(|r| r.2).collect();
        if v.len() < REST_MOUTH_MIN_FRAMES {
            return None;
        }
        let k = ((v.len() - 1) as f32 * REST_MOUTH_QUANTILE).round() as usize;
        let (_, q, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
        Some(*q)
    }

    fn set_goal(&mut self, g: DriverNeutral) -> Result<()> {
        self.driver_model(&g)?; // validate now, not when blending
        if self.driver.is_none() {
            self.driver = Some(self.driver_model(&g)?);
        } else {
            self.goal = Some(g);
        }
        Ok(())
    }

    /// Moves the neutral in use a step towards the goal, its shape and its pose. The pose too:
    /// an estimate is posed where the driver's head usually was over its frames
    /// (`estimate_points`), and the first neutral is a single frame's; aligning every estimate to
    /// the neutral in use kept that first frame's pose for as long as the neutral was being
    /// learned (a whole clip for a driver who never holds still), and a driver who leaned in when
    /// it was taken drove the portrait scaled up to the limit (sk_3: 1.13-1.20 for the whole clip).
    /// The blend spreads the move over ~10 frames.
    pub(super) fn advance_neutral(&mut self) -> Result<()> {
        let (Some(goal), Some(cur)) = (self.goal.as_ref(), self.driver.as_ref()) else { return Ok(()) };
        let a = NEUTRAL_BLEND;
        let mut done = true;
        let tol = 1e-3 * cur.measures.iod as f32;
        let pts: Vec<Pt> = cur
            .all
            .iter()
            .zip(&goal.pts)
            .map(|(c, &g)| {
                let d = [g[0] - c[0], g[1] - c[1]];
                if d[0].abs() > tol || d[1].abs() > tol {
                    done = false;
                    [c[0] + a * d[0], c[1] + a * d[1]]
                } else {
                    g
                }
            })
            .collect();
        let iris = match (cur.iris, goal.iris) {
            (Some(c), Some(g)) => Some([0, 1].map(|k| Iris { cx: c[k].cx + a * (g[k].cx - c[k].cx), cy: c[k].cy + a * (g[k].cy - c[k].cy), r: c[k].r + a * (g[k].r - c[k].r) })),
            (_, g) => g,
        };
        self.driver = Some(self.driver_model(&DriverNeutral { pts, iris })?);
        if done {
            self.goal = None;
        }
        Ok(())
    }

}

#[cfg(test)]
mod tests {
    use crate::core::geometry::Similarity;
    use crate::core::retarget::tests::{max_diff, no_smoothing, procrustes, transform, Face};
    use crate::core::retarget::{openness, NeutralStatus, Pts68, RetargetParams, Retargeter};

    #[test]
    fn learns_neutral_from_steady_frames() {
        let params = RetargetParams { learn_frames: 10, ..no_smoothing() };
        let mut r = Retargeter::new(Face::neutral().shape(), None, params).unwrap();
        let d = Face::other();
        let tn = Face::neutral().pts();
        assert_eq!(r.status(), NeutralStatus::Learning { have: 0, need: 10 });
        // Provisional neutral from the first frame: the same face again gives the target neutral.
        for k in 0..6 {
            let jitter = Similarity::about(1.0, 0.01 * (k % 3) as f64, [d.cx as f64, d.cy as f64], [k as f64 * 0.5, 0.0]);
            let out = r.retarget(&transform(&d.pts(), &jitter), None).unwrap();
            assert!(procrustes(&out.pts68, &tn) < 1e-3, "provisional neutral at frame {k}");
        }
        assert_eq!(r.status(), NeutralStatus::Learning { have: 6, need: 10 });
        // An open mouth does not count towards learning and restarts the window, but the
        // portrait already follows it (it does not wait for the learned neutral).
        let out = r.retarget(&Face { gap: 30.0, ..d }.pts(), None).unwrap();
        assert!(openness::mouth(&out.pts68).unwrap() > 0.3, "mouth follows while provisional");
        assert_eq!(r.status(), NeutralStatus::Learning { have: 0, need: 10 });
        for k in 0..10 {
            let jitter = Similarity::about(1.0, 0.01 * (k % 3) as f64, [d.cx as f64, d.cy as f64], [k as f64 * 0.5, 0.0]);
            r.retarget(&transform(&d.pts(), &jitter), Some(&d.iris(0.0, 0.0))).unwrap();
        }
        assert_eq!(r.status(), NeutralStatus::Learned);
        let learned = r.driver_neutral().unwrap();
        assert!(crate::core::geometry::procrustes_distance(&learned, &d.pts()).unwrap() < 1e-4);
        // And now it retargets: a neutral driver frame at the learning frames' median pose
        // (their jitter's median: 0.01 rad, 2.25 px) gives the target neutral (once the learned
        // neutral has blended in, over a few frames).
        let median_pose = transform(&d.pts(), &Similarity::about(1.0, 0.01, [d.cx as f64, d.cy as f64], [2.25, 0.0]));
        for _ in 0..20 {
            r.retarget(&median_pose, None).unwrap();
        }
        let out = r.retarget(&median_pose, None).unwrap();
        assert!(max_diff(&out.pts68, &tn) < 0.1, "{}", max_diff(&out.pts68, &tn));
        r.relearn();
        assert_eq!(r.status(), NeutralStatus::Learning { have: 0, need: 10 });
    }

    /// A driver who leans in for the first frame and then talks at a usual distance, never
    /// still (so the neutral is never learned): the provisional neutral moves to where the head
    /// usually is, and the portrait is drawn at its own size, not 1.2 times it (sk_3 drove a
    /// portrait at the scale limit for its whole clip).
    #[test]
    fn a_first_frame_leaning_in_does_not_scale_the_portrait_for_ever() {
        let params = RetargetParams { learn_frames: 30, ..no_smoothing() };
        let mut r = Retargeter::new(Face::neutral().shape(), None, params).unwrap();
        let d = Face::other();
        let c = [d.cx as f64, d.cy as f64];
        let tn = Face::neutral().pts();
        let size = |pts: &Pts68| crate::core::geometry::rms_size(&crate::core::retarget::stable_pts(pts));
        // The first frame, leaning in.
        r.retarget(&transform(&d.pts(), &Similarity::about(1.2, 0.0, c, [0.0, 0.0])), None).unwrap();
        let mut last = 0.0;
        for k in 0..90 {
            // Talking (the mouth never rests long enough to learn), at the usual distance.
            let f = Face { gap: if k % 4 == 0 { 0.0 } else { 12.0 + (k % 3) as f32 * 8.0 }, ..d };
            let out = r.retarget(&f.pts(), None).unwrap();
            last = size(&out.pts68) / size(&tn);
        }
        assert!(matches!(r.status(), NeutralStatus::Learning { .. }), "{:?}", r.status());
        assert!((last - 1.0).abs() < 0.03, "portrait drawn at {last:.3} times its size; the driver's usual size is its neutral's");
    }

    #[test]
    fn provisional_neutral_moves_without_jumps_and_never_waits() {
        // A talking driver that is never steady: the output follows from the first frame, and
        // when the provisional estimate is refined the output changes smoothly.
        let params = RetargetParams { learn_frames: 30, ..no_smoothing() };
        let mut r = Retargeter::new(Face::neutral().shape(), None, params).unwrap();
        let d = Face::other();
        let mut prev: Option<Pts68> = None;
        let mut moved = 0;
        let mut worst_step = 0.0f32;
        for k in 0..120 {
            let gap = 12.0 * ((k as f32 * 0.7).sin() * 0.5 + 0.5);
            let out = r.retarget(&Face { gap, ..d }.pts(), None).unwrap();
            assert!(matches!(r.status(), NeutralStatus::Learning { .. }));
            if openness::mouth(&out.pts68).unwrap() > 0.1 {
                moved += 1;
            }
            if let Some(p) = prev {
                // Brows and eyes do not move in the driver: any change there comes from the
                // neutral estimate, and must be gradual.
                let s = (17..48).map(|i| (out.pts68[i][1] - p[i][1]).abs()).fold(0.0, f32::max);
                worst_step = worst_step.max(s);
            }
            prev = Some(out.pts68);
        }
        assert!(moved > 30, "mouth opened in {moved} of 120 frames");
        assert!(worst_step < 0.5, "largest frame-to-frame jump of still features: {worst_step} px");
    }

    #[test]
    fn learning_rejects_a_moving_face() {
        let params = RetargetParams { learn_frames: 10, learn_max_motion: 0.01, ..no_smoothing() };
        let mut r = Retargeter::new(Face::neutral().shape(), None, params).unwrap();
        let d = Face::other();
        // Talking: the mouth moves within the "neutral" openness limit, brows move a lot.
        for k in 0..30 {
            let f = Face { gap: (k % 2) as f32 * 6.0, brow: (k % 3) as f32 * 6.0, ..d };
            r.retarget(&f.pts(), None).unwrap();
            assert!(matches!(r.status(), NeutralStatus::Learning { .. }), "{k}");
        }
    }


    /// Mouth openness of the neutral the retargeter uses now.
    fn neutral_mouth(r: &Retargeter) -> f32 {
        openness::mouth(&r.driver_neutral().unwrap()).unwrap()
    }

    /// A talking driver's mouth gap (px) at frame `k`: lips closed on one frame in 12 (an m, b
    /// or p), parted 6-14 px otherwise, never steady.
    fn talking_gap(k: usize) -> f32 {
        if k % 12 == 0 { 0.0 } else { 6.0 + 8.0 * ((k as f32 * 0.9).sin() * 0.5 + 0.5) }
    }

    #[test]
    fn a_driver_who_never_stops_talking_gets_a_closed_mouth_neutral() {
        // Closed lips in 1 frame of 12 (r3_May_5s shows them in under a tenth): the provisional
        // neutral must still be the closed mouth, or every opening renders smaller. A quarter of
        // a 45-frame window gave a neutral with lips parted by 6 px or more.
        let d = Face::other();
        let mut r = Retargeter::new(Face::neutral().shape(), None, no_smoothing()).unwrap();
        for k in 0..200 {
            r.retarget(&Face { gap: talking_gap(k), ..d }.pts(), None).unwrap();
        }
        let closed = openness::mouth(&d.pts()).unwrap();
        assert!(neutral_mouth(&r) < closed + 0.02, "neutral mouth {} against closed {closed}", neutral_mouth(&r));
        // So an opening reaches the portrait as with a calibrated neutral.
        let mut cal = Retargeter::new(Face::neutral().shape(), Some(d.shape()), no_smoothing()).unwrap();
        let open = Face { gap: 10.0, ..d }.pts();
        let (got, want) = (openness::mouth(&r.retarget(&open, None).unwrap().pts68).unwrap(), openness::mouth(&cal.retarget(&open, None).unwrap().pts68).unwrap());
        assert!(got > 0.85 * want, "opening {got} against {want} with the calibrated neutral");
    }

    #[test]
    fn a_held_open_mouth_is_not_learned_as_neutral_and_a_learned_one_is_given_up() {
        let d = Face::other();
        let params = RetargetParams { learn_frames: 30, ..no_smoothing() };
        let closed = openness::mouth(&d.pts()).unwrap();
        // Lips held parted (within the neutral limits' 0.12) and steady after some talking: not
        // a rest mouth, so not learned.
        let mut r = Retargeter::new(Face::neutral().shape(), None, params.clone()).unwrap();
        for k in 0..60 {
            r.retarget(&Face { gap: talking_gap(k), ..d }.pts(), None).unwrap();
        }
        let held = Face { gap: 6.0, ..d };
        assert!(openness::mouth(&held.pts()).unwrap() < 0.12);
        for _ in 0..40 {
            r.retarget(&held.pts(), None).unwrap();
        }
        assert!(matches!(r.status(), NeutralStatus::Learning { .. }), "{:?}", r.status());
        assert!(neutral_mouth(&r) < closed + 0.03, "neutral mouth {}", neutral_mouth(&r));
        // Held parted from the first frame, nothing better is known: learned. Once the driver
        // talks and closes the lips, that neutral is given up and the closed mouth takes over.
        let mut r = Retargeter::new(Face::neutral().shape(), None, params).unwrap();
        for _ in 0..40 {
            r.retarget(&held.pts(), None).unwrap();
        }
        assert_eq!(r.status(), NeutralStatus::Learned);
        for k in 0..150 {
            r.retarget(&Face { gap: talking_gap(k), ..d }.pts(), None).unwrap();
        }
        assert!(matches!(r.status(), NeutralStatus::Learning { .. }), "{:?}", r.status());
        assert!(neutral_mouth(&r) < closed + 0.02, "neutral mouth {}", neutral_mouth(&r));
        // A still, closed mouth is learned again.
        for _ in 0..40 {
            r.retarget(&d.pts(), None).unwrap();
        }
        assert_eq!(r.status(), NeutralStatus::Learned);
    }

}
