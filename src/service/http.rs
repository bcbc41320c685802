//! Local HTTP endpoints for monitoring: /health, /metrics (Prometheus text), /status.json, a status
//! page at /, and the live output as /preview (MJPEG) and /preview.jpg. Bound to loopback unless
//! the config explicitly allows otherwise, because the preview shows the user's animated face.
//! Never touches the pipeline's hot path beyond reading `PipelineStats`.
//!
//! HTTP/1.1 through hyper 1.x on a current-thread tokio runtime, all on one thread ("svc-http").
//! hyper replaced tiny_http (issue 18) because it is maintained and bounds what a client can make
//! it hold: a request line or header block over `MAX_HEAD` gets 431 instead of growing a buffer,
//! and headers must arrive within `header_timeout` (also the keep-alive idle limit), so slowloris
//! clients are closed. Being async, one thread serves every connection, MJPEG streams included:
//! there is no thread per client to fail to spawn (tiny_http panicked then) and none that shutdown
//! would have to join while it is blocked writing to a client that stopped reading.
//! What this module adds, and why:
//! - every write has a deadline (`write_timeout`), so a client that stops reading
//!   (`curl …/preview | less`) is dropped instead of holding its connection for ever;
//! - at most `max_connections` connections besides the preview streams (which have their own cap,
//!   `max_preview_clients`). At the cap a newcomer evicts the connection that has waited longest
//!   for a request (idle keep-alive or a slow header), so idle sockets cannot lock /health out;
//!   only when every connection is busy answering does the newcomer get 503;
//! - the Host must name this server (`host_allowed`): with DNS rebinding a web page whose name
//!   resolves to 127.0.0.1 could otherwise read /preview.jpg and /status.json;
//! - shutdown stops the runtime, which closes every socket; it never waits on a client;
//! - `/api/...` is the control API (`crate::control`, docs/api.md): its bodies are read under the
//!   upload limit and its handlers run on a thread of their own, so a slow action (a live avatar
//!   switch loads for a second or two) never holds the other connections up.
use super::liveness::{Liveness, Snapshot, StageState, STAGES};
use crate::control::api::{self as control_api, ApiRequest};
use crate::control::{ControlError, ControlHub};
use crate::core::types::Frame;
use crate::error::{Error, Result};
use crate::stats::{PipelineStats, StageStats, BUCKETS_US};
use hyper::body::{Body, Bytes, Frame as BodyFrame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, Notify};

const STATUS_PAGE: &str = include_str!("status.html");

/// Request line plus headers at most (hyper's read buffer): far above what a browser or
/// Prometheus sends, small enough that a flood of connections cannot add up to much memory.
const MAX_HEAD: usize = 16 * 1024;

/// How long shutdown lets responses already being written finish before the sockets are closed.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// HTTP server settings (from the config's `[service]` section).
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Listen address; port 0 picks a free one (tests).
    pub bind: SocketAddr,
    /// Allow a non-loopback bind address (and IP-address Host headers). Off by default: the
    /// preview is private.
    pub allow_remote: bool,
    /// Upper bound on the MJPEG frame rate per client.
    pub preview_fps: f64,
    /// Simultaneous /preview streams; more get 503.
    pub max_preview_clients: usize,
    /// JPEG quality 1..=100.
    pub jpeg_quality: i32,
    /// Open connections besides the preview streams. At the cap a new connection evicts the one
    /// that has waited longest for a request; only when all are busy answering does it get 503.
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long an idle keep-alive
    /// connection is kept.
    pub header_timeout: Duration,
    /// Time a write may make no progress before the client is dropped (one that stopped reading).
    pub write_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 8765)),
            allow_remote: false,
            preview_fps: 10.0,
            max_preview_clients: 4,
            jpeg_quality: 80,
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
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
        if self.max_connections == 0 || self.header_timeout.is_zero() || self.write_timeout.is_zero() {
            return Err(Error::Invalid("HTTP max_connections, header_timeout and write_timeout must be positive".into()));
        }
        Ok(())
    }
}

struct Shared {
    stats: Arc<PipelineStats>,
    /// The control API (`/api/...`, docs/api.md); `None`: those routes answer 404.
    control: Option<Arc<ControlHub>>,
    liveness: Arc<Liveness>,
    opts: HttpOptions,
    /// The address actually bound (the Host check accepts it).
    addr: SocketAddr,
    preview_clients: AtomicUsize,
    jpeg: JpegCache,
    conns: Conns,
}

/// The running server; `shutdown` (or drop) stops it and closes every connection.
pub struct HttpServer {
    addr: SocketAddr,
    /// A second handle on the listening socket: `restart` on the same address hands it to the new
    /// server instead of binding again (which would fail while this one listens).
    listener: std::net::TcpListener,
    stop: Option<oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(opts: &HttpOptions, stats: Arc<PipelineStats>, liveness: Arc<Liveness>) -> Result<HttpServer> {
        Self::start_with_control(opts, stats, liveness, None)
    }

    /// [`HttpServer::start`] with the control API (`/api/...`) served from `control`.
    pub fn start_with_control(opts: &HttpOptions, stats: Arc<PipelineStats>, liveness: Arc<Liveness>, control: Option<Arc<ControlHub>>) -> Result<HttpServer> {
        opts.validate()?;
        let listener = std::net::TcpListener::bind(opts.bind)
            .map_err(|e| Error::Config { key: "service.bind".into(), msg: format!("cannot listen on {}: {e}", opts.bind) })?;
        Self::serve(listener, opts, stats, liveness, control)
    }

    /// Starts a server with `opts` to replace this one; the caller shuts this one down afterwards.
    /// On the same address the new server takes over this one's listening socket, so there is no
    /// second bind that could fail and no moment without a listener; connections that arrive
    /// before this one is shut down may be accepted by either. On an error this one is untouched.
    pub fn restart(&self, opts: &HttpOptions, stats: Arc<PipelineStats>, liveness: Arc<Liveness>, control: Option<Arc<ControlHub>>) -> Result<HttpServer> {
        if opts.bind != self.addr {
            return Self::start_with_control(opts, stats, liveness, control);
        }
        opts.validate()?;
        let listener = self.listener.try_clone().map_err(|e| Error::Invalid(format!("cannot share the HTTP listener: {e}")))?;
        Self::serve(listener, opts, stats, liveness, control)
    }

    fn serve(
        listener: std::net::TcpListener,
        opts: &HttpOptions,
        stats: Arc<PipelineStats>,
        liveness: Arc<Liveness>,
        control: Option<Arc<ControlHub>>,
    ) -> Result<HttpServer> {
        let io_err = |what: &str, e: io::Error| Error::Invalid(format!("cannot start the HTTP server ({what}): {e}"));
        let addr = listener.local_addr().map_err(|e| io_err("address", e))?;
        listener.set_nonblocking(true).map_err(|e| io_err("non-blocking", e))?;
        let handle = listener.try_clone().map_err(|e| io_err("listener", e))?;
        // No blocking pool is ever used (no DNS, no files), so the runtime starts no thread of its own.
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().map_err(|e| io_err("runtime", e))?;
        let tokio_listener = {
            let _in_rt = rt.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|e| io_err("listener", e))?
        };
        let shared = Arc::new(Shared {
            stats,
            control,
            liveness,
            opts: opts.clone(),
            addr,
            preview_clients: AtomicUsize::new(0),
            jpeg: JpegCache::default(),
            conns: Conns::default(),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("svc-http".into())
            .spawn(move || {
                rt.block_on(accept_loop(tokio_listener, shared, stop_rx));
                // Dropping the runtime drops every connection task, closing its socket.
                drop(rt);
                let _ = done_tx.send(());
            })
            .map_err(|e| io_err("thread", e))?;
        log::info!("status page on http://{addr}/");
        Ok(HttpServer { addr, listener: handle, stop: Some(stop_tx), done, thread: Some(thread) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        let Some(stop) = self.stop.take() else { return };
        let _ = stop.send(());
        // The server thread only waits on non-blocking sockets and timers, so it ends after the
        // grace period. The bounded wait is a second guard: never join a thread that is stuck.
        match self.done.recv_timeout(SHUTDOWN_GRACE + Duration::from_secs(2)) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => log::warn!("the HTTP server thread did not stop in time; leaving it behind"),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Which of two futures finished first (`tokio::select!` without tokio's macros).
enum Either<A, B> {
    Left(A),
    Right(B),
}

async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new()).header_read_timeout(shared.opts.header_timeout).max_buf_size(MAX_HEAD);
    let h1 = Arc::new(h1);
    loop {
        let accepted = match race(listener.accept(), &mut stop).await {
            Either::Left(r) => r,
            Either::Right(_) => break, // stop sent, or the HttpServer is gone
        };
        match accepted {
            Ok((tcp, _peer)) => match shared.conns.admit(shared.opts.max_connections) {
                Some((id, conn)) => {
                    tokio::spawn(serve_conn(tcp, id, conn, shared.clone(), h1.clone()));
                }
                None => {
                    // Every connection is busy answering: say so at once rather than queue.
                    let body = "too many connections\n";
                    let msg = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                         Retry-After: 1\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.try_write(msg.as_bytes());
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("HTTP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    // Close idle connections and preview streams now; let responses being written finish for a
    // moment (a reload hands the listener over and should not cut a /health answer short).
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while shared.conns.close_idle() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn serve_conn(tcp: tokio::net::TcpStream, id: u64, conn: Arc<Conn>, shared: Arc<Shared>, h1: Arc<http1::Builder>) {
    let _registered = Registered(&shared.conns, id);
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(WriteDeadline::new(tcp, shared.opts.write_timeout));
    let (sh, c) = (shared.clone(), conn.clone());
    let svc = hyper::service::service_fn(move |req| {
        let (sh, c) = (sh.clone(), c.clone());
        async move { Ok::<_, Infallible>(respond(req, &sh, &c).await) }
    });
    // Ends when the client or hyper closes the connection (errors and timeouts included), or
    // when the accept loop evicts it or shuts down.
    let _ = race(h1.serve_connection(io, svc), conn.kill.notified()).await;
}

/// One accepted connection, as the accept loop sees it.
struct Conn {
    /// Answering a request (not evictable); false while waiting for one.
    busy: AtomicBool,
    /// Serving /preview: counted against `max_preview_clients` instead of `max_connections`.
    streaming: AtomicBool,
    /// When it last started waiting for a request: the longest waiting is evicted first.
    idle_since: Mutex<Instant>,
    kill: Notify,
}

impl Conn {
    fn new() -> Conn {
        Conn { busy: AtomicBool::new(false), streaming: AtomicBool::new(false), idle_since: Mutex::new(Instant::now()), kill: Notify::new() }
    }
}

#[derive(Default)]
struct Conns {
    map: Mutex<ConnMap>,
}

#[derive(Default)]
struct ConnMap {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
}

impl Conns {
    /// Registers a new connection; at `cap` (preview streams not counted) it first evicts the
    /// connection that has been waiting longest for a request. `None` when all are busy.
    fn admit(&self, cap: usize) -> Option<(u64, Arc<Conn>)> {
        let mut g = self.map.lock();
        let ConnMap { next_id, open } = &mut *g;
        if open.values().filter(|c| !c.streaming.load(Ordering::Relaxed)).count() >= cap {
            let victim = open
                .iter()
                .filter(|(_, c)| !c.busy.load(Ordering::Relaxed) && !c.streaming.load(Ordering::Relaxed))
                .min_by_key(|(_, c)| *c.idle_since.lock())
                .map(|(id, _)| *id)?;
            if let Some(c) = open.remove(&victim) {
                c.kill.notify_one();
            }
        }
        let id = *next_id;
        *next_id += 1;
        let conn = Arc::new(Conn::new());
        open.insert(id, conn.clone());
        Some((id, conn))
    }

    /// Shutdown: closes every connection that is not in the middle of a short response; returns
    /// how many are left.
    fn close_idle(&self) -> usize {
        let mut g = self.map.lock();
        g.open.retain(|_, c| {
            let keep = c.busy.load(Ordering::Relaxed) && !c.streaming.load(Ordering::Relaxed);
            if !keep {
                c.kill.notify_one();
            }
            keep
        });
        g.open.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().open.len()
    }
}

/// Removes a connection from `Conns` when its task ends.
struct Registered<'a>(&'a Conns, u64);
impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.map.lock().open.remove(&self.1);
    }
}

/// Marks its connection busy from the request until the response body is dropped (fully sent
/// or the connection closed).
struct BusyGuard(Arc<Conn>);
impl BusyGuard {
    fn new(c: &Arc<Conn>) -> BusyGuard {
        c.busy.store(true, Ordering::Relaxed);
        BusyGuard(c.clone())
    }
}
impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock() = Instant::now();
        self.0.busy.store(false, Ordering::Relaxed);
    }
}

/// A socket whose writes fail with `TimedOut` once they have made no progress for `timeout`.
/// Reads need no deadline here: hyper's header timeout covers the wait for a request, and the
/// request bodies are read only by the control API, under its size limit and `BODY_TIMEOUT`.
struct WriteDeadline<T> {
    io: T,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(io: T, timeout: Duration) -> Self {
        WriteDeadline { io, timeout, stalled: None }
    }

    fn deadline<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.deadline(cx, r)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.deadline(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.deadline(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.deadline(cx, r)
    }
}

/// A response body: a complete buffer, or the endless MJPEG stream.
struct Out {
    kind: OutKind,
    _busy: Option<BusyGuard>,
}

enum OutKind {
    Full(Option<Bytes>),
    Mjpeg(Box<Mjpeg>),
}

impl Body for Out {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<std::result::Result<BodyFrame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            OutKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(BodyFrame::data(b)))),
            OutKind::Mjpeg(m) => m.poll_part(cx).map(|p| Some(Ok(BodyFrame::data(p)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, OutKind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            // Exact: hyper sends Content-Length (and none for HEAD /preview's empty body).
            OutKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            OutKind::Mjpeg(_) => SizeHint::default(),
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Out> {
    let mut r = Response::new(Out { kind: OutKind::Full(Some(body.into())), _busy: None });
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn respond(req: Request<Incoming>, shared: &Arc<Shared>, conn: &Arc<Conn>) -> Response<Out> {
    let busy = BusyGuard::new(conn);
    let mut resp = match (&shared.control, req.uri().path().starts_with("/api/")) {
        (Some(hub), true) => match check_host(&req, shared) {
            Some(refused) => refused,
            None => api(req, shared, hub.clone()).await,
        },
        _ => route(&req, shared, conn),
    };
    resp.body_mut()._busy = Some(busy);
    resp
}

/// Longest a client may take to send a request body (an upload) once its headers arrived.
const BODY_TIMEOUT: Duration = Duration::from_secs(120);

/// `/api/...`: the body read under the upload limit, then `control::api::handle` on a thread of
/// its own (a live switch waits for the new avatar to load; this thread serves everyone).
async fn api(req: Request<Incoming>, shared: &Arc<Shared>, hub: Arc<ControlHub>) -> Response<Out> {
    let (parts, body) = req.into_parts();
    let header = |n: header::HeaderName| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let method = parts.method.as_str().to_string();
    if method == "GET" && parts.uri.path() == "/api/status" {
        return text(StatusCode::OK, "application/json", status_json(shared));
    }
    let limit = hub.max_upload();
    let declared = header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let body = if declared.is_some_and(|n| n > limit) {
        Err(ControlError::TooLarge(format!("request body of {} bytes; at most {} MiB ([service] max_upload_mb)", declared.unwrap_or(0), limit >> 20)))
    } else {
        match tokio::time::timeout(BODY_TIMEOUT, read_body(body, limit)).await {
            Ok(r) => r,
            Err(_) => Err(ControlError::BadRequest("the request body did not arrive in time".into())),
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return api_error(&e),
    };
    let req = ApiRequest {
        method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        content_type: header(header::CONTENT_TYPE),
        authorization: header(header::AUTHORIZATION),
        origin: header(header::ORIGIN),
        host: parts.uri.authority().map(|a| a.as_str().to_string()).or_else(|| header(header::HOST)),
        sec_fetch_site: parts.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).map(str::to_string),
        body,
    };
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new().name("svc-control".into()).spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| control_api::handle(&hub, &req)))
            .unwrap_or_else(|p| control_api::ApiResponse { status: 500, content_type: "text/plain", body: crate::error::panic_message(p.as_ref()).into_bytes() });
        let _ = tx.send(r);
    });
    if let Err(e) = spawned {
        return api_error(&ControlError::Internal(format!("cannot start a control thread: {e}")));
    }
    match rx.await {
        Ok(r) => {
            let mut resp = text(StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), r.content_type, r.body);
            if r.content_type == "image/jpeg" {
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            }
            resp
        }
        Err(_) => api_error(&ControlError::Internal("the control request ended without an answer".into())),
    }
}

fn api_error(e: &ControlError) -> Response<Out> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    text(status, "application/json", format!("{}\n", serde_json::json!({ "error": e.to_string() })))
}

/// Reads a request body of at most `limit` bytes; more is refused as soon as it arrives.
async fn read_body(mut body: Incoming, limit: u64) -> std::result::Result<Vec<u8>, ControlError> {
    let mut out: Vec<u8> = Vec::new();
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => return Ok(out),
            Some(Err(e)) => return Err(ControlError::BadRequest(format!("reading the request body: {e}"))),
            Some(Ok(frame)) => {
                if let Ok(d) = frame.into_data() {
                    if out.len() as u64 + d.len() as u64 > limit {
                        return Err(ControlError::TooLarge(format!("request body over {} MiB ([service] max_upload_mb)", limit >> 20)));
                    }
                    out.extend_from_slice(&d);
                }
            }
        }
    }
}

/// The Host check of every route; `Some(response)` when the request is refused.
fn check_host<B>(req: &Request<B>, shared: &Shared) -> Option<Response<Out>> {
    match request_host(req) {
        Err(()) => Some(text(StatusCode::BAD_REQUEST, "text/plain", "bad Host header\n")),
        Ok(Some(host)) if !host_allowed(host, shared.addr, shared.opts.allow_remote) => {
            let msg = if shared.opts.allow_remote {
                "this server answers to localhost and IP addresses only\n"
            } else {
                "this server answers to localhost, 127.0.0.1 and [::1] only\n"
            };
            Some(text(StatusCode::MISDIRECTED_REQUEST, "text/plain", msg))
        }
        Ok(_) => None,
    }
}

fn route(req: &Request<Incoming>, shared: &Arc<Shared>, conn: &Conn) -> Response<Out> {
    if let Some(refused) = check_host(req, shared) {
        return refused;
    }
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/" | "/index.html" => text(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
        "/health" => {
            let (ok, body) = health_json(shared);
            text(if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, "application/json", body)
        }
        "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics_text(&shared.stats, &shared.liveness)),
        "/status.json" => text(StatusCode::OK, "application/json", status_json(shared)),
        "/preview.jpg" => match shared.jpeg.latest(&shared.stats, shared.opts.jpeg_quality) {
            Ok(Some((_, jpg))) => text(StatusCode::OK, "image/jpeg", Bytes::copy_from_slice(&jpg)),
            Ok(None) => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no frame yet\n"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        "/preview" => preview(head, shared, conn),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// The host a request is addressed to: the authority of an absolute-form target (which takes
/// precedence, RFC 9112 3.2.2), else the Host header; `None` without either (HTTP/1.0 tools),
/// `Err` for several Host headers or one that is not text.
fn request_host<B>(req: &Request<B>) -> std::result::Result<Option<&str>, ()> {
    if let Some(a) = req.uri().authority() {
        return Ok(Some(a.as_str()));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => Ok(None),
        (Some(h), None) => h.to_str().map(|h| Some(h.trim())).map_err(|_| ()),
        _ => Err(()),
    }
}

/// Whether a Host value names this server. DNS rebinding makes a browser send a web page's own
/// host name to our port, so the only name accepted is `localhost`; IP literals cannot be
/// rebound: loopback ones and the bound address are accepted, any one with `allow_remote`. The
/// port is not compared, since SSH tunnels and proxies forward under a port of their own.
fn host_allowed(host: &str, bound: SocketAddr, allow_remote: bool) -> bool {
    // "[::1]:8765" splits at the last colon; "[::1]" and "::1" (invalid without brackets) do not
    // leave a valid name and port.
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !p.contains(']') && n.starts_with('[') == n.ends_with(']') => (n, Some(p)),
        _ => (host, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return false;
        }
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().map(IpAddr::V6),
        None => name.parse::<Ipv4Addr>().map(IpAddr::V4),
    };
    match ip {
        Ok(ip) => allow_remote || ip == Ipv4Addr::LOCALHOST || ip == Ipv6Addr::LOCALHOST || ip == bound.ip(),
        Err(_) => false,
    }
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
    if let Some(hub) = &shared.control {
        v["control"] = hub.status_value();
    }
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
    family(
        &mut o,
        "puppetcam_end_to_end_latency_seconds",
        "histogram",
        "Camera frame to virtual-camera frame, per newly generated frame written; buckets 5 ms apart around lip-sync thresholds.",
    );
    for (le, count) in stats.end_to_end_hist.cumulative() {
        let _ = writeln!(o, "puppetcam_end_to_end_latency_seconds_bucket{{le=\"{}\"}} {count}", prom_f64(le));
    }
    // _count is the +Inf bucket, so the two agree even while a frame is being recorded.
    let e2e_count = stats.end_to_end_hist.cumulative().last().map_or(0, |c| c.1);
    let _ = writeln!(o, "puppetcam_end_to_end_latency_seconds_sum {}", prom_f64(stats.end_to_end_hist.sum_seconds()));
    let _ = writeln!(o, "puppetcam_end_to_end_latency_seconds_count {e2e_count}");
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

/// Holds one of the `max_preview_clients` places for as long as a stream's body lives.
struct ClientSlot(Arc<Shared>);
impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.preview_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

const BOUNDARY: &str = "puppetcamframe";

fn preview(head_only: bool, shared: &Arc<Shared>, conn: &Conn) -> Response<Out> {
    let n = shared.preview_clients.fetch_add(1, Ordering::Relaxed);
    if n >= shared.opts.max_preview_clients {
        shared.preview_clients.fetch_sub(1, Ordering::Relaxed);
        let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "too many preview clients\n");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    }
    let slot = ClientSlot(shared.clone());
    conn.streaming.store(true, Ordering::Relaxed);
    let kind = if head_only {
        OutKind::Full(None)
    } else {
        OutKind::Mjpeg(Box::new(Mjpeg {
            shared: shared.clone(),
            _slot: slot,
            period: Duration::from_secs_f64(1.0 / shared.opts.preview_fps),
            next: Box::pin(tokio::time::sleep(Duration::ZERO)),
            last_sent: None,
        }))
    };
    let mut r = Response::new(Out { kind, _busy: None });
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("multipart/x-mixed-replace; boundary=puppetcamframe"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The multipart/x-mixed-replace body: a part per new frame, at most `preview_fps` a second,
/// until the client leaves. It is only polled while the socket accepts data, so a slow client
/// skips frames (the newest wins) and one that stops reading hits the write deadline.
struct Mjpeg {
    shared: Arc<Shared>,
    _slot: ClientSlot,
    period: Duration,
    next: Pin<Box<tokio::time::Sleep>>,
    last_sent: Option<Arc<Frame>>,
}

impl Mjpeg {
    fn poll_part(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        loop {
            ready!(self.next.as_mut().poll(cx));
            let next = tokio::time::Instant::now() + self.period;
            self.next.as_mut().reset(next);
            match self.shared.jpeg.latest(&self.shared.stats, self.shared.opts.jpeg_quality) {
                Ok(Some((frame, jpg))) if self.last_sent.as_ref().map_or(true, |f| !Arc::ptr_eq(f, &frame)) => {
                    let head = format!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpg.len());
                    let mut part = Vec::with_capacity(head.len() + jpg.len() + 2);
                    part.extend_from_slice(head.as_bytes());
                    part.extend_from_slice(&jpg);
                    part.extend_from_slice(b"\r\n");
                    self.last_sent = Some(frame);
                    return Poll::Ready(Bytes::from(part));
                }
                Ok(_) => {} // no new frame: do not resend the same one
                Err(e) => log::warn!("preview encode: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_check_accepts_this_server_and_refuses_other_names() {
        let bound: SocketAddr = "127.0.0.1:8765".parse().unwrap();
        for ok in ["127.0.0.1:8765", "localhost", "LocalHost:8765", "localhost:9000", "127.0.0.1", "[::1]", "[::1]:8765"] {
            assert!(host_allowed(ok, bound, false), "{ok} refused");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8765",
            "localhost.attacker.example",
            "localhost.",
            "192.168.1.20:8765",
            "127.0.0.2",
            "::1",
            "[::1",
            "localhost:",
            "localhost:99999",
            "localhost:80a",
            "user@localhost:8765",
            "",
        ] {
            assert!(!host_allowed(bad, bound, false), "{bad:?} accepted");
        }
        // The bound address is accepted even when it is not 127.0.0.1 (any port: tunnels).
        assert!(host_allowed("127.0.0.2:1234", "127.0.0.2:8765".parse().unwrap(), false));
        // allow_remote: any IP literal, still no other name.
        let any: SocketAddr = "0.0.0.0:8765".parse().unwrap();
        for ok in ["192.168.1.20:8765", "10.0.0.1", "[fe80::1]:8765", "localhost:8765"] {
            assert!(host_allowed(ok, any, true), "{ok} refused with allow_remote");
        }
        for bad in ["attacker.example", "printer.local:8765", "192.168.1.20.nip.io"] {
            assert!(!host_allowed(bad, any, true), "{bad} accepted with allow_remote");
        }
    }

    #[test]
    fn eviction_takes_the_longest_idle_connection_and_never_a_busy_one() {
        let conns = Conns::default();
        let (a, ca) = conns.admit(3).unwrap();
        let (_b, cb) = conns.admit(3).unwrap();
        let (_c, cc) = conns.admit(3).unwrap();
        let _busy_a = BusyGuard::new(&ca);
        // Full: the newcomer evicts b (idle the longest; a is busy).
        let (_d, _cd) = conns.admit(3).unwrap();
        assert_eq!(conns.len(), 3);
        assert!(!conns.map.lock().open.contains_key(&_b));
        assert!(conns.map.lock().open.contains_key(&a));
        // b was told to close.
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), cb.kill.notified()).await.expect("evicted connection not told to close");
        });
        // Preview streams have their own cap and do not count.
        cc.streaming.store(true, Ordering::Relaxed);
        let _busy_c = BusyGuard::new(&cc);
        assert!(conns.admit(3).is_some());
        assert_eq!(conns.len(), 4);
        // All three non-stream connections busy: the newcomer is refused, nobody evicted.
        let guards: Vec<_> = conns.map.lock().open.values().map(BusyGuard::new).collect();
        assert!(conns.admit(3).is_none());
        assert_eq!(conns.len(), 4);
        drop((guards, _busy_a, _busy_c));
        // Shutdown closes all but the short responses in progress: a is answering one again.
        let _short = BusyGuard::new(&ca);
        assert_eq!(conns.close_idle(), 1);
        assert!(conns.map.lock().open.contains_key(&a));
    }

    #[test]
    fn a_write_that_makes_no_progress_times_out() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let _client = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap(); // never reads
            let (srv, _) = l.accept().await.unwrap();
            let mut w = WriteDeadline::new(srv, Duration::from_millis(300));
            let chunk = vec![7u8; 1 << 16];
            let t0 = Instant::now();
            let err = loop {
                match std::future::poll_fn(|cx| Pin::new(&mut w).poll_write(cx, &chunk)).await {
                    Ok(_) => assert!(t0.elapsed() < Duration::from_secs(20), "socket buffers never filled"),
                    Err(e) => break e,
                }
            };
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            assert!(t0.elapsed() >= Duration::from_millis(300));
        });
    }
}
