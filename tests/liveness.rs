//! Liveness per stage on a real pipeline (docs/service.md, "Health"): a hang injected into each
//! stage must show in /health (state, stage, reason), in /metrics, and stop the systemd watchdog
//! pings; a camera that is gone (for good, or from the start) is degraded, never a reason to
//! restart; READY=1 must wait for the source (or its absence) and the avatar.
//! The output of realtime mode repeats its last frame on every tick, so none of this can be
//! seen from the output frame counter alone.
use puppetcam::core::types::{FaceLandmarks, Frame};
use puppetcam::ep::RuntimeOptions;
use puppetcam::error::Error;
use puppetcam::pipeline::{synthetic, Driver, EaseTimes, Pacing, Pipeline, PipelineHandle, PipelineSpec, SourceFactory};
use puppetcam::service::notify::WatchdogConfig;
use puppetcam::service::{HttpOptions, HttpServer, Liveness, LivenessConfig, Notifier, Watchdog};
use puppetcam::sink::FrameSink;
use puppetcam::source::FrameSource;
use puppetcam::stats::PipelineStats;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A switch a stage passes through on every frame; closed, the stage blocks (a hang: no error,
/// no progress, like a stuck driver call) until it is opened again.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn pass(&self) {
        let (m, c) = &*self.0;
        let mut closed = m.lock().unwrap();
        while *closed {
            closed = c.wait(closed).unwrap();
        }
    }
    fn set_closed(&self, v: bool) {
        *self.0 .0.lock().unwrap() = v;
        self.0 .1.notify_all();
    }
}

struct Cam {
    gate: Gate,
    left: u64,
}

impl FrameSource for Cam {
    fn next_frame(&mut self) -> puppetcam::Result<Option<Frame>> {
        self.gate.pass();
        std::thread::sleep(Duration::from_millis(10));
        if self.left == 0 {
            return Err(Error::SourceDisconnected("test: unplugged".into()));
        }
        self.left -= 1;
        Ok(Some(Frame::black(64, 48)))
    }
    fn describe(&self) -> String {
        "test camera".into()
    }
}

struct Sink {
    gate: Gate,
}

impl FrameSink for Sink {
    fn write(&mut self, _f: &Frame) -> puppetcam::Result<()> {
        self.gate.pass();
        Ok(())
    }
    fn describe(&self) -> String {
        "test sink".into()
    }
}

/// One gate per stage: capture, face, generator, output.
#[derive(Clone, Default)]
struct Gates([Gate; 4]);

fn spec(gates: &Gates, source: SourceFactory) -> PipelineSpec {
    let g = gates.0.clone();
    let (face_gate, sink_gate, gen_gate) = (g[1].clone(), g[3].clone(), g[2].clone());
    let t0 = Instant::now();
    let face = move |_f: &Frame| -> puppetcam::Result<Option<FaceLandmarks>> {
        face_gate.pass();
        Ok(Some(synthetic::landmarks_at(t0.elapsed().as_secs_f64())))
    };
    PipelineSpec {
        driver: Driver::Video { source, face: Box::new(move || Ok(Box::new(face) as _)), live: true },
        avatar: fixture("generator_ok.onnx"),
        runtime: RuntimeOptions { intra_threads: 1, ..RuntimeOptions::cpu() },
        sink: Box::new(move |_, _, _| Ok(Box::new(Sink { gate: sink_gate }) as _)),
        out_width: 160,
        out_height: 120,
        fps: 25.0,
        follow_source_fps: false,
        pacing: Pacing::Realtime,
        reconnect_max_backoff: Duration::from_millis(200),
        source_notice_after: LOST,
        ease: EaseTimes::default(),
        retarget: None,
        calibration: None,
        generator_hook: Some(Arc::new(move || gen_gate.pass())),
        reload_timeout: puppetcam::pipeline::RELOAD_TIMEOUT,
        presence: Default::default(),
        fit: Default::default(),
    }
}

/// The pipeline with its HTTP server and a watchdog talking to a real notify socket.
struct Rig {
    handle: Option<PipelineHandle>,
    http: Option<HttpServer>,
    wd: Option<Watchdog>,
    live: Arc<Liveness>,
    /// Every notify message with its arrival time. Read continuously by a thread: an unread
    /// socket fills up (10 datagrams) and blocks the sender, which would skew the timing.
    notes: Arc<Mutex<Vec<(Instant, String)>>>,
    _dir: tempfile::TempDir,
    gates: Gates,
}

const STALL: Duration = Duration::from_millis(800);
const LOST: Duration = Duration::from_millis(2500);

impl Rig {
    fn start(gates: Gates, source: SourceFactory) -> Rig {
        let stats = Arc::new(PipelineStats::default());
        let live = Liveness::start(stats.clone(), LivenessConfig { stall_after: STALL, source_lost_after: LOST });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let notes = Arc::new(Mutex::new(Vec::new()));
        let n2 = notes.clone();
        // Ends with the test process (the socket outlives the rig only until then).
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut b) {
                n2.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&b[..n]).to_string()));
            }
        });
        let cfg = WatchdogConfig { ping_every: Some(Duration::from_millis(100)), status_every: Duration::from_millis(200), tick: Duration::from_millis(20) };
        let wd = Watchdog::start_with(Notifier::with_socket(path.as_os_str()), live.clone(), stats.clone(), cfg);
        let http = HttpServer::start(&HttpOptions { bind: "127.0.0.1:0".parse().unwrap(), ..HttpOptions::default() }, stats.clone(), live.clone()).unwrap();
        let handle = Pipeline::start_spec(spec(&gates, source), stats).unwrap();
        Rig { handle: Some(handle), http: Some(http), wd: Some(wd), live, notes, _dir: dir, gates }
    }

    fn addr(&self) -> SocketAddr {
        self.http.as_ref().unwrap().local_addr()
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let (head, body) = buf.split_once("\r\n\r\n").unwrap();
        (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
    }

    fn health(&self) -> (u16, serde_json::Value) {
        let (code, body) = self.get("/health");
        (code, serde_json::from_str(&body).unwrap())
    }

    /// One sample value of /metrics, e.g. `puppetcam_stage_frames_total{stage="face"}`.
    fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// Notify messages received within the next `d`.
    fn notes(&self, d: Duration) -> Vec<String> {
        let t0 = Instant::now();
        std::thread::sleep(d);
        self.notes.lock().unwrap().iter().filter(|(t, _)| *t >= t0).map(|(_, m)| m.clone()).collect()
    }

    fn wait_health(&self, what: &str, f: impl Fn(u16, &serde_json::Value) -> bool) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let (code, v) = self.health();
            if f(code, &v) {
                return v;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "timed out waiting for {what}; last /health {code} {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ok(&self) {
        self.wait_health("status ok", |c, v| c == 200 && v["status"] == "ok");
    }

    /// Pings sent within the next `d`, after two watchdog ticks (a ping decided just before
    /// the verdict changed may still be on its way).
    fn pings_within(&self, d: Duration) -> usize {
        std::thread::sleep(Duration::from_millis(250));
        self.notes(d).iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for g in &self.gates.0 {
            g.set_closed(false);
        }
        if let Some(h) = self.handle.take() {
            h.shutdown().unwrap();
        }
        if let Some(w) = self.wd.take() {
            w.stop();
        }
        if let Some(h) = self.http.take() {
            h.shutdown();
        }
        self.live.stop();
    }
}

fn working_camera(gate: Gate) -> SourceFactory {
    Arc::new(move || Ok(Box::new(Cam { gate: gate.clone(), left: u64::MAX }) as Box<dyn FrameSource>))
}

#[test]
fn a_hang_in_any_stage_makes_health_503_names_the_stage_and_stops_the_watchdog() {
    for (i, stage) in ["capture", "face", "generator", "output"].into_iter().enumerate() {
        let gates = Gates::default();
        let rig = Rig::start(gates.clone(), working_camera(gates.0[0].clone()));
        rig.wait_ok();
        assert!(rig.pings_within(Duration::from_millis(400)) > 0, "{stage}: no pings while healthy");
        assert_eq!(rig.metric("puppetcam_healthy"), 1.0);

        gates.0[i].set_closed(true);
        let v = rig.wait_health(&format!("{stage} stalled"), |c, _| c == 503);
        assert_eq!(v["status"], "unhealthy", "{stage}: {v}");
        assert!(v["reason"].as_str().unwrap().starts_with(&format!("{stage} stage stalled")), "{stage}: {v}");
        assert_eq!(v["stages"][stage]["state"], "stalled", "{stage}: {v}");
        assert!(v["stages"][stage]["last_progress_s"].as_f64().unwrap() >= STALL.as_secs_f64(), "{stage}: {v}");
        // The face is not what is wrong, and its state is still reported.
        assert_eq!(v["face"], "tracked", "{stage}: {v}");

        // /metrics: unhealthy, the stalled stage flagged, its frame counter frozen.
        assert_eq!(rig.metric("puppetcam_healthy"), 0.0, "{stage}");
        assert_eq!(rig.metric(&format!("puppetcam_stage_stalled{{stage=\"{stage}\"}}")), 1.0, "{stage}");
        let series = format!("puppetcam_stage_frames_total{{stage=\"{stage}\"}}");
        let frozen = rig.metric(&series);
        // No watchdog ping while unhealthy (systemd would restart the daemon).
        let pings = rig.pings_within(Duration::from_millis(600));
        assert_eq!(pings, 0, "{stage}: watchdog pinged while a stage hung");
        // At most the one frame that was in flight when the gate closed.
        assert!(rig.metric(&series) <= frozen + 1.0, "{stage}: a hung stage made progress");
        if stage != "capture" {
            // Upstream of the hang the source keeps delivering (latest frame wins).
            let a = rig.metric("puppetcam_stage_frames_total{stage=\"capture\"}");
            std::thread::sleep(Duration::from_millis(300));
            assert!(rig.metric("puppetcam_stage_frames_total{stage=\"capture\"}") > a, "{stage}: capture stopped too");
        }

        // The hang ends: healthy again, pings again.
        gates.0[i].set_closed(false);
        rig.wait_ok();
        assert!(rig.pings_within(Duration::from_millis(500)) > 0, "{stage}: pings did not resume");
        assert_eq!(rig.metric(&format!("puppetcam_stage_stalled{{stage=\"{stage}\"}}")), 0.0);
    }
}

/// A camera whose first opening serves `frames` frames and then unplugs; every later opening is
/// `then()`. Returns the factory and the count of openings.
fn first_then(gates: &Gates, frames: u64, then: impl Fn() -> puppetcam::Result<Box<dyn FrameSource>> + Send + Sync + 'static) -> (SourceFactory, Arc<AtomicU64>) {
    let opens = Arc::new(AtomicU64::new(0));
    let (o, g0) = (opens.clone(), gates.0[0].clone());
    let source: SourceFactory = Arc::new(move || {
        if o.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(Box::new(Cam { gate: g0.clone(), left: frames }) as Box<dyn FrameSource>)
        } else {
            then()
        }
    });
    (source, opens)
}

#[test]
fn a_camera_that_never_comes_back_stays_degraded_and_the_watchdog_fed() {
    let gates = Gates::default();
    let (source, opens) = first_then(&gates, 40, || Err(Error::Source("test: no such device".into())));
    let rig = Rig::start(gates, source);
    rig.wait_ok();
    // Unplugged after 40 frames and never back: degraded (200), reopen attempts counted as capture
    // errors, the idle portrait still written, the watchdog still pinged.
    let v = rig.wait_health("degraded", |c, v| c == 200 && v["status"] == "degraded");
    assert!(v["reason"].as_str().unwrap().contains("reopening"), "{v}");
    assert_eq!(v["stages"]["capture"]["state"], "lost", "{v}");
    assert_eq!(rig.metric("puppetcam_degraded"), 1.0);
    assert_eq!(rig.metric("puppetcam_healthy"), 1.0);
    let errors = rig.metric("puppetcam_errors_total{stage=\"capture\"}");
    let written = rig.metric("puppetcam_frames_total");
    assert!(rig.pings_within(Duration::from_millis(500)) > 0, "degraded must keep the watchdog fed");
    assert!(rig.metric("puppetcam_errors_total{stage=\"capture\"}") > errors, "reopen failures must count as capture errors");
    assert!(rig.metric("puppetcam_frames_total") > written, "the output keeps going");
    assert_eq!(rig.metric("puppetcam_source_reconnects_total"), 0.0);

    // After source_lost_timeout: still degraded and fed (a restart cannot bring a camera back;
    // one that exits would end in systemd's start limit), and the reason says what it waits for.
    let v = rig.wait_health("waiting for camera", |c, v| c == 200 && v["reason"].as_str().is_some_and(|r| r.starts_with("waiting for camera")));
    assert!(v["source_lost_s"].as_f64().unwrap() >= LOST.as_secs_f64(), "{v}");
    assert_eq!(rig.metric("puppetcam_healthy"), 1.0);
    assert!(rig.pings_within(Duration::from_millis(600)) > 0, "the watchdog must stay fed with the camera gone");
    let written = rig.metric("puppetcam_frames_total");
    std::thread::sleep(Duration::from_millis(500));
    assert!(rig.metric("puppetcam_frames_total") > written, "the output keeps going (with the notice)");
    assert!(opens.load(Ordering::SeqCst) >= 3, "the capture stage kept trying");
}

#[test]
fn ready_waits_for_the_first_source_frame_and_says_so() {
    let gates = Gates::default();
    // The camera opens but delivers nothing yet: the output shows the idle portrait meanwhile.
    gates.0[0].set_closed(true);
    let rig = Rig::start(gates.clone(), working_camera(gates.0[0].clone()));
    let t0 = Instant::now();
    while rig.metric("puppetcam_frames_total") < 5.0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no output frames");
        std::thread::sleep(Duration::from_millis(20));
    }
    let notes = rig.notes(Duration::from_millis(500));
    assert!(!notes.iter().any(|m| m.contains("READY=1")), "READY before the camera delivered: {notes:?}");
    assert!(notes.iter().any(|m| m.contains("WATCHDOG=1")), "start-up must keep the watchdog fed: {notes:?}");
    let (code, v) = rig.health();
    assert_eq!((code, v["status"].as_str()), (503, Some("starting")), "{v}");
    let (_, status) = rig.get("/status.json");
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(s["ready"], serde_json::json!({"ready": false, "source": false, "avatar": true}), "{s}");
    assert_eq!(rig.metric("puppetcam_ready"), 0.0);

    gates.0[0].set_closed(false);
    let t0 = Instant::now();
    loop {
        let notes = rig.notes(Duration::from_millis(100));
        if let Some(r) = notes.iter().find(|m| m.contains("READY=1")) {
            assert!(r.contains("STATUS="), "{r}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no READY after the first frame");
    }
    let (_, status) = rig.get("/status.json");
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(s["ready"]["ready"], true, "{s}");
    rig.wait_ok();
}

/// A camera missing at start: the daemon starts anyway (READY=1, degraded, "waiting for camera",
/// the watchdog fed, frames written), and animates as soon as the camera appears, without a
/// restart (issue 18: "a start without the camera exits 1").
#[test]
fn a_camera_missing_at_start_runs_degraded_then_animates_when_it_appears() {
    let opens = Arc::new(AtomicU64::new(0));
    let o = opens.clone();
    let gates = Gates::default();
    let g0 = gates.0[0].clone();
    let plugged = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let p2 = plugged.clone();
    let source: SourceFactory = Arc::new(move || {
        o.fetch_add(1, Ordering::SeqCst);
        if p2.load(Ordering::SeqCst) {
            Ok(Box::new(Cam { gate: g0.clone(), left: u64::MAX }) as Box<dyn FrameSource>)
        } else {
            Err(Error::Source("test: no such device /dev/video7".into()))
        }
    });
    let rig = Rig::start(gates, source);
    let v = rig.wait_health("degraded", |c, v| c == 200 && v["status"] == "degraded");
    assert!(v["reason"].as_str().unwrap().contains("waiting for camera"), "{v}");
    assert!(rig.notes(Duration::from_millis(500)).iter().any(|m| m.contains("WATCHDOG=1")));
    assert!(rig.notes.lock().unwrap().iter().any(|(_, m)| m.contains("READY=1")), "ready while waiting for the camera");
    let written = rig.metric("puppetcam_frames_total");
    std::thread::sleep(Duration::from_millis(400));
    assert!(rig.metric("puppetcam_frames_total") > written, "the output flows without a camera");
    assert_eq!(rig.metric("puppetcam_stage_frames_total{stage=\"capture\"}"), 0.0);
    // Plugged in: reopened by the capture stage, animation starts, status ok.
    plugged.store(true, Ordering::SeqCst);
    rig.wait_ok();
    let t0 = Instant::now();
    while rig.metric("puppetcam_stage_frames_total{stage=\"generator\"}") < 10.0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no animation after the camera appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(opens.load(Ordering::SeqCst) >= 2);
}

/// A camera node that opens but never delivers (a stalled webcam, a v4l2loopback device without
/// its writer): each reopen succeeds, then times out. That is still a lost camera (degraded, the
/// watchdog fed), not a stalled capture stage (unhealthy, restarted); found by the webcam VM test.
#[test]
fn a_camera_that_reopens_but_stays_silent_is_lost_not_stalled() {
    struct SilentCam;
    impl FrameSource for SilentCam {
        fn next_frame(&mut self) -> puppetcam::Result<Option<Frame>> {
            // Longer than the stall threshold, like the camera source's own 5 s no-frame limit.
            std::thread::sleep(STALL * 2);
            Err(Error::SourceDisconnected("test: no frame".into()))
        }
        fn describe(&self) -> String {
            "silent test camera".into()
        }
    }
    let gates = Gates::default();
    let (source, opens) = first_then(&gates, 30, || Ok(Box::new(SilentCam) as Box<dyn FrameSource>));
    let rig = Rig::start(gates, source);
    rig.wait_ok();
    rig.wait_health("degraded", |c, v| c == 200 && v["status"] == "degraded");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        let (code, v) = rig.health();
        assert_eq!((code, v["status"].as_str()), (200, Some("degraded")), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(opens.load(Ordering::SeqCst) >= 3, "reopened repeatedly");
    assert!(rig.pings_within(Duration::from_millis(500)) > 0);
    assert_eq!(rig.metric("puppetcam_source_reconnects_total"), 0.0, "a silent reopen is not a reconnection");
}
