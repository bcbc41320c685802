//! Local HTTP endpoints for monitoring: /health, /metrics (Prometheus text), /status.json, a status
//! page at /, and the live output as /preview (MJPEG) and /preview.jpg. Bound to loopback unless
//! the config explicitly allows otherwise, because the preview shows the user's animated face.
//! Runs on its own worker threads (plus one per preview client, capped) and never touches the
//! pipeline's hot path beyond reading `PipelineStats`.
use super::liveness::{Liveness, Snapshot, StageState, STAGES};
use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::stats::{PipelineStats, StageStats, BUCKETS_US};
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tiny_http::{Header, Request, Response, Server};

const STATUS_PAGE: &str = include_str!("status.html");

/// HTTP server settings (from the config's `[service]` section).
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Listen address; port 0 picks a free one (tests).
    pub bind: SocketAddr,
    /// Allow a non-loopback bind address. Off by default: the preview is private.
    pub allow_remote: bool,
    /// Upper bound on the MJPEG frame rate per client.
    pub preview_fps: f64,
    /// Simultaneous /preview streams; more get 503.
    pub max_preview_clients: usize,
    /// JPEG quality 1..=100.
    pub jpeg_quality: i32,
    /// Request worker threads (the preview streams have their own).
    pub workers: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 8765)),
            allow_remote: false,
            preview_fps: 10.0,
            max_preview_clients: 4,
            jpeg_quality: 80,
            workers: 2,
        }
    }
}

impl HttpOptions {
    /// Rejects settings that would be unsafe or meaningless.
    pub fn validate(&self) -> Result<()> {
        if !self.bind.ip().is_loopback() && !self.allow_remote {
            return Err(Error::Config {
                key: "service.bind".into(),
                msg: format!(
                    "{} is not a loopback address; the preview would be visible on the network. \
                     Set service.allow_remote = true to allow it",
                    self.bind
                ),
            });
        }
        if !(self.preview_fps > 0.0 && self.preview_fps <= 60.0) {
            return Err(Error::Config { key: "service.preview_fps".into(), msg: "must be in (0, 60]".into() });
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(Error::Config { key: "service.jpeg_quality".into(), msg: "must be in 1..=100".into() });
        }
        Ok(())
    }
}

struct Shared {
    stats: Arc<PipelineStats>,
    liveness: Arc<Liveness>,
    opts: HttpOptions,
    stop: AtomicBool,
    preview_clients: AtomicUsize,
    jpeg: JpegCache,
    preview_threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The running server; `shutdown` (or drop) stops and joins every thread.
pub struct HttpServer {
    shared: Arc<Shared>,
    server: Arc<Server>,
    addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(opts: &HttpOptions, stats: Arc<PipelineStats>, liveness: Arc<Liveness>) -> Result<HttpServer> {
        opts.validate()?;
        let server = Server::http(opts.bind)
            .map_err(|e| Error::Config { key: "service.bind".into(), msg: format!("cannot listen on {}: {e}", opts.bind) })?;
        let addr = server.server_addr().to_ip().ok_or_else(|| Error::Invalid("HTTP server has no IP address".into()))?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            stats,
            liveness,
            opts: opts.clone(),
            stop: AtomicBool::new(false),
            preview_clients: AtomicUsize::new(0),
            jpeg: JpegCache::default(),
            preview_threads: Mutex::new(Vec::new()),
        });
        let mut workers = Vec::new();
        for i in 0..opts.workers.max(1) {
            let (server, shared) = (server.clone(), shared.clone());
            let h = std::thread::Builder::new()
                .name(format!("svc-http-{i}"))
                .spawn(move || worker(&server, &shared))
                .map_err(|e| Error::Invalid(format!("cannot start an HTTP thread: {e}")))?;
            workers.push(h);
        }
        log::info!("status page on http://{addr}/");
        Ok(HttpServer { shared, server, addr, workers })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let previews: Vec<_> = self.shared.preview_threads.lock().drain(..).collect();
        for p in previews {
            let _ = p.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn worker(server: &Server, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        // The timeout bounds how long shutdown waits even if an `unblock` is missed.
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(req)) => handle(req, shared),
            Ok(None) => {}
            Err(e) => {
                log::warn!("HTTP accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    // Only called with static ASCII names/values, which tiny_http always accepts.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap_or_else(|_| Header::from_bytes("X-Invalid", "1").unwrap())
}

fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(body.into())
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
}

fn handle(req: Request, shared: &Arc<Shared>) {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    if *req.method() != tiny_http::Method::Get && *req.method() != tiny_http::Method::Head {
        let _ = req.respond(text(405, "text/plain", "method not allowed\n").with_header(header("Allow", "GET, HEAD")));
        return;
    }
    let resp = match path.as_str() {
        "/" | "/index.html" => text(200, "text/html; charset=utf-8", STATUS_PAGE),
        "/health" => {
            let (ok, body) = health_json(shared);
            text(if ok { 200 } else { 503 }, "application/json", body)
        }
        "/metrics" => text(200, "text/plain; version=0.0.4; charset=utf-8", metrics_text(&shared.stats, &shared.liveness)),
        "/status.json" => text(200, "application/json", status_json(shared)),
        "/preview.jpg" => match shared.jpeg.latest(&shared.stats, shared.opts.jpeg_quality) {
            Ok(Some((_, jpg))) => text(200, "image/jpeg", jpg.as_slice()),
            Ok(None) => text(503, "text/plain", "no frame yet\n"),
            Err(e) => text(500, "text/plain", format!("{e}\n")),
        },
        "/preview" => return start_preview(req, shared),
        _ => text(404, "text/plain", "not found\n"),
    };
    let _ = req.respond(resp);
}

/// /health: 200 while liveness says "ok" or "degraded" (a lost camera being reopened), 503 while
/// starting or unhealthy (a stalled stage, a camera lost for too long), with the stage and reason.
fn health_json(shared: &Shared) -> (bool, String) {
    let snap = shared.liveness.snapshot();
    let stats = &shared.stats;
    let up = snap.status.is_up();
    let body = serde_json::json!({
        "status": snap.status.as_str(),
        "reason": snap.reason,
        "stages": stages_json(&snap),
        "face": snap.face,
        "fps": round2(snap.fps),
        "frames": snap.frames,
        "last_frame_age_s": snap.since_last_frame.map(|d| round2(d.as_secs_f64())),
        "source_lost_s": snap.source_lost_for.map(|d| round2(d.as_secs_f64())),
        "ep": stats.ep.read().active,
        "ep_fallback": stats.ep.read().fallback_reason,
    });
    (up, body.to_string())
}

/// `{"capture": {"state": "ok", "last_progress_s": 0.03}, ...}`
fn stages_json(snap: &Snapshot) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for v in &snap.stages {
        m.insert(
            v.name.to_string(),
            serde_json::json!({
                "state": v.state.as_str(),
                "last_progress_s": v.since_progress.map(|d| round2(d.as_secs_f64())),
            }),
        );
    }
    serde_json::Value::Object(m)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The data behind the status page.
pub fn status_value(stats: &PipelineStats, liveness: &Liveness) -> serde_json::Value {
    let snap = liveness.snapshot();
    let ep = stats.ep.read().clone();
    let stages: Vec<_> = stats
        .stages()
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "frames": s.frames.load(Ordering::Relaxed),
                "drops": s.drops.load(Ordering::Relaxed),
                "errors": s.errors.load(Ordering::Relaxed),
                "restarts": s.restarts.load(Ordering::Relaxed),
                "p50_ms": s.percentile_us(50.0).map(|v| round2(v / 1000.0)),
                "p99_ms": s.percentile_us(99.0).map(|v| round2(v / 1000.0)),
            })
        })
        .collect();
    let drops: u64 = stats.stages().iter().map(|s| s.drops.load(Ordering::Relaxed)).sum();
    serde_json::json!({
        "healthy": snap.status.is_up(),
        "health": { "status": snap.status.as_str(), "reason": snap.reason, "stages": stages_json(&snap) },
        // What READY=1 waits for: the source's first frame and the loaded avatar.
        "ready": { "ready": snap.readiness.ready(), "source": snap.readiness.source, "avatar": snap.readiness.avatar },
        "face": snap.face,
        "fps": round2(snap.fps),
        "frames": snap.frames,
        "last_frame_age_s": snap.since_last_frame.map(|d| round2(d.as_secs_f64())),
        "uptime_s": round2(stats.started.elapsed().as_secs_f64()),
        "avatar": stats.avatar_name.read().clone(),
        "ep": { "active": ep.active, "fallback_reason": ep.fallback_reason },
        "drops": drops,
        "face_lost": stats.face_lost.load(Ordering::Relaxed),
        "source_reconnects": stats.source_reconnects.load(Ordering::Relaxed),
        "source_state": stats.source_state.read().clone(),
        "sink_state": stats.sink_state.read().clone(),
        "retarget_state": stats.retarget_state.read().clone(),
        "stages": stages,
    })
}

fn status_json(shared: &Shared) -> String {
    let mut v = status_value(&shared.stats, &shared.liveness);
    v["preview_clients"] = shared.preview_clients.load(Ordering::Relaxed).into();
    v.to_string()
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus float formatting (`+Inf`, no exponent surprises for small bucket bounds).
fn prom_f64(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

fn histogram(out: &mut String, s: &StageStats) {
    let stage = label(s.name);
    let buckets = s.cumulative_buckets();
    for (bound_us, count) in &buckets {
        let le = if *bound_us == u64::MAX { "+Inf".to_string() } else { prom_f64(*bound_us as f64 / 1e6) };
        let _ = writeln!(out, "puppetcam_stage_latency_seconds_bucket{{stage=\"{stage}\",le=\"{le}\"}} {count}");
    }
    // The count is the +Inf bucket (not `frames`, which a concurrent `record` may have bumped
    // first) so that scrapers always see +Inf == count.
    let count = buckets.last().map(|b| b.1).unwrap_or(0);
    let _ = writeln!(out, "puppetcam_stage_latency_seconds_sum{{stage=\"{stage}\"}} {}", prom_f64(s.sum_us() as f64 / 1e6));
    let _ = writeln!(out, "puppetcam_stage_latency_seconds_count{{stage=\"{stage}\"}} {count}");
}

/// Renders all metrics in the Prometheus text exposition format (version 0.0.4).
pub fn metrics_text(stats: &PipelineStats, liveness: &Liveness) -> String {
    debug_assert_eq!(BUCKETS_US.last(), Some(&u64::MAX));
    let mut o = String::with_capacity(8192);
    let snap = liveness.snapshot();
    let real_stages = [&stats.capture, &stats.face, &stats.generator, &stats.output];
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
    };

    family(&mut o, "puppetcam_stage_latency_seconds", "histogram", "Per-stage processing time; stage=end_to_end is capture to sink write.");
    for s in stats.stages() {
        histogram(&mut o, s);
    }
    family(&mut o, "puppetcam_frames_total", "counter", "Frames written to the sink.");
    let _ = writeln!(o, "puppetcam_frames_total {}", stats.output.frames.load(Ordering::Relaxed));
    family(&mut o, "puppetcam_stage_frames_total", "counter", "Frames processed per stage.");
    for s in real_stages {
        let _ = writeln!(o, "puppetcam_stage_frames_total{{stage=\"{}\"}} {}", label(s.name), s.frames.load(Ordering::Relaxed));
    }
    family(&mut o, "puppetcam_dropped_frames_total", "counter", "Frames dropped because the next stage was busy (latest frame wins).");
    for s in real_stages {
        let _ = writeln!(o, "puppetcam_dropped_frames_total{{stage=\"{}\"}} {}", label(s.name), s.drops.load(Ordering::Relaxed));
    }
    family(&mut o, "puppetcam_errors_total", "counter", "Errors per stage (including camera reopen attempts).");
    for s in real_stages {
        let _ = writeln!(o, "puppetcam_errors_total{{stage=\"{}\"}} {}", label(s.name), s.errors.load(Ordering::Relaxed));
    }
    family(&mut o, "puppetcam_stage_restarts_total", "counter", "Times a stage panicked and was restarted by its supervisor (the output kept flowing).");
    for s in real_stages {
        let _ = writeln!(o, "puppetcam_stage_restarts_total{{stage=\"{}\"}} {}", label(s.name), s.restarts.load(Ordering::Relaxed));
    }
    family(&mut o, "puppetcam_fps", "gauge", "Output frames per second over the last 2 s.");
    let _ = writeln!(o, "puppetcam_fps {}", prom_f64(round2(snap.fps)));
    family(&mut o, "puppetcam_face_lost_total", "counter", "Times the face tracker lost the face.");
    let _ = writeln!(o, "puppetcam_face_lost_total {}", stats.face_lost.load(Ordering::Relaxed));
    family(&mut o, "puppetcam_source_reconnects_total", "counter", "Times the frame source was reopened.");
    let _ = writeln!(o, "puppetcam_source_reconnects_total {}", stats.source_reconnects.load(Ordering::Relaxed));
    let ep = stats.ep.read().clone();
    family(&mut o, "puppetcam_execution_provider", "gauge", "The ONNX Runtime execution provider the generator runs on (value 1).");
    if !ep.active.is_empty() {
        let _ = writeln!(o, "puppetcam_execution_provider{{provider=\"{}\"}} 1", label(&ep.active));
    }
    family(&mut o, "puppetcam_ep_fallback", "gauge", "1 when a preferred execution provider failed and a slower one is used.");
    let _ = writeln!(o, "puppetcam_ep_fallback {}", u8::from(ep.fallback_reason.is_some()));
    family(&mut o, "puppetcam_healthy", "gauge", "1 while /health answers 200 (ok or degraded).");
    let _ = writeln!(o, "puppetcam_healthy {}", u8::from(snap.status.is_up()));
    family(&mut o, "puppetcam_ready", "gauge", "1 once the source delivered a frame and the avatar is loaded (READY=1).");
    let _ = writeln!(o, "puppetcam_ready {}", u8::from(snap.readiness.ready()));
    family(&mut o, "puppetcam_degraded", "gauge", "1 while the source is lost and being reopened.");
    let _ = writeln!(o, "puppetcam_degraded {}", u8::from(snap.source_lost_for.is_some()));
    family(&mut o, "puppetcam_stage_stalled", "gauge", "1 while a stage has work waiting and makes no progress.");
    for name in STAGES {
        let stalled = snap.stage(name).is_some_and(|v| v.state == StageState::Stalled);
        let _ = writeln!(o, "puppetcam_stage_stalled{{stage=\"{name}\"}} {}", u8::from(stalled));
    }
    family(&mut o, "puppetcam_face_tracked", "gauge", "1 while the face tracker sees a face (a lost face is normal, not unhealthy).");
    let _ = writeln!(o, "puppetcam_face_tracked {}", u8::from(snap.face == "tracked"));
    family(&mut o, "puppetcam_uptime_seconds", "gauge", "Seconds since the pipeline started.");
    let _ = writeln!(o, "puppetcam_uptime_seconds {}", prom_f64(round2(stats.started.elapsed().as_secs_f64())));
    o
}

/// Encodes the latest preview frame once per distinct frame, however many clients ask.
#[derive(Default)]
struct JpegCache {
    last: Mutex<Option<(Arc<Frame>, Arc<Vec<u8>>)>>,
}

impl JpegCache {
    /// The JPEG of the newest frame and the frame it came from; `None` before the first frame.
    fn latest(&self, stats: &PipelineStats, quality: i32) -> Result<Option<(Arc<Frame>, Arc<Vec<u8>>)>> {
        let Some(frame) = stats.preview.lock().clone() else { return Ok(None) };
        let mut last = self.last.lock();
        if let Some((f, j)) = last.as_ref() {
            if Arc::ptr_eq(f, &frame) {
                return Ok(Some((f.clone(), j.clone())));
            }
        }
        let jpg = Arc::new(encode_jpeg(&frame, quality)?);
        *last = Some((frame.clone(), jpg.clone()));
        Ok(Some((frame, jpg)))
    }
}

/// RGB24 frame -> JPEG bytes through OpenCV (which wants BGR).
pub fn encode_jpeg(frame: &Frame, quality: i32) -> Result<Vec<u8>> {
    use opencv::core::{Mat, Vector};
    use opencv::prelude::*;
    if !frame.len_ok() || frame.width == 0 || frame.height == 0 {
        return Err(Error::Invalid(format!("preview frame {}x{} has {} bytes", frame.width, frame.height, frame.data.len())));
    }
    let mut bgr = frame.data.clone();
    for px in bgr.chunks_exact_mut(3) {
        px.swap(0, 2);
    }
    let flat = Mat::new_rows_cols_with_data(frame.height as i32, frame.width as i32 * 3, &bgr)?;
    let mat = flat.reshape(3, frame.height as i32)?;
    let mut buf = Vector::<u8>::new();
    let params = Vector::<i32>::from_slice(&[opencv::imgcodecs::IMWRITE_JPEG_QUALITY, quality]);
    if !opencv::imgcodecs::imencode(".jpg", &mat, &mut buf, &params)? {
        return Err(Error::OpenCv("imencode(.jpg) returned false".into()));
    }
    Ok(buf.to_vec())
}

/// Decrements the preview client count however the stream ends.
struct ClientSlot<'a>(&'a AtomicUsize);
impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn start_preview(req: Request, shared: &Arc<Shared>) {
    let n = shared.preview_clients.fetch_add(1, Ordering::Relaxed);
    if n >= shared.opts.max_preview_clients {
        shared.preview_clients.fetch_sub(1, Ordering::Relaxed);
        let _ = req.respond(text(503, "text/plain", "too many preview clients\n").with_header(header("Retry-After", "5")));
        return;
    }
    let sh = shared.clone();
    let spawned = std::thread::Builder::new().name("svc-preview".into()).spawn(move || {
        let _slot = ClientSlot(&sh.preview_clients);
        stream_mjpeg(req, &sh);
    });
    match spawned {
        Ok(h) => {
            let mut threads = shared.preview_threads.lock();
            threads.retain(|t| !t.is_finished());
            threads.push(h);
        }
        Err(e) => {
            shared.preview_clients.fetch_sub(1, Ordering::Relaxed);
            log::warn!("cannot start a preview thread: {e}");
        }
    }
}

const BOUNDARY: &str = "puppetcamframe";

/// Writes a multipart/x-mixed-replace stream until the client leaves or the server stops.
fn stream_mjpeg(req: Request, shared: &Shared) {
    let head_only = *req.method() == tiny_http::Method::Head;
    let mut w = req.into_writer();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
         Cache-Control: no-store\r\nPragma: no-cache\r\nConnection: close\r\n\r\n"
    );
    if w.write_all(head.as_bytes()).and_then(|_| w.flush()).is_err() || head_only {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / shared.opts.preview_fps);
    let mut last_sent: Option<Arc<Frame>> = None;
    let mut last_write = Instant::now() - period;
    while !shared.stop.load(Ordering::Relaxed) {
        let due = last_write + period;
        let now = Instant::now();
        if now < due {
            std::thread::sleep((due - now).min(Duration::from_millis(100)));
            continue;
        }
        match shared.jpeg.latest(&shared.stats, shared.opts.jpeg_quality) {
            Ok(Some((frame, jpg))) if last_sent.as_ref().map_or(true, |f| !Arc::ptr_eq(f, &frame)) => {
                let part = format!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpg.len());
                let ok = w.write_all(part.as_bytes()).and_then(|_| w.write_all(&jpg)).and_then(|_| w.write_all(b"\r\n")).and_then(|_| w.flush());
                if ok.is_err() {
                    return; // client went away
                }
                last_sent = Some(frame);
            }
            Ok(_) => {} // no new frame: do not resend the same one
            Err(e) => {
                log::warn!("preview encode: {e}");
            }
        }
        last_write = Instant::now();
    }
}
