//! Durable, atomic file writes for everything puppetcam saves (avatars, calibration profiles,
//! systemd units): a uniquely named temporary file in the target's directory, written and
//! fsynced, renamed over the target, then the directory fsynced so the rename itself survives a
//! power cut. A failed write removes its temporary file; two writers never share one. Readers
//! (the avatar watcher, systemd) see the old file or the new one, never half of either.
use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically and durably, creating the parent directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, false)
}

/// [`write_atomic`] for a secret: the file stays readable by its owner only (0600), from its
/// first byte on disk to its final name.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, true)
}

fn write_atomic_mode(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Hidden and unique (random suffix); dropped (deleted) on any error below.
    let mut tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".part").tempfile_in(dir).map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    // The temporary file is private (0600); the target gets the usual mode for new files,
    // unless it is a secret.
    if !private {
        set_default_mode(tmp.as_file());
    }
    tmp.persist(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e.error })?;
    // The rename is durable only once the directory entry is on disk.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// 0666 minus the process umask, as `File::create` would give. The umask is read from
/// /proc (setting it to read it back would race with other threads creating files).
fn set_default_mode(f: &std::fs::File) {
    use std::os::unix::fs::PermissionsExt;
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok())))
        .unwrap_or(0o022);
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666 & !mask));
}

/// Refuses to replace an existing file unless `force` (the error says how).
pub fn refuse_overwrite(path: &Path, force: bool, what: &str) -> Result<()> {
    if !force && path.exists() {
        return Err(Error::Invalid(format!("{what} {} already exists; pass --force to replace it", path.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically_and_leave_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/avatar.pcav");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("avatar.pcav")], "temporary files left behind");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_ne!(mode, 0o600, "the target keeps the usual mode, not the temporary file's");
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file_and_keeps_the_old_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("profile.toml");
        write_atomic(&p, b"old").unwrap();
        // Renaming a file over a non-empty directory fails after the data was written.
        let blocker = d.path().join("blocked");
        std::fs::create_dir_all(blocker.join("x")).unwrap();
        assert!(write_atomic(&blocker, b"new").is_err());
        let mut names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, vec!["blocked", "profile.toml"]);
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }

    #[test]
    fn overwrite_needs_force() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.pcav");
        assert!(refuse_overwrite(&p, false, "avatar").is_ok());
        std::fs::write(&p, b"x").unwrap();
        let e = refuse_overwrite(&p, false, "avatar").unwrap_err().to_string();
        assert!(e.contains("already exists") && e.contains("--force"), "{e}");
        assert!(refuse_overwrite(&p, true, "avatar").is_ok());
    }
}
