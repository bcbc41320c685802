//! Avatar creation from uploaded images as a background job with progress: the uploads (checked
//! by the API against the input limits before a job exists) are written to a private temporary
//! directory and go through the same `avatar::create` and `refine::personalise` as
//! `puppetcam avatar create`, so they are decoded under the same bounds. One job runs at a time
//! (a fine-tune takes the CPU for a minute or two); later ones wait as `queued`.
use super::library::Library;
use super::ControlError;
use crate::imageio::Format;
use crate::refine::personalise::{personalise_with, Mode};
use parking_lot::Mutex;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Jobs kept for polling after they ended.
const KEEP: usize = 16;

/// An uploaded image, already probed.
#[derive(Clone, Debug)]
pub struct Upload {
    pub filename: String,
    pub format: Format,
    pub bytes: Vec<u8>,
}

/// What to make.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    pub name: String,
    pub images: Vec<Upload>,
    pub mode: Mode,
}

/// A job as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobView {
    pub id: u64,
    pub name: String,
    /// `queued`, `detecting` (landmarks of each image), `fine-tuning`, `saving`, `done`, `failed`.
    pub state: &'static str,
    /// Fine-tuning step of `steps` (0 of 0 for the modes that do not fine-tune).
    pub step: usize,
    pub steps: usize,
    /// 0..=1 over the whole job, for a progress bar.
    pub progress: f32,
    /// What went wrong (`failed`) or what was made (`done`).
    pub message: String,
    pub elapsed_s: f32,
    #[serde(skip)]
    started: Option<Instant>,
}

impl JobView {
    pub fn finished(&self) -> bool {
        matches!(self.state, "done" | "failed")
    }
}

/// Where the face models are (`None`: the usual places).
#[derive(Default)]
pub struct Jobs {
    list: Mutex<Vec<JobView>>,
    next: AtomicU64,
    /// Held by the running job: one at a time.
    running: Mutex<()>,
    pub models: Option<PathBuf>,
}

impl Jobs {
    pub fn new(models: Option<PathBuf>) -> Jobs {
        Jobs { models, next: AtomicU64::new(1), ..Jobs::default() }
    }

    pub fn get(&self, id: u64) -> Option<JobView> {
        self.list.lock().iter().find(|j| j.id == id).cloned().map(with_elapsed)
    }

    pub fn all(&self) -> Vec<JobView> {
        self.list.lock().iter().cloned().map(with_elapsed).collect()
    }

    /// A job of this name that has not ended (a second create of the same name is refused).
    pub fn pending_named(&self, name: &str) -> bool {
        self.list.lock().iter().any(|j| j.name == name && !j.finished())
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut JobView)) {
        if let Some(j) = self.list.lock().iter_mut().find(|j| j.id == id) {
            f(j);
        }
    }

    /// Starts a job on its own thread; returns it as queued.
    pub fn start(self: &Arc<Self>, library: Arc<Library>, req: CreateRequest) -> Result<JobView, ControlError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed).max(1);
        let steps = match req.mode {
            Mode::FineTune { steps, .. } => steps,
            _ => 0,
        };
        let view = JobView {
            id,
            name: req.name.clone(),
            state: "queued",
            step: 0,
            steps,
            progress: 0.0,
            message: String::new(),
            elapsed_s: 0.0,
            started: Some(Instant::now()),
        };
        {
            let mut l = self.list.lock();
            l.push(view.clone());
            // Forget the oldest finished jobs beyond KEEP.
            while l.len() > KEEP {
                match l.iter().position(JobView::finished) {
                    Some(i) => {
                        l.remove(i);
                    }
                    None => break,
                }
            }
        }
        let jobs = self.clone();
        std::thread::Builder::new()
            .name("pc-avatar-create".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| jobs.run(id, &library, req)))
                    .unwrap_or_else(|p| Err(ControlError::Internal(format!("avatar creation panicked: {}", crate::error::panic_message(p.as_ref())))));
                match r {
                    Ok(msg) => {
                        log::info!("avatar library: {msg}");
                        jobs.update(id, |j| {
                            *j = with_elapsed(j.clone());
                            j.state = "done";
                            j.progress = 1.0;
                            j.message = msg;
                        })
                    }
                    Err(e) => {
                        log::warn!("avatar library: creating failed: {e}");
                        jobs.update(id, |j| {
                            *j = with_elapsed(j.clone());
                            j.state = "failed";
                            j.message = e.to_string();
                        })
                    }
                }
            })
            .map_err(|e| ControlError::Internal(format!("cannot start the avatar creation thread: {e}")))?;
        Ok(view)
    }

    fn run(&self, id: u64, library: &Library, req: CreateRequest) -> Result<String, ControlError> {
        let _one_at_a_time = self.running.lock();
        self.update(id, |j| {
            j.state = "detecting";
            j.progress = 0.05;
        });
        let dir = tempfile::Builder::new().prefix("puppetcam-upload").tempdir().map_err(|e| ControlError::Internal(format!("temporary directory: {e}")))?;
        let mut paths = Vec::new();
        for (k, u) in req.images.iter().enumerate() {
            let stem: String = std::path::Path::new(&u.filename)
                .file_stem()
                .map(|s| s.to_string_lossy().chars().filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-')).take(40).collect())
                .unwrap_or_default();
            let ext = match u.format {
                Format::Png => "png",
                Format::Jpeg => "jpg",
                Format::Bmp => "bmp",
                Format::Webp => "webp",
            };
            let p = dir.path().join(format!("{k:02}-{stem}.{ext}"));
            std::fs::write(&p, &u.bytes).map_err(|e| ControlError::Internal(format!("{}: {e}", p.display())))?;
            paths.push(p);
        }
        let models = match &self.models {
            Some(d) => crate::face::FaceModels::from_dir(d),
            None => crate::face::FaceModels::locate().map_err(|e| ControlError::Internal(e.to_string()))?,
        };
        // Errors here are the user's images (no face, unreadable): a bad request, said plainly.
        let (mut av, reports) = crate::avatar::create::create(&paths, &req.name, &models).map_err(|e| ControlError::Unprocessable(strip_dir(&e.to_string(), dir.path())))?;
        let steps = match req.mode {
            Mode::FineTune { steps, .. } => steps,
            _ => 0,
        };
        self.update(id, |j| {
            j.state = if steps > 0 { "fine-tuning" } else { "saving" };
            j.progress = 0.1;
        });
        let how = personalise_with(&mut av, req.mode, &crate::ep::RuntimeOptions::cpu(), &mut |k, n| {
            self.update(id, |j| {
                j.step = k;
                j.steps = n;
                j.progress = 0.1 + 0.85 * (k as f32 / n.max(1) as f32);
            })
        })
        .map_err(|e| ControlError::Internal(strip_dir(&e.to_string(), dir.path())))?;
        self.update(id, |j| {
            j.state = "saving";
            j.progress = 0.97;
        });
        library.add(&req.name, &av)?;
        Ok(format!("created {:?}: {} shot(s) ({} face(s) in the portrait); refiner: {how}", req.name, av.shots.len(), reports[0].faces_found))
    }
}

fn with_elapsed(mut j: JobView) -> JobView {
    // A finished job keeps the time it took (set when it ended).
    if let (Some(t), false) = (j.started, j.finished()) {
        j.elapsed_s = (t.elapsed().as_secs_f32() * 10.0).round() / 10.0;
    }
    j
}

/// Messages name the uploaded file, not the private temporary directory it was written to.
fn strip_dir(msg: &str, dir: &std::path::Path) -> String {
    msg.replace(&format!("{}/", dir.display()), "")
}
