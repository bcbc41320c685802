//! `puppetcam ctl`: every control-API action as a command that talks to the running daemon
//! (docs/api.md), for hotkeys and Stream Deck buttons. The address and token come from the same
//! config as `run` (`[service] bind`, the token file beside the config), or from `--http`.
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use puppetcam::config::{locate_config, Config};
use puppetcam::control::client::{encode_segment, request, Reply};
use puppetcam::control::{multipart, token};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The daemon's address (default: `[service] bind` of the config, else 127.0.0.1:8765).
    #[arg(long, global = true)]
    pub http: Option<SocketAddr>,
    /// Config file to take the address and token place from (default: where `run` looks).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Token file (default: beside the config, then the data directory).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON answer instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub verb: CtlVerb,
}

#[derive(Debug, Subcommand)]
pub enum CtlVerb {
    /// Health, fps, the live avatar, pause and neutral state.
    Status,
    /// The avatar library.
    #[command(subcommand)]
    Avatar(AvatarVerb),
    /// Take the driver's neutral face from the next steady second of frames.
    Neutral,
    /// Hold a still of the portrait (fades in).
    Pause,
    /// Back to the live face (fades out).
    Resume,
    /// The portrait looks into the camera while you look at the screen (on), or where you look (off).
    EyeContact {
        #[arg(value_enum)]
        state: OnOff,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum AvatarVerb {
    /// List the avatars (the live one marked).
    List,
    /// Make an avatar from images (the portrait first) and wait for it, showing progress.
    Create {
        #[arg(required = true, num_args = 1..=32)]
        images: Vec<PathBuf>,
        #[arg(long)]
        name: String,
        /// Fine-tuning steps (0: feed-forward, seconds); default: the daemon's (200).
        #[arg(long)]
        steps: Option<usize>,
        /// Return once the job started instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Put this avatar on the camera (short cross-fade).
    Select { name: String },
    Rename { old: String, new: String },
    /// Delete an avatar of the library (not the live one).
    Delete { name: String },
}

struct Daemon {
    addr: SocketAddr,
    token: Option<String>,
    json: bool,
}

impl Daemon {
    fn call(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> anyhow::Result<Reply> {
        let r = request(self.addr, method, path, self.token.as_deref(), body, Duration::from_secs(90))
            .with_context(|| format!("cannot reach the daemon at http://{} (is `puppetcam run` running with [service] enabled?)", self.addr))?;
        if r.status == 401 && self.token.is_none() {
            bail!("{} (no token file found: see `puppetcam ctl --help` and docs/api.md)", r.error_text());
        }
        if !(200..300).contains(&r.status) {
            bail!("{} {path}: {} {}", method, r.status, r.error_text());
        }
        Ok(r)
    }

    fn print(&self, r: &Reply, summary: impl FnOnce(&serde_json::Value) -> String) {
        let v = r.json();
        if self.json {
            println!("{v}");
        } else {
            println!("{}", summary(&v));
        }
    }
}

fn connect(a: &CtlArgs) -> anyhow::Result<Daemon> {
    let found = match &a.config {
        Some(p) => Some(p.clone()),
        None => locate_config()?.map(|f| f.path),
    };
    let cfg = match &found {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let addr = a.http.unwrap_or(cfg.service.bind);
    // A daemon bound to 0.0.0.0 answers on loopback too.
    let addr = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let data = puppetcam::paths::Env::current().data_dir();
    let explicit = a.token_file.as_deref().or(cfg.service.token_file.as_deref());
    let token = token::read(&token::candidates(explicit, found.as_deref(), &data)).map(|t| t.0);
    Ok(Daemon { addr, token, json: a.json })
}

pub fn cmd_ctl(a: CtlArgs) -> anyhow::Result<u8> {
    let d = connect(&a)?;
    match &a.verb {
        CtlVerb::Status => {
            let r = d.call("GET", "/api/status", None)?;
            d.print(&r, |v| {
                let c = &v["control"];
                format!(
                    "{} ({}), {} fps, face {}, avatar {} ({}){}\nneutral: {}",
                    v["health"]["status"].as_str().unwrap_or("?"),
                    v["health"]["reason"].as_str().unwrap_or(""),
                    v["fps"],
                    v["face"].as_str().unwrap_or("?"),
                    c["live"].as_str().unwrap_or(v["avatar"].as_str().unwrap_or("?")),
                    v["avatar"].as_str().unwrap_or("?"),
                    if c["paused"] == true { ", paused" } else { "" },
                    v["retarget_state"].as_str().unwrap_or("?"),
                )
            });
        }
        CtlVerb::Avatar(AvatarVerb::List) => {
            let r = d.call("GET", "/api/avatars", None)?;
            d.print(&r, |v| {
                let mut out = Vec::new();
                for e in v["avatars"].as_array().into_iter().flatten() {
                    out.push(format!(
                        "{} {:24} K={:<2} {:12} {}{}",
                        if e["live"] == true { "*" } else { " " },
                        e["name"].as_str().unwrap_or("?"),
                        e["shots"],
                        if e["refined"] == true { "refined" } else { "warp only" },
                        e["created"].as_str().unwrap_or(""),
                        e["error"].as_str().map(|x| format!("  UNUSABLE: {x}")).unwrap_or_default(),
                    ));
                }
                out.join("\n")
            });
        }
        CtlVerb::Avatar(AvatarVerb::Create { images, name, steps, no_wait }) => {
            let mut files = Vec::new();
            for p in images {
                let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
                let fname = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
                files.push((fname, bytes));
            }
            let steps_text = steps.map(|s| s.to_string());
            let mut fields = vec![("name", name.as_str())];
            if let Some(s) = &steps_text {
                fields.push(("steps", s.as_str()));
            }
            let file_refs: Vec<(&str, &str, &[u8])> = files.iter().map(|(n, b)| ("image", n.as_str(), b.as_slice())).collect();
            let (ct, body) = multipart::build(&fields, &file_refs);
            let r = d.call("POST", "/api/avatars", Some((&ct, &body)))?;
            let id = r.json()["id"].as_u64().context("the daemon did not return a job id")?;
            if *no_wait {
                d.print(&r, |_| format!("job {id} started"));
                return Ok(0);
            }
            let t0 = Instant::now();
            let mut last = String::new();
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let j = d.call("GET", &format!("/api/jobs/{id}"), None)?;
                let v = j.json();
                let line = format!("{} {}/{}", v["state"].as_str().unwrap_or("?"), v["step"], v["steps"]);
                if line != last && !d.json {
                    eprintln!("create {name}: {line} ({:.0} s)", t0.elapsed().as_secs_f64());
                    last = line;
                }
                match v["state"].as_str() {
                    Some("done") => {
                        d.print(&j, |v| v["message"].as_str().unwrap_or("done").to_string());
                        break;
                    }
                    Some("failed") => bail!("create {name}: {}", v["message"].as_str().unwrap_or("failed")),
                    _ => {}
                }
            }
        }
        CtlVerb::Avatar(AvatarVerb::Select { name }) => {
            let r = d.call("POST", &format!("/api/avatars/{}/select", encode_segment(name)), None)?;
            d.print(&r, |_| format!("{name} is live"));
        }
        CtlVerb::Avatar(AvatarVerb::Rename { old, new }) => {
            let body = serde_json::json!({ "name": new }).to_string();
            let r = d.call("POST", &format!("/api/avatars/{}/rename", encode_segment(old)), Some(("application/json", body.as_bytes())))?;
            d.print(&r, |_| format!("{old} renamed to {new}"));
        }
        CtlVerb::Avatar(AvatarVerb::Delete { name }) => {
            let r = d.call("DELETE", &format!("/api/avatars/{}", encode_segment(name)), None)?;
            d.print(&r, |_| format!("{name} deleted"));
        }
        CtlVerb::Neutral => {
            let r = d.call("POST", "/api/neutral", None)?;
            d.print(&r, |_| "neutral: learning from the next steady frames; keep a relaxed face for a second".into());
        }
        CtlVerb::Pause => {
            let r = d.call("POST", "/api/pause", None)?;
            d.print(&r, |_| "paused".into());
        }
        CtlVerb::Resume => {
            let r = d.call("POST", "/api/resume", None)?;
            d.print(&r, |_| "resumed".into());
        }
        CtlVerb::EyeContact { state } => {
            let s = if *state == OnOff::On { "on" } else { "off" };
            let r = d.call("POST", &format!("/api/eye-contact/{s}"), None)?;
            d.print(&r, |_| format!("eye contact {s}"));
        }
    }
    Ok(0)
}
