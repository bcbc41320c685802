//! Gives a warp avatar its refiner (`avatar create`, `run --portrait`):
//! - fine-tuned (paper section 3.3): the shots' crops and shot-to-shot pairs are cut here, by
//!   the daemon's code, and `scripts/train_refiner.py finetune` (PyTorch) trains G and D on them
//!   from the shipped meta-learned weights, then exports the ONNX;
//! - feed-forward (`--steps 0`, or no PyTorch): the shipped embedder ONNX gives the avatar's
//!   embedding and the shipped meta-learned refiner ONNX is used as it is. Needs only ONNX
//!   Runtime, so it works in an installed package.
use super::{embed, pair_sample, shot_sample, Sample, SampleSet};
use crate::avatar::{RefinerBlob, WarpAvatar};
use crate::core::warp::WarpModel;
use crate::ep::RuntimeOptions;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shipped refiner files (in `onnx/`).
pub const REFINER_ONNX: &str = "onnx/refiner.onnx";
pub const EMBEDDER_ONNX: &str = "onnx/refiner_embedder.onnx";
pub const META_WEIGHTS: &str = "onnx/refiner_meta.pt";
const SCRIPT: &str = "scripts/train_refiner.py";

/// What `avatar create` does about the refiner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No refiner: a warp-only avatar with the deterministic eye and mouth fallbacks.
    Off,
    /// Meta-learned refiner conditioned on the shots' embedding (seconds, no PyTorch).
    FeedForward,
    /// Fine-tuned on the shots for `steps` steps, exported in fp16 or fp32 (needs PyTorch;
    /// falls back to feed-forward with a message when it is missing).
    FineTune { steps: usize, fp16: bool },
}

/// Where the shipped refiner files and the Python side are.
#[derive(Clone, Debug)]
pub struct Assets {
    pub refiner: PathBuf,
    pub embedder: PathBuf,
    pub meta: Option<PathBuf>,
    pub script: Option<PathBuf>,
}

impl Assets {
    /// The bundled files (or `$PUPPETCAM_REFINER_DIR/{refiner.onnx, refiner_embedder.onnx,
    /// refiner_meta.pt}`, e.g. an ablation's weights); `None` when this install has no refiner.
    pub fn locate() -> Option<Assets> {
        let env = crate::paths::Env::current();
        if let Some(d) = std::env::var_os("PUPPETCAM_REFINER_DIR").filter(|v| !v.is_empty()).map(PathBuf::from) {
            let f = |n: &str| Some(d.join(n)).filter(|p| p.is_file());
            return Some(Assets {
                refiner: f("refiner.onnx")?,
                embedder: f("refiner_embedder.onnx")?,
                meta: f("refiner_meta.pt"),
                script: env.source_root().map(|r| r.join(SCRIPT)).filter(|p| p.is_file()),
            });
        }
        let refiner = env.find_data(REFINER_ONNX)?;
        let embedder = env.find_data(EMBEDDER_ONNX)?;
        Some(Assets { refiner, embedder, meta: env.find_data(META_WEIGHTS), script: env.source_root().map(|r| r.join(SCRIPT)).filter(|p| p.is_file()) })
    }
}

/// The Python that has the training extras: `$PUPPETCAM_PYTHON` (then only that one), else the
/// project venvs' (`paths::Env::venvs`), else `python3`; `Err(why)` when none can import torch.
fn training_python() -> std::result::Result<PathBuf, String> {
    let cands: Vec<PathBuf> = match std::env::var_os("PUPPETCAM_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => vec![PathBuf::from(p)],
        None => crate::paths::Env::current().venvs().into_iter().map(|v| v.join("bin/python")).chain([PathBuf::from("python3")]).collect(),
    };
    for py in cands {
        // `-I` (isolated): neither the working directory nor PYTHON* variables are on the path,
        // so a `./torch.py` cannot run.
        let ok = Command::new(&py).args(["-I", "-c", "import torch, onnx, onnxruntime"]).output().map(|o| o.status.success()).unwrap_or(false);
        if ok {
            return Ok(py);
        }
    }
    Err("PyTorch is not installed (fine-tuning needs the training extras: `source scripts/setup.sh full` in a checkout)".into())
}

/// The shots' own crops (embedder input), in shot order; shots without usable boxes are skipped.
pub fn shot_samples(av: &WarpAvatar) -> Vec<Sample> {
    av.shots.iter().filter_map(|s| shot_sample(&s.image, &s.mesh, s.iris.as_ref())).collect()
}

/// Fine-tuning pairs: every shot warped to every shot's landmarks (itself included).
pub fn shot_pairs(av: &WarpAvatar) -> Result<SampleSet> {
    let mut set = SampleSet::default();
    for a in &av.shots {
        let model = WarpModel::new(a.image.width, a.image.height, &a.mesh)?;
        for b in &av.shots {
            if let Some(s) = pair_sample(&a.image, &a.mesh, &model, &b.image, &b.mesh, b.iris.as_ref()) {
                set.push(s);
            }
        }
    }
    Ok(set)
}

#[derive(serde::Deserialize)]
struct FineTuned {
    e_mouth: Vec<f32>,
    e_eye: Vec<f32>,
    info: serde_json::Value,
}

/// Gives `av` a refiner as `mode` says. Returns a line saying what was done.
pub fn personalise(av: &mut WarpAvatar, mode: Mode, runtime: &RuntimeOptions) -> Result<String> {
    personalise_with(av, mode, runtime, &mut |_, _| {})
}

/// [`personalise`], calling `progress(step, steps)` as fine-tuning advances (the control API's
/// progress bar; nothing is called for the modes that do not fine-tune).
pub fn personalise_with(av: &mut WarpAvatar, mode: Mode, runtime: &RuntimeOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<String> {
    if mode == Mode::Off {
        av.refiner = None;
        return Ok("no refiner (warp-only avatar; eyes and mouth by the deterministic fallbacks)".into());
    }
    let Some(assets) = Assets::locate() else {
        av.refiner = None;
        return Ok(format!("no refiner: this install has no {REFINER_ONNX} / {EMBEDDER_ONNX} (warp-only avatar)"));
    };
    let shots = shot_samples(av);
    if shots.is_empty() {
        return Err(Error::Invalid("avatar create: no shot gives usable mouth and eye regions for the refiner (use --no-refiner)".into()));
    }
    if let Mode::FineTune { steps, fp16 } = mode {
        let why_not = match (&assets.meta, &assets.script) {
            (Some(meta), Some(script)) => match training_python() {
                Ok(py) => return fine_tune(av, shots, steps, fp16, meta, script, &py, progress),
                Err(why) => why,
            },
            (None, _) => format!("the meta-learned weights {META_WEIGHTS} are not installed"),
            (_, None) => format!("{SCRIPT} is not here (an installed package fine-tunes nothing)"),
        };
        log::warn!("avatar create: not fine-tuning the refiner: {why_not}; using the meta-learned refiner feed-forward");
    }
    let e = embed(&assets.embedder, &shots, runtime)?;
    let onnx = std::fs::read(&assets.refiner).map_err(|source| Error::Io { path: assets.refiner.clone(), source })?;
    let info = format!("feed-forward: meta-learned refiner, embedding of {} shot(s), no fine-tuning", shots.len());
    av.refiner = Some(RefinerBlob { onnx, e_mouth: e.mouth, e_eye: e.eye, info: info.clone() });
    Ok(info)
}

/// The step counter of a tqdm progress line (`fine-tuning the refiner:  45%|###  | 9/20 [00:03<...`).
fn tqdm_step(line: &str) -> Option<(usize, usize)> {
    let end = line.find(" [")?;
    let head = &line[..end];
    let start = head.rfind(|c: char| c == '|' || c == ' ').map_or(0, |i| i + 1);
    let (a, b) = head[start..].split_once('/')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Copies the child's stderr to ours (the same output as before) and reports tqdm's steps.
fn relay_progress(child_err: impl std::io::Read, progress: &mut dyn FnMut(usize, usize)) {
    use std::io::{Read, Write};
    let mut r = std::io::BufReader::new(child_err);
    let mut buf = [0u8; 4096];
    let mut seg = Vec::new();
    let mut out = std::io::stderr();
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
        for &b in &buf[..n] {
            if b == b'\r' || b == b'\n' {
                if let Some((k, total)) = tqdm_step(&String::from_utf8_lossy(&seg)) {
                    progress(k, total);
                }
                seg.clear();
            } else if seg.len() < 4096 {
                seg.push(b);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn fine_tune(
    av: &mut WarpAvatar,
    shots: Vec<Sample>,
    steps: usize,
    fp16: bool,
    meta: &Path,
    script: &Path,
    py: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<String> {
    let dir = tempfile::tempdir().map_err(|source| Error::Io { path: std::env::temp_dir(), source })?;
    let k = shots.len();
    let mut set = SampleSet::default();
    for s in shots {
        set.push(s);
    }
    set.write(dir.path(), "avatar.shots", false)?;
    shot_pairs(av)?.write(dir.path(), "avatar.pairs", true)?;
    let out = dir.path().join("out");
    let mut child = Command::new(py)
        // Idle OpenMP threads sleep instead of spinning: on a 2-core machine that is also
        // running the daemon, spinning threads made torch several times slower.
        .env("OMP_WAIT_POLICY", "PASSIVE")
        // Isolated (`-I`: no working directory, user site or PYTHON* variables on the path; the
        // script puts its own directory there) and run from the temporary directory.
        .arg("-I")
        .current_dir(dir.path())
        .arg(script)
        .args(["finetune", "--meta"])
        .arg(meta)
        .arg("--shots")
        .arg(dir.path())
        .args(["--steps", &steps.to_string(), "--precision", if fp16 { "fp16" } else { "fp32" }, "--out"])
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io { path: py.to_path_buf(), source })?;
    progress(0, steps);
    if let Some(err) = child.stderr.take() {
        relay_progress(err, progress);
    }
    let status = child.wait().map_err(|source| Error::Io { path: py.to_path_buf(), source })?;
    if !status.success() {
        return Err(Error::Invalid(format!("avatar create: fine-tuning the refiner failed ({status}); `--steps 0` makes a feed-forward avatar without it")));
    }
    let onnx_path = out.join("refiner.onnx");
    let onnx = std::fs::read(&onnx_path).map_err(|source| Error::Io { path: onnx_path.clone(), source })?;
    let json_path = out.join("refiner.json");
    let text = std::fs::read_to_string(&json_path).map_err(|source| Error::Io { path: json_path.clone(), source })?;
    let ft: FineTuned = serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", json_path.display())))?;
    let info = format!("fine-tuned: {steps} steps on {k} shot(s) from the meta-learned refiner ({})", ft.info);
    av.refiner = Some(RefinerBlob { onnx, e_mouth: ft.e_mouth, e_eye: ft.e_eye, info: info.clone() });
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tqdm_lines_give_the_step() {
        assert_eq!(tqdm_step("fine-tuning the refiner:  45%|####5     | 9/20 [00:03<00:04,  2.6step/s]"), Some((9, 20)));
        assert_eq!(tqdm_step("fine-tuning the refiner:   0%|          | 0/200 [00:00<?, ?step/s]"), Some((0, 200)));
        assert_eq!(tqdm_step("refiner: K=2, 20 fine-tuning steps, ORT vs torch 1e-05"), None);
        assert_eq!(tqdm_step("a/b [x"), None);
        let mut seen = Vec::new();
        relay_progress(&b"x: 10%|# | 1/10 [00:01<00:09]\r x: 20%|## | 2/10 [00:02<00:08]\rdone\n"[..], &mut |a, b| seen.push((a, b)));
        assert_eq!(seen, vec![(1, 10), (2, 10)]);
    }
}
