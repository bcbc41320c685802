//! `puppetcam calibrate`: record the driver's neutral face into a calibration profile
//! (calibration/README.md documents the file). The retargeter subtracts this neutral from every
//! driver frame, so a bad neutral (mouth open, head turned, moving) would bias every expression:
//! captures are checked and rejected with a message that says what to fix.
//!
//! Split: `assess` and `Profile` are pure and unit-tested; `run` only does the capture I/O.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::retarget::{estimate_neutral, openness, NeutralLimits, NotNeutral, Pts68, Shape68};
use crate::core::types::Iris;
use crate::error::{Error, Result};

/// The profile format version this build reads and writes.
pub const SCHEMA: u32 = 1;

/// How much wider the iris model's lid contour reads an open eye than the 468-point mesh's lids:
/// the median, over 35 training clips, of each clip's median eye-aspect ratio with the one over
/// the other (0.96-1.48 per clip). A profile measured with one kind of lids, used with the other,
/// has its neutral lids scaled by it (see [`Profile::shape_for`]): without that, a profile from
/// before the iris lids would show every portrait's eyes about a fifth wider than they are.
pub const IRIS_OVER_MESH_LIDS: f32 = 1.18;

/// Arguments of `puppetcam calibrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Where to write the profile (TOML).
    #[arg(long, default_value = "calibration/profile.toml")]
    pub out: PathBuf,
    /// Calibrate from a video or image file instead of a camera (`--neutral PHOTO`: your
    /// relaxed face in one still photo).
    #[arg(long, alias = "neutral", conflicts_with = "device")]
    pub input: Option<PathBuf>,
    /// Camera to capture from: a path (/dev/video0), an index or part of its name.
    #[arg(long, default_value = "/dev/video0")]
    pub device: String,
    /// Seconds of neutral face to capture.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f32,
    /// Seconds to skip at the start (time to settle in front of the camera; offset into a video).
    #[arg(long, default_value_t = 0.0)]
    pub skip: f32,
    /// Directory holding the face models (default: as for `puppetcam landmarks`).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Largest fraction of frames without a face.
    #[arg(long, default_value_t = 0.2)]
    pub max_missing: f32,
    /// Largest landmark motion (standard deviation / inter-ocular distance).
    #[arg(long, default_value_t = 0.05)]
    pub max_motion: f32,
    /// Overwrite an existing profile.
    #[arg(long)]
    pub force: bool,
}

/// Thresholds for accepting a capture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CaptureLimits {
    /// Largest fraction of frames without a face.
    pub max_missing: f32,
    /// Largest raw landmark motion (std / IOD), head motion included.
    pub max_motion: f32,
    /// Largest non-rigid motion (expression change, RMS / IOD).
    pub max_nonrigid: f32,
    /// Largest fraction of face frames that fail the neutral checks.
    pub max_not_neutral: f32,
    /// Fewest usable frames.
    pub min_frames: usize,
    pub neutral: NeutralLimits,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        CaptureLimits {
            max_missing: 0.2,
            max_motion: 0.05,
            max_nonrigid: 0.03,
            max_not_neutral: 0.3,
            min_frames: 5,
            neutral: NeutralLimits::default(),
        }
    }
}

/// Quality figures stored with a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quality {
    /// Fraction of captured frames with a face.
    pub face_fraction: f32,
    /// Raw landmark motion, std / IOD.
    pub motion: f32,
    /// Expression change during the capture, RMS / IOD.
    pub nonrigid: f32,
    /// Of the neutral: mouth openness (inner-lip gap / mouth width).
    pub mouth_openness: f32,
    /// Of the neutral: eye aspect ratios [right, left].
    pub eye_openness: [f32; 2],
    /// Of the neutral: roll in degrees and yaw proxy (-1..1).
    pub roll_deg: f32,
    pub yaw: f32,
}

/// A calibration profile: the driver's neutral face (see calibration/README.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub schema: u32,
    /// UTC, RFC 3339.
    pub created: String,
    /// What was captured: `camera:<device>` or `file:<path>`.
    pub source: String,
    /// Size of the captured frames (the landmarks are in their pixels).
    pub frame_width: u32,
    pub frame_height: u32,
    pub frames_captured: u32,
    pub frames_used: u32,
    /// Inter-ocular distance of the neutral, pixels.
    pub iod: f32,
    /// Median neutral landmarks, 68 `[x, y]` in frame pixels (iBUG order).
    pub neutral_pts68: Vec<[f32; 2]>,
    /// Median irises `[[cx, cy, r], [cx, cy, r]]` (subject's right, left), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neutral_iris: Option<[[f32; 3]; 2]>,
    /// Where the lids of `neutral_pts68` come from: "iris" (the iris model's eye contour,
    /// `[face] iris_lids`) or "mesh" (the 468-point mesh's; profiles from before 2026-12-07 have
    /// no such key and are "mesh").
    #[serde(default = "mesh_lids")]
    pub lids: String,
    pub quality: Quality,
}

fn mesh_lids() -> String {
    "mesh".into()
}

impl Profile {
    /// Reads and validates a profile. A different `schema` is refused with a message that says
    /// which versions this build understands.
    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("calibration profile {}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses and validates a profile from TOML text.
    pub fn from_toml(text: &str) -> Result<Profile> {
        // Check the version before the fields, so that a future format gets a clear message
        // rather than a complaint about an unknown key.
        let value: toml::Value = toml::from_str(text).map_err(|e| Error::Invalid(format!("not valid TOML: {e}")))?;
        match value.get("schema").and_then(|v| v.as_integer()) {
            Some(v) if v == SCHEMA as i64 => {}
            Some(v) => {
                return Err(Error::Invalid(format!(
                    "schema version {v} is not supported (this puppetcam reads schema {SCHEMA}); re-run `puppetcam calibrate`"
                )))
            }
            None => return Err(Error::Invalid("missing integer `schema` (not a puppetcam calibration profile?)".into())),
        }
        let p: Profile = toml::from_str(text).map_err(|e| Error::Invalid(format!("{e}")))?;
        p.validate()?;
        Ok(p)
    }

    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string(self).map_err(|e| Error::Invalid(format!("cannot serialise profile: {e}")))?;
        Ok(format!(
            "# puppetcam calibration profile: the driver's neutral face (see calibration/README.md).\n{body}"
        ))
    }

    /// Writes the profile atomically and durably (`durable::write_atomic`), creating the
    /// directory.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        crate::durable::write_atomic(path, self.to_toml()?.as_bytes())
    }

    pub fn validate(&self) -> Result<()> {
        if self.schema != SCHEMA {
            return Err(Error::Invalid(format!("schema version {} is not supported (expected {SCHEMA})", self.schema)));
        }
        if self.neutral_pts68.len() != 68 {
            return Err(Error::Invalid(format!("`neutral_pts68` has {} points, expected 68", self.neutral_pts68.len())));
        }
        if !self.neutral_pts68.iter().flatten().all(|v| v.is_finite()) {
            return Err(Error::Invalid("`neutral_pts68` has non-finite values".into()));
        }
        if let Some(ir) = &self.neutral_iris {
            if !ir.iter().flatten().all(|v| v.is_finite()) || ir.iter().any(|i| i[2] < 0.0) {
                return Err(Error::Invalid("`neutral_iris` has non-finite values or a negative radius".into()));
            }
        }
        let pts = self.pts68();
        match openness::iod(&pts) {
            Some(iod) if iod > 1.0 => {}
            _ => return Err(Error::Invalid("`neutral_pts68` is degenerate (eyes coincide)".into())),
        }
        if !(self.iod.is_finite() && self.iod > 0.0) {
            return Err(Error::Invalid("`iod` must be positive".into()));
        }
        if self.lids != "iris" && self.lids != "mesh" {
            // Quoted at most 40 characters: the value comes from a file.
            let shown: String = self.lids.chars().take(40).collect();
            return Err(Error::Invalid(format!("`lids` is {shown:?}, expected \"iris\" or \"mesh\"")));
        }
        Ok(())
    }

    pub fn pts68(&self) -> Pts68 {
        let mut p = [[f32::NAN; 2]; 68];
        for (d, s) in p.iter_mut().zip(&self.neutral_pts68) {
            *d = *s;
        }
        p
    }

    /// The neutral as the retargeter takes it.
    pub fn shape(&self) -> Shape68 {
        Shape68 {
            pts68: self.pts68(),
            iris: self.neutral_iris.map(|ir| ir.map(|[cx, cy, r]| Iris { cx, cy, r })),
        }
    }

    /// The neutral for a face stage whose lids come from the iris model (`iris_lids`) or from
    /// the mesh: when the profile was measured with the other kind, each eye's lid points are
    /// moved from the corner line by [`IRIS_OVER_MESH_LIDS`] (or its inverse), and a note says
    /// to re-run `puppetcam calibrate`.
    pub fn shape_for(&self, iris_lids: bool) -> (Shape68, Option<String>) {
        let mut s = self.shape();
        let measured_iris = self.lids == "iris";
        if measured_iris == iris_lids {
            return (s, None);
        }
        let f = if iris_lids { IRIS_OVER_MESH_LIDS } else { 1.0 / IRIS_OVER_MESH_LIDS };
        crate::core::retarget::scale_lid_opening(&mut s.pts68, f as f64);
        let note = format!(
            "its lids were measured with the {} lids and this face stage reads the {} ones (`[face] iris_lids`): its eyes' neutral opening is scaled by {f:.2} as an estimate; re-run `puppetcam calibrate`",
            if measured_iris { "iris model's" } else { "468-point mesh's" },
            if iris_lids { "iris model's" } else { "mesh's" }
        );
        (s, Some(note))
    }
}

/// One captured frame: landmarks (frame pixels) and irises, or `None` when no face was found.
pub type Sample = Option<(Pts68, Option<[Iris; 2]>)>;

/// Checks a capture and builds the profile, or says why the capture is unusable.
pub fn assess(samples: &[Sample], limits: &CaptureLimits, source: &str, frame_size: (u32, u32)) -> Result<Profile> {
    let reject = |m: String| Err(Error::Invalid(format!("calibration rejected: {m}")));
    if samples.is_empty() {
        return reject("no frames were captured".into());
    }
    let faces: Vec<&(Pts68, Option<[Iris; 2]>)> = samples.iter().flatten().collect();
    let missing = 1.0 - faces.len() as f32 / samples.len() as f32;
    if missing > limits.max_missing {
        return reject(format!(
            "no face in {:.0}% of {} frames (limit {:.0}%): face the camera, with your whole face in view and lit",
            missing * 100.0,
            samples.len(),
            limits.max_missing * 100.0
        ));
    }
    // Per-frame neutral checks; the most frequent failure names the fix.
    let mut good_pts = Vec::new();
    let mut good_iris = Vec::new();
    let mut fails: [(usize, Option<NotNeutral>); 5] = [(0, None); 5];
    for (p, ir) in &faces {
        match limits.neutral.check(p) {
            Ok(()) => {
                good_pts.push(*p);
                good_iris.push(*ir);
            }
            Err(why) => {
                let k = match why {
                    NotNeutral::Degenerate => 0,
                    NotNeutral::MouthOpen(_) => 1,
                    NotNeutral::EyesClosed(_) => 2,
                    NotNeutral::Roll(_) => 3,
                    NotNeutral::Yaw(_) => 4,
                };
                fails[k].0 += 1;
                fails[k].1.get_or_insert(why);
            }
        }
    }
    let bad = faces.len() - good_pts.len();
    if bad as f32 > limits.max_not_neutral * faces.len() as f32 || good_pts.len() < limits.min_frames {
        let (n, why) = fails.iter().max_by_key(|f| f.0).copied().unwrap_or((0, None));
        let advice = match why {
            Some(NotNeutral::MouthOpen(_)) => "close your mouth and relax your face",
            Some(NotNeutral::EyesClosed(_)) => "keep your eyes open, looking at the camera",
            Some(NotNeutral::Roll(_)) => "hold your head upright",
            Some(NotNeutral::Yaw(_)) => "face the camera straight on",
            _ => "face the camera with a neutral expression",
        };
        let example = why.map(|w| w.to_string()).unwrap_or_default();
        return reject(format!(
            "{bad} of {} face frames are not a usable neutral ({n} of them: {example}); {advice}",
            faces.len()
        ));
    }
    let est = estimate_neutral(&good_pts, &good_iris)?;
    if est.motion > limits.max_motion {
        return reject(format!(
            "too much motion (landmark std {:.3} of the eye distance, limit {:.3}): keep still",
            est.motion, limits.max_motion
        ));
    }
    if est.nonrigid > limits.max_nonrigid {
        return reject(format!(
            "the expression changed during the capture ({:.3} of the eye distance, limit {:.3}): hold a relaxed, neutral face",
            est.nonrigid, limits.max_nonrigid
        ));
    }
    // The median itself must pass too (it could fail if half the frames were borderline).
    if let Err(why) = limits.neutral.check(&est.pts68) {
        return reject(format!("the median face is not neutral: {why}"));
    }
    let p = &est.pts68;
    let nn = |v: Option<f32>| v.unwrap_or(f32::NAN);
    let quality = Quality {
        face_fraction: 1.0 - missing,
        motion: est.motion,
        nonrigid: est.nonrigid,
        mouth_openness: nn(openness::mouth(p)),
        eye_openness: [nn(openness::eye(p, openness::Eye::Right)), nn(openness::eye(p, openness::Eye::Left))],
        roll_deg: nn(openness::roll_deg(p)),
        yaw: nn(openness::yaw_proxy(p)),
    };
    let profile = Profile {
        schema: SCHEMA,
        created: rfc3339_utc(std::time::SystemTime::now()),
        source: source.to_string(),
        frame_width: frame_size.0,
        frame_height: frame_size.1,
        frames_captured: samples.len() as u32,
        frames_used: good_pts.len() as u32,
        iod: est.iod,
        neutral_pts68: p.to_vec(),
        neutral_iris: est.iris.map(|ir| ir.map(|i| [i.cx, i.cy, i.r])),
        lids: mesh_lids(),
        quality,
    };
    profile.validate()?;
    Ok(profile)
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SSZ` (no date crate needed for this one use).
pub fn rfc3339_utc(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn is_image(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "bmp" | "webp" | "tif" | "tiff")
}

/// What `capture` recorded: the samples, the source's label, the frame size, and whether the
/// lids came from the iris model.
struct Capture {
    samples: Vec<Sample>,
    label: String,
    size: (u32, u32),
    iris_lids: bool,
}

/// Captures `args.seconds` of frames (after `args.skip`) and runs the face tracker on them.
fn capture(args: &CalibrateArgs) -> Result<Capture> {
    use crate::face::{FaceModels, FaceTracker, TrackerConfig};
    use crate::source::{open_source, FrameSource, SourceSpec};
    if !(args.seconds > 0.0 && args.seconds <= 60.0) || !(args.skip >= 0.0 && args.skip.is_finite()) {
        return Err(Error::Invalid("--seconds must be in (0, 60] and --skip non-negative".into()));
    }
    let models = match &args.models {
        Some(d) => FaceModels::from_dir(d),
        None => FaceModels::locate()?,
    };
    // Per-frame landmarks (no One Euro): the median handles noise and the motion check wants
    // the raw jitter.
    let mut tracker = FaceTracker::new(&models, TrackerConfig { filter: None, ..TrackerConfig::default() })?;
    let (mut src, label, still): (Box<dyn FrameSource>, String, bool) = match &args.input {
        Some(path) if is_image(path) => {
            (Box::new(crate::source::image::ImageSource::unpaced(path, 30)?), format!("file:{}", path.display()), true)
        }
        Some(path) => (
            open_source(&SourceSpec::File { path: path.clone(), looping: false, realtime: false })?,
            format!("file:{}", path.display()),
            false,
        ),
        None => (
            open_source(&SourceSpec::Camera { device: args.device.clone(), width: 640, height: 480, fps: 30 })?,
            format!("camera:{}", args.device),
            false,
        ),
    };
    log::info!("calibrating from {}: hold a relaxed, neutral face, looking at the camera", src.describe());
    let (skip, dur) = (std::time::Duration::from_secs_f32(args.skip), std::time::Duration::from_secs_f32(args.seconds));
    let mut samples = Vec::new();
    let mut size = (0, 0);
    let mut start = None;
    // A still image is one frame repeated: a handful is enough (motion is 0 by construction).
    let max_frames = if still { 10 } else { (args.seconds * 120.0) as usize + 1 };
    while let Some(frame) = src.next_frame()? {
        let t0 = *start.get_or_insert(frame.pts);
        let t = frame.pts.saturating_sub(t0);
        if t < skip {
            continue;
        }
        if t >= skip + dur || samples.len() >= max_frames {
            break;
        }
        size = (frame.width, frame.height);
        let lm = tracker.process(&frame)?;
        samples.push(lm.map(|l| (l.pts68, l.iris)));
    }
    Ok(Capture { samples, label, size, iris_lids: tracker.has_iris_lids() })
}

/// Runs a calibration: capture, check, write the profile.
pub fn run(args: &CalibrateArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        return Err(Error::Invalid(format!("{} exists; pass --force to overwrite it", args.out.display())));
    }
    let limits = CaptureLimits { max_missing: args.max_missing, max_motion: args.max_motion, ..CaptureLimits::default() };
    let c = capture(args)?;
    let mut profile = assess(&c.samples, &limits, &c.label, c.size)?;
    if c.iris_lids {
        profile.lids = "iris".into();
    }
    profile.save(&args.out)?;
    let q = &profile.quality;
    println!(
        "calibration saved to {}: {} of {} frames used, motion {:.3}, expression change {:.3}, mouth {:.2}, eyes {:.2}/{:.2}, roll {:.1} deg, yaw {:.2}",
        args.out.display(),
        profile.frames_used,
        profile.frames_captured,
        q.motion,
        q.nonrigid,
        q.mouth_openness,
        q.eye_openness[0],
        q.eye_openness[1],
        q.roll_deg,
        q.yaw
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::Similarity;
    use crate::core::retarget::tests::Face;

    fn sample(f: &Face, t: &Similarity) -> Sample {
        Some((f.pts().map(|p| t.apply(p)), Some(f.iris(0.0, 0.0).map(|i| {
            let c = t.apply([i.cx, i.cy]);
            Iris { cx: c[0], cy: c[1], r: i.r * t.scale as f32 }
        }))))
    }

    fn steady(n: usize) -> Vec<Sample> {
        let f = Face::other();
        (0..n).map(|k| sample(&f, &Similarity::about(1.0, 0.002 * (k % 3) as f64, [300.0, 260.0], [0.3 * (k % 2) as f64, 0.0]))).collect()
    }

    fn msg(r: Result<Profile>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_steady_neutral_capture() {
        let p = assess(&steady(60), &CaptureLimits::default(), "file:test", (640, 480)).unwrap();
        assert_eq!((p.frames_captured, p.frames_used), (60, 60));
        assert!(p.quality.motion < 0.05 && p.quality.nonrigid < 0.01);
        assert!(crate::core::geometry::procrustes_distance(&p.pts68(), &Face::other().pts()).unwrap() < 1e-3);
        assert!(p.neutral_iris.is_some());
        assert!((p.iod - openness::iod(&Face::other().pts()).unwrap()).abs() < 0.5);
        assert_eq!(p.quality.face_fraction, 1.0);
    }

    #[test]
    fn rejects_missing_faces() {
        let mut s = steady(20);
        for x in s.iter_mut().take(8) {
            *x = None;
        }
        assert!(msg(assess(&s, &CaptureLimits::default(), "t", (1, 1))).contains("no face in 40%"));
        assert!(msg(assess(&[], &CaptureLimits::default(), "t", (1, 1))).contains("no frames"));
        assert!(msg(assess(&[None; 10], &CaptureLimits::default(), "t", (1, 1))).contains("no face"));
    }

    #[test]
    fn rejects_motion() {
        let f = Face::other();
        let s: Vec<Sample> = (0..30).map(|k| sample(&f, &Similarity::about(1.0, 0.0, [0.0, 0.0], [k as f64 * 2.0, 0.0]))).collect();
        let m = msg(assess(&s, &CaptureLimits::default(), "t", (1, 1)));
        assert!(m.contains("too much motion"), "{m}");
    }

    #[test]
    fn rejects_non_neutral_faces_with_advice() {
        let limits = CaptureLimits::default();
        let open: Vec<Sample> = (0..20).map(|_| sample(&Face { gap: 30.0, ..Face::other() }, &Similarity::IDENTITY)).collect();
        let m = msg(assess(&open, &limits, "t", (1, 1)));
        assert!(m.contains("mouth open") && m.contains("close your mouth"), "{m}");
        let closed: Vec<Sample> = (0..20).map(|_| sample(&Face { eh: [0.5, 0.5], ..Face::other() }, &Similarity::IDENTITY)).collect();
        assert!(msg(assess(&closed, &limits, "t", (1, 1))).contains("eyes open"));
        let tilted: Vec<Sample> = (0..20).map(|_| sample(&Face::other(), &Similarity::about(1.0, 0.6, [300.0, 260.0], [0.0, 0.0]))).collect();
        assert!(msg(assess(&tilted, &limits, "t", (1, 1))).contains("upright"));
        // Talking: mouth within the neutral limit but changing, brows moving.
        let talking: Vec<Sample> =
            (0..20).map(|k| sample(&Face { gap: (k % 2) as f32 * 5.0, brow: (k % 2) as f32 * 16.0, ..Face::other() }, &Similarity::IDENTITY)).collect();
        let m = msg(assess(&talking, &limits, "t", (1, 1)));
        assert!(m.contains("expression changed"), "{m}");
        // A few bad frames among good ones are tolerated and left out.
        let mut mixed = steady(20);
        mixed[3] = sample(&Face { gap: 30.0, ..Face::other() }, &Similarity::IDENTITY);
        let p = assess(&mixed, &limits, "t", (1, 1)).unwrap();
        assert_eq!(p.frames_used, 19);
    }

    /// A profile from before the iris lids (no `lids` key) is read as measured with the mesh's
    /// lids; used with the iris model's, its lids open wider by `IRIS_OVER_MESH_LIDS` about each
    /// eye's corner line (the corners and the rest stay), with a note; with the mesh's, as it is.
    #[test]
    fn a_profile_measured_with_the_other_lids_is_rescaled_with_a_note() {
        let mut p = assess(&steady(10), &CaptureLimits::default(), "t", (640, 480)).unwrap();
        let text = p.to_toml().unwrap().replace("lids = \"mesh\"\n", "");
        assert!(!text.contains("lids ="));
        let old = Profile::from_toml(&text).unwrap();
        assert_eq!(old.lids, "mesh");
        let (same, note) = old.shape_for(false);
        assert!(note.is_none() && same.pts68 == old.pts68());
        let (wider, note) = old.shape_for(true);
        assert!(note.is_some_and(|n| n.contains("re-run `puppetcam calibrate`")));
        let (o, w) = (old.pts68(), wider.pts68);
        for e in [openness::Eye::Right, openness::Eye::Left] {
            let r = openness::eye(&w, e).unwrap() / openness::eye(&o, e).unwrap();
            assert!((r - IRIS_OVER_MESH_LIDS).abs() < 1e-3, "{r}");
        }
        let lid = |i: usize| [37, 38, 40, 41, 43, 44, 46, 47].contains(&i);
        assert!((0..68).filter(|&i| !lid(i)).all(|i| w[i] == o[i]));
        // Measured with the iris model's lids: as it is for them, narrower for the mesh's.
        p.lids = "iris".into();
        assert!(p.shape_for(true).1.is_none());
        let (narrower, _) = p.shape_for(false);
        let r = openness::eye(&narrower.pts68, openness::Eye::Right).unwrap() / openness::eye(&p.pts68(), openness::Eye::Right).unwrap();
        assert!((r * IRIS_OVER_MESH_LIDS - 1.0).abs() < 1e-3, "{r}");
        p.lids = "eyelashes".into();
        assert!(p.validate().unwrap_err().to_string().contains("`lids`"));
    }

    #[test]
    fn profile_round_trips_and_validates() {
        let p = assess(&steady(10), &CaptureLimits::default(), "camera:/dev/video0", (640, 480)).unwrap();
        let text = p.to_toml().unwrap();
        assert!(text.contains("schema = 1"));
        let q = Profile::from_toml(&text).unwrap();
        assert_eq!(p, q);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/profile.toml");
        p.save(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), p);
        assert_eq!(Profile::load(&path).unwrap().shape().pts68, p.pts68());
        // Wrong version: a clear message naming both versions.
        let e = Profile::from_toml(&text.replace("schema = 1", "schema = 2")).unwrap_err().to_string();
        assert!(e.contains("schema version 2") && e.contains("schema 1"), "{e}");
        assert!(Profile::from_toml("created = \"x\"").unwrap_err().to_string().contains("schema"));
        assert!(Profile::from_toml("schema = 1\n").is_err());
        assert!(Profile::from_toml("not toml [").is_err());
        let e = Profile::load(&dir.path().join("missing.toml")).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
        // Bad content.
        let mut bad = p.clone();
        bad.neutral_pts68.pop();
        assert!(bad.validate().is_err());
        let mut bad = p.clone();
        bad.neutral_pts68[5][0] = f32::NAN;
        assert!(bad.validate().is_err() && bad.save(&path).is_err());
        let mut bad = p.clone();
        bad.neutral_pts68 = vec![[1.0, 1.0]; 68];
        assert!(bad.validate().is_err());
        let e = Profile::from_toml(&text.replace("frames_used", "frames_usd")).unwrap_err().to_string();
        assert!(e.contains("frames_usd") || e.contains("frames_used"), "{e}");
    }

    #[test]
    fn example_profile_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/example.toml");
        let p = Profile::load(&path).unwrap();
        assert_eq!(p.schema, SCHEMA);
        assert!(crate::core::retarget::NeutralLimits::default().check(&p.pts68()).is_ok());
    }

    #[test]
    fn rfc3339_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn image_extensions() {
        assert!(is_image(Path::new("a/b.JPG")) && is_image(Path::new("x.png")));
        assert!(!is_image(Path::new("x.mp4")) && !is_image(Path::new("x")));
    }
}
