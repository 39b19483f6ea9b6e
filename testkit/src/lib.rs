//! What only egress-check's tests (and its benchmark) need on top of the
//! shipped lab ([`egress_check::lab`]); never part of the binary, never
//! reachable from a scenario file or a normal run:
//!
//! - [`dns`]: DNS faults as [`DnsLayer`](egress_check::lab::DnsLayer)s:
//!   SERVFAIL for chosen names, a fixed delay on every answer;
//! - [`nfqueue`]: an NFQUEUE delayer that holds every packet of a queue for
//!   a fixed time (this kernel has no netem qdisc and no nft `queue`);
//! - [`reset`]: a listener that accepts and resets at once (SO_LINGER 0);
//! - [`users`]: the test users, created once, safe under parallel tests;
//! - [`test_lab`]: [`TestLab`], the integration tests' lab with its address
//!   plan and zone.
//!
//! Closed ports need nothing: they are ports nobody listens on.
//!
//! [`prerequisites`] is the policy of every test that needs root and network
//! namespaces: it runs, or it fails loudly; it is skipped only when the user
//! opts out knowingly outside CI.

pub mod dns;
pub mod mta;
pub mod nfqueue;
pub mod reset;
pub mod test_lab;
pub mod users;

use std::fmt;
use std::process::Output;
use std::sync::OnceLock;

use egress_check::lab::{LabError, ThreadError, ZoneError};

pub use test_lab::TestLab;

/// Everything the test kit can fail at.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// Creating, using or tearing down the lab.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// The test zone is wrong (a bug in the kit).
    #[error(transparent)]
    Zone(#[from] ZoneError),
    /// A delayer or listener thread could not start.
    #[error(transparent)]
    Thread(#[from] ThreadError),
    /// A program could not be started at all.
    #[error("cannot run `{program}`: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        .output.status,
        String::from_utf8_lossy(&.output.stdout),
        String::from_utf8_lossy(&.output.stderr))]
    Command {
        /// The command line.
        command: String,
        /// What it did.
        output: Output,
    },
    /// Local I/O failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        error: std::io::Error,
    },
    /// A passwd or group database lookup failed.
    #[error("looking up {what}: {error}")]
    Lookup {
        /// What was looked up.
        what: String,
        /// The error.
        error: nix::errno::Errno,
    },
    /// The queue number already has a delayer in this lab.
    #[error("NFQUEUE {queue} already has a delayer in this lab")]
    QueueTaken {
        /// The queue number.
        queue: u16,
    },
    /// The port already has a reset listener in this lab.
    #[error("port {port} already has a reset listener in this lab")]
    PortTaken {
        /// The port.
        port: u16,
    },
}

/// Tools the labs and the tests' firewall helpers need on `PATH`.
pub const REQUIRED_TOOLS: &[&str] = &[
    "ip",
    "iptables",
    "ip6tables",
    "nft",
    "timeout",
    "runuser",
    "useradd",
    "groupadd",
    "usermod",
];

/// Why a test needing network namespaces is skipped (only ever on request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `tool` is an executable file in one of `PATH`'s directories.
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Checks, once per process, that labs can be built here, and then reaps
/// test labs that killed test processes left behind.
///
/// Returns `Ok(())` when they can, `Err(Skip)` when the user opted out with
/// `EGRESS_CHECK_SKIP_NETNS=1`, and **panics** otherwise: missing root or
/// tools, or the opt-out used under `CI=true`. A test that cannot run fails.
pub fn prerequisites() -> Result<(), Skip> {
    static CHECKED: OnceLock<Result<(), Skip>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let mut missing = Vec::new();
            if !nix::unistd::Uid::effective().is_root() {
                missing.push("root privileges (effective uid is not 0)".to_string());
            }
            let tools: Vec<&str> = REQUIRED_TOOLS
                .iter()
                .copied()
                .filter(|t| !on_path(t))
                .collect();
            if !tools.is_empty() {
                missing.push(format!("tools not on PATH: {}", tools.join(", ")));
            }
            let skip = std::env::var("EGRESS_CHECK_SKIP_NETNS").is_ok_and(|v| v == "1");
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            if skip && ci {
                panic!(
                    "EGRESS_CHECK_SKIP_NETNS=1 is not allowed when CI=true: CI must run the \
                     network namespace tests (run as root; see README)"
                );
            }
            if skip {
                return Err(Skip(format!(
                    "EGRESS_CHECK_SKIP_NETNS=1 is set{}",
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!(" (and this machine lacks: {})", missing.join("; "))
                    }
                )));
            }
            if !missing.is_empty() {
                panic!(
                    "the network namespace tests cannot run: missing {}. Run as root with \
                     iproute2, iptables and nftables installed; see README. (To skip them \
                     knowingly outside CI, set EGRESS_CHECK_SKIP_NETNS=1.)",
                    missing.join("; ")
                );
            }
            if let Err(e) = test_lab::reap_stale() {
                panic!("cannot remove the test labs of dead test processes: {e}");
            }
            Ok(())
        })
        .clone()
}
