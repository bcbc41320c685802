//! `puppetcam landmarks`: run the face tracker over a video/image and write JSON lines, one per
//! analysed frame. The Python training code prepares its data through this command, so training
//! and the daemon share one landmark implementation.
use super::{FaceModels, FaceTracker, TrackerConfig};
use crate::core::one_euro::OneEuroParams;
use crate::core::types::{FaceLandmarks, Frame};
use crate::error::{Error, Result};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `puppetcam landmarks`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// Video or image file to analyse.
    pub input: PathBuf,
    /// Output JSON-lines file (one object per frame); stdout when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Analyse every Nth frame only (frame indices in the output stay those of the video).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,
    /// Stop after this many analysed frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Detect the face on every frame instead of tracking it from the previous landmarks.
    #[arg(long)]
    pub no_track: bool,
    /// Smooth landmarks over time with the One Euro filter (as the live daemon does). Off by
    /// default: training data should be each frame's own landmarks.
    #[arg(long)]
    pub smooth: bool,
    /// Skip the iris model ("iris" is then null).
    #[arg(long)]
    pub no_iris: bool,
    /// Directory holding the face models (default: $PUPPETCAM_MODEL_DIR, next to the executable,
    /// or the source tree's onnx/).
    #[arg(long)]
    pub models: Option<PathBuf>,
}

impl ExtractArgs {
    /// Defaults for a given input, as if only `<input>` were given on the command line.
    pub fn new(input: impl Into<PathBuf>) -> Self {
        ExtractArgs {
            input: input.into(),
            out: None,
            every: 1,
            max_frames: None,
            no_track: false,
            smooth: false,
            no_iris: false,
            models: None,
        }
    }
}

/// One output line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FrameRecord {
    /// Index of the frame in the input (0-based, counting every decoded frame).
    pub frame: u64,
    /// Presentation time in milliseconds.
    pub t_ms: f64,
    pub width: u32,
    pub height: u32,
    pub face: bool,
    /// Face presence score of the landmark model (0 when no face was detected).
    pub score: f32,
    /// 68 iBUG points (x, y) in frame pixels; null without a face.
    pub lm68: Option<Vec<[f32; 2]>>,
    /// `[[cx, cy, r], [cx, cy, r]]`: subject's right (image left) then left iris; null without a
    /// face or without the iris model.
    pub iris: Option<[[f32; 3]; 2]>,
    /// MediaPipe's 468 points (x, y, z) in frame pixels; null without a face.
    pub mesh: Option<Vec<[f32; 3]>>,
}

impl FrameRecord {
    pub fn new(frame: &Frame, index: u64, lm: Option<&FaceLandmarks>) -> Self {
        FrameRecord {
            frame: index,
            t_ms: frame.pts.as_secs_f64() * 1000.0,
            width: frame.width,
            height: frame.height,
            face: lm.is_some(),
            score: lm.map(|l| l.score).unwrap_or(0.0),
            lm68: lm.map(|l| l.pts68.to_vec()),
            iris: lm.and_then(|l| l.iris).map(|i| [[i[0].cx, i[0].cy, i[0].r], [i[1].cx, i[1].cy, i[1].r]]),
            mesh: lm.map(|l| l.mesh.clone()),
        }
    }
}

const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "ppm", "pgm"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// A BGR OpenCV image as an RGB frame.
fn bgr_to_frame(bgr: &Mat, pts: Duration, seq: u64) -> Result<Frame> {
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(bgr, &mut rgb, imgproc::COLOR_BGR2RGB)?;
    let (w, h) = (rgb.cols() as u32, rgb.rows() as u32);
    let data = if rgb.is_continuous() { rgb.data_bytes()?.to_vec() } else { rgb.try_clone()?.data_bytes()?.to_vec() };
    let f = Frame { width: w, height: h, data, pts, seq };
    if !f.len_ok() {
        return Err(Error::OpenCv(format!("decoded frame {w}x{h} has {} bytes", f.data.len())));
    }
    Ok(f)
}

/// Frames of a video or a single image, in order.
pub(crate) enum Input {
    Image(Option<Frame>),
    Video { cap: videoio::VideoCapture, fps: f64, index: u64, last_ms: f64 },
}

impl Input {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        // OpenCV takes UTF-8 paths only.
        let name = path
            .to_str()
            .ok_or_else(|| Error::Invalid(format!("{}: path is not valid UTF-8", path.display())))?;
        if is_image(path) {
            let f = crate::imageio::read_image(path).map_err(|e| match e {
                Error::Invalid(m) => Error::Source(m),
                e => e,
            })?;
            return Ok(Input::Image(Some(f)));
        }
        let cap = videoio::VideoCapture::from_file(name, videoio::CAP_ANY)?;
        if !cap.is_opened()? {
            return Err(Error::Source(format!("{}: cannot open as a video or image", path.display())));
        }
        crate::source::check_video_size(&cap, path)?;
        let fps = cap.get(videoio::CAP_PROP_FPS).unwrap_or(0.0);
        Ok(Input::Video { cap, fps: if fps.is_finite() && fps > 0.0 { fps } else { 0.0 }, index: 0, last_ms: -1.0 })
    }

    /// The next frame with its index, or `None` at the end.
    pub(crate) fn next(&mut self) -> Result<Option<(u64, Frame)>> {
        match self {
            Input::Image(f) => Ok(f.take().map(|f| (0, f))),
            Input::Video { cap, fps, index, last_ms } => {
                let mut bgr = Mat::default();
                if !cap.read(&mut bgr)? || bgr.empty() {
                    return Ok(None);
                }
                // The decoder's timestamp; when it is missing or does not advance (some
                // containers), the frame rate gives it.
                let mut ms = cap.get(videoio::CAP_PROP_POS_MSEC).unwrap_or(f64::NAN);
                if !(ms.is_finite() && ms > *last_ms) {
                    ms = if *fps > 0.0 { *index as f64 * 1000.0 / *fps } else { *last_ms + 1.0 };
                    ms = ms.max(*last_ms + 1e-3);
                }
                *last_ms = ms;
                let i = *index;
                *index += 1;
                let f = bgr_to_frame(&bgr, Duration::from_secs_f64(ms.max(0.0) / 1000.0), i)?;
                Ok(Some((i, f)))
            }
        }
    }
}

/// Runs the tracker over `args.input`, handing each analysed frame's record to `sink`.
pub fn extract_with<F: FnMut(FrameRecord) -> Result<()>>(args: &ExtractArgs, mut sink: F) -> Result<u64> {
    let models = match &args.models {
        Some(d) => FaceModels::from_dir(d),
        None => FaceModels::locate()?,
    };
    let mut input = Input::open(&args.input)?;
    let cfg = TrackerConfig {
        track: !args.no_track,
        iris: !args.no_iris,
        filter: args.smooth.then(OneEuroParams::default),
        ..TrackerConfig::default()
    };
    let mut tracker = FaceTracker::new(&models, cfg)?;
    let mut written = 0u64;
    let mut decoded = 0u64;
    while let Some((i, frame)) = input.next()? {
        decoded += 1;
        if i % args.every != 0 {
            continue;
        }
        if args.max_frames.is_some_and(|m| written >= m) {
            break;
        }
        let lm = tracker.process(&frame)?;
        sink(FrameRecord::new(&frame, i, lm.as_ref()))?;
        written += 1;
    }
    if decoded == 0 {
        return Err(Error::Source(format!("{}: no frame could be decoded", args.input.display())));
    }
    Ok(written)
}

/// Runs the extraction and writes JSON lines to `--out` (atomically: a temporary file renamed at
/// the end, so a failed run never leaves a truncated file that looks complete) or stdout.
pub fn run(args: &ExtractArgs) -> Result<()> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| Error::Io { path: path.clone(), source }
    };
    match &args.out {
        Some(out) => {
            let tmp = out.with_extension("jsonl.part");
            let file = std::fs::File::create(&tmp).map_err(write_err(&tmp))?;
            let mut w = std::io::BufWriter::new(file);
            let r = extract_with(args, |rec| write_record(&mut w, &rec).map_err(write_err(&tmp)));
            let r = r.and_then(|n| w.flush().map_err(write_err(&tmp)).map(|_| n));
            match r {
                Ok(n) => {
                    std::fs::rename(&tmp, out).map_err(write_err(out))?;
                    log::info!("{}: {n} frames written to {}", args.input.display(), out.display());
                    Ok(())
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let p = PathBuf::from("<stdout>");
            extract_with(args, |rec| write_record(&mut w, &rec).map_err(write_err(&p)))?;
            w.flush().map_err(write_err(&p))
        }
    }
}

fn write_record(w: &mut impl Write, rec: &FrameRecord) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, rec).map_err(std::io::Error::other)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_extensions() {
        assert!(is_image(Path::new("a/b.JPG")));
        assert!(is_image(Path::new("x.png")));
        assert!(!is_image(Path::new("x.mp4")));
        assert!(!is_image(Path::new("noext")));
    }

    #[test]
    fn missing_input_is_an_io_error() {
        let e = extract_with(&ExtractArgs::new("/nonexistent/clip.mp4"), |_| Ok(())).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }

    #[test]
    fn corrupt_inputs_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        for name in ["broken.mp4", "broken.jpg"] {
            let p = d.path().join(name);
            std::fs::write(&p, b"this is not a media file at all").unwrap();
            let e = extract_with(&ExtractArgs::new(&p), |_| Ok(())).unwrap_err();
            assert!(matches!(e, Error::Source(_)), "{name}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn record_without_face_has_nulls() {
        let f = Frame::black(8, 6);
        let r = FrameRecord::new(&f, 3, None);
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["frame"], 3);
        assert_eq!(j["face"], false);
        assert!(j["lm68"].is_null() && j["mesh"].is_null() && j["iris"].is_null());
        assert_eq!((j["width"].as_u64(), j["height"].as_u64()), (Some(8), Some(6)));
    }
}
