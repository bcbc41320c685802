//! Signal handling for the daemon: SIGHUP asks for a reload (config + avatar, keeping the
//! virtual camera open), SIGTERM/SIGINT ask for a clean drain-and-exit. Signals arrive on a
//! signal-hook iterator thread and are forwarded as `ServiceEvent`s so the run loop can select on
//! one channel together with the avatar watcher.
use crate::error::{Error, Result};
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

/// What the run loop is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceEvent {
    /// SIGHUP: re-read the config and reload the avatar without closing the virtual camera.
    Reload,
    /// SIGTERM/SIGINT: stop capturing, drain the stages, exit 0.
    Shutdown,
    /// The avatar file was replaced on disk and the new file passed validation.
    AvatarChanged(PathBuf),
}

/// Maps a signal number to its event; `None` for signals we do not handle.
pub fn event_for(sig: i32) -> Option<ServiceEvent> {
    match sig {
        SIGHUP => Some(ServiceEvent::Reload),
        SIGTERM | SIGINT => Some(ServiceEvent::Shutdown),
        _ => None,
    }
}

/// The signal-forwarding thread. `stop` (or drop) unregisters the handlers.
pub struct SignalListener {
    handle: Handle,
    thread: Mutex<Option<JoinHandle<()>>>,
    forced: Vec<signal_hook::SigId>,
}

impl SignalListener {
    /// Installs the handlers and forwards events into `tx`. A second SIGTERM/SIGINT while the
    /// first is still being handled exits at once with status 1, so a hung drain can always be
    /// interrupted from a terminal.
    pub fn install(tx: Sender<ServiceEvent>) -> Result<SignalListener> {
        let mut l = Self::install_forwarding(tx)?;
        let term = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            // Order matters: the conditional exit must see the flag as set by the *previous* signal.
            let a = signal_hook::flag::register_conditional_shutdown(sig, 1, term.clone()).map_err(sig_err)?;
            let b = signal_hook::flag::register(sig, term.clone()).map_err(sig_err)?;
            l.forced.extend([a, b]);
        }
        Ok(l)
    }

    /// Only forwards events, without the forced exit on a second signal (tests).
    pub fn install_forwarding(tx: Sender<ServiceEvent>) -> Result<SignalListener> {
        let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(sig_err)?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("svc-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if let Some(ev) = event_for(sig) {
                        log::info!("signal {sig}: {ev:?}");
                        if tx.send(ev).is_err() {
                            break; // the run loop is gone
                        }
                    }
                }
            })
            .map_err(|e| Error::Invalid(format!("cannot start the signal thread: {e}")))?;
        Ok(SignalListener { handle, thread: Mutex::new(Some(thread)), forced: Vec::new() })
    }

    /// Unregisters the handlers and joins the thread (idempotent).
    pub fn stop(&self) {
        self.handle.close();
        for id in &self.forced {
            signal_hook::low_level::unregister(*id);
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for SignalListener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sig_err(e: std::io::Error) -> Error {
    Error::Invalid(format!("cannot install signal handlers: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn raised_signals_become_events() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let l = SignalListener::install_forwarding(tx).unwrap();
        signal_hook::low_level::raise(SIGHUP).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(ServiceEvent::Reload));
        // Safe to raise SIGTERM at ourselves: the handler replaced the default action.
        signal_hook::low_level::raise(SIGTERM).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(ServiceEvent::Shutdown));
        signal_hook::low_level::raise(SIGINT).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(ServiceEvent::Shutdown));
        l.stop();
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "no events after stop");
    }

    #[test]
    fn mapping() {
        assert_eq!(event_for(SIGHUP), Some(ServiceEvent::Reload));
        assert_eq!(event_for(SIGINT), Some(ServiceEvent::Shutdown));
        assert_eq!(event_for(signal_hook::consts::SIGUSR1), None);
    }
}
