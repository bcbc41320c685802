//! Where puppetcam finds its files: bundled models and the default avatar, the ONNX Runtime
//! library, the config file and the cache directory.
//!
//! Two layouts are supported, both derived from where the running binary *is* (never from the
//! build machine's paths, which are meaningless once the binary is copied or packaged):
//! - the source tree: `<root>/target/<profile>/puppetcam` (or `.../deps/<test>`), with `<root>`
//!   holding `Cargo.toml` and `onnx/`, and the project venv `<root>/.venv`;
//! - an installed prefix: `<prefix>/bin/puppetcam` with `<prefix>/share/puppetcam/onnx/...` and
//!   `<prefix>/lib/puppetcam/libonnxruntime.so*` (the Debian package uses `/usr`).
//!
//! Every lookup is a method on [`Env`], a snapshot of the process facts it depends on (executable,
//! working directory, environment variables), so tests can simulate either layout in a temp dir.
//!
//! Nothing is ever taken from the working directory: not models, not weights, not the ONNX
//! Runtime library, not a Python interpreter. `avatar create` and `run` are started wherever a
//! user stands (a downloads folder holding someone's `onnx/` or `.venv/`), and any of those would
//! run their code. Explicit settings (flags, config, variables) name other files.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The package's own directory names under a prefix (`share/puppetcam`, `lib/puppetcam`).
pub const PACKAGE: &str = "puppetcam";
/// Fixed system locations searched last, for a binary copied out of its prefix.
pub const SYSTEM_SHARE_DIRS: [&str; 2] = ["/usr/share/puppetcam", "/usr/local/share/puppetcam"];
pub const SYSTEM_LIB_DIRS: [&str; 2] = ["/usr/lib/puppetcam", "/usr/local/lib/puppetcam"];
/// The system-wide config file (the Debian package installs it as a conffile).
pub const SYSTEM_CONFIG: &str = "/etc/puppetcam/puppetcam.toml";
pub const CONFIG_FILE: &str = "puppetcam.toml";
pub const DEFAULT_AVATAR: &str = "onnx/default_avatar.pcav";
/// The full-generator (contract 1) version of the default avatar, used when the warp avatar is
/// missing (an older install).
pub const DEFAULT_GENERATOR_AVATAR: &str = "onnx/default_avatar.onnx";
/// Contract-following stand-in for the default avatar in a checkout without a trained one.
pub const FIXTURE_AVATAR: &str = "tests/fixtures/generator_ok.onnx";

/// Environment variables the lookups read (and nothing else).
const VARS: [&str; 9] = [
    "ORT_DYLIB_PATH",
    "PUPPETCAM_MODEL_DIR",
    "PUPPETCAM_VENV",
    "PUPPETCAM_CONFIG",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "CACHE_DIRECTORY",
    "HOME",
    // Set by `cargo run`/`cargo test` at run time (not baked in at build time): lets tests with a
    // custom CARGO_TARGET_DIR still find the checkout.
    "CARGO_MANIFEST_DIR",
];

/// The facts every lookup depends on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Env {
    /// The running binary, symlinks resolved.
    pub exe: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub vars: BTreeMap<String, OsString>,
}

impl Env {
    /// This process.
    pub fn current() -> Env {
        let exe = std::env::current_exe().ok().map(|e| e.canonicalize().unwrap_or(e));
        let vars = VARS.iter().filter_map(|k| std::env::var_os(k).map(|v| (k.to_string(), v))).collect();
        Env { exe, cwd: std::env::current_dir().ok(), vars }
    }

    /// A non-empty variable as a path.
    fn var(&self, key: &str) -> Option<PathBuf> {
        self.vars.get(key).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// XDG base directories must be absolute; a relative one is ignored (XDG spec).
    fn abs_var(&self, key: &str) -> Option<PathBuf> {
        self.var(key).filter(|p| p.is_absolute())
    }

    fn exe_dir(&self) -> Option<&Path> {
        self.exe.as_deref().and_then(Path::parent)
    }

    /// The checkout the binary was built in, if it still runs from there: the nearest ancestor of
    /// the executable holding `Cargo.toml` and `onnx/`; else `$CARGO_MANIFEST_DIR` (cargo sets it
    /// for `cargo run`/`cargo test`).
    pub fn source_root(&self) -> Option<PathBuf> {
        let is_root = |d: &Path| d.join("Cargo.toml").is_file() && d.join("onnx").is_dir();
        if let Some(exe) = &self.exe {
            if let Some(r) = exe.ancestors().skip(1).find(|d| is_root(d)) {
                return Some(r.to_path_buf());
            }
        }
        self.var("CARGO_MANIFEST_DIR").filter(|d| is_root(d))
    }

    /// `<prefix>` for a binary installed as `<prefix>/bin/puppetcam`.
    pub fn install_prefix(&self) -> Option<PathBuf> {
        let bin = self.exe_dir()?;
        (bin.file_name()? == "bin").then(|| bin.parent().map(Path::to_path_buf)).flatten()
    }

    /// Directories holding `onnx/...` (and, in a checkout, `tests/fixtures/...`), in search order:
    /// the executable's directory (a portable unpacked tree), the source tree, the installed
    /// prefix's `share/puppetcam`, then the fixed system directories.
    pub fn data_roots(&self) -> Vec<PathBuf> {
        let mut r = Vec::new();
        if let Some(d) = self.exe_dir() {
            r.push(d.to_path_buf());
        }
        r.extend(self.source_root());
        if let Some(p) = self.install_prefix() {
            r.push(p.join("share").join(PACKAGE));
        }
        r.extend(SYSTEM_SHARE_DIRS.iter().map(PathBuf::from));
        dedup(r)
    }

    /// The first existing `root/rel` for a bundled file, over [`Self::data_roots`] (never the
    /// working directory).
    pub fn find_data(&self, rel: impl AsRef<Path>) -> Option<PathBuf> {
        let rel = rel.as_ref();
        self.data_roots().into_iter().map(|r| r.join(rel)).find(|p| p.is_file())
    }

    /// The bundled default avatar; in a checkout without one, the test fixture that follows the
    /// same contract, so the demo still runs end to end.
    pub fn default_avatar(&self) -> Option<PathBuf> {
        self.find_data(DEFAULT_AVATAR).or_else(|| self.find_data(DEFAULT_GENERATOR_AVATAR)).or_else(|| self.find_data(FIXTURE_AVATAR))
    }

    /// Face model directories: `$PUPPETCAM_MODEL_DIR`, then `onnx/` under each data root.
    pub fn face_model_dirs(&self) -> Vec<PathBuf> {
        let mut d: Vec<PathBuf> = self.var("PUPPETCAM_MODEL_DIR").into_iter().collect();
        d.extend(self.data_roots().into_iter().map(|r| r.join("onnx")));
        dedup(d)
    }

    /// Python virtual environments of the project, in search order: `$PUPPETCAM_VENV`, the
    /// checkout's `.venv` (never `./.venv`).
    pub fn venvs(&self) -> Vec<PathBuf> {
        let v = self.var("PUPPETCAM_VENV").into_iter().chain(self.source_root().map(|r| r.join(".venv")));
        dedup(v.collect())
    }

    /// `libonnxruntime` candidates in order. An explicit path (config `runtime.ort_library`) is
    /// the only candidate: it is a decision, so no other library is used silently. Otherwise:
    /// `$ORT_DYLIB_PATH`, the installed `<prefix>/lib/puppetcam`, next to the executable, the
    /// venvs (`$PUPPETCAM_VENV`, the checkout's `.venv`), the fixed system dirs.
    pub fn ort_library_candidates(&self, explicit: Option<&Path>) -> Vec<PathBuf> {
        if let Some(p) = explicit {
            return vec![p.to_path_buf()];
        }
        let mut c: Vec<PathBuf> = self.var("ORT_DYLIB_PATH").into_iter().collect();
        if let Some(p) = self.install_prefix() {
            c.extend(libs_in(&p.join("lib").join(PACKAGE)));
        }
        if let Some(d) = self.exe_dir() {
            c.extend(libs_in(d));
        }
        for v in self.venvs() {
            c.extend(venv_libs(&v));
        }
        for d in SYSTEM_LIB_DIRS {
            c.extend(libs_in(Path::new(d)));
        }
        dedup(c)
    }

    /// Config files in order of precedence: `$PUPPETCAM_CONFIG`, the user's
    /// `$XDG_CONFIG_HOME/puppetcam/puppetcam.toml` (default `~/.config`), then the system one.
    pub fn config_candidates(&self) -> Vec<PathBuf> {
        let mut c: Vec<PathBuf> = self.var("PUPPETCAM_CONFIG").into_iter().collect();
        let user = self.abs_var("XDG_CONFIG_HOME").or_else(|| self.abs_var("HOME").map(|h| h.join(".config")));
        c.extend(user.map(|d| d.join(PACKAGE).join(CONFIG_FILE)));
        c.push(PathBuf::from(SYSTEM_CONFIG));
        dedup(c)
    }

    /// The writable cache directory: `$CACHE_DIRECTORY` (systemd's `CacheDirectory=`, first
    /// entry), `$XDG_CACHE_HOME/puppetcam`, `~/.cache/puppetcam`; a relative `.cache/puppetcam`
    /// only when none is known (no HOME at all).
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(d) = self.vars.get("CACHE_DIRECTORY").and_then(|v| v.to_str()).and_then(|v| v.split(':').next()) {
            if Path::new(d).is_absolute() {
                return PathBuf::from(d);
            }
        }
        self.abs_var("XDG_CACHE_HOME")
            .map(|d| d.join(PACKAGE))
            .or_else(|| self.abs_var("HOME").map(|h| h.join(".cache").join(PACKAGE)))
            .unwrap_or_else(|| PathBuf::from(".cache").join(PACKAGE))
    }

    /// The writable data directory (avatar library, control token without a config file):
    /// `$STATE_DIRECTORY` (systemd's `StateDirectory=`, first entry), `$XDG_DATA_HOME/puppetcam`,
    /// `~/.local/share/puppetcam`; a relative `.local/share/puppetcam` only without any HOME.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = self.vars.get("STATE_DIRECTORY").and_then(|v| v.to_str()).and_then(|v| v.split(':').next()) {
            if Path::new(d).is_absolute() {
                return PathBuf::from(d);
            }
        }
        self.abs_var("XDG_DATA_HOME")
            .map(|d| d.join(PACKAGE))
            .or_else(|| self.abs_var("HOME").map(|h| h.join(".local/share").join(PACKAGE)))
            .unwrap_or_else(|| PathBuf::from(".local/share").join(PACKAGE))
    }

    /// TensorRT engine and timing caches.
    pub fn trt_cache_dir(&self) -> PathBuf {
        self.cache_dir().join("trt")
    }
}

/// `libonnxruntime.so*` files in `dir`, highest version first; when there are none, the plain
/// name, so "not found" messages show the directory that was searched.
fn libs_in(dir: &Path) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_ort_lib_name))
                .collect()
        })
        .unwrap_or_default();
    libs.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
    if libs.is_empty() {
        libs.push(dir.join("libonnxruntime.so"));
    }
    libs
}

/// `libonnxruntime.so` or `libonnxruntime.so.1.31.1`, not the provider plug-ins.
fn is_ort_lib_name(n: &str) -> bool {
    n == "libonnxruntime.so" || n.strip_prefix("libonnxruntime.so.").is_some_and(|v| v.split('.').all(|x| x.parse::<u32>().is_ok()))
}

fn version_key(p: &Path) -> Vec<u32> {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    n.strip_prefix("libonnxruntime.so.").map(|v| v.split('.').filter_map(|x| x.parse().ok()).collect()).unwrap_or_default()
}

/// The library inside a venv's onnxruntime (or onnxruntime-gpu) wheel.
fn venv_libs(venv: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(lib) = std::fs::read_dir(venv.join("lib")) else { return out };
    let mut pys: Vec<PathBuf> = lib.flatten().map(|e| e.path()).collect();
    pys.sort();
    for py in pys.into_iter().rev() {
        let capi = py.join("site-packages/onnxruntime/capi");
        if capi.is_dir() {
            out.extend(libs_in(&capi).into_iter().filter(|p| p.is_file()));
        }
    }
    out
}

fn dedup(v: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|p| seen.insert(p.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    fn env(exe: &Path, cwd: &Path, vars: &[(&str, &str)]) -> Env {
        Env {
            exe: Some(exe.to_path_buf()),
            cwd: Some(cwd.to_path_buf()),
            vars: vars.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect(),
        }
    }

    /// A checkout: Cargo.toml, onnx/ models, a .venv with the wheel's library, a built binary.
    fn checkout(root: &Path) -> PathBuf {
        touch(&root.join("Cargo.toml"));
        touch(&root.join("onnx/face_detector.onnx"));
        touch(&root.join("onnx/default_avatar.onnx"));
        touch(&root.join(".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1"));
        touch(&root.join(".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime_providers_shared.so"));
        let exe = root.join("target/release/puppetcam");
        touch(&exe);
        exe
    }

    /// An installed prefix as the Debian package lays it out.
    fn installed(prefix: &Path) -> PathBuf {
        touch(&prefix.join("share/puppetcam/onnx/face_detector.onnx"));
        touch(&prefix.join("share/puppetcam/onnx/default_avatar.onnx"));
        touch(&prefix.join("lib/puppetcam/libonnxruntime.so.1.31.1"));
        let exe = prefix.join("bin/puppetcam");
        touch(&exe);
        exe
    }

    #[test]
    fn source_tree_layout_finds_models_and_venv_library() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("src-tree");
        let exe = checkout(&root);
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        let e = env(&exe, &elsewhere, &[("HOME", "/home/u")]);
        assert_eq!(e.source_root(), Some(root.clone()));
        assert_eq!(e.install_prefix(), None);
        assert_eq!(e.default_avatar(), Some(root.join("onnx/default_avatar.onnx")));
        assert!(e.face_model_dirs().contains(&root.join("onnx")));
        let lib = e.ort_library_candidates(None).into_iter().find(|p| p.is_file());
        assert_eq!(lib, Some(root.join(".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1")));
        // A test binary lives one level deeper (target/debug/deps): same root.
        let test_exe = root.join("target/debug/deps/puppetcam-0123abcd");
        touch(&test_exe);
        assert_eq!(env(&test_exe, &elsewhere, &[]).source_root(), Some(root));
    }

    #[test]
    fn installed_layout_finds_share_and_lib_without_any_variable() {
        let t = tempfile::tempdir().unwrap();
        let prefix = t.path().join("usr");
        let exe = installed(&prefix);
        let e = env(&exe, t.path(), &[]);
        assert_eq!(e.source_root(), None);
        assert_eq!(e.install_prefix(), Some(prefix.clone()));
        assert_eq!(e.default_avatar(), Some(prefix.join("share/puppetcam/onnx/default_avatar.onnx")));
        assert_eq!(e.face_model_dirs()[1], prefix.join("share/puppetcam/onnx"));
        let c = e.ort_library_candidates(None);
        assert_eq!(c.iter().find(|p| p.is_file()), Some(&prefix.join("lib/puppetcam/libonnxruntime.so.1.31.1")));
        assert!(c.contains(&PathBuf::from("/usr/lib/puppetcam/libonnxruntime.so")) || c.iter().any(|p| p.starts_with("/usr/lib/puppetcam")));
    }

    #[test]
    fn installed_binary_prefers_its_own_files_over_a_checkout_in_the_working_directory() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("checkout");
        checkout(&root);
        let prefix = t.path().join("usr");
        let exe = installed(&prefix);
        // Running /usr/bin/puppetcam from inside a checkout (or any folder with an onnx/ and a
        // .venv/): the package's own files, never the working directory's.
        let e = env(&exe, &root, &[]);
        assert_eq!(e.ort_library_candidates(None).iter().find(|p| p.is_file()), Some(&prefix.join("lib/puppetcam/libonnxruntime.so.1.31.1")));
        assert!(!e.ort_library_candidates(None).iter().any(|p| p.starts_with(&root)));
        assert_eq!(e.default_avatar(), Some(prefix.join("share/puppetcam/onnx/default_avatar.onnx")));
        assert_eq!(e.find_data("onnx/face_detector.onnx"), Some(prefix.join("share/puppetcam/onnx/face_detector.onnx")));
        assert_eq!(e.face_model_dirs()[0], prefix.join("bin/onnx"));
        assert!(e.venvs().is_empty());
        assert!(!e.data_roots().iter().any(|p| p.starts_with(&root)));
    }

    #[test]
    fn explicit_and_env_library_come_first() {
        let t = tempfile::tempdir().unwrap();
        let exe = installed(&t.path().join("usr"));
        let e = env(&exe, t.path(), &[("ORT_DYLIB_PATH", "/opt/ort/libonnxruntime.so.1.31.1")]);
        assert_eq!(e.ort_library_candidates(Some(Path::new("/cfg/lib.so"))), vec![PathBuf::from("/cfg/lib.so")]);
        assert_eq!(e.ort_library_candidates(None)[0], PathBuf::from("/opt/ort/libonnxruntime.so.1.31.1"));
        // An empty variable is unset.
        let e = env(&exe, t.path(), &[("ORT_DYLIB_PATH", "")]);
        assert_eq!(e.ort_library_candidates(None)[0], t.path().join("usr/lib/puppetcam/libonnxruntime.so.1.31.1"));
    }

    #[test]
    fn library_names_and_version_order() {
        let t = tempfile::tempdir().unwrap();
        for n in ["libonnxruntime.so.1.30.0", "libonnxruntime.so.1.31.1", "libonnxruntime_providers_cuda.so", "libonnxruntime.so.1.31.1.bak"] {
            touch(&t.path().join(n));
        }
        let l = libs_in(t.path());
        assert_eq!(l, vec![t.path().join("libonnxruntime.so.1.31.1"), t.path().join("libonnxruntime.so.1.30.0")]);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(libs_in(empty.path()), vec![empty.path().join("libonnxruntime.so")]);
    }

    #[test]
    fn nothing_found_is_none_not_a_build_machine_path() {
        let t = tempfile::tempdir().unwrap();
        let exe = t.path().join("bin/puppetcam");
        touch(&exe);
        let e = env(&exe, t.path(), &[]);
        if !Path::new("/usr/share/puppetcam/onnx/default_avatar.onnx").exists() && !Path::new("/usr/local/share/puppetcam/onnx/default_avatar.onnx").exists() {
            assert_eq!(e.default_avatar(), None);
        }
        let manifest = env!("CARGO_MANIFEST_DIR");
        assert!(e.data_roots().iter().all(|r| !r.starts_with(manifest)), "{:?}", e.data_roots());
        assert!(e.ort_library_candidates(None).iter().all(|r| !r.starts_with(manifest)));
    }

    #[test]
    fn data_dir_follows_systemd_then_xdg_then_home() {
        let at = |vars: &[(&str, &str)]| env(Path::new("/usr/bin/puppetcam"), Path::new("/"), vars).data_dir();
        assert_eq!(at(&[("HOME", "/home/u")]), PathBuf::from("/home/u/.local/share/puppetcam"));
        assert_eq!(at(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "/x")]), PathBuf::from("/x/puppetcam"));
        assert_eq!(at(&[("HOME", "/home/u"), ("STATE_DIRECTORY", "/var/lib/puppetcam:/var/lib/other")]), PathBuf::from("/var/lib/puppetcam"));
        // Relative values are ignored (the XDG spec says so).
        assert_eq!(at(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "rel"), ("STATE_DIRECTORY", "rel")]), PathBuf::from("/home/u/.local/share/puppetcam"));
    }

    #[test]
    fn config_candidates_follow_xdg_then_etc() {
        let e = env(Path::new("/usr/bin/puppetcam"), Path::new("/"), &[("HOME", "/home/u")]);
        assert_eq!(
            e.config_candidates(),
            vec![PathBuf::from("/home/u/.config/puppetcam/puppetcam.toml"), PathBuf::from("/etc/puppetcam/puppetcam.toml")]
        );
        let e = env(
            Path::new("/usr/bin/puppetcam"),
            Path::new("/"),
            &[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/x"), ("PUPPETCAM_CONFIG", "/p.toml")],
        );
        assert_eq!(
            e.config_candidates(),
            vec![PathBuf::from("/p.toml"), PathBuf::from("/x/puppetcam/puppetcam.toml"), PathBuf::from("/etc/puppetcam/puppetcam.toml")]
        );
    }

    #[test]
    fn cache_dir_follows_systemd_then_xdg_then_home() {
        let exe = Path::new("/usr/bin/puppetcam");
        let c = |vars: &[(&str, &str)]| env(exe, Path::new("/"), vars).trt_cache_dir();
        assert_eq!(c(&[("CACHE_DIRECTORY", "/var/cache/puppetcam"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]), PathBuf::from("/var/cache/puppetcam/trt"));
        assert_eq!(c(&[("CACHE_DIRECTORY", "/var/cache/a:/var/cache/b")]), PathBuf::from("/var/cache/a/trt"));
        assert_eq!(c(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]), PathBuf::from("/x/puppetcam/trt"));
        // A relative XDG_CACHE_HOME is invalid per the XDG spec and ignored.
        assert_eq!(c(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")]), PathBuf::from("/h/.cache/puppetcam/trt"));
        assert_eq!(c(&[]), PathBuf::from(".cache/puppetcam/trt"));
    }

    /// The TensorRT cache defaults to the writable cache dir (systemd units make everything else
    /// read-only), in the config and in the options sessions are built with.
    #[test]
    fn config_and_runtime_default_to_the_cache_dir() {
        let want = Env::current().trt_cache_dir();
        assert_eq!(crate::config::Config::default().runtime.trt_cache_dir, want);
        assert_eq!(crate::ep::RuntimeOptions::default().trt_cache_dir, want);
        if std::env::var_os("HOME").is_some_and(|h| Path::new(&h).is_absolute()) {
            assert!(want.is_absolute() && want.ends_with("puppetcam/trt"), "{}", want.display());
        }
    }
}
