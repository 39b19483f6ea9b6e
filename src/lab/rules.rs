//! Loading firewall configuration into a lab's host namespace:
//! `iptables-restore`, `ip6tables-restore`, `nft -f`, or a setup script, each
//! run through `ip netns exec`, with its own output in the error when it
//! fails.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::LabError;

/// How long `iptables-restore`, `ip6tables-restore` or `nft -f` may take.
const LOADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a setup script may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `iptables-restore`/`ip6tables-restore` wait for the xtables lock
/// (only the legacy backend uses it; two labs may load at once).
const XTABLES_WAIT: &str = "--wait=30";

/// One source of firewall configuration for the host namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// An `iptables-save` style file, fed to `iptables-restore` on stdin.
    Iptables(PathBuf),
    /// An `ip6tables-save` style file, fed to `ip6tables-restore` on stdin.
    Ip6tables(PathBuf),
    /// An nftables ruleset, loaded with `nft -f FILE`.
    Nft(PathBuf),
    /// An executable run inside the host namespace
    /// (`ip netns exec HOST SCRIPT`) with these variables set:
    /// `EGRESS_SANDBOX_NETNS` (host namespace name), `EGRESS_SANDBOX_IFACE`
    /// (the host end of the link: `eth0`, or `--uplink`'s name), `EGRESS_SANDBOX_GATEWAY4`/`_GATEWAY6` (internet end of the
    /// link, also the DNS server), `EGRESS_SANDBOX_SINK4`/`_SINK6` (the first
    /// sink of each family, empty if there is none).
    Setup(PathBuf),
}

/// What a setup script is told about the lab (see [`RuleSource::Setup`]).
pub(crate) struct SetupEnv<'a> {
    pub(crate) netns: &'a str,
    pub(crate) iface: &'a str,
    pub(crate) gateway4: String,
    pub(crate) gateway6: String,
    pub(crate) sink4: String,
    pub(crate) sink6: String,
}

impl RuleSource {
    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            Self::Iptables(p) | Self::Ip6tables(p) | Self::Nft(p) | Self::Setup(p) => p,
        }
    }

    /// Checks that the file can be used (readable; a setup script also
    /// executable), so that a typo is reported before any lab is built.
    pub fn check(&self) -> Result<(), LabError> {
        let path = self.path();
        let unreadable = |error| LabError::Unreadable {
            path: path.to_owned(),
            error,
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if meta.is_dir() {
            return Err(unreadable(io::Error::other("is a directory")));
        }
        if matches!(self, RuleSource::Setup(_)) {
            if meta.permissions().mode() & 0o111 == 0 {
                return Err(unreadable(io::Error::other(
                    "not executable (chmod +x it, and give it a #! line)",
                )));
            }
        } else {
            File::open(path).map_err(unreadable)?;
        }
        Ok(())
    }
}

/// Loads one rule source into namespace `host`.
pub(crate) fn load(host: &str, rule: &RuleSource, env: &SetupEnv<'_>) -> Result<(), LabError> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host]);
    let (loader, timeout) = match rule {
        RuleSource::Iptables(path) | RuleSource::Ip6tables(path) => {
            let loader = if matches!(rule, RuleSource::Iptables(_)) {
                "iptables-restore"
            } else {
                "ip6tables-restore"
            };
            let file = File::open(path).map_err(|error| LabError::Unreadable {
                path: path.clone(),
                error,
            })?;
            cmd.args([loader, XTABLES_WAIT]).stdin(file);
            (loader, LOADER_TIMEOUT)
        }
        RuleSource::Nft(path) => {
            // By path, so that nft's messages name the file and line.
            cmd.arg("nft").arg("-f").arg(path).stdin(Stdio::null());
            ("nft", LOADER_TIMEOUT)
        }
        RuleSource::Setup(path) => {
            // Absolute, or `ip netns exec` would search $PATH for it.
            let script = std::path::absolute(path).map_err(|error| LabError::Unreadable {
                path: path.clone(),
                error,
            })?;
            cmd.arg(script)
                .stdin(Stdio::null())
                .env("EGRESS_SANDBOX_NETNS", env.netns)
                .env("EGRESS_SANDBOX_IFACE", env.iface)
                .env("EGRESS_SANDBOX_GATEWAY4", &env.gateway4)
                .env("EGRESS_SANDBOX_GATEWAY6", &env.gateway6)
                .env("EGRESS_SANDBOX_SINK4", &env.sink4)
                .env("EGRESS_SANDBOX_SINK6", &env.sink6);
            ("setup script", SETUP_TIMEOUT)
        }
    };
    let what = format!("{loader} {}", rule.path().display());
    let (status, output) = run_logged(&mut cmd, &what, timeout)?;
    if status.success() {
        return Ok(());
    }
    Err(match rule {
        RuleSource::Setup(path) => LabError::SetupScript {
            path: path.clone(),
            status,
            output,
        },
        _ => LabError::RulesLoad {
            loader,
            path: rule.path().to_owned(),
            status,
            output,
        },
    })
}

/// Runs `cmd` with stdout and stderr both going to one anonymous temporary
/// file (interleaved in the order written, no pipe that could fill up, and
/// nothing left on disk), killing it after `timeout`. Returns its status and
/// output.
fn run_logged(
    cmd: &mut Command,
    what: &str,
    timeout: Duration,
) -> Result<(ExitStatus, String), LabError> {
    let io_err = |context: String| move |error| LabError::Io { context, error };
    let mut log = tempfile::tempfile().map_err(io_err(format!("cannot log {what}")))?;
    let out = log
        .try_clone()
        .map_err(io_err(format!("cannot log {what}")))?;
    let err = log
        .try_clone()
        .map_err(io_err(format!("cannot log {what}")))?;
    let mut child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|error| LabError::Spawn {
            program: "ip".into(),
            error,
        })?;
    let status =
        wait_timeout(&mut child, timeout).map_err(io_err(format!("waiting for {what}")))?;
    let mut bytes = Vec::new();
    let _ = log.rewind().and_then(|()| log.read_to_end(&mut bytes));
    let output = String::from_utf8_lossy(&bytes).trim_end().to_owned();
    match status {
        Some(status) => Ok((status, output)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(LabError::Timeout {
                what: what.to_owned(),
                timeout,
                output,
            })
        }
    }
}

/// `child.wait()` with a limit; `Ok(None)` if it is still running then.
fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_rules_are_reported_before_anything_is_created() {
        let err = RuleSource::Nft("/nonexistent/rules.nft".into())
            .check()
            .unwrap_err();
        assert!(matches!(err, LabError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/rules.nft"), "{err}");
        let err = RuleSource::Setup("/".into()).check().unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let script = tempfile::NamedTempFile::new().unwrap(); // mode 0600
        let err = RuleSource::Setup(script.path().into()).check().unwrap_err();
        assert!(err.to_string().contains("not executable"), "{err}");
        assert!(RuleSource::Iptables(script.path().into()).check().is_ok());
    }

    #[test]
    fn run_logged_interleaves_output_and_kills_on_timeout() {
        let (status, output) = run_logged(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            "sh",
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(output, "out\nerr");

        let err = run_logged(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            "sleeper",
            Duration::from_millis(200),
        )
        .unwrap_err();
        match err {
            LabError::Timeout { what, output, .. } => {
                assert_eq!(what, "sleeper");
                assert_eq!(output, "started");
            }
            other => panic!("expected a timeout, got {other}"),
        }
    }
}
