//! What one TCP connection attempt observed, and the classification of `errno` into it
//! ([`crate::connector`] makes the attempts).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a connection attempt observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Observed {
    /// The three-way handshake completed.
    Connected,
    /// The remote (or a firewall on the way) answered with a reset.
    Refused,
    /// ICMP unreachable or prohibited, no route, or the local stack refused (EACCES/EPERM).
    Unreachable,
    /// No answer within the timeout (typically a DROP).
    Timeout,
    /// Anything else; the detail carries the OS error.
    Error,
    /// The target has no address in this family (or DNS could not say), so nothing was tried.
    NoAddress,
}

impl Observed {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Observed::Connected => "connected",
            Observed::Refused => "refused",
            Observed::Unreachable => "unreachable",
            Observed::Timeout => "timeout",
            Observed::Error => "error",
            Observed::NoAddress => "no-address",
        }
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// What happened.
    pub observed: Observed,
    /// Time from the start of the attempt to its outcome.
    pub elapsed: Duration,
    /// The OS error or other explanation, when there is one.
    pub detail: Option<String>,
    /// The connection's local address as the kernel chose it (for `--explain`, which
    /// matches trace events to probes by the exact connection); `None` when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
}

/// Maps a connect error to an observed outcome.
pub fn classify(err: &io::Error) -> Observed {
    match err.raw_os_error() {
        Some(code) => classify_errno(code),
        None => Observed::Error,
    }
}

/// Maps a raw `errno` from `connect(2)` to an observed outcome.
pub fn classify_errno(code: i32) -> Observed {
    use nix::libc;
    match code {
        // RST to the SYN, or ICMP port unreachable which Linux reports the same way.
        libc::ECONNREFUSED => Observed::Refused,
        // Linux only reports a reset as ECONNRESET once the handshake has completed: the
        // firewall let the connection through, whatever the peer did next.
        libc::ECONNRESET => Observed::Connected,
        // ICMP unreachable/prohibited, no route, or a local netfilter/LSM verdict.
        libc::EHOSTUNREACH
        | libc::ENETUNREACH
        | libc::EHOSTDOWN
        | libc::ENETDOWN
        | libc::ENONET
        | libc::EACCES
        | libc::EPERM
        | libc::EADDRNOTAVAIL => Observed::Unreachable,
        // The kernel gave up on SYN retransmissions before our own timer did.
        libc::ETIMEDOUT => Observed::Timeout,
        // EAFNOSUPPORT (no IPv6 in this kernel), EMFILE, ENOBUFS, ...: nothing was proven.
        _ => Observed::Error,
    }
}

/// The detail of a timeout: "no answer within 1s".
pub fn timeout_detail(timeout: Duration) -> String {
    format!("no answer within {}", humantime::format_duration(timeout))
}

/// The detail of a failed connect: the errno's name and its text, "ECONNREFUSED: Connection
/// refused".
pub fn describe(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => {
            let text = err.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            format!("{}: {text}", errno_name(code))
        }
        None => err.to_string(),
    }
}

fn errno_name(code: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::libc;

    #[test]
    fn classification_table() {
        let table = [
            (libc::ECONNREFUSED, Observed::Refused),
            (libc::ECONNRESET, Observed::Connected),
            (libc::EHOSTUNREACH, Observed::Unreachable),
            (libc::ENETUNREACH, Observed::Unreachable),
            (libc::EACCES, Observed::Unreachable),
            (libc::EPERM, Observed::Unreachable),
            (libc::EADDRNOTAVAIL, Observed::Unreachable),
            (libc::ETIMEDOUT, Observed::Timeout),
            (libc::EAFNOSUPPORT, Observed::Error),
            (libc::EMFILE, Observed::Error),
        ];
        for (code, observed) in table {
            assert_eq!(classify_errno(code), observed, "errno {code}");
        }
    }

    #[test]
    fn detail_names_the_errno() {
        let err = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert!(
            describe(&err).contains("EHOSTUNREACH"),
            "{}",
            describe(&err)
        );
    }

    #[test]
    fn observed_serializes_in_kebab_case() {
        assert_eq!(
            serde_json::to_string(&Observed::NoAddress).unwrap(),
            "\"no-address\""
        );
    }
}
