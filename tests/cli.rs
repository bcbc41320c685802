//! Runs the `puppetcam` binary: exit codes and messages of check, bench, run and demo.
use std::path::Path;
use std::process::{Command, Output};

fn puppetcam(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_puppetcam"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run puppetcam")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).display().to_string()
}

#[test]
fn check_passes_here_and_names_a_broken_avatar() {
    let dir = tempfile::tempdir().unwrap();
    let o = puppetcam(&["check", "--avatar", &fixture("generator_ok.onnx")], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("OK   ONNX Runtime"), "{t}");
    assert!(t.contains("OK   execution provider CPU"), "{t}");
    assert!(t.contains("OK   avatar"), "{t}");
    // No GPU here: the GPU providers are reported, not hidden.
    assert!(t.contains("execution provider CUDA"), "{t}");

    let o = puppetcam(&["check", "--avatar", &fixture("generator_missing_crop_box.onnx")], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL avatar") && t.contains("puppetcam.crop_box"), "{t}");
}

#[test]
fn bench_json_reports_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let o = puppetcam(&["bench", "--frames", "5", "--json", "--cpu", "--size", "320x240"], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    assert_eq!(v["execution_provider"], "CPU");
    assert!(v["frames"].as_u64().unwrap() >= 5, "{v}");
    for stage in ["capture", "generator", "output", "end_to_end"] {
        let med = v["stages"][stage]["median_ms"].as_f64().unwrap_or_else(|| panic!("{stage}: {v}"));
        let p99 = v["stages"][stage]["p99_ms"].as_f64().unwrap();
        assert!(med >= 0.0 && p99 >= med, "{stage}: {v}");
    }
    assert!(v["stages"]["generator"]["median_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn run_writes_the_requested_frames() {
    let dir = tempfile::tempdir().unwrap();
    let o = puppetcam(
        &["run", "--source", "embedded", "--frames", "6", "--output", "clip.y4m", "--cpu", "--size", "320x240"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let data = std::fs::read(dir.path().join("clip.y4m")).unwrap();
    assert!(data.starts_with(b"YUV4MPEG2 W320 H240"));
    let frames = data.windows(6).filter(|w| w == b"FRAME\n" || w == b"FRAME ").count();
    assert_eq!(frames, 6);
}

#[test]
fn demo_says_where_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let o = puppetcam(&["demo", "--frames", "3", "--cpu"], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("out/demo.y4m") && t.contains("3 frames"), "{t}");
    assert!(dir.path().join("out/demo.y4m").is_file());
}

#[test]
fn bad_flags_and_config_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let o = puppetcam(&["run", "--output", "movie.mp4"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`output`"), "{}", text(&o));

    let o = puppetcam(&["run", "--fps", "0", "--source", "embedded"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("output.fps"), "{}", text(&o));

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[output]\nfps = \"fast\"\n").unwrap();
    let o = puppetcam(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("output.fps"), "{}", text(&o));

    let o = puppetcam(&["frobnicate"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn missing_avatar_exits_1_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let o = puppetcam(&["run", "--source", "embedded", "--frames", "2", "--output", "null", "--avatar", "nope.onnx"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nope.onnx"), "{}", text(&o));
}

#[test]
fn install_service_dry_run_prints_the_unit_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let o = Command::new(env!("CARGO_BIN_EXE_puppetcam"))
        .args(["install-service", "--dry-run", "--unit-dir", units.to_str().unwrap(), "--", "--config", "/etc/puppetcam/p.toml"])
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("xdg"))
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains(&format!("dry run: would write {}", units.join("puppetcam.service").display())), "{t}");
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_puppetcam")).unwrap();
    assert!(t.contains(&format!("ExecStart={} run --config /etc/puppetcam/p.toml", exe.display())), "{t}");
    assert!(t.contains("systemctl --user enable --now puppetcam.service"), "{t}");
    assert!(!units.exists() && !dir.path().join("xdg").exists(), "a dry run writes nothing");

    let o = puppetcam(&["install-service", "--system", "--dry-run", "--unit-dir", units.to_str().unwrap()], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("User=puppetcam") && t.contains("sudo systemctl enable --now puppetcam.service"), "{t}");
    assert!(!units.exists());
}

#[test]
fn bench_runs_the_config_plan_with_flags_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"synthetic\"\nwidth = 320\nheight = 240\n[output]\nwidth = 320\nheight = 240\n\
             [avatar]\npath = {:?}\n[runtime]\nproviders = [\"cpu\"]\n",
            fixture("generator_ok.onnx")
        ),
    )
    .unwrap();
    let o = puppetcam(&["bench", "--config", cfg.to_str().unwrap(), "--frames", "3", "--json", "--size", "256x192"], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    assert_eq!(v["driver"], "cartoon face (synthetic source)", "the config's source: {v}");
    assert_eq!(v["avatar"], fixture("generator_ok.onnx"));
    assert_eq!(v["execution_provider"], "CPU");
    assert_eq!(v["output"], "256x192", "--size overrides the config");

    // The config is checked like `run` checks it: a bad calibration profile names the key.
    std::fs::write(&cfg, "[retarget]\nprofile = \"no-such-profile.toml\"\n").unwrap();
    let o = puppetcam(&["bench", "--config", cfg.to_str().unwrap(), "--frames", "1"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("retarget.profile") && text(&o).contains("no-such-profile.toml"), "{}", text(&o));
}
