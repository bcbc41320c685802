//! The control API's per-install token: 32 random bytes as hex, generated on the daemon's first
//! start and stored readable by its owner only (0600) beside the config file (or where
//! `[service] token_file` says; in the data directory when there is no config file or its
//! directory is read-only, as /etc is under the system unit's `ProtectSystem=strict`).
//! `puppetcam ctl` reads it from the same places, so only accounts that can read the file can
//! act without the page.
use std::io::Read;
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "control.token";

/// Where the token may be, in the order they are tried: `[service] token_file`, else beside the
/// config file, then in the data directory.
pub fn candidates(explicit: Option<&Path>, config: Option<&Path>, data_dir: &Path) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut v = Vec::new();
    if let Some(dir) = config.and_then(Path::parent) {
        v.push(if dir.as_os_str().is_empty() { PathBuf::from(TOKEN_FILE) } else { dir.join(TOKEN_FILE) });
    }
    v.push(data_dir.join(TOKEN_FILE));
    v
}

/// The first readable token among `cands` (`ctl`).
pub fn read(cands: &[PathBuf]) -> Option<(String, PathBuf)> {
    cands.iter().find_map(|p| {
        let t = std::fs::read_to_string(p).ok()?;
        let t = t.trim().to_string();
        is_well_formed(&t).then(|| (t, p.clone()))
    })
}

fn is_well_formed(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The daemon's token: read from the first candidate that has one, else generated and stored
/// at the first candidate that can be written. Errors say where it looked.
pub fn load_or_create(cands: &[PathBuf]) -> Result<(String, PathBuf), String> {
    if let Some(found) = read(cands) {
        warn_if_readable_by_others(&found.1);
        return Ok(found);
    }
    let token = generate()?;
    let mut tried = Vec::new();
    for p in cands {
        match crate::durable::write_atomic_private(p, format!("{token}\n").as_bytes()) {
            Ok(()) => {
                log::info!("control API: new token written to {} (owner-only; `puppetcam ctl` reads it)", p.display());
                return Ok((token, p.clone()));
            }
            Err(e) => tried.push(format!("{}: {e}", p.display())),
        }
    }
    Err(format!("cannot store the control token ({})", tried.join("; ")))
}

fn warn_if_readable_by_others(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(p) {
        if m.permissions().mode() & 0o077 != 0 {
            log::warn!("control token {} is readable by other accounts (mode {:o}); `chmod 600` it", p.display(), m.permissions().mode() & 0o777);
        }
    }
}

fn generate() -> Result<String, String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Compares a presented token with ours in time independent of where they differ.
pub fn matches(presented: &str, ours: &str) -> bool {
    let (a, b) = (presented.as_bytes(), ours.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_then_reused() {
        let d = tempfile::tempdir().unwrap();
        let cands = candidates(None, Some(&d.path().join("cfg/puppetcam.toml")), &d.path().join("data"));
        assert_eq!(cands, vec![d.path().join("cfg/control.token"), d.path().join("data/control.token")]);
        let (t, p) = load_or_create(&cands).unwrap();
        assert!(is_well_formed(&t));
        assert_eq!(p, cands[0]);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&cands).unwrap().0, t, "the same token on the next start");
        assert_eq!(read(&cands).unwrap().0, t);
        assert!(matches(&t, &t) && !matches(&t[1..], &t) && !matches(&"0".repeat(64), &t));
        // A directory that cannot be written: the next candidate.
        let ro = tempfile::tempdir().unwrap();
        let blocked = ro.path().join("file-not-dir");
        std::fs::write(&blocked, b"x").unwrap();
        let c2 = vec![blocked.join("control.token"), ro.path().join("data/control.token")];
        let (_, p2) = load_or_create(&c2).unwrap();
        assert_eq!(p2, c2[1]);
        // Garbage in a token file is not a token.
        std::fs::write(&cands[0], "hello\n").unwrap();
        assert_eq!(read(&cands[..1]), None);
    }
}
