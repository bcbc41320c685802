//! Service side over real sockets: HTTP endpoints on an ephemeral 127.0.0.1 port (health,
//! Prometheus text validity, JPEG/MJPEG preview, client cap, loopback-only bind), the server's
//! defences (Host check, request size, idle and non-reading clients, shutdown, failed reloads) and
//! sd_notify messages received on a real unix datagram socket.
use puppetcam::core::types::Frame;
use puppetcam::service::notify::WatchdogConfig;
use puppetcam::service::{HttpOptions, HttpServer, Liveness, LivenessConfig, Notifier, Service, ServiceOptions, Watchdog};
use puppetcam::stats::PipelineStats;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn opts() -> HttpOptions {
    HttpOptions { bind: "127.0.0.1:0".parse().unwrap(), ..HttpOptions::default() }
}

struct Resp {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
}

/// Sends `request` as it is and reads the answer until the server closes.
fn exchange(addr: SocketAddr, request: &str) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("no header end");
    let headers = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
    Resp { status, headers, body: buf[split + 4..].to_vec() }
}

fn frame(w: u32, h: u32, seed: u8) -> Arc<Frame> {
    let mut f = Frame::black(w, h);
    for (i, b) in f.data.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(seed);
    }
    Arc::new(f)
}

/// Keeps "frames" flowing into the stats until dropped.
struct Feeder {
    stop: Arc<AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
}
impl Feeder {
    fn start(stats: Arc<PipelineStats>) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            let mut i = 0u8;
            while !s2.load(Ordering::Relaxed) {
                for st in stats.stages() {
                    st.record(Duration::from_micros(1500 + i as u64 * 100));
                }
                *stats.preview.lock() = Some(frame(64, 48, i));
                i = i.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Feeder { stop, t: Some(t) }
    }
}
impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn live_cfg() -> LivenessConfig {
    LivenessConfig { stall_after: Duration::from_secs(2), source_lost_after: Duration::from_secs(10) }
}

fn start(stats: &Arc<PipelineStats>, o: HttpOptions) -> (HttpServer, Arc<Liveness>) {
    let live = Liveness::start(stats.clone(), live_cfg());
    (HttpServer::start(&o, stats.clone(), live.clone()).unwrap(), live)
}

#[test]
fn health_is_503_until_frames_flow_then_200() {
    let stats = Arc::new(PipelineStats::default());
    *stats.source_state.write() = "opening /dev/video0".into();
    let (srv, _l) = start(&stats, opts());
    let r = get(srv.local_addr(), "/health");
    assert_eq!(r.status, 503);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "starting");
    assert!(v["reason"].as_str().unwrap().contains("opening /dev/video0"), "{v}");

    stats.avatar_loaded.store(true, Ordering::Relaxed);
    let feeder = Feeder::start(stats.clone());
    wait_until("healthy", || get(srv.local_addr(), "/health").status == 200);
    let v: serde_json::Value = serde_json::from_slice(&get(srv.local_addr(), "/health").body).unwrap();
    assert_eq!(v["status"], "ok");
    assert!(v["fps"].as_f64().unwrap() > 0.0);
    drop(feeder);
    // Frames stop: after the 2 s window the endpoint reports the stalled stage.
    wait_until("stall detected", || get(srv.local_addr(), "/health").status == 503);
    let v: serde_json::Value = serde_json::from_slice(&get(srv.local_addr(), "/health").body).unwrap();
    assert!(v["reason"].as_str().unwrap().starts_with("capture stage stalled: no frame from the source"), "{v}");
    assert_eq!(v["stages"]["capture"]["state"], "stalled", "{v}");
    srv.shutdown();
}

/// Parses the text exposition strictly enough to catch format slips.
fn parse_prometheus(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut samples = Vec::new();
    let mut typed = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let kw = p.next().unwrap();
            assert!(kw == "HELP" || kw == "TYPE", "bad comment line {line:?}");
            let name = p.next().expect("metric name").to_string();
            let arg = p.next().expect("HELP/TYPE argument");
            if kw == "TYPE" {
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg), "{line}");
                assert!(typed.insert(name, arg.to_string()).is_none(), "duplicate TYPE in {line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.find('{') {
            Some(i) => {
                assert!(series.ends_with('}'), "{line}");
                let mut m = HashMap::new();
                for kv in series[i + 1..series.len() - 1].split(',') {
                    let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(v.starts_with('"') && v.ends_with('"') && v.len() >= 2, "{line}");
                    m.insert(k.to_string(), v[1..v.len() - 1].to_string());
                }
                (&series[..i], m)
            }
            None => (series, HashMap::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name {name:?}"
        );
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|f| typed.get(*f).map(String::as_str) == Some("histogram"));
        let family = family.unwrap_or(name);
        assert!(typed.contains_key(family), "sample {name} before its # TYPE");
        samples.push((name.to_string(), labels, value));
    }
    samples
}

#[test]
fn metrics_are_valid_prometheus_text() {
    let stats = Arc::new(PipelineStats::default());
    stats.ep.write().active = "CPU".into();
    stats.ep.write().fallback_reason = Some("CUDA: \"libcudart.so\" missing".into());
    stats.face_lost.fetch_add(3, Ordering::Relaxed);
    stats.generator.drop_one();
    stats.capture.error_one();
    for us in [100u64, 900, 3_000, 20_000, 2_000_000] {
        stats.generator.record(Duration::from_micros(us));
    }
    let (srv, _l) = start(&stats, opts());
    let r = get(srv.local_addr(), "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.headers.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{}", r.headers);
    let text = String::from_utf8(r.body).unwrap();
    let samples = parse_prometheus(&text);
    let one = |name: &str, key: &str, val: &str| {
        samples.iter().find(|(n, l, _)| n == name && (key.is_empty() || l.get(key).map(String::as_str) == Some(val))).map(|s| s.2)
    };
    assert_eq!(one("puppetcam_execution_provider", "provider", "CPU"), Some(1.0));
    assert_eq!(one("puppetcam_ep_fallback", "", ""), Some(1.0));
    assert_eq!(one("puppetcam_face_lost_total", "", ""), Some(3.0));
    assert_eq!(one("puppetcam_dropped_frames_total", "stage", "generator"), Some(1.0));
    assert_eq!(one("puppetcam_errors_total", "stage", "capture"), Some(1.0));
    assert!(one("puppetcam_frames_total", "", "").is_some());
    assert!(one("puppetcam_fps", "", "").is_some());
    assert!(one("puppetcam_source_reconnects_total", "", "").is_some());
    assert!(one("puppetcam_uptime_seconds", "", "").is_some());

    for stage in ["capture", "face", "generator", "output", "end_to_end"] {
        let buckets: Vec<_> = samples
            .iter()
            .filter(|(n, l, _)| n == "puppetcam_stage_latency_seconds_bucket" && l["stage"] == stage)
            .map(|(_, l, v)| (l["le"].clone(), *v))
            .collect();
        assert_eq!(buckets.len(), puppetcam::stats::BUCKETS_US.len(), "{stage}");
        let mut prev_le = f64::NEG_INFINITY;
        let mut prev = 0.0;
        for (le, v) in &buckets {
            let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
            assert!(le > prev_le, "le not increasing for {stage}");
            assert!(*v >= prev, "bucket counts not monotonic for {stage}");
            prev_le = le;
            prev = *v;
        }
        assert_eq!(buckets.last().unwrap().0, "+Inf");
        let count = one("puppetcam_stage_latency_seconds_count", "stage", stage).unwrap();
        assert_eq!(buckets.last().unwrap().1, count, "+Inf bucket != count for {stage}");
        assert!(one("puppetcam_stage_latency_seconds_sum", "stage", stage).is_some());
    }
    assert_eq!(one("puppetcam_stage_latency_seconds_count", "stage", "generator"), Some(5.0));
    // 900 us falls in the le=0.001 bucket together with 100 us.
    assert_eq!(
        samples.iter().find(|(n, l, _)| n == "puppetcam_stage_latency_seconds_bucket" && l["stage"] == "generator" && l["le"] == "0.001").map(|s| s.2),
        Some(2.0)
    );
    srv.shutdown();
}

/// Issue 19: end-to-end latency as its own histogram, with buckets fine enough around the 35 ms
/// target to tell a lip-sync problem from a good call.
#[test]
fn end_to_end_latency_is_a_histogram_with_lip_sync_buckets() {
    let stats = Arc::new(PipelineStats::default());
    for ms in [18u64, 22, 34, 36, 48, 120] {
        stats.end_to_end_hist.record(Duration::from_millis(ms));
    }
    let (srv, _l) = start(&stats, opts());
    let text = String::from_utf8(get(srv.local_addr(), "/metrics").body).unwrap();
    assert!(text.contains("# TYPE puppetcam_end_to_end_latency_seconds histogram"), "{text}");
    let samples = parse_prometheus(&text);
    let bucket = |le: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == "puppetcam_end_to_end_latency_seconds_bucket" && l.get("le").map(String::as_str) == Some(le))
            .map(|s| s.2)
    };
    assert_eq!(bucket("0.02"), Some(1.0));
    assert_eq!(bucket("0.035"), Some(3.0), "34 ms is under the target, 36 ms over");
    assert_eq!(bucket("0.045"), Some(4.0));
    assert_eq!(bucket("0.05"), Some(5.0));
    assert_eq!(bucket("+Inf"), Some(6.0));
    let les: Vec<f64> = samples
        .iter()
        .filter(|(n, _, _)| n == "puppetcam_end_to_end_latency_seconds_bucket")
        .map(|(_, l, _)| if l["le"] == "+Inf" { f64::INFINITY } else { l["le"].parse().unwrap() })
        .collect();
    assert!(les.windows(2).all(|w| w[0] < w[1]), "{les:?}");
    let one = |name: &str| samples.iter().find(|(n, _, _)| n == name).map(|s| s.2);
    assert_eq!(one("puppetcam_end_to_end_latency_seconds_count"), Some(6.0));
    assert!((one("puppetcam_end_to_end_latency_seconds_sum").unwrap() - 0.278).abs() < 1e-9);
    srv.shutdown();
}

#[test]
fn the_parser_rejects_broken_exposition() {
    // The validity test is only worth something if its parser can fail.
    for bad in ["# TYPE x foo\n", "x 1\n", "# TYPE x gauge\nx{a=b} 1\n", "# TYPE x gauge\nx one\n"] {
        assert!(std::panic::catch_unwind(|| parse_prometheus(bad)).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn preview_jpeg_and_mjpeg_stream_with_client_cap() {
    let stats = Arc::new(PipelineStats::default());
    let (srv, _l) = start(&stats, HttpOptions { max_preview_clients: 1, preview_fps: 20.0, ..opts() });
    assert_eq!(get(srv.local_addr(), "/preview.jpg").status, 503, "no frame yet");
    let feeder = Feeder::start(stats.clone());
    wait_until("a preview frame", || stats.preview.lock().is_some());
    let r = get(srv.local_addr(), "/preview.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..2], &[0xFF, 0xD8], "not a JPEG");
    assert_eq!(&r.body[r.body.len() - 2..], &[0xFF, 0xD9], "JPEG not terminated");

    let mut s = TcpStream::connect(srv.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /preview HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // Read until three parts arrived: the stream keeps going on its own.
    while buf.windows(16).filter(|w| w == b"--puppetcamframe").count() < 3 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "stream ended early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..200.min(buf.len())]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("multipart/x-mixed-replace; boundary=puppetcamframe"), "{head}");
    assert!(buf.windows(25).any(|w| w == b"Content-Type: image/jpeg\r"));

    // The cap is 1 and a stream is open: the next client is turned away.
    let r = get(srv.local_addr(), "/preview");
    assert_eq!(r.status, 503);
    drop(s);
    wait_until("preview slot freed", || {
        let v: serde_json::Value = serde_json::from_slice(&get(srv.local_addr(), "/status.json").body).unwrap();
        v["preview_clients"] == 0
    });
    drop(feeder);
    srv.shutdown();
}

#[test]
fn shutdown_ends_open_preview_streams() {
    let stats = Arc::new(PipelineStats::default());
    *stats.preview.lock() = Some(frame(32, 32, 1));
    let (srv, _l) = start(&stats, opts());
    let mut s = TcpStream::connect(srv.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /preview HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut b = [0u8; 64];
    assert!(s.read(&mut b).unwrap() > 0);
    srv.shutdown(); // must return although a client is still connected
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest); // EOF (or reset) once the server thread ended
}

#[test]
fn status_page_and_json_and_errors() {
    let stats = Arc::new(PipelineStats::default());
    *stats.avatar_name.write() = "<b>mona</b>".into();
    stats.ep.write().active = "CUDA".into();
    *stats.retarget_state.write() = "provisional 3/30: no calibration profile".into();
    let (srv, _l) = start(&stats, opts());
    let r = get(srv.local_addr(), "/");
    assert_eq!(r.status, 200);
    let page = String::from_utf8(r.body).unwrap();
    assert!(page.contains("/status.json") && page.contains("/preview"));
    assert!(page.contains("id=\"retarget\"") && page.contains("st.retarget_state"), "the page shows the retarget state");
    let v: serde_json::Value = serde_json::from_slice(&get(srv.local_addr(), "/status.json").body).unwrap();
    assert_eq!(v["avatar"], "<b>mona</b>");
    assert_eq!(v["ep"]["active"], "CUDA");
    assert_eq!(v["retarget_state"], "provisional 3/30: no calibration profile");
    assert_eq!(v["stages"].as_array().unwrap().len(), 5);
    assert_eq!(get(srv.local_addr(), "/nope").status, 404);
    srv.shutdown();
}

#[test]
fn non_loopback_bind_is_refused_unless_allowed() {
    let stats = Arc::new(PipelineStats::default());
    let live = Liveness::start(stats.clone(), live_cfg());
    let o = HttpOptions { bind: "0.0.0.0:0".parse().unwrap(), ..HttpOptions::default() };
    let e = HttpServer::start(&o, stats.clone(), live.clone()).err().expect("0.0.0.0 must be refused");
    assert!(e.to_string().contains("service.bind"), "{e}");
    let o = HttpOptions { allow_remote: true, ..o };
    let srv = HttpServer::start(&o, stats, live).expect("allowed explicitly");
    srv.shutdown();
}

#[test]
fn methods_head_and_not_found_keep_their_answers() {
    let stats = Arc::new(PipelineStats::default());
    *stats.preview.lock() = Some(frame(32, 32, 1));
    let (srv, _l) = start(&stats, opts());
    let a = srv.local_addr();
    let r = exchange(a, "POST /status.json HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 405);
    assert!(r.headers.to_ascii_lowercase().contains("allow: get, head"), "{}", r.headers);
    let r = exchange(a, "HEAD /status.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty() && r.headers.to_ascii_lowercase().contains("content-type: application/json"), "{}", r.headers);
    // HEAD /preview: the stream's headers, no body, and the connection ends.
    let r = exchange(a, "HEAD /preview HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("multipart/x-mixed-replace; boundary=puppetcamframe") && r.body.is_empty(), "{}", r.headers);
    assert_eq!(exchange(a, "GET /nope?x=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").status, 404);
    assert_eq!(get(a, "/preview.jpg?t=1").status, 200, "the query is ignored");
    srv.shutdown();
}

/// DNS rebinding: a page on attacker.example whose name resolves to 127.0.0.1 makes the browser
/// send `Host: attacker.example`; the server must not answer it with the preview or the status.
#[test]
fn host_header_must_name_this_server() {
    let stats = Arc::new(PipelineStats::default());
    *stats.preview.lock() = Some(frame(32, 32, 1));
    let (srv, _l) = start(&stats, opts());
    let a = srv.local_addr();
    let port = a.port();
    let req = |path: &str, host: &str| exchange(a, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
    for path in ["/status.json", "/preview.jpg", "/preview", "/", "/health", "/metrics"] {
        for host in ["attacker.example".to_string(), format!("attacker.example:{port}"), format!("localhost.attacker.example:{port}")] {
            let r = req(path, &host);
            assert!(r.status == 421 || r.status == 403, "{path} with Host {host}: {}", r.status);
            assert!(!r.body.starts_with(b"{") && !r.body.starts_with(&[0xFF, 0xD8]), "{path} with Host {host} leaked data");
        }
    }
    // An absolute-form target names the host too (and wins over the Host header).
    let r = exchange(a, &format!("GET http://attacker.example:{port}/status.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
    assert!(r.status == 421 || r.status == 403, "{}", r.status);
    for host in [a.to_string(), format!("localhost:{port}"), "localhost".into(), format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        assert_eq!(req("/status.json", &host).status, 200, "Host {host}");
        assert_eq!(req("/preview.jpg", &host).status, 200, "Host {host}");
    }
    // HTTP/1.0 tools send no Host.
    assert_eq!(exchange(a, "GET /status.json HTTP/1.0\r\n\r\n").status, 200);
    srv.shutdown();

    // allow_remote: an IP address is fine (the LAN address the server is reached by), a name is not.
    let (srv, _l) = start(&stats, HttpOptions { allow_remote: true, ..opts() });
    let a = srv.local_addr();
    let req = |host: &str| exchange(a, &format!("GET /status.json HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")).status;
    assert_eq!(req("192.168.1.20:8765"), 200);
    assert_eq!(req("[fe80::1]:8765"), 200);
    let s = req("attacker.example:8765");
    assert!(s == 421 || s == 403, "{s}");
    srv.shutdown();
}

/// Resident memory of this process in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
    kb * 1024
}

#[test]
fn oversized_request_line_is_refused_without_buffering_it() {
    let stats = Arc::new(PipelineStats::default());
    let (srv, _l) = start(&stats, opts());
    let mut s = TcpStream::connect(srv.local_addr()).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let rss0 = rss();
    let t0 = Instant::now();
    s.write_all(b"GET /").unwrap();
    // Up to 64 MiB of one request line. The server must stop taking it after its limit (16 KiB):
    // what gets through beyond that sits in the two sockets' buffers, a few MiB at most.
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // reset by the server, or it stopped reading
        }
    }
    eprintln!("the server refused after {} KiB had been sent", sent >> 10);
    assert!(sent < 16 << 20, "the server took {} MiB of a request line", sent >> 20);
    let grown = rss().saturating_sub(rss0);
    assert!(grown < 32 << 20, "memory grew by {} MiB", grown >> 20);
    // The answer: 431 (or 414/400), or the connection closed.
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) if buf.is_empty() => {}
        Ok(_) => {
            let status = String::from_utf8_lossy(&buf[..12.min(buf.len())]).to_string();
            assert!(["431", "414", "400"].iter().any(|c| status.contains(c)), "{status}");
        }
        Err(e) => assert!(matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe), "{e}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    // And the server is fine.
    assert_eq!(get(srv.local_addr(), "/status.json").status, 200);
    srv.shutdown();
}

/// Asks for /health on a new connection; panics unless an answer comes within `within`.
fn health_within(addr: SocketAddr, within: Duration) -> Duration {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, within).expect("connect");
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("no /health answer in time");
    assert!(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&buf));
    assert!(String::from_utf8_lossy(&buf).contains("\"status\""));
    let took = t0.elapsed();
    assert!(took < within, "/health took {took:?}");
    took
}

#[test]
fn idle_connections_do_not_lock_out_health() {
    let stats = Arc::new(PipelineStats::default());
    let (srv, _l) = start(&stats, opts());
    let addr = srv.local_addr();
    // 500 connections that send nothing, half a request head, or a head whose promised body never
    // comes (slowloris and its slow-body variant), then wait.
    let mut idle = Vec::new();
    for i in 0..500 {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { continue };
        let _ = match i % 3 {
            0 => Ok(()),
            1 => s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n"),
            _ => s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n"),
        };
        idle.push(s);
    }
    for _ in 0..3 {
        health_within(addr, Duration::from_secs(2));
    }
    drop(idle);
    srv.shutdown();
}

#[test]
fn clients_that_stop_reading_do_not_block_others() {
    let stats = Arc::new(PipelineStats::default());
    for us in [100u64, 900, 3_000, 20_000] {
        stats.generator.record(Duration::from_micros(us));
    }
    let (srv, _l) = start(&stats, opts());
    let addr = srv.local_addr();
    // Each pipelines thousands of /metrics requests and reads none of the answers: tens of MiB
    // the server cannot get rid of.
    let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(4000);
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(req.as_bytes());
        stuck.push(s);
    }
    std::thread::sleep(Duration::from_millis(1500));
    health_within(addr, Duration::from_secs(2));
    drop(stuck);
    srv.shutdown();
}

/// Frames of noise: JPEG cannot shrink them, so a stream fills socket buffers fast.
fn noise(w: u32, h: u32, seed: u32) -> Arc<Frame> {
    let mut f = Frame::black(w, h);
    let mut x = seed.wrapping_mul(2654435761) | 1;
    for b in f.data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    Arc::new(f)
}

/// Alternates two big noise frames as the preview until dropped.
fn noise_feeder(stats: &Arc<PipelineStats>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let frames = [noise(1280, 720, 1), noise(1280, 720, 2)];
    let stop = Arc::new(AtomicBool::new(false));
    let (st, s2) = (stats.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        let mut i = 0;
        while !s2.load(Ordering::Relaxed) {
            *st.preview.lock() = Some(frames[i % 2].clone());
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (stop, t)
}

fn preview_clients(addr: SocketAddr) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&get(addr, "/status.json").body).unwrap();
    v["preview_clients"].as_u64().unwrap()
}

/// `curl …/preview | less`: the client never reads, the server's writes block. Shutdown (and so
/// SIGTERM and a reload) must not wait for that client.
#[test]
fn shutdown_returns_while_a_preview_client_never_reads() {
    let stats = Arc::new(PipelineStats::default());
    let (stop, feeder) = noise_feeder(&stats);
    let (srv, _l) = start(&stats, HttpOptions { preview_fps: 30.0, ..opts() });
    let addr = srv.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /preview HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    wait_until("the stream started", || preview_clients(addr) == 1);
    std::thread::sleep(Duration::from_millis(1500)); // the socket buffers fill up
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        srv.shutdown();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("shutdown waits for a preview client that does not read");
    eprintln!("shutdown took {:?}", t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    drop(s);
}

#[test]
fn a_preview_client_that_stops_reading_is_dropped() {
    let stats = Arc::new(PipelineStats::default());
    let (stop, feeder) = noise_feeder(&stats);
    let o = HttpOptions { preview_fps: 30.0, max_preview_clients: 1, write_timeout: Duration::from_secs(1), ..opts() };
    let (srv, _l) = start(&stats, o);
    let addr = srv.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /preview HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    wait_until("the stream started", || preview_clients(addr) == 1);
    let t0 = Instant::now();
    wait_until("the stalled client dropped", || preview_clients(addr) == 0);
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // Its place is free again.
    let mut s2 = TcpStream::connect(addr).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s2, "GET /preview HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut b = [0u8; 12];
    s2.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"HTTP/1.1 200");
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    drop((s, s2));
    srv.shutdown();
}

/// A SIGHUP whose new HTTP settings cannot be served must leave the running server as it was.
#[test]
fn a_failed_reconfigure_keeps_the_server_answering() {
    let stats = Arc::new(PipelineStats::default());
    let base = ServiceOptions { http: Some(opts()), handle_signals: false, notify: false, ..ServiceOptions::default() };
    let svc = Service::start(&base, stats).unwrap();
    let addr = svc.http_addr().unwrap();
    let with = |h: HttpOptions| ServiceOptions { http: Some(h), ..base.clone() };
    let answers = |a: SocketAddr| matches!(get(a, "/health").status, 200 | 503);

    // Same address, settings the new server refuses.
    let e = svc.reconfigure(&with(HttpOptions { bind: addr, jpeg_quality: 0, ..opts() })).unwrap_err();
    assert!(e.to_string().contains("jpeg_quality"), "{e}");
    assert_eq!(svc.http_addr(), Some(addr));
    assert!(answers(addr));

    // Another address that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(svc.reconfigure(&with(HttpOptions { bind: taken.local_addr().unwrap(), ..opts() })).is_err());
    assert_eq!(svc.http_addr(), Some(addr));
    assert!(answers(addr));

    // Same address, valid new settings: served at once, by the new server (an IP Host is only
    // accepted with allow_remote).
    let ip_host = || exchange(addr, "GET /status.json HTTP/1.1\r\nHost: 10.1.2.3\r\nConnection: close\r\n\r\n").status;
    assert_ne!(ip_host(), 200);
    let changed = svc.reconfigure(&with(HttpOptions { bind: addr, allow_remote: true, ..opts() })).unwrap();
    assert_eq!(changed, vec![format!("http on {addr}")]);
    assert_eq!(ip_host(), 200);
    svc.shutdown();
}

/// Receives sd_notify datagrams on a real socket.
struct NotifySock {
    sock: std::os::unix::net::UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}
impl NotifySock {
    fn new() -> NotifySock {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        NotifySock { sock, _dir: dir, path }
    }
    /// All messages received within `d`.
    fn drain_for(&self, d: Duration) -> Vec<String> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut b = [0u8; 4096];
        while t0.elapsed() < d {
            if let Ok(n) = self.sock.recv(&mut b) {
                out.push(String::from_utf8_lossy(&b[..n]).to_string());
            }
        }
        out
    }
    fn wait_for(&self, needle: &str) -> Vec<String> {
        let t0 = Instant::now();
        let mut seen = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            assert!(t0.elapsed() < Duration::from_secs(20), "no {needle:?} in {seen:?}");
            if let Ok(n) = self.sock.recv(&mut b) {
                let m = String::from_utf8_lossy(&b[..n]).to_string();
                let hit = m.lines().any(|l| l == needle || l.starts_with(needle));
                seen.push(m);
                if hit {
                    return seen;
                }
            }
        }
    }
}

#[test]
fn sd_notify_ready_status_and_progress_gated_watchdog() {
    let ns = NotifySock::new();
    let stats = Arc::new(PipelineStats::default());
    stats.ep.write().active = "CPU".into();
    let live = Liveness::start(stats.clone(), live_cfg());
    let cfg = WatchdogConfig { ping_every: Some(Duration::from_millis(100)), status_every: Duration::from_millis(300), tick: Duration::from_millis(20) };
    let notifier = Notifier::with_socket(ns.path.as_os_str());
    let wd = Watchdog::start_with(notifier.clone(), live.clone(), stats.clone(), cfg);

    // Starting up (no frame yet): watchdog pings keep systemd patient, but no READY.
    let before = ns.wait_for("WATCHDOG=1");
    assert!(!before.iter().any(|m| m.contains("READY=1")), "{before:?}");

    // Output frames alone (the black start-up frame) are not READY.
    stats.output.record(Duration::from_millis(1));
    let early = ns.drain_for(Duration::from_millis(400));
    assert!(!early.iter().any(|m| m.contains("READY=1")), "READY before the source delivered: {early:?}");
    // Source frames + avatar loaded -> READY=1 with a status line naming the EP.
    stats.avatar_loaded.store(true, Ordering::Relaxed);
    let feeder = Feeder::start(stats.clone());
    let msgs = ns.wait_for("READY=1");
    let ready = msgs.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=") && ready.contains("EP CPU"), "{ready}");
    ns.wait_for("WATCHDOG=1");

    // Stalled pipeline: once past the stall window, pings stop (systemd would restart us);
    // status lines continue and say why.
    drop(feeder);
    let _ = ns.drain_for(Duration::from_millis(2600));
    let stalled = ns.drain_for(Duration::from_millis(800));
    assert!(!stalled.iter().any(|m| m.contains("WATCHDOG=1")), "pinged while stalled: {stalled:?}");
    assert!(stalled.iter().any(|m| m.starts_with("STATUS=UNHEALTHY: capture stage stalled")), "{stalled:?}");

    // Progress again -> pings again.
    let feeder = Feeder::start(stats.clone());
    ns.wait_for("WATCHDOG=1");
    drop(feeder);

    // Reload and stop messages.
    notifier.reloading();
    let m = ns.wait_for("RELOADING=1");
    assert!(m.last().unwrap().contains("MONOTONIC_USEC="), "{m:?}");
    notifier.stopping();
    ns.wait_for("STOPPING=1");
    wd.stop();
    live.stop();
}

/// `systemd-analyze verify` on both rendered units; skipped (with the reason printed) when the
/// tool is not installed. Any diagnostic naming our unit fails the test, since verify exits 0 on
/// mere warnings such as unknown keys.
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    use puppetcam::service::install::render_unit;
    if std::process::Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIPPED: systemd-analyze not installed (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    for (system, name) in [(true, "puppetcam-system.service"), (false, "puppetcam.service")] {
        // ExecStart must name an existing executable for verify to pass.
        let unit = render_unit(system, std::path::Path::new("/bin/true"), &["--config".into(), "/etc/puppetcam/config.toml".into()]).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, unit).unwrap();
        let mut cmd = std::process::Command::new("systemd-analyze");
        if !system {
            cmd.arg("--user").env("XDG_RUNTIME_DIR", &run);
        }
        let out = cmd.arg("verify").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && (stderr.contains("Failed to initialize manager") || stderr.contains("Failed to connect")) {
            eprintln!("SKIPPED for {name}: systemd-analyze cannot start a manager here: {stderr}");
            continue;
        }
        assert!(out.status.success(), "{name}: {stderr}");
        let ours: Vec<_> = stderr.lines().filter(|l| l.contains(name)).collect();
        assert!(ours.is_empty(), "{name}: {ours:?}");
    }
}
