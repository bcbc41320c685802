//! What to run, in terms of the I/O modules: driver, avatar, sink, geometry, runtime. Built from
//! the config and command-line flags, then turned into the factories the threads call.
use super::{Driver, Pacing, PipelineSpec};
use crate::config::{Config, ProviderName};
use crate::core::one_euro::OneEuroParams;
use crate::core::retarget::RetargetParams;
use crate::ep::{Provider, RuntimeOptions};
use crate::error::{Error, Result};
use crate::face::{FaceModels, FaceTracker, TrackerConfig};
use crate::sink::{open_sink, SinkSpec};
use crate::source::{open_source, SourceSpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where driving landmarks come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DriverSpec {
    /// Frames from a source, landmarks from the face tracker.
    Source(SourceSpec),
    /// The embedded animated face (no camera, no face models); `frames: None` = until stopped.
    Embedded { frames: Option<u64> },
}

/// A complete description of one pipeline run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub driver: DriverSpec,
    pub avatar: PathBuf,
    pub sink: SinkSpec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub runtime: RuntimeOptions,
    pub tracker: TrackerConfig,
    /// Face model directory; `None` searches the usual places (`FaceModels::locate`).
    pub face_models: Option<PathBuf>,
    /// `None` chooses: a finite driver rendered to a file writes every frame, anything else is
    /// paced in real time.
    pub pacing: Option<Pacing>,
    pub reconnect_max_backoff: Duration,
    pub neutral_ease: Duration,
    /// Identity-preserving retargeting; `None` drives with the raw driver landmarks.
    pub retarget: Option<RetargetParams>,
}

impl Plan {
    /// The embedded default: animated face -> default avatar -> `out/demo.y4m`, 8 s at 25 fps.
    pub fn demo() -> Plan {
        Plan {
            driver: DriverSpec::Embedded { frames: Some(200) },
            avatar: default_avatar(),
            sink: SinkSpec::Y4m { path: PathBuf::from("out/demo.y4m") },
            width: 640,
            height: 480,
            fps: 25,
            runtime: RuntimeOptions::default(),
            tracker: TrackerConfig::default(),
            face_models: None,
            pacing: None,
            reconnect_max_backoff: Duration::from_secs(5),
            neutral_ease: Duration::from_millis(300),
            retarget: Some(RetargetParams::default()),
        }
    }

    fn finite_driver(&self) -> bool {
        match &self.driver {
            DriverSpec::Embedded { frames } => frames.is_some(),
            DriverSpec::Source(SourceSpec::File { looping, .. }) => !looping,
            DriverSpec::Source(_) => false,
        }
    }

    /// The pacing this plan runs with.
    pub fn effective_pacing(&self) -> Pacing {
        self.pacing.unwrap_or(if self.finite_driver() && !matches!(self.sink, SinkSpec::V4l2 { .. }) {
            Pacing::EveryFrame
        } else {
            Pacing::Realtime
        })
    }

    /// Turns the plan into thread factories. Files are not opened here (the threads do), so the
    /// errors come back from `Pipeline::start_spec` naming the stage.
    pub fn into_spec(self) -> Result<PipelineSpec> {
        let pacing = self.effective_pacing();
        let driver = match self.driver {
            DriverSpec::Embedded { frames } => Driver::Synthetic { frames },
            DriverSpec::Source(mut spec) => {
                let live = matches!(spec, SourceSpec::Camera { .. });
                if let SourceSpec::File { realtime, .. } = &mut spec {
                    // Offline renders decode flat out; live outputs play the file at its own speed.
                    *realtime = pacing == Pacing::Realtime;
                }
                let models = match &self.face_models {
                    Some(dir) => FaceModels::from_dir(dir),
                    None => FaceModels::locate()?,
                };
                // The face models build their own (CPU) sessions through crate::ep.
                let tracker = self.tracker;
                tracker.validate()?;
                let source = Arc::new(move || open_source(&spec));
                let face: super::FaceFactory = Box::new(move || {
                    let t = FaceTracker::new(&models, tracker)?;
                    Ok(Box::new(t) as Box<dyn super::FaceStage>)
                });
                Driver::Video { source, face, live }
            }
        };
        let sink_spec = self.sink;
        let sink: super::SinkFactory = Box::new(move |w, h, fps| {
            if let SinkSpec::Y4m { path } | SinkSpec::Png { dir: path, .. } = &sink_spec {
                let dir = if matches!(sink_spec, SinkSpec::Png { .. }) { Some(path.as_path()) } else { path.parent() };
                if let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(d).map_err(|source| Error::Io { path: d.to_path_buf(), source })?;
                }
            }
            open_sink(&sink_spec, w, h, fps.round() as u32)
        });
        Ok(PipelineSpec {
            driver,
            avatar: self.avatar,
            runtime: self.runtime,
            sink,
            out_width: self.width,
            out_height: self.height,
            fps: self.fps as f64,
            pacing,
            reconnect_max_backoff: self.reconnect_max_backoff,
            neutral_ease: self.neutral_ease,
            retarget: self.retarget,
        })
    }
}

/// A plan from a config file (two-stage TOML, `crate::config`), defaults for what it leaves out.
pub fn from_config_file(path: &Path) -> Result<Plan> {
    Ok(Plan::from_config(&Config::load(path)?))
}

impl Plan {
    /// The plan a validated config describes.
    pub fn from_config(cfg: &Config) -> Plan {
        let providers = cfg
            .runtime
            .providers
            .iter()
            .map(|p| match p {
                ProviderName::TensorRt => Provider::TensorRT,
                ProviderName::Cuda => Provider::Cuda,
                ProviderName::Cpu => Provider::Cpu,
            })
            .collect();
        let runtime = RuntimeOptions {
            ort_library: cfg.runtime.ort_library.clone(),
            providers,
            trt_cache_dir: cfg.runtime.trt_cache_dir.clone(),
            fp16: cfg.runtime.fp16,
            allow_cpu_fallback: cfg.runtime.allow_cpu_fallback,
            intra_threads: cfg.runtime.threads as usize,
            device_id: cfg.runtime.device_id as i32,
        };
        let tracker = TrackerConfig {
            min_detection_score: cfg.face.min_score,
            iris: cfg.face.iris,
            filter: Some(OneEuroParams { min_cutoff: cfg.face.min_cutoff, beta: cfg.face.beta, d_cutoff: cfg.face.d_cutoff }),
            ..TrackerConfig::default()
        };
        // A relative avatar path that does not exist as given is looked up like bundled files.
        let avatar = if cfg.avatar.is_relative() && !cfg.avatar.exists() {
            search_roots().into_iter().map(|r| r.join(&cfg.avatar)).find(|p| p.is_file()).unwrap_or_else(|| cfg.avatar.clone())
        } else {
            cfg.avatar.clone()
        };
        Plan {
            driver: DriverSpec::Source(cfg.source_spec()),
            avatar,
            sink: cfg.sink_spec(),
            width: cfg.output.width,
            height: cfg.output.height,
            fps: cfg.output.fps,
            runtime,
            tracker,
            face_models: cfg.face.model_dir.clone(),
            pacing: None,
            reconnect_max_backoff: Duration::from_secs(5),
            neutral_ease: Duration::from_millis(300),
            retarget: cfg.retarget.enabled.then(|| RetargetParams {
                max_roll_deg: cfg.retarget.max_roll_deg,
                expression_gain: cfg.retarget.expression_gain,
                ..RetargetParams::default()
            }),
        }
    }
}

/// Directories searched for bundled files (`onnx/...`, `tests/fixtures/...`): the working
/// directory, the executable's directory and its ancestors (`target/debug/../..`), the crate root.
pub fn search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(3).map(Path::to_path_buf));
        if let Some(prefix) = exe.parent().and_then(Path::parent) {
            roots.push(prefix.join("share/puppetcam"));
        }
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    roots
}

/// The trained default avatar `onnx/default_avatar.onnx`; until one is bundled, the test fixture
/// (a contract-following stand-in) so the demo still runs end to end.
pub fn default_avatar() -> PathBuf {
    for rel in ["onnx/default_avatar.onnx", "tests/fixtures/generator_ok.onnx"] {
        for root in search_roots() {
            let p = root.join(rel);
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from("onnx/default_avatar.onnx")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_follows_driver_and_sink() {
        let mut p = Plan::demo();
        assert_eq!(p.effective_pacing(), Pacing::EveryFrame);
        p.driver = DriverSpec::Embedded { frames: None };
        assert_eq!(p.effective_pacing(), Pacing::Realtime);
        p.driver = DriverSpec::Source(SourceSpec::File { path: "x.mp4".into(), looping: false, realtime: false });
        assert_eq!(p.effective_pacing(), Pacing::EveryFrame);
        p.sink = SinkSpec::V4l2 { device: "/dev/video10".into(), format: crate::core::colour::PixFormat::Yuyv };
        assert_eq!(p.effective_pacing(), Pacing::Realtime);
        p.pacing = Some(Pacing::EveryFrame);
        assert_eq!(p.effective_pacing(), Pacing::EveryFrame);
    }

    #[test]
    fn config_maps_onto_the_plan() {
        let cfg = Config::from_toml(
            "[source]\nkind = \"file\"\npath = \"clip.mp4\"\n[output]\nkind = \"y4m\"\npath = \"o.y4m\"\nwidth = 320\nheight = 240\nfps = 20\n[runtime]\nproviders = [\"cuda\", \"cpu\"]\nallow_cpu_fallback = false\nthreads = 2\n",
        )
        .unwrap();
        let p = Plan::from_config(&cfg);
        assert!(matches!(&p.driver, DriverSpec::Source(SourceSpec::File { path, .. }) if path == Path::new("clip.mp4")));
        assert_eq!(p.sink, SinkSpec::Y4m { path: "o.y4m".into() });
        assert_eq!((p.width, p.height, p.fps), (320, 240, 20));
        assert_eq!(p.runtime.providers, vec![Provider::Cuda, Provider::Cpu]);
        assert!(!p.runtime.allow_cpu_fallback);
        assert_eq!(p.runtime.intra_threads, 2);
        assert_eq!(p.effective_pacing(), Pacing::EveryFrame);
    }

    #[test]
    fn default_avatar_exists_in_a_checkout() {
        assert!(default_avatar().is_file(), "{}", default_avatar().display());
    }
}
