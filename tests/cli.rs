//! Runs the `puppetcam` binary: exit codes and messages of check, bench, run and demo.
use std::path::Path;
use std::process::{Command, Output};

mod common;

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
    // The default avatar is a warp avatar: no network, plain CPU code.
    assert!(v["execution_provider"].as_str().unwrap().starts_with("CPU"), "{v}");
    assert!(v["frames"].as_u64().unwrap() >= 5, "{v}");
    for stage in ["capture", "generator", "output", "end_to_end"] {
        let med = v["stages"][stage]["median_ms"].as_f64().unwrap_or_else(|| panic!("{stage}: {v}"));
        let p99 = v["stages"][stage]["p99_ms"].as_f64().unwrap();
        assert!(med >= 0.0 && p99 >= med, "{stage}: {v}");
    }
    assert!(v["stages"]["generator"]["median_ms"].as_f64().unwrap() > 0.0);
}

/// Issue 19: `bench --live --camera-fps 60` delivers a clip like a 60 fps webcam, and the output
/// follows the source's rate (no --fps given); the face stage reports its parts. Asking for a
/// camera rate without a live video source is a clear error.
#[test]
fn bench_drives_a_camera_rate_source_and_the_output_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = puppetcam(&["bench", "--camera-fps", "60", "--frames", "3", "--json", "--cpu"], dir.path());
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("--camera-fps needs --live and a video file source"), "{}", text(&o));
    let Some(clip) = common::data("videos/lp_d5.mp4") else { return };
    let src = format!("loop:{}", clip.display());
    let o = puppetcam(&["bench", "--live", "--camera-fps", "60", "--source", &src, "--frames", "10", "--json", "--cpu", "--size", "320x240"], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    assert_eq!(v["source_fps"].as_f64(), Some(60.0), "{v}");
    assert_eq!(v["output_fps"].as_f64(), Some(60.0), "the output follows the source: {v}");
    assert!(v["driver"].as_str().unwrap().contains("60 fps like a camera"), "{v}");
    assert!(v["face_parts"]["landmark_model"]["median_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["iris_runs_per_frame"].as_f64().unwrap() <= 2.0, "{v}");
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

/// `puppetcam` with a clean environment: no config in HOME, XDG_CONFIG_HOME or PUPPETCAM_CONFIG.
fn isolated(args: &[&str], home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_puppetcam"));
    c.args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg"))
        .env_remove("PUPPETCAM_CONFIG")
        .env("RUST_LOG", "info");
    c
}

#[test]
fn run_without_config_uses_devices_or_says_what_to_create_never_the_demo() {
    if Path::new("/etc/puppetcam/puppetcam.toml").exists() || Path::new("/dev/video0").exists() {
        eprintln!("SKIPPED: this machine has a system config or video devices, so `run` would start for real");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = isolated(&["run"], dir.path()).output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("no camera found"), "{t}");
    assert!(t.contains("puppetcam.toml") && t.contains("puppetcam.example.toml") && t.contains("puppetcam demo"), "{t}");
    assert!(t.contains(&dir.path().join("xdg/puppetcam/puppetcam.toml").display().to_string()), "names where it looked: {t}");
    assert!(!dir.path().join("out/demo.y4m").exists(), "run must not play the demo");
    // A source given, no output: the missing loopback device is named with the fix.
    let o = isolated(&["run", "--source", "embedded"], dir.path()).output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("no v4l2loopback output found") && t.contains("modprobe v4l2loopback"), "{t}");
}

#[test]
fn run_finds_its_config_in_the_documented_places() {
    let dir = tempfile::tempdir().unwrap();
    // $XDG_CONFIG_HOME/puppetcam/puppetcam.toml: an invalid value proves this file was read.
    let xdg = dir.path().join("xdg/puppetcam/puppetcam.toml");
    std::fs::create_dir_all(xdg.parent().unwrap()).unwrap();
    std::fs::write(&xdg, "[output]\nfps = 500\n").unwrap();
    let o = isolated(&["run"], dir.path()).output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("output.fps") && t.contains(&xdg.display().to_string()), "{t}");
    // ~/.config when XDG_CONFIG_HOME is unset.
    let home_cfg = dir.path().join(".config/puppetcam/puppetcam.toml");
    std::fs::create_dir_all(home_cfg.parent().unwrap()).unwrap();
    std::fs::write(&home_cfg, "[output]\nwidth = 7\n").unwrap();
    let o = isolated(&["run"], dir.path()).env_remove("XDG_CONFIG_HOME").output().unwrap();
    assert!(text(&o).contains("output.width") && text(&o).contains(&home_cfg.display().to_string()), "{}", text(&o));
    // $PUPPETCAM_CONFIG wins, and a missing one is an error, not a fall-through.
    let o = isolated(&["run"], dir.path()).env("PUPPETCAM_CONFIG", dir.path().join("nope.toml")).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("PUPPETCAM_CONFIG") && text(&o).contains("nope.toml"), "{}", text(&o));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    Some(b.split_once("\r\n\r\n")?.1.to_string())
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(secs), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// SIGHUP re-reads the whole config: retargeting, the output and the HTTP address change in the
/// running process (docs/service.md, "Operating it").
#[test]
fn sighup_rereads_and_applies_the_whole_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("xdg/puppetcam/puppetcam.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let (p1, p2) = (free_port(), free_port());
    let out = dir.path().join("after-reload.y4m");
    // Two copies of the valid avatar: the second SIGHUP switches to the other one.
    let (a1, a2) = (dir.path().join("a1.onnx"), dir.path().join("a2.onnx"));
    std::fs::copy(fixture("generator_ok.onnx"), &a1).unwrap();
    std::fs::copy(fixture("generator_ok.onnx"), &a2).unwrap();
    let config = |port: u16, extra: &str, avatar: &Path| {
        format!(
            "[source]\nkind = \"synthetic\"\nwidth = 160\nheight = 120\nfps = 10\n[output]\nkind = \"null\"\nwidth = 160\nheight = 120\nfps = 10\n\
             [avatar]\npath = {avatar:?}\n[runtime]\nproviders = [\"cpu\"]\nthreads = 1\n[face]\niris = false\n\
             [service]\nbind = \"127.0.0.1:{port}\"\nwatch_avatar = true\n{extra}"
        )
    };
    std::fs::write(&cfg, config(p1, "", &a1)).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = isolated(&["run"], dir.path()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let status = |port| http_get(port, "/status.json").and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
    wait_until("the daemon's status page", 60, || status(p1).is_some_and(|v| v["ready"]["ready"] == true));
    assert!(!status(p1).unwrap()["retarget_state"].as_str().unwrap().starts_with("off"));
    let pid = child.id().to_string();
    let reload_lines = || std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("reload done")).map(String::from).collect::<Vec<_>>();

    // Only [retarget] changed: applied to the generator, the output is not touched.
    let sink_before = status(p1).unwrap()["sink_state"].clone();
    std::fs::write(&cfg, config(p1, "[retarget]\nenabled = false\n", &a1)).unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_until("retargeting off", 30, || status(p1).is_some_and(|v| v["retarget_state"].as_str().unwrap_or("").starts_with("off")));
    wait_until("the reload log line", 30, || reload_lines().len() == 1);
    let line = &reload_lines()[0];
    assert!(line.ends_with("reload done: reloaded: retarget"), "{line}");
    assert_eq!(status(p1).unwrap()["sink_state"], sink_before, "an unchanged output must not be reopened");

    std::fs::write(
        &cfg,
        config(p2, "[retarget]\nenabled = false\n", &a2).replace("kind = \"null\"", &format!("kind = \"y4m\"\npath = {:?}", out)),
    )
    .unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_until("the new HTTP address", 60, || status(p2).is_some());
    wait_until("retargeting off", 30, || status(p2).is_some_and(|v| v["retarget_state"].as_str().unwrap_or("").starts_with("off")));
    wait_until("frames in the new output", 30, || std::fs::metadata(&out).is_ok_and(|m| m.len() > 160 * 120 * 3));
    assert!(status(p1).is_none(), "the old HTTP address still answers");
    wait_until("the second reload log line", 30, || reload_lines().len() == 2);
    let line = &reload_lines()[1];
    // The avatar watcher follows the new avatar file.
    for part in ["avatar", "output", &format!("http on 127.0.0.1:{p2}"), &format!("watching {}", a2.display())] {
        assert!(line.contains(part), "{line}");
    }
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", std::fs::read_to_string(&log).unwrap());
}

/// `PUPPETCAM_FAULT` makes each stage panic once: the daemon keeps writing frames, and /metrics
/// counts one restart per stage (issue 18: "a panic in any stage ends the daemon").
#[test]
fn an_injected_panic_in_each_stage_is_survived_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("stderr.log");
    let mut child = isolated(&["run", "--source", "cartoon", "--output", "null", "--size", "320x240", "--cpu", "--http", &format!("127.0.0.1:{port}")], dir.path())
        .env("PUPPETCAM_FAULT", "panic:capture@15,panic:face@30,panic:generator@45,panic:output@60")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let metric = |name: &str| -> Option<f64> {
        let m = http_get(port, "/metrics")?;
        m.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let restarts = || ["capture", "face", "generator", "output"].map(|s| metric(&format!("puppetcam_stage_restarts_total{{stage=\"{s}\"}}")).unwrap_or(0.0));
    let t0 = std::time::Instant::now();
    while restarts().iter().any(|&r| r < 1.0) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(90), "restarts {:?}: {}", restarts(), std::fs::read_to_string(&log).unwrap());
        assert!(child.try_wait().unwrap().is_none(), "the daemon ended: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(restarts(), [1.0; 4]);
    let frames = || metric("puppetcam_frames_total ").unwrap();
    let f0 = frames();
    wait_until("frames after the restarts", 30, || frames() > f0 + 20.0);
    let l = std::fs::read_to_string(&log).unwrap();
    for s in ["capture", "face", "generator", "output"] {
        assert!(l.contains(&format!("the {s} stage panicked: injected fault")), "{l}");
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", std::fs::read_to_string(&log).unwrap());
}

/// A preview client that never reads (`curl …/preview | less`) must block neither a SIGHUP that
/// restarts the HTTP server nor SIGTERM (issue 18: the old server joined its blocked writer).
#[test]
fn a_preview_client_that_never_reads_blocks_neither_sighup_nor_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("xdg/puppetcam/puppetcam.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let (p1, p2) = (free_port(), free_port());
    let config = |port: u16| {
        format!(
            "[source]\nkind = \"synthetic\"\nwidth = 640\nheight = 480\nfps = 30\n[output]\nkind = \"null\"\nwidth = 1280\nheight = 720\nfps = 30\n\
             [runtime]\nproviders = [\"cpu\"]\nthreads = 1\n[service]\nbind = \"127.0.0.1:{port}\"\npreview_fps = 30\n"
        )
    };
    std::fs::write(&cfg, config(p1)).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = isolated(&["run"], dir.path()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    wait_until("the daemon", 60, || http_get(p1, "/health").is_some());
    // Connect, ask for the stream, never read: at ~2 MB/s of 720p JPEGs the loopback socket
    // buffers (a few MB) are full well within the wait.
    let mut stuck = std::net::TcpStream::connect(("127.0.0.1", p1)).unwrap();
    use std::io::Write as _;
    write!(stuck, "GET /preview HTTP/1.1\r\nHost: 127.0.0.1:{p1}\r\n\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(8));
    let pid = child.id().to_string();
    std::fs::write(&cfg, config(p2)).unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_until("the HTTP server on the new address", 20, || http_get(p2, "/health").is_some());
    let t0 = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(0), "{}", std::fs::read_to_string(&log).unwrap());
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "SIGTERM did not end the daemon within 5 s: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(stuck);
}
