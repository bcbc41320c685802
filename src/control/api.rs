//! The `/api/...` routes (docs/api.md): a request already read by the HTTP server (method, path,
//! the few headers that matter, a size-limited body) in, a JSON (or JPEG) response out. Reads
//! need nothing more than the server's Host check (`GET /api/status` is answered by the server
//! itself, which has the liveness verdict); every state-changing request passes
//! [`authorize`] first and is refused before it touches anything.
use super::jobs::{CreateRequest, Upload};
use super::library::validate_name;
use super::{multipart, token, ControlError, ControlHub};
use crate::imageio;
use crate::refine::personalise::Mode;
use std::sync::Arc;

/// The request as the API sees it.
#[derive(Clone, Debug, Default)]
pub struct ApiRequest {
    pub method: String,
    /// Path without the query, e.g. `/api/avatars/Ada/select`.
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub origin: Option<String>,
    /// The Host header (the server has already checked it names this server).
    pub host: Option<String>,
    pub sec_fetch_site: Option<String>,
    pub body: Vec<u8>,
}

/// A response: status, content type, body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl ApiResponse {
    fn json(status: u16, v: serde_json::Value) -> ApiResponse {
        ApiResponse { status, content_type: "application/json", body: format!("{v}\n").into_bytes() }
    }
}

impl ControlError {
    pub fn status(&self) -> u16 {
        match self {
            ControlError::BadRequest(_) => 400,
            ControlError::Unauthorized(_) => 401,
            ControlError::Forbidden(_) => 403,
            ControlError::NotFound(_) => 404,
            ControlError::Conflict(_) => 409,
            ControlError::TooLarge(_) => 413,
            ControlError::Unprocessable(_) => 422,
            ControlError::Unavailable(_) => 503,
            ControlError::Internal(_) => 500,
        }
    }
}

fn err_response(e: &ControlError) -> ApiResponse {
    ApiResponse::json(e.status(), serde_json::json!({ "error": e.to_string() }))
}

/// Whether a method changes state (and so needs [`authorize`]).
pub fn changes_state(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// The origin (`scheme://host[:port]`) a page on this server has when the browser addressed the
/// server as `host` (the request's Host header).
fn own_origin(host: &str) -> String {
    format!("http://{}", host.to_ascii_lowercase())
}

/// The rule for state-changing requests:
/// - a request with an `Origin` comes from a web page: it must be this server's own page, the
///   origin `http://<Host>` (and the Host passed the server's check, so it names this server);
///   any other page (another site, `null`, a DNS-rebound name) is refused, token or not;
/// - `Sec-Fetch-Site`, when a browser sends it, must be `same-origin` (or `none`: typed by the user);
/// - a request without `Origin` (curl, `puppetcam ctl`, a Stream Deck plug-in) must carry the
///   token: `Authorization: Bearer <token>`.
pub fn authorize(req: &ApiRequest, our_token: &str) -> Result<(), ControlError> {
    if let Some(site) = req.sec_fetch_site.as_deref() {
        if !matches!(site, "same-origin" | "none") {
            return Err(ControlError::Forbidden(format!("refused: a {site} request (only this server's own page may act without the token)")));
        }
    }
    if let Some(origin) = req.origin.as_deref() {
        let ours = req.host.as_deref().map(own_origin);
        if ours.as_deref() == Some(origin.trim().to_ascii_lowercase().as_str()) {
            return Ok(());
        }
        return Err(ControlError::Forbidden(format!("refused: Origin {origin:?} is not this server's page")));
    }
    let presented = req.authorization.as_deref().and_then(|a| a.trim().strip_prefix("Bearer ")).map(str::trim);
    match presented {
        Some(t) if token::matches(t, our_token) => Ok(()),
        Some(_) => Err(ControlError::Unauthorized("refused: wrong token".into())),
        None => Err(ControlError::Unauthorized("refused: this needs the control token (Authorization: Bearer <token>; `puppetcam ctl` sends it)".into())),
    }
}

/// Percent-decoding of one path segment or query value (`%20`, and `+` in queries).
fn decode(s: &str, plus_is_space: bool) -> Result<String, ControlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(h.ok_or_else(|| ControlError::BadRequest(format!("bad percent-encoding in {s:?}")))?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ControlError::BadRequest(format!("{s:?} is not UTF-8")))
}

/// A JSON body's string field.
fn json_field(body: &[u8], key: &str) -> Result<serde_json::Value, ControlError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| ControlError::BadRequest(format!("body is not JSON: {e}")))?;
    v.get(key).cloned().ok_or_else(|| ControlError::BadRequest(format!("body has no {key:?}")))
}

/// Handles one `/api/...` request. Blocking (a live switch waits for the new avatar to load):
/// the server calls it off its I/O thread.
pub fn handle(hub: &Arc<ControlHub>, req: &ApiRequest) -> ApiResponse {
    if changes_state(&req.method) {
        if let Err(e) = authorize(req, hub.token()) {
            log::warn!("control API: {} {}: {e}", req.method, req.path);
            return err_response(&e);
        }
    }
    match route(hub, req) {
        Ok(r) => r,
        Err(e) => {
            if e.status() >= 500 {
                log::error!("control API: {} {}: {e}", req.method, req.path);
            }
            err_response(&e)
        }
    }
}

fn ok() -> Result<ApiResponse, ControlError> {
    Ok(ApiResponse::json(200, serde_json::json!({ "ok": true })))
}

fn route(hub: &Arc<ControlHub>, req: &ApiRequest) -> Result<ApiResponse, ControlError> {
    let segs: Vec<String> = req.path.trim_end_matches('/').split('/').skip(2).map(|s| decode(s, false)).collect::<Result<_, _>>()?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("GET", ["avatars"]) => {
            let live = hub.live_path();
            let list: Vec<serde_json::Value> = hub
                .library
                .list()
                .into_iter()
                .map(|e| {
                    let is_live = super::library::same_file(&e.path, &live);
                    let mut v = serde_json::to_value(&e).unwrap_or_default();
                    v["live"] = is_live.into();
                    v
                })
                .collect();
            Ok(ApiResponse::json(200, serde_json::json!({ "avatars": list, "library": hub.library.dir() })))
        }
        ("GET", ["avatars", name, "thumbnail"]) => {
            let jpg = hub.library.thumbnail(name)?;
            Ok(ApiResponse { status: 200, content_type: "image/jpeg", body: jpg })
        }
        ("GET", ["avatars", name]) => {
            let e = hub.library.find(name)?;
            Ok(ApiResponse::json(200, serde_json::to_value(&e).unwrap_or_default()))
        }
        ("POST", ["avatars"]) => create(hub, req),
        ("POST", ["avatars", name, "select"]) => {
            hub.select(name)?;
            ok()
        }
        ("POST", ["avatars", name, "rename"]) => {
            let to = json_field(&req.body, "name")?;
            let to = to.as_str().ok_or_else(|| ControlError::BadRequest("\"name\" must be a string".into()))?;
            hub.rename(name, to)?;
            ok()
        }
        ("DELETE", ["avatars", name]) => {
            hub.delete(name)?;
            ok()
        }
        ("GET", ["jobs"]) => Ok(ApiResponse::json(200, serde_json::json!({ "jobs": hub.jobs.all() }))),
        ("GET", ["jobs", id]) => {
            let id: u64 = id.parse().map_err(|_| ControlError::BadRequest(format!("job id {id:?} is not a number")))?;
            let j = hub.jobs.get(id).ok_or_else(|| ControlError::NotFound(format!("no job {id}")))?;
            Ok(ApiResponse::json(200, serde_json::to_value(&j).unwrap_or_default()))
        }
        ("POST", ["neutral"]) => {
            hub.neutral_now()?;
            ok()
        }
        ("POST", ["pause"]) => {
            hub.pause(true)?;
            ok()
        }
        ("POST", ["resume"]) => {
            hub.pause(false)?;
            ok()
        }
        ("POST", ["eye-contact", state]) => {
            let on = match *state {
                "on" => true,
                "off" => false,
                other => return Err(ControlError::BadRequest(format!("eye contact {other:?}: use /api/eye-contact/on or /api/eye-contact/off"))),
            };
            hub.eye_contact(on)?;
            ok()
        }
        (_, ["status" | "avatars" | "jobs" | "neutral" | "pause" | "resume" | "eye-contact", ..]) => {
            Err(ControlError::BadRequest(format!("{m} is not allowed on {} (see docs/api.md)", req.path)))
        }
        _ => Err(ControlError::NotFound(format!("no API route {} (see docs/api.md)", req.path))),
    }
}

/// `POST /api/avatars`: multipart with `name`, optional `steps` (0: feed-forward; `off`: no
/// refiner) and 1..=32 `image` files. Each image's header is checked against the input limits
/// here, before any job exists, so a decompression bomb is refused with 422 and decodes nothing.
fn create(hub: &Arc<ControlHub>, req: &ApiRequest) -> Result<ApiResponse, ControlError> {
    let ct = req.content_type.as_deref().ok_or_else(|| ControlError::BadRequest("an upload needs Content-Type: multipart/form-data".into()))?;
    let b = multipart::boundary(ct).map_err(ControlError::BadRequest)?;
    let parts = multipart::parse(&req.body, &b).map_err(ControlError::BadRequest)?;
    let mut name = None;
    let mut steps_text = None;
    let mut images = Vec::new();
    for p in &parts {
        match (p.name.as_str(), &p.filename) {
            ("name", None) => name = Some(String::from_utf8_lossy(p.data).trim().to_string()),
            ("steps", None) => steps_text = Some(String::from_utf8_lossy(p.data).trim().to_string()),
            ("image", Some(f)) => {
                let probe = imageio::probe(p.data).ok_or_else(|| ControlError::Unprocessable(format!("{f}: not a PNG, JPEG, BMP or WebP image")))?;
                imageio::check(&probe, imageio::INPUT).map_err(|m| ControlError::Unprocessable(format!("{f}: {m}")))?;
                images.push(Upload { filename: f.clone(), format: probe.format, bytes: p.data.to_vec() });
            }
            (other, _) => return Err(ControlError::BadRequest(format!("unexpected form field {other:?} (expected name, steps, image)"))),
        }
    }
    if images.is_empty() {
        return Err(ControlError::BadRequest("no image: send the portrait (then more shots) as `image` files".into()));
    }
    if images.len() > crate::avatar::file::MAX_SHOTS {
        return Err(ControlError::BadRequest(format!("{} images; at most {}", images.len(), crate::avatar::file::MAX_SHOTS)));
    }
    let name = match name {
        Some(n) if !n.is_empty() => n,
        // The portrait's file name, like `avatar create`.
        _ => std::path::Path::new(&images[0].filename).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    validate_name(&name)?;
    if hub.library.exists(&name) || hub.jobs.pending_named(&name) {
        return Err(ControlError::Conflict(format!("an avatar called {name:?} exists already (or is being made)")));
    }
    let mode = match steps_text.as_deref() {
        None | Some("") => match hub.default_steps() {
            0 => Mode::FeedForward,
            n => Mode::FineTune { steps: n, fp16: false },
        },
        Some("off") => Mode::Off,
        Some(s) => match s.parse::<usize>() {
            Ok(0) => Mode::FeedForward,
            Ok(n) if n <= 2000 => Mode::FineTune { steps: n, fp16: false },
            _ => return Err(ControlError::BadRequest(format!("steps {s:?}: a number 0..=2000, or \"off\" for no refiner"))),
        },
    };
    let job = hub.jobs.start(hub.library.clone(), CreateRequest { name, images, mode })?;
    Ok(ApiResponse::json(202, serde_json::to_value(&job).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str) -> ApiRequest {
        ApiRequest { method: method.into(), path: "/api/pause".into(), host: Some("127.0.0.1:8765".into()), ..ApiRequest::default() }
    }

    #[test]
    fn authorization_rules() {
        let tok = "ab".repeat(32);
        // No token, no Origin: refused.
        assert!(matches!(authorize(&req("POST"), &tok), Err(ControlError::Unauthorized(_))));
        let with = |t: &str| ApiRequest { authorization: Some(format!("Bearer {t}")), ..req("POST") };
        assert!(authorize(&with(&tok), &tok).is_ok());
        assert!(matches!(authorize(&with(&"cd".repeat(32)), &tok), Err(ControlError::Unauthorized(_))));
        assert!(matches!(authorize(&with(""), &tok), Err(ControlError::Unauthorized(_))));
        // The page itself: Origin equals http://<Host>.
        let page = |o: &str, h: &str| ApiRequest { origin: Some(o.into()), host: Some(h.into()), ..req("POST") };
        assert!(authorize(&page("http://127.0.0.1:8765", "127.0.0.1:8765"), &tok).is_ok());
        assert!(authorize(&page("http://LOCALHOST:8765", "localhost:8765"), &tok).is_ok());
        // Another page, a port of another local server, `null`, https: refused even with the token.
        for (o, h) in [("https://evil.example", "127.0.0.1:8765"), ("http://127.0.0.1:3000", "127.0.0.1:8765"), ("null", "127.0.0.1:8765"), ("https://127.0.0.1:8765", "127.0.0.1:8765")] {
            let r = ApiRequest { authorization: Some(format!("Bearer {tok}")), ..page(o, h) };
            assert!(matches!(authorize(&r, &tok), Err(ControlError::Forbidden(_))), "{o}");
        }
        // A browser that says cross-site is refused whatever the Origin says.
        let cs = ApiRequest { sec_fetch_site: Some("cross-site".into()), ..page("http://127.0.0.1:8765", "127.0.0.1:8765") };
        assert!(matches!(authorize(&cs, &tok), Err(ControlError::Forbidden(_))));
        let same = ApiRequest { sec_fetch_site: Some("same-origin".into()), ..page("http://127.0.0.1:8765", "127.0.0.1:8765") };
        assert!(authorize(&same, &tok).is_ok());
        assert!(!changes_state("GET") && changes_state("POST") && changes_state("DELETE"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("Grandma%201920", false).unwrap(), "Grandma 1920");
        assert_eq!(decode("a+b", true).unwrap(), "a b");
        assert_eq!(decode("a+b", false).unwrap(), "a+b");
        assert!(decode("%zz", false).is_err());
        assert!(decode("%ff", false).is_err());
    }
}
