//! The control API behind the page at `/` and `puppetcam ctl` (docs/api.md): the avatar library
//! (`library`), creation from uploads with progress (`jobs`), live switch, pause, neutral now,
//! and the checks every state-changing request passes (`api::authorize`, `token`). The HTTP
//! server (`service::http`) reads the request and hands it to `api::handle`; this module opens no
//! socket. `ControlHub` is what they share; the pipeline's `Controller` is attached once the
//! pipeline runs (before that, actions answer 503).
pub mod api;
pub mod client;
pub mod jobs;
pub mod library;
pub mod multipart;
pub mod token;

use crate::pipeline::Controller;
use crate::stats::PipelineStats;
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a control request can fail with; each maps to one HTTP status (`api`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    BadRequest(String),
    /// No or a wrong token (and not the page itself).
    #[error("{0}")]
    Unauthorized(String),
    /// A foreign Origin or a cross-site request.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The name is taken, the avatar is live, ...
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// Well-formed but unusable input: an image over the limits, no face found.
    #[error("{0}")]
    Unprocessable(String),
    /// The pipeline is not running (yet).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// Settings of the control API (from `[service]` and `[avatar]`).
#[derive(Clone, Debug)]
pub struct ControlOptions {
    pub library: PathBuf,
    /// The config file's avatar (listed in the library, the first live one).
    pub configured: PathBuf,
    pub token: String,
    /// Largest request body (an upload), bytes.
    pub max_upload: u64,
    /// Face models directory for avatar creation (`None`: the usual places).
    pub models: Option<PathBuf>,
    /// Default fine-tuning steps of a create that does not say (0: feed-forward).
    pub default_steps: usize,
}

/// State shared by the HTTP server's control routes and the daemon.
pub struct ControlHub {
    pub library: Arc<library::Library>,
    pub jobs: Arc<jobs::Jobs>,
    opts: ControlOptions,
    stats: Arc<PipelineStats>,
    pipeline: RwLock<Option<Controller>>,
    /// The avatar file on the camera now.
    live: Mutex<PathBuf>,
}

impl std::fmt::Debug for ControlHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHub").field("library", &self.library.dir()).field("live", &*self.live.lock()).finish()
    }
}

impl ControlHub {
    pub fn new(opts: ControlOptions, stats: Arc<PipelineStats>) -> Result<Arc<ControlHub>, ControlError> {
        let library = Arc::new(library::Library::open(&opts.library, Some(&opts.configured))?);
        let jobs = Arc::new(jobs::Jobs::new(opts.models.clone()));
        let live = Mutex::new(opts.configured.clone());
        Ok(Arc::new(ControlHub { library, jobs, opts, stats, pipeline: RwLock::new(None), live }))
    }

    /// Connects the running pipeline (after `Pipeline::start`).
    pub fn attach(&self, c: Controller) {
        *self.pipeline.write() = Some(c);
    }

    /// The pipeline went away (shutdown): actions answer 503 again.
    pub fn detach(&self) {
        *self.pipeline.write() = None;
    }

    fn controller(&self) -> Result<Controller, ControlError> {
        self.pipeline.read().clone().ok_or_else(|| ControlError::Unavailable("the pipeline is not running".into()))
    }

    pub fn token(&self) -> &str {
        &self.opts.token
    }

    pub fn max_upload(&self) -> u64 {
        self.opts.max_upload
    }

    pub fn default_steps(&self) -> usize {
        self.opts.default_steps
    }

    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    pub fn live_path(&self) -> PathBuf {
        self.live.lock().clone()
    }

    /// The name of the live avatar in the library listing, if it is listed.
    pub fn live_name(&self) -> Option<String> {
        let live = self.live_path();
        self.library.list().into_iter().find(|e| library::same_file(&e.path, &live)).map(|e| e.name)
    }

    /// A SIGHUP or the avatar watcher loaded another file: that is the live one now.
    pub fn set_live(&self, p: &Path) {
        *self.live.lock() = p.to_path_buf();
    }

    /// Switches the camera to the avatar `name` (cross-faded; the old one renders until the new
    /// one loaded).
    pub fn select(&self, name: &str) -> Result<(), ControlError> {
        let e = self.library.find(name)?;
        if let Some(err) = e.error {
            return Err(ControlError::Unprocessable(format!("avatar {name:?} is not usable: {err}")));
        }
        let c = self.controller()?;
        c.select(&e.path).map_err(|err| ControlError::Unprocessable(format!("avatar {name:?} did not load: {err}")))?;
        self.set_live(&e.path);
        Ok(())
    }

    pub fn rename(&self, old: &str, new: &str) -> Result<(), ControlError> {
        let was_live = self.library.find(old).map(|e| library::same_file(&e.path, &self.live_path())).unwrap_or(false);
        let to = self.library.rename(old, new)?;
        if was_live {
            // The running avatar was loaded from the old file; later restarts after a panic and
            // deletes must see the new one, and the status its new name (the avatar in memory is
            // the same one, so it is not loaded again).
            self.set_live(&to);
            *self.stats.avatar_name.write() = new.to_string();
        }
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<(), ControlError> {
        self.library.delete(name, Some(&self.live_path()))
    }

    pub fn pause(&self, paused: bool) -> Result<(), ControlError> {
        self.controller()?.pause(paused).map_err(|e| ControlError::Unavailable(e.to_string()))
    }

    pub fn neutral_now(&self) -> Result<(), ControlError> {
        self.controller()?.neutral_now().map_err(|e| ControlError::Conflict(e.to_string()))
    }

    pub fn eye_contact(&self, on: bool) -> Result<(), ControlError> {
        self.controller()?.eye_contact(on).map_err(|e| ControlError::Conflict(e.to_string()))
    }

    /// The `control` part of /status.json and /api/status.
    pub fn status_value(&self) -> serde_json::Value {
        let look = self.stats.look.read().clone();
        serde_json::json!({
            "live": self.live_name(),
            "live_path": self.live_path(),
            "paused": look.paused,
            "still": look.still,
            "face_mark": look.face_mark,
            "switching": look.switching,
            "neutral_resets": look.neutral_resets,
            "eye_contact": look.eye_contact,
            "pipeline": self.pipeline.read().is_some(),
            "jobs": self.jobs.all(),
            "library": self.library.dir(),
        })
    }
}
