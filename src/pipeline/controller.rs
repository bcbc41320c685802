//! The generator stage's controls as a cloneable handle: live avatar switch (cross-faded),
//! pause/resume and "neutral now" for the control API, and the plain reloads of SIGHUP and the
//! avatar watcher. Each request waits for the stage's answer, bounded so that a stage that stopped
//! answering gives an error instead of a hang.
use super::{Control, GenSettings};
use crate::error::{Error, Result};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::path::Path;
use std::time::Duration;

/// See the module documentation.
#[derive(Clone)]
pub struct Controller {
    control: Sender<Control>,
    reload_timeout: Duration,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("reload_timeout", &self.reload_timeout).finish()
    }
}

impl Controller {
    pub(super) fn new(control: Sender<Control>, reload_timeout: Duration) -> Controller {
        Controller { control, reload_timeout }
    }

    /// Loads the avatar at `path` beside the running one and swaps it in (with `settings`, the
    /// generator's too); `crossfade`: fade from the old avatar's last frame (a live switch). On
    /// failure or after the reload timeout the running avatar stays and the error is returned.
    pub fn reload(&self, path: &Path, settings: Option<GenSettings>, crossfade: bool) -> Result<()> {
        let (tx, rx) = bounded(1);
        self.send(Control::Reload(path.to_path_buf(), settings, crossfade, tx))?;
        // The generator answers by its own timeout; this one only guards against a stage that
        // stopped answering altogether.
        self.wait(rx, self.reload_timeout + Duration::from_secs(10), "the reload")
    }

    /// Switches the live avatar with a short cross-fade; no output frame is skipped (the old
    /// avatar renders until the new one is loaded).
    pub fn select(&self, path: &Path) -> Result<()> {
        self.reload(path, None, true)
    }

    /// Holds the still of the portrait (fading in) or resumes the live face (fading out).
    pub fn pause(&self, paused: bool) -> Result<()> {
        let (tx, rx) = bounded(1);
        self.send(Control::Pause(paused, tx))?;
        self.wait(rx, Duration::from_secs(10), "pause")
    }

    /// Learns the driver's neutral again from the next steady frames.
    pub fn neutral_now(&self) -> Result<()> {
        let (tx, rx) = bounded(1);
        self.send(Control::NeutralNow(tx))?;
        self.wait(rx, Duration::from_secs(10), "neutral now")
    }

    /// Eye contact on or off (the irises glide to their new place over a few frames).
    pub fn eye_contact(&self, on: bool) -> Result<()> {
        let (tx, rx) = bounded(1);
        self.send(Control::EyeContact(on, tx))?;
        self.wait(rx, Duration::from_secs(10), "eye contact")
    }

    fn send(&self, c: Control) -> Result<()> {
        self.control
            .send_timeout(c, Duration::from_secs(5))
            .map_err(|_| Error::Invalid("the generator stage does not take requests (not running, or busy)".into()))
    }

    fn wait(&self, rx: Receiver<Result<()>>, limit: Duration, what: &str) -> Result<()> {
        match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(Error::Invalid(format!("the generator stage did not answer {what} within {:.0} s", limit.as_secs_f64()))),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Invalid(format!("the generator stage ended during {what}"))),
        }
    }
}
