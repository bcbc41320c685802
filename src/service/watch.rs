//! Avatar-model watcher: polls the avatar file's metadata and, when it changed, waits for it to
//! settle (a copy in progress keeps changing size/mtime), hashes it to ignore plain `touch`es,
//! validates it and only then asks the run loop to reload. A broken replacement never reaches the
//! pipeline: it is logged and the running avatar stays.
use super::signals::ServiceEvent;
use crate::error::{Error, Result};
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::hash::Hasher;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// The cheap identity of a file version.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    len: u64,
    mtime: Option<SystemTime>,
    ino: u64,
}

fn meta(path: &Path) -> Option<Meta> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Meta { len: m.len(), mtime: m.modified().ok(), ino: m.ino() })
}

/// Content hash (SipHash via std's DefaultHasher, fixed keys: stable within one process, which
/// is all a change detector needs).
pub fn hash_file(path: &Path) -> Result<u64> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    Ok(h.finish())
}

/// Minimal validation when the caller has nothing better: a readable, non-empty regular file.
/// `puppetcam run` should pass the generator's contract check instead.
pub fn basic_validate(path: &Path) -> Result<()> {
    let m = std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if !m.is_file() || m.len() == 0 {
        return Err(Error::Model { path: path.to_path_buf(), msg: "not a non-empty regular file".into() });
    }
    Ok(())
}

/// What one poll found.
#[derive(Debug, PartialEq)]
pub enum PollOutcome {
    Unchanged,
    /// Metadata changed since the last poll; waiting for it to stay put for one interval.
    Settling,
    /// A new, valid version.
    Changed,
    /// A new version that failed validation (reported once per content).
    Rejected(String),
    /// The file is missing (mid-replacement or deleted); the running avatar stays.
    Missing,
}

/// The watcher's state machine, separate from the thread so tests can drive it step by step.
pub struct ChangeDetector {
    path: PathBuf,
    /// Metadata of the last version fully evaluated (accepted or rejected).
    seen_meta: Option<Meta>,
    accepted_hash: Option<u64>,
    pending: Option<Meta>,
    rejected_hash: Option<u64>,
}

impl ChangeDetector {
    /// Remembers the current version of `path` as the one the pipeline runs.
    pub fn new(path: PathBuf) -> ChangeDetector {
        let seen_meta = meta(&path);
        let accepted_hash = seen_meta.as_ref().and_then(|_| hash_file(&path).ok());
        ChangeDetector { path, seen_meta, accepted_hash, pending: None, rejected_hash: None }
    }

    pub fn poll(&mut self, validate: &dyn Fn(&Path) -> Result<()>) -> PollOutcome {
        let Some(m) = meta(&self.path) else {
            self.pending = None;
            return PollOutcome::Missing;
        };
        if Some(&m) == self.seen_meta.as_ref() {
            self.pending = None;
            return PollOutcome::Unchanged;
        }
        if self.pending.as_ref() != Some(&m) {
            // First sight of this version (or still being written): look again next time.
            self.pending = Some(m);
            return PollOutcome::Settling;
        }
        self.pending = None;
        let hash = match hash_file(&self.path) {
            Ok(h) => h,
            Err(_) => return PollOutcome::Missing,
        };
        self.seen_meta = Some(m);
        if Some(hash) == self.accepted_hash || Some(hash) == self.rejected_hash {
            // Touched or rewritten with identical bytes: nothing new to reload or report.
            return PollOutcome::Unchanged;
        }
        match validate(&self.path) {
            Ok(()) => {
                self.accepted_hash = Some(hash);
                self.rejected_hash = None;
                PollOutcome::Changed
            }
            Err(e) => {
                self.rejected_hash = Some(hash);
                PollOutcome::Rejected(e.to_string())
            }
        }
    }
}

/// Polls the avatar file on its own thread and sends `ServiceEvent::AvatarChanged` for each new
/// valid version.
pub struct ModelWatcher {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ModelWatcher {
    pub fn start<V>(path: PathBuf, interval: Duration, validate: V, tx: Sender<ServiceEvent>) -> ModelWatcher
    where
        V: Fn(&Path) -> Result<()> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("svc-model-watch".into())
            .spawn(move || {
                let mut det = ChangeDetector::new(path.clone());
                while !stop2.load(Ordering::Relaxed) {
                    sleep_unless(&stop2, interval);
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    // A panic in a check (a bug, odd input) must not end hot reload silently:
                    // it is logged, the version is treated as rejected, and polling goes on.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| det.poll(&validate)))
                        .unwrap_or_else(|p| PollOutcome::Rejected(format!("the check panicked: {}", crate::error::panic_message(p.as_ref()))));
                    match outcome {
                        PollOutcome::Changed => {
                            log::info!("avatar {} changed on disk: requesting a reload", path.display());
                            if tx.send(ServiceEvent::AvatarChanged(path.clone())).is_err() {
                                break;
                            }
                        }
                        PollOutcome::Rejected(e) => {
                            log::error!("avatar {} was replaced by an invalid file, keeping the running one: {e}", path.display())
                        }
                        _ => {}
                    }
                }
            })
            .ok();
        ModelWatcher { stop, thread: Mutex::new(thread) }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for ModelWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps `d` in short steps so `stop` is honoured quickly.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, bytes: &[u8]) {
        // Replace atomically like `install`/`mv` would, giving a new inode.
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, p).unwrap();
    }

    fn must_start_with_x(p: &Path) -> Result<()> {
        let b = std::fs::read(p).unwrap();
        if b.first() == Some(&b'x') {
            Ok(())
        } else {
            Err(Error::Model { path: p.into(), msg: "bad magic".into() })
        }
    }

    #[test]
    fn detects_settles_validates_and_ignores_touch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("avatar.onnx");
        write(&p, b"x-one");
        let mut d = ChangeDetector::new(p.clone());
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Unchanged);

        write(&p, b"x-two");
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Settling);
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Changed);
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Unchanged);

        // Same bytes, new inode/mtime: no reload.
        write(&p, b"x-two");
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Settling);
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Unchanged);

        // Invalid replacement: rejected once, then quiet; the accepted version stays.
        write(&p, b"broken");
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Settling);
        assert!(matches!(d.poll(&must_start_with_x), PollOutcome::Rejected(m) if m.contains("bad magic")));
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Unchanged);
        write(&p, b"broken");
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Settling);
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Unchanged, "same broken bytes are reported once");
        // Going back to the accepted bytes after a rejection is not a change either.
        write(&p, b"x-two");
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Settling);
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Unchanged);

        std::fs::remove_file(&p).unwrap();
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Missing);
        write(&p, b"x-three");
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Settling);
        assert_eq!(d.poll(&must_start_with_x), PollOutcome::Changed);
    }

    #[test]
    fn thread_sends_avatar_changed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("avatar.onnx");
        write(&p, b"x-one");
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = ModelWatcher::start(p.clone(), Duration::from_millis(20), must_start_with_x, tx);
        write(&p, b"not valid");
        std::thread::sleep(Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "an invalid file must not trigger a reload");
        write(&p, b"x-two");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(ServiceEvent::AvatarChanged(p.clone())));
        w.stop();
    }

    #[test]
    fn a_panicking_check_does_not_end_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("avatar.onnx");
        write(&p, b"x-one");
        let (tx, rx) = crossbeam_channel::unbounded();
        let check = |p: &Path| -> Result<()> {
            if std::fs::read(p).unwrap() == b"boom" {
                panic!("test: the check panics");
            }
            must_start_with_x(p)
        };
        let w = ModelWatcher::start(p.clone(), Duration::from_millis(20), check, tx);
        write(&p, b"boom");
        std::thread::sleep(Duration::from_millis(300));
        write(&p, b"x-two");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(ServiceEvent::AvatarChanged(p.clone())), "the watcher must survive the panic");
        w.stop();
    }
}
