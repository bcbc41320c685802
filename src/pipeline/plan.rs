//! What to run, in terms of the I/O modules: driver, avatar, sink, geometry, runtime. Built from
//! the config and command-line flags, then turned into the factories the threads call.
use super::{Calibration, Driver, EaseTimes, Pacing, PipelineSpec};
use crate::config::{Config, ProviderName};
use crate::core::one_euro::OneEuroParams;
use crate::core::retarget::RetargetParams;
use crate::ep::{Provider, RuntimeOptions};
use crate::error::{Error, Result};
use crate::face::iris::IrisKind;
use crate::face::iris_schedule::IrisSchedule;
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
    /// Output rate: a cap on the source's rate, or only the fallback when `fps_follows_source`.
    pub fps: u32,
    /// No rate configured (`[output] fps` unset, no `--fps`): live output at the source's rate.
    pub fps_follows_source: bool,
    pub runtime: RuntimeOptions,
    pub tracker: TrackerConfig,
    /// Face model directory; `None` searches the usual places (`FaceModels::locate`).
    pub face_models: Option<PathBuf>,
    /// `None` chooses: a finite driver rendered to a file writes every frame, anything else is
    /// paced in real time.
    pub pacing: Option<Pacing>,
    pub reconnect_max_backoff: Duration,
    /// A lost camera shows a "waiting for camera" notice after this long (`[service]
    /// source_lost_timeout_s`); before, the idle portrait hides a brief unplug.
    pub source_notice_after: Duration,
    pub ease: EaseTimes,
    /// Identity-preserving retargeting; `None` drives with the raw driver landmarks.
    pub retarget: Option<RetargetParams>,
    /// Driver neutral from `[retarget] profile` or `--neutral`; `None` starts from a provisional
    /// neutral and learns it from the first steady frames.
    pub calibration: Option<Calibration>,
    /// Portrait (then more shots) to animate: a warp avatar is created from them (cached by
    /// content hash) and replaces `avatar` when the plan starts.
    pub portraits: Vec<PathBuf>,
    /// Pause and face-lost still, the face-not-found mark (`[output] face_lost_mark`).
    pub presence: super::presence::PresenceParams,
    /// `[output] fit`: how the portrait fills an output of another aspect ratio.
    pub fit: crate::core::fit::Fit,
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
            fps_follows_source: true,
            runtime: RuntimeOptions::default(),
            tracker: TrackerConfig { iris_kind: IrisKind::Distilled, iris_schedule: IrisSchedule::Alternate, ..TrackerConfig::default() },
            face_models: None,
            pacing: None,
            reconnect_max_backoff: Duration::from_secs(5),
            source_notice_after: Duration::from_secs(60),
            ease: EaseTimes::default(),
            retarget: Some(RetargetParams::default()),
            calibration: None,
            portraits: Vec::new(),
            presence: Default::default(),
            fit: Default::default(),
        }
    }

    /// Face models for this plan (configured directory or the usual places).
    pub fn models(&self) -> Result<FaceModels> {
        match &self.face_models {
            Some(dir) => Ok(FaceModels::from_dir(dir)),
            None => FaceModels::locate(),
        }
    }

    /// Creates (or finds in the cache) the warp avatar for `portraits`, and points the plan at
    /// it. No-op without portraits.
    pub fn resolve_portraits(&mut self) -> Result<()> {
        if self.portraits.is_empty() {
            return Ok(());
        }
        let models = self.models()?;
        self.avatar = crate::avatar::create::cached_avatar(&self.portraits, &models, None)?;
        self.portraits.clear();
        Ok(())
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
    pub fn into_spec(mut self) -> Result<PipelineSpec> {
        self.resolve_portraits()?;
        let pacing = self.effective_pacing();
        let driver = match &self.driver {
            DriverSpec::Embedded { frames } => Driver::Synthetic { frames: *frames },
            DriverSpec::Source(_) => {
                let (source, live) = self.source_factory().expect("a source driver");
                Driver::Video { source, face: self.face_factory()?, live }
            }
        };
        let sink = self.sink_factory();
        Ok(PipelineSpec {
            driver,
            avatar: self.avatar,
            runtime: self.runtime,
            sink,
            out_width: self.width,
            out_height: self.height,
            fps: self.fps as f64,
            follow_source_fps: self.fps_follows_source,
            pacing,
            reconnect_max_backoff: self.reconnect_max_backoff,
            source_notice_after: self.source_notice_after,
            ease: self.ease,
            retarget: self.retarget,
            calibration: self.calibration,
            generator_hook: None,
            reload_timeout: crate::pipeline::RELOAD_TIMEOUT,
            presence: self.presence,
            fit: self.fit,
        })
    }

    /// The source factory and whether the source is live (reopened when lost); `None` for the
    /// embedded driver. Also used by a SIGHUP reload to swap the source.
    pub fn source_factory(&self) -> Option<(super::SourceFactory, bool)> {
        let DriverSpec::Source(spec) = &self.driver else { return None };
        let mut spec = spec.clone();
        let live = matches!(spec, SourceSpec::Camera { .. });
        if let SourceSpec::File { realtime, .. } = &mut spec {
            // Offline renders decode flat out; live outputs play the file at its own speed.
            *realtime = self.effective_pacing() == Pacing::Realtime;
        }
        Some((Arc::new(move || open_source(&spec)), live))
    }

    /// The face stage factory (models located now, loaded in the face thread).
    pub fn face_factory(&self) -> Result<super::FaceFactory> {
        let models = match &self.face_models {
            Some(dir) => FaceModels::from_dir(dir),
            None => FaceModels::locate()?,
        };
        // The face models build their own (CPU) sessions through crate::ep.
        let mut tracker = self.tracker;
        if self.pacing.is_none() && self.effective_pacing() == Pacing::EveryFrame {
            // Rendering a file to a file has no deadline: MediaPipe's full pipeline, its iris
            // model on both eyes each frame. (`bench` chooses its pacing explicitly, and measures
            // the live set-up flat out too.)
            tracker.iris_schedule = IrisSchedule::EveryFrame;
            tracker.iris_kind = IrisKind::MediaPipe;
        }
        tracker.validate()?;
        Ok(Box::new(move || {
            let t = FaceTracker::new(&models, tracker)?;
            Ok(Box::new(t) as Box<dyn super::FaceStage>)
        }))
    }

    /// The sink factory (creates the parent directory of file outputs).
    pub fn sink_factory(&self) -> super::SinkFactory {
        let sink_spec = self.sink.clone();
        Box::new(move |w, h, fps| {
            if let SinkSpec::Y4m { path } | SinkSpec::Png { dir: path, .. } = &sink_spec {
                let dir = if matches!(sink_spec, SinkSpec::Png { .. }) { Some(path.as_path()) } else { path.parent() };
                if let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(d).map_err(|source| Error::Io { path: d.to_path_buf(), source })?;
                }
            }
            open_sink(&sink_spec, w, h, fps.round() as u32)
        })
    }
}

/// A plan from a config file (two-stage TOML, `crate::config`), defaults for what it leaves out.
pub fn from_config_file(path: &Path) -> Result<Plan> {
    Plan::from_config(&Config::load(path)?)
}

impl Plan {
    /// The plan a validated config describes. Fails only when `[retarget] profile` names a
    /// file that is not a readable calibration profile.
    pub fn from_config(cfg: &Config) -> Result<Plan> {
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
            intra_spinning: true,
            device_id: cfg.runtime.device_id as i32,
        };
        let tracker = TrackerConfig {
            min_detection_score: cfg.face.min_score,
            iris: cfg.face.iris,
            iris_kind: cfg.face.iris_model,
            threads: cfg.face.threads as usize,
            iris_schedule: if cfg.face.iris_alternate { IrisSchedule::Alternate } else { IrisSchedule::EveryFrame },
            iris_lids: cfg.face.iris_lids,
            filter: Some(OneEuroParams { min_cutoff: cfg.face.min_cutoff, beta: cfg.face.beta, d_cutoff: cfg.face.d_cutoff }),
            ..TrackerConfig::default()
        };
        // A relative avatar path that does not exist as given is looked up like bundled files.
        let avatar = if cfg.avatar.is_relative() && !cfg.avatar.exists() {
            search_roots().into_iter().map(|r| r.join(&cfg.avatar)).find(|p| p.is_file()).unwrap_or_else(|| cfg.avatar.clone())
        } else {
            cfg.avatar.clone()
        };
        let r = &cfg.retarget;
        let calibration = match (&r.profile, r.enabled) {
            (Some(path), true) => Some(Calibration::load(path, cfg.face.iris && cfg.face.iris_lids)?),
            _ => None,
        };
        Ok(Plan {
            driver: DriverSpec::Source(cfg.source_spec()),
            avatar,
            sink: cfg.sink_spec(),
            width: cfg.output.width,
            height: cfg.output.height,
            fps: cfg.output.fps,
            fps_follows_source: !cfg.output.fps_set,
            runtime,
            tracker,
            face_models: cfg.face.model_dir.clone(),
            pacing: None,
            reconnect_max_backoff: Duration::from_secs(5),
            source_notice_after: Duration::from_secs_f32(cfg.service.source_lost_timeout_s),
            ease: EaseTimes { hold_s: r.ease_hold_s, out_s: r.ease_out_s, in_s: r.ease_in_s },
            retarget: r.enabled.then(|| r.params.clone()),
            calibration,
            portraits: cfg.portrait.iter().cloned().collect(),
            presence: super::presence::PresenceParams { mark: cfg.output.face_lost_mark, ..Default::default() },
            fit: cfg.output.fit,
        })
    }
}

/// Directories searched for bundled files (`onnx/...`, `tests/fixtures/...`): the source tree or
/// installed prefix the binary runs from (`crate::paths`; never the working directory).
pub fn search_roots() -> Vec<PathBuf> {
    crate::paths::Env::current().data_roots()
}

/// The bundled default avatar: the warp avatar `onnx/default_avatar.pcav`, else the generator
/// `onnx/default_avatar.onnx`, else the test fixture (a contract-following stand-in).
pub fn default_avatar() -> PathBuf {
    crate::paths::Env::current().default_avatar().unwrap_or_else(|| PathBuf::from(crate::paths::DEFAULT_AVATAR))
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
    fn output_rate_follows_the_source_unless_fps_is_configured() {
        let p = Plan::from_config(&Config::default()).unwrap();
        assert!(p.fps_follows_source, "no [output] fps: follow the source");
        assert_eq!((p.tracker.iris_schedule, p.tracker.iris_kind), (IrisSchedule::Alternate, IrisKind::Distilled));
        let p = Plan::from_config(&Config::from_toml("[output]\nfps = 25\n[face]\niris_alternate = false\niris_model = \"mediapipe\"\nthreads = 2\n").unwrap()).unwrap();
        assert!(!p.fps_follows_source && p.fps == 25, "a configured fps caps");
        assert_eq!((p.tracker.iris_schedule, p.tracker.threads, p.tracker.iris_kind), (IrisSchedule::EveryFrame, 2, IrisKind::MediaPipe));
        let spec = Plan::demo().into_spec().unwrap();
        assert!(spec.follow_source_fps);
    }

    #[test]
    fn config_maps_onto_the_plan() {
        let cfg = Config::from_toml(
            "[source]\nkind = \"file\"\npath = \"clip.mp4\"\n[output]\nkind = \"y4m\"\npath = \"o.y4m\"\nwidth = 320\nheight = 240\nfps = 20\n[runtime]\nproviders = [\"cuda\", \"cpu\"]\nallow_cpu_fallback = false\nthreads = 2\n",
        )
        .unwrap();
        let p = Plan::from_config(&cfg).unwrap();
        assert!(matches!(&p.driver, DriverSpec::Source(SourceSpec::File { path, .. }) if path == Path::new("clip.mp4")));
        assert_eq!(p.sink, SinkSpec::Y4m { path: "o.y4m".into() });
        assert_eq!((p.width, p.height, p.fps), (320, 240, 20));
        assert_eq!(p.runtime.providers, vec![Provider::Cuda, Provider::Cpu]);
        assert!(!p.runtime.allow_cpu_fallback);
        assert_eq!(p.runtime.intra_threads, 2);
        assert_eq!(p.effective_pacing(), Pacing::EveryFrame);
    }

    /// A valid profile whose neutral is the synthetic face at rest.
    fn profile_file(dir: &Path) -> PathBuf {
        use crate::calibrate::{Profile, Quality, SCHEMA};
        let n = super::super::synthetic::neutral_shape();
        let p = Profile {
            schema: SCHEMA,
            created: "2024-01-01T00:00:00Z".into(),
            source: "camera:/dev/video0".into(),
            frame_width: 640,
            frame_height: 480,
            frames_captured: 60,
            frames_used: 60,
            iod: 64.0,
            neutral_pts68: n.pts68.to_vec(),
            neutral_iris: n.iris.map(|ir| ir.map(|i| [i.cx, i.cy, i.r])),
            lids: "iris".into(),
            quality: Quality { face_fraction: 1.0, motion: 0.0, nonrigid: 0.0, mouth_openness: 0.0, eye_openness: [0.3, 0.3], roll_deg: 0.0, yaw: 0.0 },
        };
        let path = dir.join("profile.toml");
        p.save(&path).unwrap();
        path
    }

    #[test]
    fn runtime_and_face_sections_reach_their_stages() {
        let cfg = Config::from_toml(
            "[runtime]\nproviders = [\"cpu\", \"tensorrt\"]\ntrt_cache_dir = \"/tmp/trt-x\"\nfp16 = false\nthreads = 3\nallow_cpu_fallback = false\ndevice_id = 2\nort_library = \"/x/libonnxruntime.so\"\n\
             [face]\nmodel_dir = \"/models/face\"\nmin_score = 0.65\niris = false\n[face.one_euro]\nmin_cutoff = 2.5\nbeta = 20.0\nd_cutoff = 1.7\n",
        )
        .unwrap();
        let p = Plan::from_config(&cfg).unwrap();
        let rt = &p.runtime;
        assert_eq!(rt.providers, vec![Provider::Cpu, Provider::TensorRT]);
        assert_eq!(rt.trt_cache_dir, PathBuf::from("/tmp/trt-x"));
        assert!(!rt.fp16 && !rt.allow_cpu_fallback);
        assert_eq!((rt.intra_threads, rt.device_id), (3, 2));
        assert_eq!(rt.ort_library.as_deref(), Some(Path::new("/x/libonnxruntime.so")));
        assert_eq!(p.face_models.as_deref(), Some(Path::new("/models/face")));
        assert_eq!(p.tracker.min_detection_score, 0.65);
        assert!(!p.tracker.iris);
        assert_eq!(p.tracker.filter, Some(OneEuroParams { min_cutoff: 2.5, beta: 20.0, d_cutoff: 1.7 }));
        // The defaults differ from every value above, so a dropped field fails the test.
        let d = Plan::from_config(&Config::default()).unwrap();
        assert_ne!(d.runtime, p.runtime);
        assert_ne!(d.tracker, p.tracker);
    }

    #[test]
    fn retarget_section_reaches_the_retargeter_and_easer() {
        let cfg = Config::from_toml(
            "[retarget]\nmax_roll_deg = 11\nhead_3d = false\nmax_yaw_deg = 20\nmax_pitch_deg = 15\nmax_translation = 0.2\nmin_scale = 0.7\nmax_scale = 1.5\npose_smoothing = 0.6\n\
             expression_gain = 1.4\nmouth_gain = 1.1\nlearn_frames = 12\nlearn_max_motion = 0.05\neye_contact = true\nease_hold_s = 0.5\nease_out_s = 0.8\nease_in_s = 0.25\n",
        )
        .unwrap();
        let p = Plan::from_config(&cfg).unwrap();
        assert_eq!(
            p.retarget,
            Some(RetargetParams {
                max_roll_deg: 11.0,
                head_3d: false,
                max_yaw_deg: 20.0,
                max_pitch_deg: 15.0,
                max_translation: 0.2,
                min_scale: 0.7,
                max_scale: 1.5,
                pose_smoothing: 0.6,
                expression_gain: 1.4,
                mouth_gain: 1.1,
                learn_frames: 12,
                learn_max_motion: 0.05,
                eye_contact: true,
            })
        );
        p.retarget.as_ref().unwrap().validate().unwrap();
        assert_eq!(p.ease, EaseTimes { hold_s: 0.5, out_s: 0.8, in_s: 0.25 });
        assert!(p.calibration.is_none(), "no profile: the retargeter learns");
        let spec = p.into_spec().unwrap();
        assert_eq!(spec.ease, EaseTimes { hold_s: 0.5, out_s: 0.8, in_s: 0.25 });
        assert_eq!(spec.retarget.as_ref().map(|r| r.learn_frames), Some(12));

        // Defaults equal RetargetParams' own defaults and the easing the pipeline always used.
        let d = Plan::from_config(&Config::default()).unwrap();
        assert_eq!(d.retarget, Some(RetargetParams::default()));
        assert_eq!(d.ease, EaseTimes::default());
        let off = Plan::from_config(&Config::from_toml("[retarget]\nenabled = false").unwrap()).unwrap();
        assert_eq!(off.retarget, None);
    }

    #[test]
    fn retarget_profile_is_loaded_as_the_driver_neutral() {
        let dir = tempfile::tempdir().unwrap();
        let path = profile_file(dir.path());
        let toml = format!("[retarget]\nprofile = {:?}\n", path.display().to_string());
        let p = Plan::from_config(&Config::from_toml(&toml).unwrap()).unwrap();
        let c = p.calibration.as_ref().expect("profile loaded");
        assert_eq!(c.neutral.pts68, super::super::synthetic::neutral_shape().pts68);
        assert!(c.source.contains("profile.toml") && c.source.contains("camera:/dev/video0"), "{}", c.source);
        assert!(p.into_spec().unwrap().calibration.is_some());

        // A bad or missing profile is a config error naming the key and the file.
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "schema = 1\nneutral_pts68 = []\n").unwrap();
        for f in [bad, dir.path().join("missing.toml")] {
            let toml = format!("[retarget]\nprofile = {:?}\n", f.display().to_string());
            match Plan::from_config(&Config::from_toml(&toml).unwrap()) {
                Err(Error::Config { key, msg }) => {
                    assert_eq!(key, "retarget.profile");
                    assert!(msg.contains(&f.display().to_string()) || msg.contains("neutral_pts68") || msg.contains("missing"), "{msg}");
                }
                other => panic!("expected a config error for {}, got {other:?}", f.display()),
            }
        }
        // Retargeting off: the profile is not needed, so not read.
        let toml = format!("[retarget]\nenabled = false\nprofile = {:?}\n", dir.path().join("missing.toml").display().to_string());
        assert!(Plan::from_config(&Config::from_toml(&toml).unwrap()).unwrap().calibration.is_none());
    }

    #[test]
    fn default_avatar_exists_in_a_checkout() {
        assert!(default_avatar().is_file(), "{}", default_avatar().display());
    }
}
