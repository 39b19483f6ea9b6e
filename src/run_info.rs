//! Where, when and with what a run happened: the fields that let reports from many hosts be
//! merged and told apart (issue 11). The JSON report carries them at its top level, JUnit
//! as `hostname` and `timestamp`, the Prometheus textfile as the run's series, and the
//! human summary line names the host.
//!
//! The caller that runs the probes fills this in ([`RunInfo::begin`] before resolving,
//! [`RunInfo::finish`] once judged): the verdict stage knows nothing of clocks or hosts.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::plan::NameserverSource;

/// Version of the JSON report's shape (`schema/report.schema.json`). Raised when a field
/// changes meaning or disappears; new optional fields do not raise it.
pub const SCHEMA_VERSION: u32 = 1;

/// The run's context as reports carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    /// The node name (`uname -n`) of the host that ran the checks. With `--netns` or in the
    /// sandbox it is still the host's: network namespaces do not change the node name.
    pub host: String,
    /// When the run started (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub started: SystemTime,
    /// From start to judgement, in milliseconds.
    pub duration_ms: u64,
    /// egress-check's version.
    pub version: &'static str,
    /// The nameservers the run's names were resolved with, as `IP:PORT`, or `system` when
    /// the system resolver's configuration named none we could read.
    pub nameservers: Vec<String>,
    /// The user the resolver process ran as ([`crate::dns_process`]: `nobody`, or
    /// `--resolve-as`); absent when nothing was resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_as: Option<String>,
    /// Kernel limits the run planned around, in words (the conntrack table, the descriptor
    /// limit): why it may have been slower than it could be. Absent when none limited it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<String>,
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_rfc3339(*time))
}

/// `2026-03-01T12:00:00.123Z`.
pub fn format_rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl RunInfo {
    /// The context of a run starting now, resolving with `nameservers`.
    pub fn begin<'a>(nameservers: impl IntoIterator<Item = &'a NameserverSource>) -> RunInfo {
        let mut names: Vec<String> = nameservers.into_iter().flat_map(describe).collect();
        names.sort();
        names.dedup();
        RunInfo {
            host: nix::sys::utsname::uname()
                .map(|u| u.nodename().to_string_lossy().into_owned())
                // uname(2) does not fail on Linux; an empty name would still be reported.
                .unwrap_or_default(),
            started: SystemTime::now(),
            duration_ms: 0,
            version: env!("CARGO_PKG_VERSION"),
            nameservers: names,
            resolved_as: None,
            limits: Vec::new(),
        }
    }

    /// Sets the duration, measured from [`RunInfo::begin`] to now.
    pub fn finish(mut self) -> RunInfo {
        let elapsed = self.started.elapsed().unwrap_or(Duration::ZERO);
        self.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Seconds since the Unix epoch of the start, as Prometheus timestamps are.
    pub fn started_unix_seconds(&self) -> f64 {
        self.started
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    }
}

/// The servers of one source: the explicit one, or the `nameserver` lines of a resolv.conf.
fn describe(source: &NameserverSource) -> Vec<String> {
    let from_resolv_conf = |text: &str| -> Vec<String> {
        let servers: Vec<String> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("nameserver"))
            .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
            .map(|ip| std::net::SocketAddr::new(ip, 53).to_string())
            .collect();
        if servers.is_empty() {
            vec!["system".to_string()]
        } else {
            servers
        }
    };
    match source {
        NameserverSource::Server(addr) => vec![addr.to_string()],
        NameserverSource::ResolvConf(text) => from_resolv_conf(text),
        NameserverSource::System => {
            from_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_named_by_address() {
        let info = RunInfo::begin(&[
            NameserverSource::Server("192.0.2.53:5353".parse().unwrap()),
            NameserverSource::ResolvConf("# x\nnameserver 2001:db8::53\nsearch a\n".into()),
            NameserverSource::Server("192.0.2.53:5353".parse().unwrap()),
        ]);
        assert_eq!(info.nameservers, ["192.0.2.53:5353", "[2001:db8::53]:53"]);
        assert!(!info.host.is_empty());
        let json = serde_json::to_value(info.finish()).unwrap();
        let started = json["started"].as_str().unwrap();
        assert!(started.ends_with('Z') && started.contains('T'), "{started}");
    }
}
