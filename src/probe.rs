//! One TCP connection attempt and the classification of what happened.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::TcpSocket;

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

/// Tries one TCP connection to `addr`, giving up after `timeout`.
///
/// The socket is closed as soon as the handshake completes; no data is sent.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Attempt {
    let start = Instant::now();
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    let mut local = None;
    let result = match socket {
        Ok(socket) => {
            // A second descriptor of the same socket, to read the local address the kernel
            // picks when connect() is issued (the connect future owns the socket).
            let twin = socket.as_fd().try_clone_to_owned().ok();
            let mut connecting =
                std::pin::pin!(tokio::time::timeout(timeout, socket.connect(addr)));
            // The first poll issues the non-blocking connect(2): the port is bound then.
            let first = futures::poll!(connecting.as_mut());
            local = twin.as_ref().and_then(local_address);
            drop(twin);
            match first {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => connecting.await,
            }
        }
        Err(err) => Ok(Err(err)),
    };
    let elapsed = start.elapsed();
    match result {
        Ok(Ok(_stream)) => Attempt {
            observed: Observed::Connected,
            elapsed,
            detail: None,
            local,
        },
        Ok(Err(err)) => {
            let observed = classify(&err);
            let mut detail = describe(&err);
            if err.raw_os_error() == Some(nix::libc::ECONNRESET) {
                detail.push_str(" (the handshake completed, then the peer reset it)");
            }
            Attempt {
                observed,
                elapsed,
                detail: Some(detail),
                local,
            }
        }
        Err(_elapsed) => Attempt {
            observed: Observed::Timeout,
            elapsed,
            detail: Some(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            )),
            local,
        },
    }
}

/// The bound local address of a socket; `None` before a port is bound.
fn local_address(fd: &std::os::fd::OwnedFd) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockname, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    let (ip, port) = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
        (Some(v4), _) => (std::net::IpAddr::V4(v4.ip()), v4.port()),
        (None, Some(v6)) => (std::net::IpAddr::V6(v6.ip()), v6.port()),
        _ => return None,
    };
    (port != 0).then(|| SocketAddr::new(ip, port))
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

fn describe(err: &io::Error) -> String {
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

    #[tokio::test]
    async fn loopback_outcomes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let attempt = connect(open, Duration::from_secs(2)).await;
        assert_eq!(attempt.observed, Observed::Connected);
        let local = attempt.local.expect("the local address is reported");
        assert!(local.ip().is_loopback() && local.port() != 0, "{local}");

        drop(listener);
        let attempt = connect(open, Duration::from_secs(2)).await;
        assert_eq!(attempt.observed, Observed::Refused);
        assert!(attempt.detail.unwrap().contains("ECONNREFUSED"));
    }
}
