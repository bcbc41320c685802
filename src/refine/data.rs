//! `puppetcam refiner-data VIDEO --out DIR`: the refiner's training material from one talking-head
//! clip, cut by the daemon's own warp and region code (so training sees exactly what the daemon
//! will feed the network):
//! - pairs: frame i warped to frame j's landmarks (j aligned into i's frame by a similarity) with
//!   the warp (lids closed as the retargeter closes them, the mouth-interior prior painted as the
//!   renderer paints it), the mouth and eye crops of that warp, their landmark rasters, and the
//!   same crops of the real frame j (the target);
//! - shots: crops and rasters of frames at their own landmarks (the embedder's K-shot input).
//!
//! Written as `.npy` (uint8, HWC) for `scripts/puppetcam_train/refiner.py`.
use super::{pair_sample, shot_sample, SampleSet};
use crate::core::types::Frame;
use crate::core::warp::WarpModel;
use crate::error::{Error, Result};
use crate::face::{FaceModels, FaceTracker, TrackerConfig};
use std::path::{Path, PathBuf};

/// Arguments of `puppetcam refiner-data`.
#[derive(Debug, Clone, clap::Args)]
pub struct RefinerDataArgs {
    /// Talking-head video (one person).
    pub video: PathBuf,
    /// Output directory (created); files are named after the video.
    #[arg(long)]
    pub out: PathBuf,
    /// Source frames per clip (each is warped to `--targets` other frames).
    #[arg(long, default_value_t = 4)]
    pub sources: usize,
    /// Target frames per source frame.
    #[arg(long, default_value_t = 60)]
    pub targets: usize,
    /// Shot crops per clip (frames at their own landmarks, for the embedder).
    #[arg(long, default_value_t = 24)]
    pub shots: usize,
    /// Frames kept from the clip, evenly spaced (memory bound).
    #[arg(long, default_value_t = 240)]
    pub max_frames: usize,
    /// Frames are shrunk so that their long side is at most this (like a portrait's canvas).
    #[arg(long, default_value_t = 720)]
    pub max_side: u32,
    /// Seed of the pair choice (the clip name is mixed in).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory holding the face models (default: the usual search).
    #[arg(long)]
    pub models: Option<PathBuf>,
}

/// xorshift64*: a tiny deterministic generator (pair choice only; no crate needed).
struct Rng(u64);
impl Rng {
    fn new(seed: u64, name: &str) -> Rng {
        let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        Rng((seed ^ h) | 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 33) % n.max(1) as u64) as usize
    }
}

/// `n` indices spread evenly over `0..len`.
fn spread(len: usize, n: usize) -> Vec<usize> {
    if len == 0 || n == 0 {
        return Vec::new();
    }
    let n = n.min(len);
    // The centre of each of n equal bins.
    (0..n).map(|k| ((2 * k + 1) * len / (2 * n)).min(len - 1)).collect()
}

/// One analysed frame: image, mesh (2-D), irises.
struct Analysed {
    pub frame: Frame,
    pub mesh: Vec<[f32; 2]>,
    pub iris: Option<[crate::core::types::Iris; 2]>,
}

/// Decodes the clip, keeps `max_frames` evenly spaced frames and finds their landmarks.
fn analyse(args: &RefinerDataArgs, models: &FaceModels) -> Result<Vec<Analysed>> {
    // Two passes: count the frames, then decode again keeping the chosen ones (long 1080p
    // clips would not fit in memory whole).
    let mut input = crate::face::extract::Input::open(&args.video)?;
    let mut count = 0usize;
    while input.next()?.is_some() {
        count += 1;
    }
    if count == 0 {
        return Err(Error::Source(format!("{}: no frame could be decoded", args.video.display())));
    }
    let keep: std::collections::BTreeSet<usize> = spread(count, args.max_frames).into_iter().collect();
    let cfg = TrackerConfig { track: false, iris: true, filter: None, ..TrackerConfig::default() };
    let mut tracker = FaceTracker::new(models, cfg)?;
    let mut out = Vec::new();
    let mut input = crate::face::extract::Input::open(&args.video)?;
    let mut i = 0usize;
    while let Some((_, f)) = input.next()? {
        let chosen = keep.contains(&i);
        i += 1;
        if !chosen {
            continue;
        }
        let f = crate::pipeline::compose::fit_within(f, args.max_side)?;
        if let Some(lm) = tracker.process(&f)? {
            if lm.mesh.len() == crate::core::landmarks::MESH_POINTS {
                let mesh = lm.mesh.iter().map(|p| [p[0], p[1]]).collect();
                out.push(Analysed { frame: f, mesh, iris: lm.iris });
            }
        }
    }
    Ok(out)
}

/// Runs the command; returns (pairs, shots) written.
pub fn run(args: &RefinerDataArgs) -> Result<(usize, usize)> {
    let models = match &args.models {
        Some(d) => FaceModels::from_dir(d),
        None => FaceModels::locate()?,
    };
    let name = args.video.file_stem().and_then(|s| s.to_str()).unwrap_or("clip").to_string();
    let frames = analyse(args, &models)?;
    if frames.len() < 2 {
        return Err(Error::Invalid(format!("{}: a face in only {} frame(s); need 2 or more", args.video.display(), frames.len())));
    }
    let mut rng = Rng::new(args.seed, &name);
    let ears = super::median_ears(frames.iter().map(|f| f.mesh.as_slice()));
    let mut pairs = SampleSet::default();
    for i in spread(frames.len(), args.sources) {
        let src = &frames[i];
        let model = WarpModel::new(src.frame.width, src.frame.height, &src.mesh)?;
        for _ in 0..args.targets {
            let j = rng.below(frames.len());
            let dst = &frames[j];
            if let Some(s) = pair_sample(&src.frame, &src.mesh, &model, &dst.frame, &dst.mesh, dst.iris.as_ref(), ears) {
                pairs.push(s);
            }
        }
    }
    let mut shots = SampleSet::default();
    for k in spread(frames.len(), args.shots) {
        let f = &frames[k];
        if let Some(s) = shot_sample(&f.frame, &f.mesh, f.iris.as_ref()) {
            shots.push(s);
        }
    }
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Io { path: args.out.clone(), source })?;
    pairs.write(&args.out, &format!("{name}.pairs"), true)?;
    shots.write(&args.out, &format!("{name}.shots"), false)?;
    Ok((pairs.len(), shots.len()))
}

/// Writes a uint8 array as `.npy` (version 1.0, C order).
pub fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) -> Result<()> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    let tmp = path.with_extension("npy.part");
    std::fs::write(&tmp, &bytes).map_err(|source| Error::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_even_and_bounded() {
        assert_eq!(spread(10, 5), vec![1, 3, 5, 7, 9]);
        assert_eq!(spread(3, 10), vec![0, 1, 2]);
        assert!(spread(0, 4).is_empty());
        assert_eq!(spread(100, 1), vec![50]);
    }

    #[test]
    fn npy_header_is_aligned_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy_u8(&p, &[2, 3], &[1, 2, 3, 4, 5, 6]).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..6], b"\x93NUMPY");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let h = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(h.contains("'shape': (2, 3)"), "{h}");
        assert_eq!(&b[10 + hl..], &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7, "clip");
        let mut b = Rng::new(7, "clip");
        for _ in 0..100 {
            let (x, y) = (a.below(13), b.below(13));
            assert_eq!(x, y);
            assert!(x < 13);
        }
    }
}
