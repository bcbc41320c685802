//! `RetargetParams`: the tunables of retargeting (the `[retarget]` config section), their
//! defaults and their ranges (checked before any retargeter is built, so that a bad value is a
//! config error naming the key, never a panic later).
use crate::error::{Error, Result};

/// Tunables of retargeting (the `[retarget]` config section).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetargetParams {
    /// Largest head roll passed on to the portrait, degrees.
    pub max_roll_deg: f32,
    /// Turn the portrait's 3-D mesh with the driver's head (rendered with depth: the far side
    /// hidden, not folded); false: the 2-D warp of earlier versions, where turns fold.
    pub head_3d: bool,
    /// Largest head yaw and pitch passed on (3-D), degrees; the pose eases towards them.
    pub max_yaw_deg: f32,
    pub max_pitch_deg: f32,
    /// Largest head translation passed on, as a fraction of the crop side; eased from 70 % of it
    /// (0.105: on 40 training clips the head's offset from its clip's median position is under
    /// that in 95 % of the frames) and never past it. Further, the face slides off the portrait's
    /// own hair and body, which stay (docs/retargeting.md).
    pub max_translation: f32,
    /// Head scale range passed on (driver leaning in/out), eased from 70 % of it (in log scale).
    /// Eased, these pass on what the former hard limits (0.12, 0.85-1.2) did and go on beyond.
    pub min_scale: f32,
    pub max_scale: f32,
    /// Weight of the previous pose in the pose smoothing, 0 (none) ..< 1. Off by default: the
    /// landmarks are already smoothed (One Euro), and a second filter only adds lag (on 27
    /// training clips 0.3 cost 0.07 dB face PSNR and 0.12 dB mouth PSNR, docs/quality.md).
    pub pose_smoothing: f32,
    /// Multiplier of the transferred expression (1 = faithful).
    pub expression_gain: f32,
    /// Mouth opening of the portrait per unit of the driver's, both over their own inter-ocular
    /// distance (1 = the same opening relative to the face; times `expression_gain`). Measured
    /// per face rather than per mouth width: a portrait with a narrow mouth otherwise mumbles
    /// where the driver speaks clearly (issue 17: slope 0.71 on cross-identity pairs).
    pub mouth_gain: f32,
    /// Without a calibration profile: steady frames needed to learn the driver's neutral.
    pub learn_frames: usize,
    /// Without a profile: largest non-rigid landmark motion (RMS / inter-ocular distance)
    /// accepted in the learning window.
    pub learn_max_motion: f32,
    /// Eye contact: the portrait looks into the camera while the driver looks at the screen (the
    /// driver's most frequent gaze over the last seconds), and still follows glances away from
    /// it (`eye_contact.rs`). Switchable live from the control API.
    pub eye_contact: bool,
}

impl Default for RetargetParams {
    fn default() -> Self {
        RetargetParams {
            max_roll_deg: 30.0,
            head_3d: true,
            max_yaw_deg: 35.0,
            max_pitch_deg: 25.0,
            max_translation: 0.15,
            min_scale: 0.8,
            max_scale: 1.25,
            pose_smoothing: 0.0,
            expression_gain: 1.0,
            mouth_gain: 1.0,
            learn_frames: 30,
            learn_max_motion: 0.03,
            eye_contact: false,
        }
    }
}

impl RetargetParams {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::Config { key: format!("retarget.{k}"), msg: m.into() });
        if !(self.max_roll_deg >= 0.0 && self.max_roll_deg <= 90.0) {
            return bad("max_roll_deg", "must be in 0..=90");
        }
        if !(self.max_yaw_deg >= 0.0 && self.max_yaw_deg <= 60.0) {
            return bad("max_yaw_deg", "must be in 0..=60");
        }
        if !(self.max_pitch_deg >= 0.0 && self.max_pitch_deg <= 45.0) {
            return bad("max_pitch_deg", "must be in 0..=45");
        }
        if !(self.max_translation >= 0.0 && self.max_translation <= 1.0) {
            return bad("max_translation", "must be in 0..=1 (fraction of the crop)");
        }
        if !(self.min_scale > 0.0 && self.min_scale <= 1.0) {
            return bad("min_scale", "must be in (0, 1]");
        }
        if !(self.max_scale >= 1.0 && self.max_scale <= 4.0) {
            return bad("max_scale", "must be in [1, 4]");
        }
        if !(self.pose_smoothing >= 0.0 && self.pose_smoothing < 1.0) {
            return bad("pose_smoothing", "must be in [0, 1)");
        }
        if !(self.expression_gain >= 0.0 && self.expression_gain <= 3.0) {
            return bad("expression_gain", "must be in [0, 3]");
        }
        if !(self.mouth_gain >= 0.25 && self.mouth_gain <= 3.0) {
            return bad("mouth_gain", "must be in [0.25, 3]");
        }
        if self.learn_frames < 3 {
            return bad("learn_frames", "must be at least 3");
        }
        if !(self.learn_max_motion > 0.0 && self.learn_max_motion.is_finite()) {
            return bad("learn_max_motion", "must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn params_validation_names_the_field() {
        assert!(RetargetParams::default().validate().is_ok());
        let e = RetargetParams { max_roll_deg: f32::NAN, ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("retarget.max_roll_deg"), "{e}");
        assert!(RetargetParams { min_scale: 1.5, ..Default::default() }.validate().is_err());
        assert!(RetargetParams { learn_frames: 1, ..Default::default() }.validate().is_err());
        let p: RetargetParams = toml::from_str("max_roll_deg = 12.0").unwrap();
        assert_eq!(p.max_roll_deg, 12.0);
        assert_eq!(p.learn_frames, RetargetParams::default().learn_frames);
        assert!(toml::from_str::<RetargetParams>("max_rol_deg = 12.0").is_err());
    }

}
