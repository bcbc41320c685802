//! The avatar library: a directory of `.pcav` files, each with a JPEG thumbnail beside it
//! (`NAME.pcav`, `NAME.jpg`), in `$STATE_DIRECTORY/avatars` (system unit),
//! `$XDG_DATA_HOME/puppetcam/avatars` or `~/.local/share/puppetcam/avatars` (`[avatar] library`
//! overrides). The file name is the avatar's name in the API; its metadata (K, refiner,
//! created) is read from the file's header without decoding anything. The configured avatar
//! is listed too, read-only when it lives elsewhere. Every write is atomic (`durable`).
use super::ControlError;
use crate::avatar::file::{check_file, WarpAvatar, EXTENSION};
use crate::core::types::Frame;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Longest avatar name (file names stay short and the gallery readable).
pub const MAX_NAME: usize = 64;
/// Thumbnails fit in this square.
pub const THUMB_SIDE: u32 = 192;

/// An avatar as the API lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub name: String,
    /// `warp` (`.pcav`) or `generator` (ONNX).
    pub kind: &'static str,
    /// Number of shots (K).
    pub shots: usize,
    /// Has a learned refiner; `refiner` says which (fine-tuned or feed-forward).
    pub refined: bool,
    pub refiner: Option<String>,
    pub created: String,
    pub bytes: u64,
    /// The avatar of the config file (`[avatar] path`): read-only when outside the library.
    pub configured: bool,
    /// The file is in the library (renamable, deletable).
    pub in_library: bool,
    /// Why the file is not usable (then the other fields are empty).
    pub error: Option<String>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Library {
    dir: PathBuf,
    configured: Option<PathBuf>,
}

/// Checks a name given by a user: 1..=64 characters of letters, digits, space, `_`, `-`, `.`,
/// not starting with `.` or a space, not ending with a space. Returns it as it is.
pub fn validate_name(name: &str) -> Result<&str, ControlError> {
    let bad = |why: &str| ControlError::BadRequest(format!("avatar name {name:?}: {why}"));
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(bad(&format!("longer than {MAX_NAME} characters")));
    }
    if !name.chars().all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.')) {
        return Err(bad("use letters, digits, spaces, '_', '-' and '.' only"));
    }
    if name.starts_with(['.', ' ']) || name.ends_with(' ') {
        return Err(bad("must not start with '.' or a space, or end with a space"));
    }
    Ok(name)
}

/// The default library directory (see the module documentation).
pub fn default_dir() -> PathBuf {
    crate::paths::Env::current().data_dir().join("avatars")
}

impl Library {
    /// The library in `dir` (created when missing); `configured`: the config file's avatar.
    pub fn open(dir: &Path, configured: Option<&Path>) -> Result<Library, ControlError> {
        std::fs::create_dir_all(dir).map_err(|e| ControlError::Internal(format!("cannot create the avatar library {}: {e}", dir.display())))?;
        let configured = configured.map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf()));
        Ok(Library { dir: dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()), configured })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{EXTENSION}"))
    }

    fn thumb(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.jpg"))
    }

    /// Every avatar, library ones by name, then the configured one when it lives elsewhere.
    pub fn list(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                let Some(name) = p.file_stem().and_then(|s| s.to_str()).filter(|_| p.extension().is_some_and(|x| x == EXTENSION)) else {
                    continue;
                };
                if validate_name(name).is_err() || !p.is_file() {
                    continue;
                }
                out.push(self.entry(name, &p, true));
            }
        }
        out.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()));
        if let Some(c) = &self.configured {
            if !c.starts_with(&self.dir) {
                let name = c.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "configured".into());
                // A library avatar of the same name wins the name; the configured one is still
                // reachable as `configured`.
                let name = if out.iter().any(|e| e.name == name) { "configured".to_string() } else { name };
                out.push(self.entry(&name, c, false));
            }
        }
        out
    }

    fn entry(&self, name: &str, path: &Path, in_library: bool) -> Entry {
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let configured = self.configured.as_deref() == Some(path);
        let mut e = Entry {
            name: name.to_string(),
            kind: "warp",
            shots: 0,
            refined: false,
            refiner: None,
            created: String::new(),
            bytes,
            configured,
            in_library,
            error: None,
            path: path.to_path_buf(),
        };
        if crate::avatar::file::path_is_warp_avatar(path) {
            match check_file(path) {
                Ok(s) => {
                    e.shots = s.shots;
                    e.refined = s.refiner;
                    e.refiner = s.refiner_info;
                    e.created = s.created;
                }
                Err(err) => e.error = Some(err.to_string()),
            }
        } else {
            e.kind = "generator";
        }
        e
    }

    /// The entry called `name`, or a 404 naming it.
    pub fn find(&self, name: &str) -> Result<Entry, ControlError> {
        self.list().into_iter().find(|e| e.name == name).ok_or_else(|| ControlError::NotFound(format!("no avatar called {name:?}")))
    }

    /// Whether a library file of this name exists.
    pub fn exists(&self, name: &str) -> bool {
        self.file(name).exists()
    }

    /// Saves a new avatar and its thumbnail; refuses a name that is taken.
    pub fn add(&self, name: &str, av: &WarpAvatar) -> Result<PathBuf, ControlError> {
        validate_name(name)?;
        let path = self.file(name);
        if path.exists() {
            return Err(ControlError::Conflict(format!("an avatar called {name:?} exists already")));
        }
        av.save(&path).map_err(|e| ControlError::Internal(format!("cannot save {}: {e}", path.display())))?;
        if let Some(s) = av.shots.first() {
            if let Err(e) = write_thumbnail(&self.thumb(name), &s.image) {
                log::warn!("avatar library: no thumbnail for {name:?}: {e}");
            }
        }
        Ok(path)
    }

    /// The thumbnail's JPEG: the stored one, else made from the portrait (and stored when the
    /// avatar is in the library).
    pub fn thumbnail(&self, name: &str) -> Result<Vec<u8>, ControlError> {
        let e = self.find(name)?;
        let stored = self.thumb(&e.name);
        if e.in_library {
            if let Ok(b) = std::fs::read(&stored) {
                return Ok(b);
            }
        }
        if e.kind != "warp" || e.error.is_some() {
            return Err(ControlError::NotFound(format!("avatar {name:?} has no portrait to show")));
        }
        let av = WarpAvatar::load(&e.path).map_err(|err| ControlError::Internal(err.to_string()))?;
        let jpg = thumbnail_jpeg(&av.shots[0].image)?;
        if e.in_library {
            let _ = crate::durable::write_atomic(&stored, &jpg);
        }
        Ok(jpg)
    }

    /// Renames a library avatar: its file, its thumbnail and the name stored inside it. Returns
    /// the new path.
    pub fn rename(&self, old: &str, new: &str) -> Result<PathBuf, ControlError> {
        validate_name(new)?;
        let e = self.find(old)?;
        if !e.in_library {
            return Err(ControlError::Conflict(format!("avatar {old:?} is the configured file {} outside the library; rename it there", e.path.display())));
        }
        if old == new {
            return Ok(e.path);
        }
        let to = self.file(new);
        if to.exists() {
            return Err(ControlError::Conflict(format!("an avatar called {new:?} exists already")));
        }
        if e.kind == "warp" && e.error.is_none() {
            // The name inside the file is what the status page shows: rewrite it (atomically)
            // under the new file name, then remove the old file.
            let mut av = WarpAvatar::load(&e.path).map_err(|err| ControlError::Internal(err.to_string()))?;
            av.name = new.to_string();
            av.save(&to).map_err(|err| ControlError::Internal(format!("cannot save {}: {err}", to.display())))?;
            std::fs::remove_file(&e.path).map_err(|err| ControlError::Internal(format!("cannot remove {}: {err}", e.path.display())))?;
        } else {
            std::fs::rename(&e.path, &to).map_err(|err| ControlError::Internal(format!("cannot rename {}: {err}", e.path.display())))?;
        }
        let _ = std::fs::rename(self.thumb(old), self.thumb(new));
        Ok(to)
    }

    /// Deletes a library avatar and its thumbnail (`live`: the avatar on the camera now, which
    /// is refused).
    pub fn delete(&self, name: &str, live: Option<&Path>) -> Result<(), ControlError> {
        let e = self.find(name)?;
        if !e.in_library {
            return Err(ControlError::Conflict(format!("avatar {name:?} is the configured file {}, not in the library", e.path.display())));
        }
        if live.is_some_and(|l| same_file(l, &e.path)) {
            return Err(ControlError::Conflict(format!("avatar {name:?} is live; select another one first")));
        }
        std::fs::remove_file(&e.path).map_err(|err| ControlError::Internal(format!("cannot delete {}: {err}", e.path.display())))?;
        let _ = std::fs::remove_file(self.thumb(name));
        Ok(())
    }
}

/// Whether two paths name the same file (either may be relative or not canonical).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The portrait shrunk into [`THUMB_SIDE`], as JPEG.
pub fn thumbnail_jpeg(portrait: &Frame) -> Result<Vec<u8>, ControlError> {
    let (w, h) = (portrait.width.max(1), portrait.height.max(1));
    let s = (THUMB_SIDE as f32 / w.max(h) as f32).min(1.0);
    let (tw, th) = (((w as f32 * s).round() as i32).max(1), ((h as f32 * s).round() as i32).max(1));
    let small = crate::pipeline::compose::resize(portrait, tw, th).map_err(|e| ControlError::Internal(format!("thumbnail: {e}")))?;
    crate::service::http::encode_jpeg(&small, 85).map_err(|e| ControlError::Internal(format!("thumbnail: {e}")))
}

fn write_thumbnail(path: &Path, portrait: &Frame) -> Result<(), ControlError> {
    let jpg = thumbnail_jpeg(portrait)?;
    crate::durable::write_atomic(path, &jpg).map_err(|e| ControlError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["me", "Grandma 1920", "van_Gogh-self.portrait", "Zoë"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", " lead", "trail ", "a/b", "..", "a\\b", "x\0y", "tab\there", &"x".repeat(65)] {
            assert!(matches!(validate_name(bad), Err(ControlError::BadRequest(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn add_list_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("elsewhere/conf.pcav");
        std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
        let av = crate::avatar::file::tests::sample_avatar(2);
        av.save(&outside).unwrap();
        let lib = Library::open(&dir.path().join("lib"), Some(&outside)).unwrap();
        let names = |l: &Library| l.list().into_iter().map(|e| (e.name, e.in_library, e.configured)).collect::<Vec<_>>();
        assert_eq!(names(&lib), vec![("conf".to_string(), false, true)]);
        lib.add("b one", &av).unwrap();
        lib.add("A", &av).unwrap();
        assert!(matches!(lib.add("A", &av), Err(ControlError::Conflict(_))));
        assert_eq!(names(&lib).iter().map(|n| n.0.as_str()).collect::<Vec<_>>(), vec!["A", "b one", "conf"]);
        let e = lib.find("A").unwrap();
        assert_eq!((e.shots, e.kind, e.error.as_deref()), (2, "warp", None));
        assert!(!lib.thumbnail("A").unwrap().is_empty());
        assert!(lib.thumbnail("conf").unwrap().starts_with(&[0xFF, 0xD8]), "the configured one gets a thumbnail made from its portrait");
        let to = lib.rename("A", "Alice").unwrap();
        assert_eq!(WarpAvatar::load(&to).unwrap().name, "Alice", "the stored name follows the rename");
        assert!(lib.exists("Alice") && !lib.exists("A") && dir.path().join("lib/Alice.jpg").exists());
        assert!(matches!(lib.rename("Alice", "b one"), Err(ControlError::Conflict(_))));
        assert!(matches!(lib.rename("conf", "x"), Err(ControlError::Conflict(_))));
        assert!(matches!(lib.rename("nobody", "x"), Err(ControlError::NotFound(_))));
        assert!(matches!(lib.rename("Alice", "../x"), Err(ControlError::BadRequest(_))));
        // The live avatar is not deleted; another is.
        assert!(matches!(lib.delete("Alice", Some(&to)), Err(ControlError::Conflict(_))));
        assert!(lib.exists("Alice"));
        lib.delete("Alice", Some(&outside)).unwrap();
        assert!(!lib.exists("Alice") && !dir.path().join("lib/Alice.jpg").exists());
        assert!(matches!(lib.delete("conf", None), Err(ControlError::Conflict(_))));
        assert!(outside.exists());
        // A broken file is listed with its error, not hidden and not a panic.
        std::fs::write(dir.path().join("lib/broken.pcav"), b"PCAVATAR junk").unwrap();
        let b = lib.find("broken").unwrap();
        assert!(b.error.is_some(), "{b:?}");
    }
}
