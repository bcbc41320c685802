//! End-to-end pipeline tests: real video -> face -> generator -> y4m, the embedded driver, bad
//! inputs (missing avatar, corrupt video, contract-breaking ONNX) and the live-mode behaviours
//! (camera reconnect, reader-gone sink, avatar reload, a stuck reload, a panicking stage).
use puppetcam::core::types::{FaceLandmarks, Frame};
use puppetcam::ep::RuntimeOptions;
use puppetcam::error::Error;
use puppetcam::core::retarget::RetargetParams;
use puppetcam::pipeline::{synthetic, Calibration, Driver, DriverSpec, EaseTimes, FaceStage, GenSettings, Pacing, Pipeline, PipelineSpec, Plan};
use puppetcam::sink::{FrameSink, SinkSpec};
use puppetcam::source::{FrameSource, SourceSpec};
use puppetcam::stats::PipelineStats;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// CPU with one ORT thread: tests run in parallel on small machines, and ORT's spinning pools
/// would otherwise starve the paced output threads of other tests.
fn cpu() -> RuntimeOptions {
    RuntimeOptions { intra_threads: 1, ..RuntimeOptions::cpu() }
}

fn cpu_plan(driver: DriverSpec, sink: SinkSpec) -> Plan {
    Plan { driver, sink, avatar: fixture("generator_ok.onnx"), runtime: cpu(), ..Plan::demo() }
}

/// Parses a y4m file: (width, height, frame count), checking every frame has a full I420 payload.
fn read_y4m(path: &Path) -> (u32, u32, usize) {
    let data = std::fs::read(path).unwrap();
    let nl = data.iter().position(|&b| b == b'\n').expect("y4m header line");
    let header = std::str::from_utf8(&data[..nl]).unwrap();
    assert!(header.starts_with("YUV4MPEG2 "), "{header}");
    let field = |c: char| -> u32 {
        header.split(' ').find_map(|f| f.strip_prefix(c)).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{c} in {header}"))
    };
    let (w, h) = (field('W'), field('H'));
    let frame_bytes = (w * h * 3 / 2) as usize;
    let mut pos = nl + 1;
    let mut frames = 0;
    while pos < data.len() {
        assert!(data[pos..].starts_with(b"FRAME"), "frame {frames} marker at byte {pos}");
        let eol = pos + data[pos..].iter().position(|&b| b == b'\n').unwrap();
        pos = eol + 1 + frame_bytes;
        assert!(pos <= data.len(), "frame {frames} is truncated");
        frames += 1;
    }
    (w, h, frames)
}

#[test]
fn embedded_driver_renders_every_frame_to_y4m() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/demo.y4m");
    let mut plan = cpu_plan(DriverSpec::Embedded { frames: Some(30) }, SinkSpec::Y4m { path: out.clone() });
    plan.width = 320;
    plan.height = 240;
    let stats = Arc::new(PipelineStats::default());
    let h = Pipeline::start_plan(plan, stats.clone()).unwrap();
    h.wait().unwrap();
    assert_eq!(read_y4m(&out), (320, 240, 30));
    assert_eq!(stats.generator.frames.load(Ordering::Relaxed), 30);
    assert_eq!(stats.output.frames.load(Ordering::Relaxed), 30);
    assert_eq!(stats.generator.drops.load(Ordering::Relaxed) + stats.output.drops.load(Ordering::Relaxed), 0);
    assert_eq!(stats.ep.read().active, "CPU");
    assert_eq!(stats.avatar_name.read().as_str(), "fixture-avatar");
    let preview = stats.preview.lock().clone().expect("preview frame");
    assert_eq!((preview.width, preview.height), (320, 240));
}

#[test]
fn animation_reaches_the_output() {
    // The fixture generator mixes the raster into its output, so frames of a moving face differ.
    let dir = tempfile::tempdir().unwrap();
    let mut plan = cpu_plan(DriverSpec::Embedded { frames: Some(12) }, SinkSpec::Png { dir: dir.path().to_path_buf(), every: 1 });
    plan.width = 256;
    plan.height = 256;
    let stats = Arc::new(PipelineStats::default());
    Pipeline::start_plan(plan, stats.clone()).unwrap().wait().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert_eq!(files.len(), 12, "{files:?}");
    let a = std::fs::read(&files[0]).unwrap();
    let b = std::fs::read(&files[6]).unwrap();
    assert_ne!(a, b, "output frames should change as the driver moves");
}

mod common;

#[test]
fn real_video_to_y4m_one_frame_per_input_frame() {
    // Found through PUPPETCAM_DATA (it used to be a hard-coded machine path that ignored it).
    let Some(video) = common::data("videos/lp_d0.mp4") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d0.y4m");
    let src = SourceSpec::File { path: video, looping: false, realtime: false };
    let plan = cpu_plan(DriverSpec::Source(src), SinkSpec::Y4m { path: out.clone() });
    assert_eq!(plan.effective_pacing(), Pacing::EveryFrame);
    let stats = Arc::new(PipelineStats::default());
    Pipeline::start_plan(plan, stats.clone()).unwrap().wait().unwrap();
    // lp_d0.mp4: 78 frames (MANIFEST.md); the demo geometry is 640x480.
    assert_eq!(read_y4m(&out), (640, 480, 78));
    assert_eq!(stats.face.frames.load(Ordering::Relaxed), 78);
    assert_eq!(stats.face.errors.load(Ordering::Relaxed), 0);
    assert_eq!(stats.end_to_end.frames.load(Ordering::Relaxed), 78);
    // A frontal talking head: the face should be found and never lost for long.
    assert!(stats.face_lost.load(Ordering::Relaxed) <= 2, "face lost {} times", stats.face_lost.load(Ordering::Relaxed));
}

fn start_err(plan: Plan) -> Error {
    match Pipeline::start_plan(plan, Arc::new(PipelineStats::default())) {
        Ok(h) => {
            let _ = h.shutdown();
            panic!("pipeline started although it should not");
        }
        Err(e) => e,
    }
}

#[test]
fn missing_avatar_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = cpu_plan(DriverSpec::Embedded { frames: Some(3) }, SinkSpec::Null);
    plan.avatar = dir.path().join("nope.onnx");
    let e = start_err(plan);
    assert!(matches!(e, Error::Model { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.onnx") && e.to_string().contains("not found"), "{e}");
}

#[test]
fn corrupt_video_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("corrupt.mp4");
    std::fs::write(&bad, b"\x00\x00\x00\x18ftypmp42 this is not really a video at all").unwrap();
    let src = SourceSpec::File { path: bad, looping: false, realtime: false };
    let e = start_err(cpu_plan(DriverSpec::Source(src), SinkSpec::Null));
    assert!(e.to_string().contains("corrupt.mp4"), "{e}");
}

#[test]
fn contract_breaking_models_name_the_problem() {
    for (file, needle) in [
        ("generator_bad_input_shape.onnx", "input `landmarks`"),
        ("generator_missing_crop_box.onnx", "puppetcam.crop_box"),
        ("generator_bad_output_name.onnx", "output named `image`"),
    ] {
        let mut plan = cpu_plan(DriverSpec::Embedded { frames: Some(3) }, SinkSpec::Null);
        plan.avatar = fixture(file);
        let e = start_err(plan);
        assert!(matches!(e, Error::Model { .. }), "{file}: {e:?}");
        assert!(e.to_string().contains(needle), "{file}: {e}");
    }
    // Not an ONNX file at all.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"garbage").unwrap();
    let mut plan = cpu_plan(DriverSpec::Embedded { frames: Some(3) }, SinkSpec::Null);
    plan.avatar = junk;
    let e = start_err(plan);
    assert!(e.to_string().contains("junk.onnx"), "{e}");
}

/// Counts frames; optionally reports "reader gone" for every write.
struct TestSink {
    frames: Arc<AtomicU64>,
    reader_gone: bool,
}

impl FrameSink for TestSink {
    fn write(&mut self, f: &Frame) -> puppetcam::Result<()> {
        assert!(f.len_ok());
        self.frames.fetch_add(1, Ordering::Relaxed);
        if self.reader_gone {
            return Err(Error::SinkReaderGone("test: nobody reads".into()));
        }
        Ok(())
    }
    fn describe(&self) -> String {
        "test sink".into()
    }
}

/// A "camera" that serves `per_session` frames, then disconnects; reopening fails `fail_reopen`
/// times before it works again.
struct FlakyCam {
    left: u32,
}

impl FrameSource for FlakyCam {
    fn next_frame(&mut self) -> puppetcam::Result<Option<Frame>> {
        std::thread::sleep(Duration::from_millis(10));
        if self.left == 0 {
            return Err(Error::SourceDisconnected("test: unplugged".into()));
        }
        self.left -= 1;
        Ok(Some(Frame::black(64, 48)))
    }
    fn describe(&self) -> String {
        "flaky test camera".into()
    }
}

fn live_spec(source: Arc<dyn Fn() -> puppetcam::Result<Box<dyn FrameSource>> + Send + Sync>, frames: Arc<AtomicU64>, reader_gone: bool) -> PipelineSpec {
    let t0 = Instant::now();
    let face = move |_f: &Frame| -> puppetcam::Result<Option<FaceLandmarks>> {
        Ok(Some(synthetic::landmarks_at(t0.elapsed().as_secs_f64())))
    };
    PipelineSpec {
        driver: Driver::Video { source, face: Box::new(move || Ok(Box::new(face) as _)), live: true },
        avatar: fixture("generator_ok.onnx"),
        runtime: cpu(),
        sink: Box::new(move |_, _, _| Ok(Box::new(TestSink { frames, reader_gone }) as _)),
        out_width: 160,
        out_height: 120,
        fps: 50.0,
        follow_source_fps: false,
        pacing: Pacing::Realtime,
        reconnect_max_backoff: Duration::from_millis(300),
        source_notice_after: Duration::from_secs(60),
        ease: EaseTimes { hold_s: 0.2, out_s: 0.1, in_s: 0.05 },
        retarget: None,
        calibration: None,
        generator_hook: None,
        reload_timeout: puppetcam::pipeline::RELOAD_TIMEOUT,
        presence: Default::default(),
        fit: Default::default(),
    }
}

#[test]
fn camera_disconnect_reconnects_while_output_keeps_going() {
    let opens = Arc::new(AtomicU64::new(0));
    let o = opens.clone();
    let source = Arc::new(move || -> puppetcam::Result<Box<dyn FrameSource>> {
        let n = o.fetch_add(1, Ordering::SeqCst);
        // open #0 works, #1 and #2 fail (camera still unplugged), #3 works
        if n == 1 || n == 2 {
            return Err(Error::Source("test: no such device".into()));
        }
        Ok(Box::new(FlakyCam { left: 10 }))
    });
    let frames = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(PipelineStats::default());
    let h = Pipeline::start_spec(live_spec(source, frames.clone(), false), stats.clone()).unwrap();
    // Wait for the first reconnection, then check the output never stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.source_reconnects.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stats.source_reconnects.load(Ordering::Relaxed) >= 1, "never reconnected");
    // 50 fps for 1 s is 50 frames; a loaded CI machine still manages a fraction of that.
    let before = frames.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    assert!(frames.load(Ordering::Relaxed) >= before + 10, "output should keep its pace");
    assert!(opens.load(Ordering::SeqCst) >= 4);
    h.shutdown().unwrap();
    assert!(stats.capture.errors.load(Ordering::Relaxed) >= 1);
}

#[test]
fn reader_gone_is_not_fatal_and_reload_swaps_the_avatar() {
    let source = Arc::new(|| -> puppetcam::Result<Box<dyn FrameSource>> { Ok(Box::new(FlakyCam { left: u32::MAX })) });
    let frames = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(PipelineStats::default());
    let h = Pipeline::start_spec(live_spec(source, frames.clone(), true), stats.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(frames.load(Ordering::Relaxed) >= 5, "writes continue with no reader");
    assert!(stats.sink_state.read().contains("no reader"), "{}", stats.sink_state.read());

    let e = h.reload_avatar(&fixture("generator_bad_output_name.onnx")).unwrap_err();
    assert!(e.to_string().contains("image"), "{e}");
    assert_eq!(stats.avatar_name.read().as_str(), "fixture-avatar", "a failed reload keeps the old avatar");
    let before = stats.generator.frames.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    assert!(stats.generator.frames.load(Ordering::Relaxed) > before, "generator still runs after a failed reload");
    h.reload_avatar(&fixture("generator_ok.onnx")).unwrap();
    assert!(!h.is_finished());
    h.shutdown().unwrap();
}

#[test]
fn face_lost_is_counted_once_per_incident() {
    // Face present for 5 frames, absent for 5, present again, absent again: two incidents.
    let n = Arc::new(AtomicU64::new(0));
    let source = Arc::new(|| -> puppetcam::Result<Box<dyn FrameSource>> { Ok(Box::new(FlakyCam { left: 20 })) });
    let stats = Arc::new(PipelineStats::default());
    let frames = Arc::new(AtomicU64::new(0));
    let mut spec = live_spec(source, frames, false);
    let n2 = n.clone();
    let face = move |_f: &Frame| -> puppetcam::Result<Option<FaceLandmarks>> {
        let i = n2.fetch_add(1, Ordering::SeqCst);
        Ok(((i / 5) % 2 == 0).then(|| synthetic::landmarks_at(i as f64 / 25.0)))
    };
    spec.driver = Driver::Video { source: spec_source(), face: Box::new(move || Ok(Box::new(face) as _)), live: false };
    spec.pacing = Pacing::EveryFrame;
    Pipeline::start_spec(spec, stats.clone()).unwrap().wait().unwrap();
    assert_eq!(stats.face.frames.load(Ordering::Relaxed), 20);
    assert_eq!(stats.face_lost.load(Ordering::Relaxed), 2);
    assert_eq!(stats.output.frames.load(Ordering::Relaxed), 20);
}

/// A finite source of 20 frames that ends cleanly.
fn spec_source() -> Arc<dyn Fn() -> puppetcam::Result<Box<dyn FrameSource>> + Send + Sync> {
    struct Twenty(u32);
    impl FrameSource for Twenty {
        fn next_frame(&mut self) -> puppetcam::Result<Option<Frame>> {
            if self.0 == 20 {
                return Ok(None);
            }
            self.0 += 1;
            Ok(Some(Frame::black(64, 48)))
        }
        fn describe(&self) -> String {
            "twenty frames".into()
        }
    }
    Arc::new(|| Ok(Box::new(Twenty(0)) as Box<dyn FrameSource>))
}

/// Runs 20 frames of the synthetic face at rest through a retargeting pipeline and returns the
/// final `retarget_state`.
fn retarget_state_after_20_neutral_frames(learn_frames: usize, calibration: Option<Calibration>) -> String {
    let rest = synthetic::neutral_shape();
    let face = move |_f: &Frame| -> puppetcam::Result<Option<FaceLandmarks>> {
        Ok(Some(FaceLandmarks { mesh: vec![], pts68: rest.pts68, iris: rest.iris, score: 1.0 }))
    };
    let stats = Arc::new(PipelineStats::default());
    let mut spec = live_spec(spec_source(), Arc::new(AtomicU64::new(0)), false);
    spec.driver = Driver::Video { source: spec_source(), face: Box::new(move || Ok(Box::new(face) as _)), live: false };
    spec.pacing = Pacing::EveryFrame;
    spec.retarget = Some(RetargetParams { learn_frames, ..RetargetParams::default() });
    spec.calibration = calibration;
    Pipeline::start_spec(spec, stats.clone()).unwrap().wait().unwrap();
    let s = stats.retarget_state.read().clone();
    s
}

#[test]
fn retarget_state_shows_learning_learned_and_profile() {
    let s = retarget_state_after_20_neutral_frames(30, None);
    assert!(s.starts_with("provisional 20/30") && s.contains("no calibration profile"), "{s}");
    let s = retarget_state_after_20_neutral_frames(5, None);
    assert!(s.starts_with("learned") && s.contains("first steady frames"), "{s}");
    let cal = Calibration { source: "profile /x/profile.toml (camera:0, t)".into(), neutral: synthetic::neutral_shape(), mesh: None, depth: None };
    let s = retarget_state_after_20_neutral_frames(5, Some(cal));
    assert_eq!(s, "profile: profile /x/profile.toml (camera:0, t)");
}

#[test]
fn embedded_driver_reports_its_own_neutral_and_no_retarget_reports_off() {
    let dir = tempfile::tempdir().unwrap();
    let plan = cpu_plan(DriverSpec::Embedded { frames: Some(3) }, SinkSpec::Y4m { path: dir.path().join("a.y4m") });
    let stats = Arc::new(PipelineStats::default());
    Pipeline::start_plan(plan, stats.clone()).unwrap().wait().unwrap();
    assert_eq!(stats.retarget_state.read().as_str(), "profile: embedded driver's rest face");
    let mut plan = cpu_plan(DriverSpec::Embedded { frames: Some(3) }, SinkSpec::Y4m { path: dir.path().join("b.y4m") });
    plan.retarget = None;
    let stats = Arc::new(PipelineStats::default());
    Pipeline::start_plan(plan, stats.clone()).unwrap().wait().unwrap();
    assert!(stats.retarget_state.read().starts_with("off"), "{}", stats.retarget_state.read());
}

/// Data is found through PUPPETCAM_DATA (else ../shared/data next to the repository), and under
/// CI=true missing data fails the test instead of letting it pass by skipping. Runs this very
/// test binary on the real-video test with a data directory that does not exist.
#[test]
fn missing_data_fails_under_ci_and_skips_elsewhere() {
    if std::env::var_os("PUPPETCAM_TEST_CHILD").is_some() {
        return; // no recursion
    }
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |ci: &str| {
        std::process::Command::new(&exe)
            .args(["real_video_to_y4m_one_frame_per_input_frame", "--exact", "--nocapture"])
            .env("PUPPETCAM_DATA", dir.path().join("no-such-data"))
            .env("PUPPETCAM_TEST_CHILD", "1")
            .env("CI", ci)
            .output()
            .unwrap()
    };
    let o = run("true");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "missing data must fail under CI=true: {text}");
    assert!(text.contains("CI=true and the test data is missing") && text.contains("no-such-data"), "{text}");
    let o = run("");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    assert!(text.contains("SKIPPED") && text.contains("no-such-data"), "{text}");
}

/// No test, test script or shipped example names a path of one particular machine.
#[test]
fn no_machine_paths_in_tests_or_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let needles = [concat!("/wo", "rk/"), concat!("/ho", "me/")];
    let mut files = Vec::new();
    for dir in ["tests", "tests/common", "scripts/tests", "calibration"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rs" || x == "py" || x == "toml" || x == "sh") {
                files.push(p);
            }
        }
    }
    files.push(root.join("puppetcam.example.toml"));
    assert!(files.len() > 10, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for n in needles {
            assert!(!text.contains(n), "{} contains the machine path {n}", f.display());
        }
    }
}

/// A camera whose timestamps restart from zero on every open, like a real one (pts = n * 10 ms).
struct ZeroCam {
    n: u64,
    left: u32,
    size: (u32, u32),
}

impl FrameSource for ZeroCam {
    fn next_frame(&mut self) -> puppetcam::Result<Option<Frame>> {
        std::thread::sleep(Duration::from_millis(10));
        if self.left == 0 {
            return Err(Error::SourceDisconnected("test: unplugged".into()));
        }
        self.left -= 1;
        let f = Frame { pts: Duration::from_millis(10 * self.n), seq: self.n, ..Frame::black(self.size.0, self.size.1) };
        self.n += 1;
        Ok(Some(f))
    }
    fn describe(&self) -> String {
        format!("zero-based test camera {}x{}", self.size.0, self.size.1)
    }
}

/// Records what the face stage sees: ("frame", pts, width) and ("reset", ..) events.
#[derive(Clone, Default)]
struct Recorder(Arc<parking_lot::Mutex<Vec<(&'static str, Duration, u32)>>>);

impl FaceStage for Recorder {
    fn process(&mut self, f: &Frame) -> puppetcam::Result<Option<FaceLandmarks>> {
        self.0.lock().push(("frame", f.pts, f.width));
        Ok(Some(synthetic::landmarks_at(f.pts.as_secs_f64())))
    }
    fn reset(&mut self) {
        self.0.lock().push(("reset", Duration::ZERO, 0));
    }
}

fn recorded_spec(source: Arc<dyn Fn() -> puppetcam::Result<Box<dyn FrameSource>> + Send + Sync>, rec: &Recorder, frames: Arc<AtomicU64>) -> PipelineSpec {
    let mut spec = live_spec(source.clone(), frames, false);
    let r = rec.clone();
    spec.driver = Driver::Video { source, face: Box::new(move || Ok(Box::new(r) as Box<dyn FaceStage>)), live: true };
    spec
}

#[test]
fn reconnect_resets_the_tracker_and_keeps_timestamps_monotonic() {
    let source = Arc::new(|| -> puppetcam::Result<Box<dyn FrameSource>> { Ok(Box::new(ZeroCam { n: 0, left: 15, size: (64, 48) })) });
    let rec = Recorder::default();
    let stats = Arc::new(PipelineStats::default());
    let h = Pipeline::start_spec(recorded_spec(source, &rec, Arc::new(AtomicU64::new(0))), stats.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.source_reconnects.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    h.shutdown().unwrap();
    let ev = rec.0.lock().clone();
    assert!(stats.source_reconnects.load(Ordering::Relaxed) >= 2, "never reconnected twice");
    // The tracker was reset once per loss, between the old session's frames and the new one's.
    let resets = ev.iter().filter(|e| e.0 == "reset").count();
    assert!(resets >= 2, "tracker never reset on reopen: {ev:?}");
    let first_reset = ev.iter().position(|e| e.0 == "reset").unwrap();
    assert!(first_reset > 0 && ev[first_reset + 1..].iter().any(|e| e.0 == "frame"), "{ev:?}");
    // Time never runs backwards for the face stage (the One Euro filter relies on it), although
    // every session of the camera counted from 0.
    let pts: Vec<Duration> = ev.iter().filter(|e| e.0 == "frame").map(|e| e.1).collect();
    assert!(pts.len() > 30, "{pts:?}");
    for w in pts.windows(2) {
        assert!(w[1] > w[0], "timestamps went backwards: {:?} -> {:?} in {pts:?}", w[0], w[1]);
    }
}

/// A sink that counts frames into a shared counter and records `finish`.
struct CountSink {
    frames: Arc<AtomicU64>,
    finished: Arc<AtomicU64>,
}

impl FrameSink for CountSink {
    fn write(&mut self, _f: &Frame) -> puppetcam::Result<()> {
        self.frames.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn describe(&self) -> String {
        "count sink".into()
    }
    fn finish(&mut self) -> puppetcam::Result<()> {
        self.finished.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_swaps_source_face_sink_and_generator_settings_in_place() {
    let source = Arc::new(|| -> puppetcam::Result<Box<dyn FrameSource>> { Ok(Box::new(ZeroCam { n: 0, left: u32::MAX, size: (64, 48) })) });
    let rec = Recorder::default();
    let stats = Arc::new(PipelineStats::default());
    let first_sink = Arc::new(AtomicU64::new(0));
    let h = Pipeline::start_spec(recorded_spec(source, &rec, first_sink.clone()), stats.clone()).unwrap();
    wait_for("frames", || first_sink.load(Ordering::Relaxed) > 5);

    // Source: the new camera's frames (another size) reach the face stage, after a tracker reset.
    let new_source = Arc::new(|| -> puppetcam::Result<Box<dyn FrameSource>> { Ok(Box::new(ZeroCam { n: 0, left: u32::MAX, size: (96, 72) })) });
    h.replace_source(new_source, true).unwrap();
    wait_for("frames of the new source", || rec.0.lock().iter().any(|e| e.2 == 96));
    assert!(stats.source_state.read().contains("96x72"), "{}", stats.source_state.read());
    // A source that fails to open is reported and the previous one comes back.
    let e = h.replace_source(Arc::new(|| Err(Error::Source("test: no such device".into()))), true).unwrap_err();
    assert!(e.to_string().contains("no such device"), "{e}");
    let n = rec.0.lock().len();
    wait_for("the previous source reopened", || rec.0.lock()[n..].iter().any(|e| e.2 == 96));

    // Face stage: a new one takes over.
    let rec2 = Recorder::default();
    let r2 = rec2.clone();
    h.replace_face(Box::new(move || Ok(Box::new(r2) as Box<dyn FaceStage>))).unwrap();
    wait_for("the new face stage", || !rec2.0.lock().is_empty());
    assert!(h.replace_face(Box::new(|| Err(Error::Invalid("test: models missing".into())))).is_err());
    let n2 = rec2.0.lock().len();
    wait_for("the face stage kept after a failed swap", || rec2.0.lock().len() > n2);

    // Sink: the new one opens, then the old one is finished; a failing one leaves the running one.
    let (frames2, fin2) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (f2, x2) = (frames2.clone(), fin2.clone());
    h.replace_sink(Box::new(move |_, _, _| Ok(Box::new(CountSink { frames: f2, finished: x2 }) as _))).unwrap();
    let before = first_sink.load(Ordering::Relaxed);
    wait_for("frames into the new sink", || frames2.load(Ordering::Relaxed) > 5);
    assert!(first_sink.load(Ordering::Relaxed) <= before + 1, "the old sink still gets frames");
    let e = h.replace_sink(Box::new(|_, _, _| Err(Error::Sink("test: /dev/video99 missing".into())))).unwrap_err();
    assert!(e.to_string().contains("video99"), "{e}");
    let n3 = frames2.load(Ordering::Relaxed);
    wait_for("the running sink kept", || frames2.load(Ordering::Relaxed) > n3 + 5);
    assert_eq!(fin2.load(Ordering::Relaxed), 0, "a failed swap must not finish the running sink");

    // Generator: new retargeting settings take effect (status shows the provisional neutral).
    assert!(stats.retarget_state.read().starts_with("off"), "{}", stats.retarget_state.read());
    let settings = GenSettings { runtime: cpu(), retarget: Some(RetargetParams::default()), calibration: None, ease: EaseTimes::default() };
    h.reconfigure_generator(&fixture("generator_ok.onnx"), settings.clone()).unwrap();
    assert!(stats.retarget_state.read().starts_with("provisional"), "{}", stats.retarget_state.read());
    // A broken avatar keeps the running avatar and settings.
    assert!(h.reconfigure_generator(&fixture("generator_bad_output_name.onnx"), GenSettings { retarget: None, ..settings }).is_err());
    assert!(stats.retarget_state.read().starts_with("provisional"), "{}", stats.retarget_state.read());
    h.shutdown().unwrap();
    assert_eq!(fin2.load(Ordering::Relaxed), 1, "the replacement sink is finished at shutdown");
}

/// Panics at its `at`-th frame (once), else serves black frames.
struct PanickyCam {
    n: Arc<AtomicU64>,
    at: u64,
}

impl FrameSource for PanickyCam {
    fn next_frame(&mut self) -> puppetcam::Result<Option<Frame>> {
        std::thread::sleep(Duration::from_millis(10));
        if self.n.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            panic!("test: the camera driver panics");
        }
        Ok(Some(Frame::black(64, 48)))
    }
    fn describe(&self) -> String {
        "panicky test camera".into()
    }
}

/// A panic in any stage (a driver, the tracker, the generator, the sink) is caught, counted and
/// the stage restarted; the output never stops (docs/ARCHITECTURE.md, "Faults never stop the
/// output").
#[test]
fn a_panic_in_any_stage_restarts_it_and_the_output_keeps_going() {
    let cam_frames = Arc::new(AtomicU64::new(0));
    let cf = cam_frames.clone();
    let source = Arc::new(move || -> puppetcam::Result<Box<dyn FrameSource>> { Ok(Box::new(PanickyCam { n: cf.clone(), at: 10 })) });
    let frames = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(PipelineStats::default());
    let mut spec = live_spec(source, frames.clone(), false);
    let t0 = Instant::now();
    let face_n = Arc::new(AtomicU64::new(0));
    let face = move |_f: &Frame| -> puppetcam::Result<Option<FaceLandmarks>> {
        if face_n.fetch_add(1, Ordering::SeqCst) + 1 == 20 {
            panic!("test: the tracker panics");
        }
        Ok(Some(synthetic::landmarks_at(t0.elapsed().as_secs_f64())))
    };
    if let Driver::Video { face: f, .. } = &mut spec.driver {
        *f = Box::new(move || Ok(Box::new(face) as _));
    }
    let gen_n = Arc::new(AtomicU64::new(0));
    spec.generator_hook = Some(Arc::new(move || {
        if gen_n.fetch_add(1, Ordering::SeqCst) + 1 == 30 {
            panic!("test: the generator panics");
        }
    }));
    struct PanickySink(Arc<AtomicU64>);
    impl FrameSink for PanickySink {
        fn write(&mut self, _f: &Frame) -> puppetcam::Result<()> {
            if self.0.fetch_add(1, Ordering::SeqCst) + 1 == 40 {
                panic!("test: the sink panics");
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "panicky sink".into()
        }
    }
    let f2 = frames.clone();
    spec.sink = Box::new(move |_, _, _| Ok(Box::new(PanickySink(f2)) as _));
    let h = Pipeline::start_spec(spec, stats.clone()).unwrap();
    let restarts = || [&stats.capture, &stats.face, &stats.generator, &stats.output].map(|s| s.restarts.load(Ordering::Relaxed));
    let deadline = Instant::now() + Duration::from_secs(20);
    while restarts().iter().any(|&r| r == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(restarts(), [1, 1, 1, 1], "every stage panicked once and was restarted");
    // Everything flows again after the restarts: camera frames, generated frames, writes.
    let (c, g, o) = (cam_frames.load(Ordering::SeqCst), stats.generator.frames.load(Ordering::Relaxed), frames.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs(1));
    assert!(cam_frames.load(Ordering::SeqCst) > c + 10, "capture resumed");
    assert!(stats.generator.frames.load(Ordering::Relaxed) > g + 10, "generator resumed");
    assert!(frames.load(Ordering::Relaxed) > o + 10, "output resumed");
    assert!(!h.is_finished());
    h.shutdown().unwrap();
}

/// A reload that hangs (here: an avatar "file" that is a FIFO nobody writes) never freezes the
/// output; it is given up after the reload timeout, the running avatar stays, and the next
/// reload works.
#[test]
fn a_stuck_reload_times_out_while_the_output_keeps_flowing() {
    let source = Arc::new(|| -> puppetcam::Result<Box<dyn FrameSource>> { Ok(Box::new(FlakyCam { left: u32::MAX })) });
    let frames = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(PipelineStats::default());
    let mut spec = live_spec(source, frames.clone(), false);
    spec.reload_timeout = Duration::from_secs(2);
    let h = Pipeline::start_spec(spec, stats.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stuck.pcav");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let g0 = stats.generator.frames.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let e = h.reload_avatar(&fifo).unwrap_err().to_string();
    let took = t0.elapsed();
    assert!(e.contains("took longer than 2 s") && e.contains("keeping 'fixture-avatar'"), "{e}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(6), "{took:?}");
    // 50 fps for 2 s: the generator kept producing frames during the whole reload.
    let made = stats.generator.frames.load(Ordering::Relaxed) - g0;
    assert!(made >= 20, "only {made} frames while the reload hung");
    assert_eq!(stats.avatar_name.read().as_str(), "fixture-avatar");
    // The abandoned loader stays blocked on the FIFO; it holds nothing the pipeline needs.
    h.reload_avatar(&fixture("generator_ok.onnx")).unwrap();
    h.shutdown().unwrap();
}
