//! Running puppetcam as a background service: systemd readiness/watchdog notifications, signal
//! handling, the local HTTP health/metrics/preview server, an avatar-file watcher and the
//! `install-service` helper. `Service` bundles them so that `puppetcam run` needs only a few lines.
pub mod http;
pub mod install;
pub mod liveness;
pub mod notify;
pub mod reload;
pub mod signals;
pub mod watch;

use crate::error::Result;
use crate::stats::PipelineStats;
use parking_lot::Mutex;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use crate::config::ServiceConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use http::{HttpOptions, HttpServer};
pub use liveness::{Liveness, LivenessConfig};
pub use notify::{Notifier, Watchdog};
pub use signals::{ServiceEvent, SignalListener};
pub use watch::ModelWatcher;

/// What `Service::start` turns on. `Default` is what a daemon under systemd wants, minus HTTP and
/// the watcher, which need addresses/paths from the config.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// HTTP server settings; `None` disables it (`[service] enabled = false`).
    pub http: Option<HttpOptions>,
    /// Install SIGHUP/SIGTERM/SIGINT handlers (off in tests that share a process).
    pub handle_signals: bool,
    /// Talk sd_notify when `NOTIFY_SOCKET` is set (a no-op otherwise).
    pub notify: bool,
    /// Avatar file to watch for replacement; `None` disables the watcher.
    pub watch_avatar: Option<PathBuf>,
    /// How often the watcher looks at the file.
    pub watch_interval: Duration,
    /// What a replaced avatar must pass before a reload is requested: the generator's contract
    /// check (metadata + tensor shapes, no inference), so a broken file never reaches the pipeline.
    pub avatar_check: fn(&Path) -> Result<()>,
    /// When a stage counts as stalled and a lost source as unhealthy (`[service]`
    /// `stall_timeout_s`, `source_lost_timeout_s`).
    pub liveness: LivenessConfig,
    /// The control API served under `/api/` (docs/api.md); `None`: not served.
    pub control: Option<Arc<crate::control::ControlHub>>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            http: None,
            handle_signals: true,
            notify: true,
            watch_avatar: None,
            watch_interval: Duration::from_secs(2),
            avatar_check: contract_check,
            liveness: LivenessConfig::default(),
            control: None,
        }
    }
}

/// The default `avatar_check`: a warp avatar's cheap structural check (header, blob table and
/// image dimensions against every limit; nothing decoded, so a crafted file costs the watcher
/// nothing; the full load then runs in the generator stage under a timeout), or
/// `generator::validate_contract` (without the metadata) for a generator ONNX.
pub fn contract_check(path: &Path) -> Result<()> {
    if crate::avatar::file::path_is_warp_avatar(path) {
        return crate::avatar::file::check_file(path).map(|_| ());
    }
    crate::generator::validate_contract(path).map(|_| ())
}

/// Why `Service::run_loop` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopExit {
    /// SIGTERM/SIGINT: drain and exit 0.
    Shutdown,
    /// The pipeline stopped by itself (fatal error or end of a finite input): exit with its result.
    PipelineEnded,
}

impl ServiceOptions {
    /// Options for `puppetcam run` from the `[service]` config values (`enabled`, `bind`, and
    /// `allow_remote` once the config has it): HTTP on `bind` when enabled, signals and sd_notify
    /// on, and the avatar file watched when `watch_avatar` is set. Refuses a non-loopback bind
    /// unless `allow_remote`.
    pub fn for_daemon(http_enabled: bool, bind: std::net::SocketAddr, allow_remote: bool, watch_avatar: Option<PathBuf>) -> Result<ServiceOptions> {
        let http = if http_enabled {
            let h = HttpOptions { bind, allow_remote, ..HttpOptions::default() };
            h.validate()?;
            Some(h)
        } else {
            None
        };
        Ok(ServiceOptions { http, watch_avatar, ..ServiceOptions::default() })
    }

    /// Options for `puppetcam run` from the whole `[service]` section; `avatar` is the file the
    /// pipeline runs (watched when `watch_avatar`). `http_override` (`--http ADDR`) turns the
    /// server on at that address whatever `enabled`/`bind` say.
    pub fn from_config(cfg: &ServiceConfig, avatar: &Path, http_override: Option<std::net::SocketAddr>) -> Result<ServiceOptions> {
        let (enabled, bind) = match http_override {
            Some(addr) => (true, addr),
            None => (cfg.enabled, cfg.bind),
        };
        let http = if enabled {
            let h = HttpOptions {
                bind,
                allow_remote: cfg.allow_remote,
                preview_fps: cfg.preview_fps as f64,
                max_preview_clients: cfg.max_preview_clients as usize,
                ..HttpOptions::default()
            };
            h.validate()?;
            Some(h)
        } else {
            None
        };
        let watch_avatar = cfg.watch_avatar.then(|| avatar.to_path_buf());
        let liveness = LivenessConfig {
            stall_after: Duration::from_secs_f32(cfg.stall_timeout_s),
            source_lost_after: Duration::from_secs_f32(cfg.source_lost_timeout_s),
        };
        Ok(ServiceOptions { http, watch_avatar, liveness, ..ServiceOptions::default() })
    }
}

/// The running service side of the daemon. Dropping it stops everything it started.
pub struct Service {
    events_tx: Sender<ServiceEvent>,
    events_rx: Receiver<ServiceEvent>,
    liveness: Arc<Liveness>,
    notifier: Notifier,
    watchdog: Option<Watchdog>,
    stats: Arc<PipelineStats>,
    /// Behind locks so a SIGHUP reload (inside `run_loop`) can restart them.
    opts: Mutex<ServiceOptions>,
    http: Mutex<Option<HttpServer>>,
    signals: Option<SignalListener>,
    watcher: Mutex<Option<ModelWatcher>>,
}

impl Service {
    /// Starts the service helpers around a pipeline that writes into `stats`.
    pub fn start(opts: &ServiceOptions, stats: Arc<PipelineStats>) -> Result<Service> {
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let liveness = Liveness::start(stats.clone(), opts.liveness);
        let notifier = if opts.notify { Notifier::from_env() } else { Notifier::disabled() };
        let watchdog = Some(Watchdog::start(notifier.clone(), liveness.clone(), stats.clone()));
        let http = match &opts.http {
            Some(h) => Some(HttpServer::start_with_control(h, stats.clone(), liveness.clone(), opts.control.clone())?),
            None => None,
        };
        let signals = if opts.handle_signals { Some(SignalListener::install(events_tx.clone())?) } else { None };
        let watcher = Self::start_watcher(opts, &events_tx);
        Ok(Service {
            events_tx,
            events_rx,
            liveness,
            notifier,
            watchdog,
            stats,
            opts: Mutex::new(opts.clone()),
            http: Mutex::new(http),
            signals,
            watcher: Mutex::new(watcher),
        })
    }

    fn start_watcher(opts: &ServiceOptions, tx: &Sender<ServiceEvent>) -> Option<ModelWatcher> {
        opts.watch_avatar.as_ref().map(|p| ModelWatcher::start(p.clone(), opts.watch_interval, opts.avatar_check, tx.clone()))
    }

    /// Applies new options (SIGHUP): restarts the HTTP server when its settings changed, points
    /// the avatar watcher at the new file, takes the new liveness thresholds. Returns what changed.
    /// A new server that cannot start (invalid options, address in use) returns the error and
    /// leaves the old one running with its options.
    pub fn reconfigure(&self, new: &ServiceOptions) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        let mut opts = self.opts.lock();
        if format!("{:?}", new.http) != format!("{:?}", opts.http) {
            let mut http = self.http.lock();
            // The new server runs before the old one stops. On the same address it takes over the
            // old listening socket (`restart`) rather than binding again, which would fail while
            // the old one listens; shutting the old one down first could leave no server at all.
            let started = match (&*http, &new.http) {
                (_, None) => None,
                (Some(old), Some(h)) => Some(old.restart(h, self.stats.clone(), self.liveness.clone(), opts.control.clone())?),
                (None, Some(h)) => Some(HttpServer::start_with_control(h, self.stats.clone(), self.liveness.clone(), opts.control.clone())?),
            };
            if let Some(old) = std::mem::replace(&mut *http, started) {
                old.shutdown();
            }
            changed.push(match http.as_ref() {
                Some(h) => format!("http on {}", h.local_addr()),
                None => "http off".into(),
            });
            opts.http = new.http.clone();
        }
        if new.watch_avatar != opts.watch_avatar {
            let mut w = self.watcher.lock();
            if let Some(old) = w.take() {
                old.stop();
            }
            *w = Self::start_watcher(new, &self.events_tx);
            changed.push(match &new.watch_avatar {
                Some(p) => format!("watching {}", p.display()),
                None => "avatar watcher off".into(),
            });
            opts.watch_avatar = new.watch_avatar.clone();
        }
        if new.liveness != opts.liveness {
            self.liveness.set_config(new.liveness);
            changed.push("liveness timeouts".into());
            opts.liveness = new.liveness;
        }
        Ok(changed)
    }

    /// Waits up to `timeout` for the next signal/watcher event; `None` on timeout so the run loop
    /// can also check whether the pipeline ended on its own.
    pub fn next_event(&self, timeout: Duration) -> Option<ServiceEvent> {
        match self.events_rx.recv_timeout(timeout) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// A sender for injecting events (tests, or a future control endpoint).
    pub fn event_sender(&self) -> Sender<ServiceEvent> {
        self.events_tx.clone()
    }

    /// The run loop of `puppetcam run`: waits for signals/watcher events until SIGTERM/SIGINT or
    /// until `pipeline_finished()` says the pipeline ended by itself. `reload(None)` is called for
    /// SIGHUP (re-read config + avatar), `reload(Some(path))` when the watched avatar file was
    /// replaced by a valid one; it returns a short description for systemd's status line. A failed
    /// reload is logged and the pipeline keeps running with what it had.
    pub fn run_loop(
        &self,
        mut pipeline_finished: impl FnMut() -> bool,
        mut reload: impl FnMut(Option<&std::path::Path>) -> Result<String>,
    ) -> LoopExit {
        loop {
            if pipeline_finished() {
                return LoopExit::PipelineEnded;
            }
            let ev = match self.next_event(Duration::from_millis(250)) {
                Some(ev) => ev,
                None => continue,
            };
            let what = match &ev {
                ServiceEvent::Shutdown => return LoopExit::Shutdown,
                ServiceEvent::Reload => None,
                ServiceEvent::AvatarChanged(p) => Some(p.as_path()),
            };
            self.reloading();
            match reload(what) {
                Ok(desc) => {
                    log::info!("reload done: {desc}");
                    self.reloaded(&desc);
                }
                Err(e) => {
                    log::error!("reload failed, keeping the running configuration: {e}");
                    self.reloaded(&format!("reload failed: {e}"));
                }
            }
        }
    }

    /// Call before reloading config/avatar: tells systemd (RELOADING=1 + MONOTONIC_USEC).
    pub fn reloading(&self) {
        self.notifier.reloading();
    }

    /// Call after a reload finished (successfully or not): READY=1 again plus a status line.
    pub fn reloaded(&self, outcome: &str) {
        self.notifier.ready_after_reload(outcome);
    }

    /// The address the HTTP server listens on, when enabled.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.lock().as_ref().map(|h| h.local_addr())
    }

    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// Sends STOPPING=1; call before draining the pipeline. The watchdog keeps pinging while the
    /// pipeline drains (bounded by TimeoutStopSec) so a slow drain is not mistaken for a hang.
    pub fn stopping(&self) {
        self.notifier.stopping();
        if let Some(w) = &self.watchdog {
            w.set_draining();
        }
    }

    /// Stops every helper thread (HTTP, watcher, watchdog, signal listener).
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.stop();
        }
        if let Some(w) = self.watcher.lock().take() {
            w.stop();
        }
        if let Some(h) = self.http.lock().take() {
            h.shutdown();
        }
        if let Some(s) = self.signals.take() {
            s.stop();
        }
        self.liveness.stop();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn run_loop_reloads_survives_a_failed_reload_and_stops() {
        let stats = Arc::new(PipelineStats::default());
        let opts = ServiceOptions { handle_signals: false, notify: false, ..ServiceOptions::default() };
        let svc = Service::start(&opts, stats).unwrap();
        let tx = svc.event_sender();
        tx.send(ServiceEvent::Reload).unwrap();
        tx.send(ServiceEvent::AvatarChanged("/a.onnx".into())).unwrap();
        tx.send(ServiceEvent::Shutdown).unwrap();
        let mut seen = Vec::new();
        let exit = svc.run_loop(
            || false,
            |p| {
                seen.push(p.map(|p| p.to_path_buf()));
                if p.is_some() {
                    Err(crate::Error::Invalid("broken".into()))
                } else {
                    Ok("ok".into())
                }
            },
        );
        assert_eq!(exit, LoopExit::Shutdown);
        assert_eq!(seen, vec![None, Some(PathBuf::from("/a.onnx"))]);

        let ended = AtomicBool::new(false);
        tx.send(ServiceEvent::Reload).unwrap();
        let exit = svc.run_loop(|| ended.load(Ordering::Relaxed), |_| {
            ended.store(true, Ordering::Relaxed);
            Ok(String::new())
        });
        assert_eq!(exit, LoopExit::PipelineEnded);
        svc.shutdown();
    }

    #[test]
    fn daemon_options_validate_the_bind_address() {
        let a = |s: &str| s.parse().unwrap();
        assert!(ServiceOptions::for_daemon(true, a("127.0.0.1:8765"), false, None).unwrap().http.is_some());
        assert!(ServiceOptions::for_daemon(false, a("0.0.0.0:8765"), false, None).unwrap().http.is_none());
        let e = ServiceOptions::for_daemon(true, a("0.0.0.0:8765"), false, None).unwrap_err();
        assert!(e.to_string().contains("service.allow_remote"), "{e}");
        assert!(ServiceOptions::for_daemon(true, a("0.0.0.0:8765"), true, None).is_ok());
        assert!(ServiceOptions::for_daemon(true, a("[::1]:8765"), false, None).is_ok());
    }

    #[test]
    fn watcher_uses_the_contract_check() {
        let fixture = |n: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(n);
        assert!(contract_check(&fixture("generator_ok.onnx")).is_ok());
        // A non-empty file that `basic_validate` accepts but the contract refuses.
        assert!(watch::basic_validate(&fixture("generator_missing_crop_box.onnx")).is_ok());
        assert!(contract_check(&fixture("generator_missing_crop_box.onnx")).is_err());
        // Warp avatars: the bundled one passes, a truncated copy is refused.
        let pcav = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/default_avatar.pcav");
        assert!(contract_check(&pcav).is_ok());
        let cut = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(&pcav).unwrap();
        std::fs::write(cut.path().join("cut.pcav"), &bytes[..bytes.len() / 2]).unwrap();
        assert!(contract_check(&cut.path().join("cut.pcav")).unwrap_err().to_string().contains("cut.pcav"));

        // End to end with the default options: a broken replacement raises no event, a valid one does.
        let dir = tempfile::tempdir().unwrap();
        let avatar = dir.path().join("avatar.onnx");
        std::fs::copy(fixture("generator_bad_input_shape.onnx"), &avatar).unwrap();
        let opts = ServiceOptions {
            handle_signals: false,
            notify: false,
            watch_avatar: Some(avatar.clone()),
            watch_interval: Duration::from_millis(30),
            ..ServiceOptions::default()
        };
        let svc = Service::start(&opts, Arc::new(PipelineStats::default())).unwrap();
        let replace = |src: &Path| {
            let tmp = dir.path().join("avatar.tmp");
            std::fs::copy(src, &tmp).unwrap();
            std::fs::rename(&tmp, &avatar).unwrap();
        };
        replace(&fixture("generator_missing_crop_box.onnx"));
        assert_eq!(svc.next_event(Duration::from_millis(600)), None, "a contract-breaking avatar must not trigger a reload");
        replace(&fixture("generator_ok.onnx"));
        assert_eq!(svc.next_event(Duration::from_secs(10)), Some(ServiceEvent::AvatarChanged(avatar.clone())));
        svc.shutdown();
    }

    #[test]
    fn service_section_reaches_the_options() {
        let cfg = crate::config::Config::from_toml(
            "[service]\nbind = \"0.0.0.0:9100\"\nallow_remote = true\npreview_fps = 3.5\nmax_preview_clients = 7\nwatch_avatar = true\n",
        )
        .unwrap();
        let o = ServiceOptions::from_config(&cfg.service, Path::new("/a/b.onnx"), None).unwrap();
        let h = o.http.as_ref().expect("enabled by default");
        assert_eq!(h.bind, "0.0.0.0:9100".parse().unwrap());
        assert!(h.allow_remote);
        assert_eq!((h.preview_fps, h.max_preview_clients), (3.5, 7));
        assert_eq!(o.watch_avatar, Some(PathBuf::from("/a/b.onnx")));

        let cfg = crate::config::Config::from_toml("[service]\nenabled = false\nwatch_avatar = false\n").unwrap();
        let o = ServiceOptions::from_config(&cfg.service, Path::new("/a/b.onnx"), None).unwrap();
        assert!(o.http.is_none() && o.watch_avatar.is_none());
        // --http turns the server on even when the config has it off; the remote check still applies.
        let o = ServiceOptions::from_config(&cfg.service, Path::new("/a/b.onnx"), Some("127.0.0.1:0".parse().unwrap())).unwrap();
        assert!(o.http.is_some());
        assert!(ServiceOptions::from_config(&cfg.service, Path::new("/a"), Some("0.0.0.0:1".parse().unwrap())).is_err());
        // Defaults match HttpOptions' own.
        let d = ServiceOptions::from_config(&crate::config::Config::default().service, Path::new("/a"), None).unwrap();
        let (dh, hd) = (d.http.unwrap(), HttpOptions::default());
        assert_eq!((dh.bind, dh.allow_remote, dh.preview_fps, dh.max_preview_clients), (hd.bind, hd.allow_remote, hd.preview_fps, hd.max_preview_clients));
    }
}
