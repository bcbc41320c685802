//! SIGHUP: the whole config is re-read and what changed is applied to the running daemon, stage
//! by stage, without restarting what did not change (a v4l2loopback device stays open unless the
//! output itself changed):
//! - avatar, runtime, retargeting and easing: the generator reloads with the new settings;
//! - face tracker settings or models: the face stage is rebuilt;
//! - `[source]`: the capture stage closes the old source and opens the new one;
//! - `[output]` device/kind: the output opens the new sink, then closes the old one;
//! - `[service]`: HTTP server restarted on new settings, the avatar watcher follows the new path,
//!   new liveness timeouts.
//!
//! Output size and fps (and a switch between the embedded driver and a real source) shape every
//! stage and need a restart; the report says so. Each failed part keeps what was running.
use super::{Service, ServiceOptions};
use crate::error::{Error, Result};
use crate::pipeline::{synthetic, Calibration, DriverSpec, GenSettings, PipelineHandle, Plan};

/// What a reload did.
#[derive(Clone, Debug)]
pub struct ReloadReport {
    pub applied: Vec<String>,
    /// Changed, but only a restart applies it.
    pub needs_restart: Vec<String>,
    pub failed: Vec<String>,
    /// The plan now running (the new one, minus what was not applied).
    pub running: Plan,
}

impl ReloadReport {
    /// One line for the log and systemd's status.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        parts.push(if self.applied.is_empty() { "reloaded: nothing changed".to_string() } else { format!("reloaded: {}", self.applied.join(", ")) });
        if !self.needs_restart.is_empty() {
            parts.push(format!("needs a restart: {}", self.needs_restart.join(", ")));
        }
        if !self.failed.is_empty() {
            parts.push(format!("FAILED: {}", self.failed.join("; ")));
        }
        parts.join("; ")
    }
}

/// The generator settings a plan asks for (the embedded driver always uses its own rest face).
fn gen_settings(p: &Plan) -> GenSettings {
    let calibration = match p.driver {
        DriverSpec::Embedded { .. } => {
            Some(Calibration { source: "embedded driver's rest face".into(), neutral: synthetic::neutral_shape(), mesh: None, depth: None })
        }
        DriverSpec::Source(_) => p.calibration.clone(),
    };
    GenSettings { runtime: p.runtime.clone(), retarget: p.retarget.clone(), calibration, ease: p.ease }
}

/// Applies `new` over `old` (the running plan) on `handle` and `service`.
/// `service_opts` are the service options the new config asks for (built like at start-up).
pub fn apply(handle: &PipelineHandle, service: &Service, old: &Plan, new: &Plan, service_opts: &ServiceOptions) -> Result<ReloadReport> {
    let mut r = ReloadReport { applied: Vec::new(), needs_restart: Vec::new(), failed: Vec::new(), running: old.clone() };

    // Geometry and driver kind: restart only.
    if (new.width, new.height, new.fps) != (old.width, old.height, old.fps) {
        r.needs_restart.push(format!("output {}x{}@{} (running {}x{}@{})", new.width, new.height, new.fps, old.width, old.height, old.fps));
    }
    if new.fit != old.fit {
        r.needs_restart.push(format!("output fit {} (running {})", new.fit.name(), old.fit.name()));
    }
    let same_kind = matches!((&old.driver, &new.driver), (DriverSpec::Source(_), DriverSpec::Source(_)) | (DriverSpec::Embedded { .. }, DriverSpec::Embedded { .. }));
    if !same_kind {
        r.needs_restart.push("driver kind (embedded <-> source)".into());
    }

    // Source, then face (a new source restarts the face track anyway).
    if same_kind && new.driver != old.driver {
        if let Some((factory, live)) = new.source_factory() {
            match handle.replace_source(factory, live) {
                Ok(()) => {
                    r.applied.push("source".into());
                    r.running.driver = new.driver.clone();
                }
                Err(e) => r.failed.push(format!("source: {e}")),
            }
        } else {
            // Embedded driver with another frame count: nothing live to change.
            r.needs_restart.push("embedded driver frames".into());
        }
    }
    if matches!(new.driver, DriverSpec::Source(_)) && same_kind && (new.tracker != old.tracker || new.face_models != old.face_models) {
        match new.face_factory().and_then(|f| handle.replace_face(f)) {
            Ok(()) => {
                r.applied.push("face tracker".into());
                r.running.tracker = new.tracker;
                r.running.face_models = new.face_models.clone();
            }
            Err(e) => r.failed.push(format!("face tracker: {e}")),
        }
    }

    // Generator: avatar file, runtime, retargeting, easing, calibration.
    let gen_changed: Vec<&str> = [
        (new.avatar != old.avatar, "avatar"),
        (new.runtime != old.runtime, "runtime"),
        (new.retarget != old.retarget, "retarget"),
        (new.calibration != old.calibration, "calibration"),
        (new.ease != old.ease, "easing"),
    ]
    .into_iter()
    .filter_map(|(c, n)| c.then_some(n))
    .collect();
    if !gen_changed.is_empty() {
        match handle.reconfigure_generator(&new.avatar, gen_settings(new)) {
            Ok(()) => {
                r.applied.push(gen_changed.join("+"));
                r.running.avatar = new.avatar.clone();
                r.running.runtime = new.runtime.clone();
                r.running.retarget = new.retarget.clone();
                r.running.calibration = new.calibration.clone();
                r.running.ease = new.ease;
            }
            Err(e) => r.failed.push(format!("{}: {e}", gen_changed.join("+"))),
        }
    }

    // Sink: only when it changed, so an unchanged v4l2loopback device is never reopened.
    if new.sink != old.sink {
        match handle.replace_sink(new.sink_factory()) {
            Ok(()) => {
                r.applied.push("output".into());
                r.running.sink = new.sink.clone();
            }
            Err(e) => r.failed.push(format!("output: {e}")),
        }
    }

    // Service: HTTP, watcher, liveness thresholds. The watcher follows the running avatar.
    let mut opts = service_opts.clone();
    if opts.watch_avatar.is_some() {
        opts.watch_avatar = Some(r.running.avatar.clone());
    }
    match service.reconfigure(&opts) {
        Ok(changed) => r.applied.extend(changed),
        Err(e) => r.failed.push(format!("service: {e}")),
    }

    if r.applied.is_empty() && !r.failed.is_empty() {
        return Err(Error::Invalid(r.summary()));
    }
    Ok(r)
}
