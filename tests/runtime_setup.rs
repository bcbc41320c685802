//! Runs the `puppetcam` binary the way users and the Debian package do: ONNX Runtime loaded once
//! from the configured library (before any stage), the installed /usr-style layout found without
//! any environment variable, and the log lines a CPU-only machine shows.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The ONNX Runtime library this checkout uses (ORT_DYLIB_PATH or the venv).
fn ort_library() -> PathBuf {
    puppetcam::ep::library_candidates(None)
        .into_iter()
        .find(|p| p.is_file())
        .expect("ONNX Runtime library (run scripts/setup.sh)")
}

/// A copy of the library under a name and place nothing searches by default.
fn private_ort_copy(dir: &Path) -> PathBuf {
    let name = ort_library().file_name().unwrap().to_owned();
    let p = dir.join("private-ort").join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::copy(ort_library(), &p).unwrap();
    p
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_puppetcam"));
    c.env("RUST_LOG", "info");
    c
}

fn gpu_build() -> bool {
    let dir = ort_library().parent().unwrap().to_path_buf();
    dir.join("libonnxruntime_providers_cuda.so").exists()
}

fn config(dir: &Path, ort: &Path) -> PathBuf {
    let p = dir.join("cfg.toml");
    std::fs::write(&p, format!("[runtime]\nort_library = {:?}\n[service]\nenabled = false\n", ort.display().to_string())).unwrap();
    p
}

/// The configured library is the one loaded, even when the face stage (which used to load ONNX
/// Runtime from the default places first) starts before the generator; `ORT_DYLIB_PATH` points at
/// nothing, so any load from the default places fails.
#[test]
fn configured_ort_library_is_loaded_once_before_any_stage() {
    let dir = tempfile::tempdir().unwrap();
    let ort = private_ort_copy(dir.path());
    let cfg = config(dir.path(), &ort);
    let cfg = cfg.to_str().unwrap();
    let o = bin()
        .args(["bench", "--config", cfg, "--source", "cartoon", "--frames", "3"])
        .current_dir(dir.path())
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains(&format!("loaded from {}", ort.display())), "{t}");
    assert!(!t.contains("/nonexistent/"), "{t}");

    // `check` uses the same lookup.
    let o = bin().args(["check", "--config", cfg]).current_dir(dir.path()).env("ORT_DYLIB_PATH", "/nonexistent/x.so").output().unwrap();
    let t = text(&o);
    assert!(t.contains("OK   ONNX Runtime: ") && t.contains(&format!("from {}", ort.display())), "{t}");

    // A configured library that does not exist is an error naming it, never silently replaced
    // by the working one in ORT_DYLIB_PATH.
    let cfg = config(dir.path(), Path::new("/nonexistent/configured/libonnxruntime.so.1.31.1"));
    let o = bin()
        .args(["bench", "--config", cfg.to_str().unwrap(), "--source", "cartoon", "--frames", "3"])
        .current_dir(dir.path())
        .env("ORT_DYLIB_PATH", ort_library())
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("/nonexistent/configured/libonnxruntime.so.1.31.1"), "{t}");
}

/// On the CPU-only ONNX Runtime CI has, the default (auto) providers give one INFO line and no
/// ERROR; asking for CUDA explicitly without CPU fallback exits with the reason.
#[test]
fn cpu_only_runtime_logs_info_not_error() {
    if gpu_build() {
        eprintln!("skipped: the loaded ONNX Runtime is a GPU build");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.y4m");
    // A generator avatar (the default warp avatar runs no network, so no provider is chosen).
    let gen = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generator_ok.onnx");
    let o = bin().args(["demo", "--frames", "3", "--out", out.to_str().unwrap(), "--avatar", gen.to_str().unwrap()]).current_dir(dir.path()).output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(!t.contains("ERROR"), "{t}");
    assert!(t.contains("CPU-only ONNX Runtime, running on CPU; for an NVIDIA GPU install onnxruntime-gpu==1.31.1"), "{t}");

    let cfg = dir.path().join("cuda.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"synthetic\"\n[output]\nkind = \"null\"\n[avatar]\npath = \"{}\"\n[runtime]\nproviders = [\"cuda\", \"cpu\"]\nallow_cpu_fallback = false\n[service]\nenabled = false\n",
            gen.display()
        ),
    )
    .unwrap();
    let o = bin().args(["run", "--config", cfg.to_str().unwrap()]).current_dir(dir.path()).output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("allow_cpu_fallback = false forbids") && t.contains("CUDA: not in this ONNX Runtime build"), "{t}");
}

fn link_or_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

/// The binary installed as `<prefix>/bin/puppetcam` with the package's layout finds its models,
/// avatar and ONNX Runtime with no environment variable and no source tree.
#[test]
fn installed_layout_runs_check_and_demo_without_any_variable() {
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("usr");
    let exe = prefix.join("bin/puppetcam");
    link_or_copy(Path::new(env!("CARGO_BIN_EXE_puppetcam")), &exe);
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx");
    for f in ["face_detector.onnx", "face_landmarks.onnx", "iris_landmarks.onnx", "iris_fast.onnx", "default_avatar.onnx"] {
        link_or_copy(&onnx.join(f), &prefix.join("share/puppetcam/onnx").join(f));
    }
    let lib = prefix.join("lib/puppetcam").join(ort_library().file_name().unwrap());
    link_or_copy(&ort_library(), &lib);
    let work = t.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let run = |args: &[&str]| {
        Command::new(&exe)
            .args(args)
            .current_dir(&work)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", t.path())
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    };
    let o = run(&["check"]);
    let txt = text(&o);
    assert_eq!(o.status.code(), Some(0), "{txt}");
    assert!(txt.contains(&format!("from {}", lib.display())), "{txt}");
    assert!(txt.contains(&format!("OK   face models: {}", prefix.join("share/puppetcam/onnx/face_detector.onnx").display())), "{txt}");
    assert!(txt.contains(&format!("OK   avatar: {}", prefix.join("share/puppetcam/onnx/default_avatar.onnx").display())), "{txt}");
    let manifest = env!("CARGO_MANIFEST_DIR");
    assert!(!txt.contains(manifest), "a build-tree path leaked into the installed lookup: {txt}");

    let o = run(&["demo", "--frames", "3", "--out", "d.y4m"]);
    let txt = text(&o);
    assert!(o.status.success(), "{txt}");
    assert!(work.join("d.y4m").is_file(), "{txt}");
    assert!(!txt.contains(manifest), "{txt}");
}
