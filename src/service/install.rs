//! `puppetcam install-service [--system] [--dry-run]`: writes the systemd unit (user or system
//! variant, embedded from systemd/) with the real binary path substituted and prints the
//! systemctl commands to enable it. Never runs systemctl itself: enabling a camera daemon is the
//! user's decision, and the unit may need editing first.
use crate::config::{CONFIG_FILE, SYSTEM_CONFIG};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The user unit as shipped in systemd/puppetcam.service.
pub const USER_UNIT: &str = include_str!("../../systemd/puppetcam.service");
/// The system unit as shipped in systemd/puppetcam-system.service.
pub const SYSTEM_UNIT: &str = include_str!("../../systemd/puppetcam-system.service");
/// v4l2loopback module options and boot-time loading.
pub const MODPROBE_CONF: &str = include_str!("../../systemd/modprobe.d/puppetcam-v4l2loopback.conf");
pub const MODULES_LOAD_CONF: &str = include_str!("../../systemd/modules-load.d/puppetcam-v4l2loopback.conf");

/// The placeholder binary path in the shipped units.
const SHIPPED_BINARY: &str = "/usr/local/bin/puppetcam";
/// Installed unit name for both variants.
pub const UNIT_NAME: &str = "puppetcam.service";

#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// System unit (/etc/systemd/system) instead of the user unit.
    pub system: bool,
    /// Print what would be written, write nothing.
    pub dry_run: bool,
    /// The puppetcam binary the unit runs (usually `std::env::current_exe()`).
    pub binary: PathBuf,
    /// Extra arguments after `run` (e.g. `--config /path/config.toml`).
    pub run_args: Vec<String>,
    /// Directory to write the unit into; `None` = the standard location for the variant.
    pub unit_dir: Option<PathBuf>,
}

/// What `install` did (or would do), for printing.
#[derive(Clone, Debug, PartialEq)]
pub struct InstallPlan {
    pub unit_path: PathBuf,
    pub unit_text: String,
    /// Commands for the user to run next, in order.
    pub commands: Vec<String>,
    pub written: bool,
}

/// The standard unit directory: ~/.config/systemd/user (honouring XDG_CONFIG_HOME) or
/// /etc/systemd/system.
pub fn default_unit_dir(system: bool) -> Result<PathBuf> {
    if system {
        return Ok(PathBuf::from("/etc/systemd/system"));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| Error::Invalid("HOME is not set".into()))?).join(".config"),
    };
    Ok(base.join("systemd").join("user"))
}

/// Quotes one ExecStart word per systemd.syntax(7) when needed.
fn quote_word(w: &str) -> Result<String> {
    if w.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(format!("argument {w:?} contains control characters")));
    }
    // `%` and `$` are expanded by systemd in ExecStart: escape them so paths stay literal.
    let escaped = w.replace('\\', "\\\\").replace('%', "%%").replace('$', "$$");
    if escaped.is_empty() || escaped.contains([' ', '"', '\'', ';']) {
        Ok(format!("\"{}\"", escaped.replace('"', "\\\"")))
    } else {
        Ok(escaped)
    }
}

/// The unit text for the variant with `binary` and `run_args` substituted into ExecStart.
pub fn render_unit(system: bool, binary: &Path, run_args: &[String]) -> Result<String> {
    let bin = binary.to_str().ok_or_else(|| Error::Invalid(format!("binary path {} is not UTF-8", binary.display())))?;
    if !binary.is_absolute() {
        return Err(Error::Invalid(format!("binary path {bin} must be absolute for systemd")));
    }
    let mut exec = format!("ExecStart={} run", quote_word(bin)?);
    for a in run_args {
        exec.push(' ');
        exec.push_str(&quote_word(a)?);
    }
    let template = if system { SYSTEM_UNIT } else { USER_UNIT };
    let wanted = format!("ExecStart={SHIPPED_BINARY} run");
    let mut found = false;
    let text: Vec<String> = template
        .lines()
        .map(|l| {
            if l == wanted {
                found = true;
                exec.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        return Err(Error::Invalid("shipped unit has no `ExecStart=/usr/local/bin/puppetcam run` line".into()));
    }
    Ok(text.join("\n") + "\n")
}

/// Renders and (unless dry-run) writes the unit; returns the plan including the next commands.
pub fn install(opts: &InstallOptions) -> Result<InstallPlan> {
    let dir = match &opts.unit_dir {
        Some(d) => d.clone(),
        None => default_unit_dir(opts.system)?,
    };
    let unit_path = dir.join(UNIT_NAME);
    let unit_text = render_unit(opts.system, &opts.binary, &opts.run_args)?;
    let commands: Vec<String> = if opts.system {
        vec![
            "sudo useradd --system --home-dir /var/lib/puppetcam --shell /usr/sbin/nologin --groups video puppetcam".into(),
            "sudo install -m 0644 systemd/modprobe.d/puppetcam-v4l2loopback.conf /etc/modprobe.d/".into(),
            "sudo install -m 0644 systemd/modules-load.d/puppetcam-v4l2loopback.conf /etc/modules-load.d/   # optional: load v4l2loopback at every boot".into(),
            "sudo modprobe v4l2loopback".into(),
            format!("sudo install -D -m 0644 puppetcam.example.toml {SYSTEM_CONFIG}   # then edit [source] and [output]"),
            "sudo systemctl daemon-reload".into(),
            "sudo systemctl enable --now puppetcam.service".into(),
            "journalctl -u puppetcam.service -f".into(),
        ]
    } else {
        vec![
            format!("install -D -m 0644 puppetcam.example.toml {}   # then edit [source] and [output]", shell_quote(&user_config_path())),
            "systemctl --user daemon-reload".into(),
            "systemctl --user enable --now puppetcam.service".into(),
            "journalctl --user -u puppetcam.service -f".into(),
        ]
    };
    let mut written = false;
    if !opts.dry_run {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // Written next to the target and renamed, so a running systemd never reads half a unit.
        crate::durable::write_atomic(&unit_path, unit_text.as_bytes())?;
        written = true;
    }
    Ok(InstallPlan { unit_path, unit_text, commands, written })
}

/// Where the user unit's daemon looks for its config (`config::config_candidates`).
fn user_config_path() -> String {
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => format!("{}/puppetcam/{CONFIG_FILE}", PathBuf::from(x).display()),
        None => format!("~/.config/puppetcam/{CONFIG_FILE}"),
    }
}

fn shell_quote(s: &str) -> String {
    if s.starts_with("~/") || s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Human-readable report of a plan, as `install-service` prints it.
pub fn describe(plan: &InstallPlan) -> String {
    let mut s = String::new();
    if plan.written {
        s.push_str(&format!("wrote {}\n", plan.unit_path.display()));
    } else {
        s.push_str(&format!("dry run: would write {}:\n\n{}\n", plan.unit_path.display(), plan.unit_text));
    }
    s.push_str("next:\n");
    for c in &plan.commands {
        s.push_str(&format!("  {c}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_binary_and_args_and_refuses_relative_paths() {
        let u = render_unit(false, Path::new("/opt/pc dir/puppetcam"), &["--config".into(), "/home/a/50%.toml".into()]).unwrap();
        assert!(u.contains("ExecStart=\"/opt/pc dir/puppetcam\" run --config /home/a/50%%.toml\n"), "{u}");
        assert!(!u.contains(SHIPPED_BINARY));
        assert!(render_unit(true, Path::new("puppetcam"), &[]).is_err());
        let s = render_unit(true, Path::new("/usr/bin/puppetcam"), &[]).unwrap();
        assert!(s.contains("SupplementaryGroups=video") && s.contains("ExecStart=/usr/bin/puppetcam run\n"));
    }

    #[test]
    fn dry_run_writes_nothing_and_install_writes_the_unit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("units");
        let mut o = InstallOptions { system: false, dry_run: true, binary: "/usr/bin/puppetcam".into(), run_args: vec![], unit_dir: Some(target.clone()) };
        let p = install(&o).unwrap();
        assert!(!p.written && !target.exists());
        assert!(describe(&p).contains("dry run") && p.commands.iter().any(|c| c.contains("systemctl --user enable --now")));
        o.dry_run = false;
        let p = install(&o).unwrap();
        assert!(p.written);
        assert_eq!(std::fs::read_to_string(target.join(UNIT_NAME)).unwrap(), p.unit_text);
        o.system = true;
        let p = install(&o).unwrap();
        assert!(p.commands.iter().any(|c| c == "sudo systemctl enable --now puppetcam.service"));
        assert!(std::fs::read_to_string(target.join(UNIT_NAME)).unwrap().contains("User=puppetcam"));
        assert!(p.commands.iter().any(|c| c.contains("/etc/puppetcam/puppetcam.toml")), "{:?}", p.commands);
    }

    /// The units read the config where `run` looks for it and cache where they may write.
    #[test]
    fn units_use_the_documented_config_and_cache_paths() {
        let sys = SYSTEM_UNIT;
        // XDG_CONFIG_HOME=/etc makes the lookup's second place /etc/puppetcam/puppetcam.toml.
        assert!(sys.contains("Environment=XDG_CONFIG_HOME=/etc") && sys.contains("/etc/puppetcam/puppetcam.toml"));
        let cands = crate::config::config_candidates(&|k| (k == "XDG_CONFIG_HOME").then(|| "/etc".into()));
        assert_eq!(cands[0].path, PathBuf::from(SYSTEM_CONFIG));
        assert!(sys.contains("CacheDirectory=puppetcam") && sys.contains("Environment=XDG_CACHE_HOME=/var/cache"));
        assert!(!sys.contains("config.toml"), "the old, never-read config path");
        let user = USER_UNIT;
        assert!(user.contains("CacheDirectory=puppetcam") && user.contains("ReadWritePaths=-%C/puppetcam"));
        assert!(user.contains("~/.config/puppetcam/puppetcam.toml"));
        // Both run `puppetcam run` without arguments: the config is looked up, never the demo.
        for u in [sys, user] {
            assert!(u.lines().any(|l| l == "ExecStart=/usr/local/bin/puppetcam run"));
        }
    }
}
