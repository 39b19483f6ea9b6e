//! DNS: from the plan's targets to the exchanges and addresses that will be probed, and
//! from those to the exact probes ([`expand`]).
//!
//! Every distinct name is looked up once per run, and all lookups of a phase run
//! concurrently: first the MX records of all mail domains, then the A and AAAA records of
//! every exchange and host name at once.
//!
//! [`expand`] classifies every answer ([`crate::address`]) before it becomes a probe: an
//! answer that cannot be egress (a sinkhole's `0.0.0.0`, the host's own address, ...) is
//! not probed but reported as `no-address` with the record, the nameserver and the reason;
//! an IPv4-mapped AAAA record is IPv4 on the wire, so it is probed under IPv4.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::join_all;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use serde::Serialize;

use crate::address::{self, on_the_wire, HostInterfaces, Literal};
use crate::plan::{Assignment, Destination, Endpoint, NameserverSource, PlannedProbe, ProbeSpec};
use crate::scenario::TargetKind;
use crate::vocab::Family;

/// How long one DNS query may take before it is retried or given up.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries per query after the first try.
const QUERY_ATTEMPTS: usize = 1;

/// Why a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The name does not exist.
    Nxdomain,
    /// The server failed (SERVFAIL).
    Servfail,
    /// The server refused to answer.
    Refused,
    /// No answer in time (server unreachable or too slow).
    Timeout,
    /// This host's own firewall refused to let the query out (EPERM on send): the
    /// nameserver's address, and the OS error.
    BlockedByHost {
        /// The nameserver, as written in reports.
        server: String,
        /// The OS error, e.g. "Operation not permitted".
        error: String,
    },
    /// No nameserver answered at all (the query could go out; the cause may be anywhere).
    NoAnswer {
        /// The nameservers, as written in reports.
        servers: String,
    },
    /// Anything else.
    Other(String),
}

/// A failed lookup: which name, which record type, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsFailure {
    /// The name looked up.
    pub name: String,
    /// The record type asked for (`MX`, `A`, `AAAA`).
    pub record: &'static str,
    /// Why it failed.
    pub kind: FailureKind,
    /// The nameserver asked (`10.255.255.53`, `[2001:db8::53]:5353`, or `10.0.0.1 or
    /// 10.0.0.2` when the configuration has several and any may have answered); `None` when
    /// none was (no resolver could be set up, the run was interrupted first).
    pub nameserver: Option<String>,
}

impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DNS {} lookup of {}: ", self.record, self.name)?;
        // A failure is the answer of one server (or its silence): name it, so that a wrong
        // or unreachable nameserver is seen at once.
        match (&self.kind, &self.nameserver) {
            // These name the server themselves.
            (FailureKind::BlockedByHost { server, error }, _) => write!(
                f,
                "DNS query to {server} blocked by this host's firewall ({error})"
            ),
            (FailureKind::NoAnswer { servers }, _) => write!(f, "no answer from {servers}"),
            (FailureKind::Nxdomain, Some(ns)) => write!(f, "NXDOMAIN from {ns} (no such domain)"),
            (FailureKind::Servfail, Some(ns)) => write!(f, "SERVFAIL from {ns}"),
            (FailureKind::Refused, Some(ns)) => write!(f, "REFUSED by {ns}"),
            (FailureKind::Timeout, Some(ns)) => write!(
                f,
                "timed out waiting for {ns} (nameserver unreachable or too slow)"
            ),
            (FailureKind::Other(text), Some(ns)) => write!(f, "{text} (asking {ns})"),
            (FailureKind::Nxdomain, None) => f.write_str("NXDOMAIN (no such domain)"),
            (FailureKind::Servfail, None) => f.write_str("SERVFAIL"),
            (FailureKind::Refused, None) => f.write_str("REFUSED"),
            (FailureKind::Timeout, None) => {
                f.write_str("timed out (nameserver unreachable or too slow)")
            }
            (FailureKind::Other(text), None) => f.write_str(text),
        }
    }
}

/// The addresses of one name in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// The records found (possibly after following CNAMEs); never empty.
    Found(Vec<IpAddr>),
    /// The name exists but has no record of this type.
    None,
    /// The lookup failed.
    Failed(DnsFailure),
}

/// A host that will be connected to: an MX exchange or a host target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Its name.
    pub name: Option<String>,
    /// MX preference, for MX exchanges.
    pub preference: Option<u16>,
    /// The A records.
    pub ipv4: Addresses,
    /// The AAAA records, as published (an IPv4-mapped one is still here).
    pub ipv6: Addresses,
    /// Who gave the answers, for reports ("DNS server 192.0.2.53").
    pub answered_by: String,
}

impl Exchange {
    /// The addresses of one family.
    pub fn addresses(&self, family: Family) -> &Addresses {
        match family {
            Family::Ipv4 => &self.ipv4,
            Family::Ipv6 => &self.ipv6,
        }
    }
}

/// Everything known about where a target lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Hosts to probe, MX exchanges by preference.
    Exchanges {
        /// True when a mail domain had no MX and its own addresses stand in (RFC 5321 5.1).
        implicit_mx: bool,
        /// The hosts.
        exchanges: Vec<Exchange>,
    },
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    NullMx,
    /// Literal addresses: themselves.
    Literals(Vec<Literal>),
    /// The target's own lookup failed (e.g. the MX query of its domain).
    Failed(DnsFailure),
}

/// Why a resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// `/etc/resolv.conf` is missing or unusable.
    #[error("cannot read /etc/resolv.conf: {0}")]
    SystemConfig(#[source] NetError),
    /// The entered namespace's resolv.conf does not parse.
    #[error("cannot parse the namespace's resolv.conf: {0}")]
    NetnsConfig(#[source] NetError),
    /// The resolver could not be built from a valid configuration.
    #[error("cannot set up the resolver: {0}")]
    Build(#[source] NetError),
}

/// A resolver with the settings egress-check needs.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    /// Who answers, as reports name it.
    answered_by: String,
    /// The nameservers asked, as failures name them ([`DnsFailure::nameserver`]).
    nameserver: String,
    /// `/etc/hosts`, consulted for `host` targets as the system resolver does; `None` when
    /// the nameserver is explicit (`--nameserver`, a scenario's, the sandbox's): then the
    /// question is what that server says.
    hosts: Option<HostsFile>,
    /// The nameservers asked, for [`diagnose`].
    servers: Vec<std::net::SocketAddr>,
    /// Why no connection to them could be made, found out once ([`diagnose`]).
    diagnosis: std::sync::Arc<tokio::sync::OnceCell<FailureKind>>,
}

/// Where `host` targets are looked up before DNS, unless [`use_hosts_file`] chose another.
pub const HOSTS_FILE: &str = "/etc/hosts";

/// The hosts file of this process, when not [`HOSTS_FILE`].
static HOSTS_PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Reads `path` instead of [`HOSTS_FILE`] from now on: with `--netns NAME`, the
/// namespace's `/etc/netns/NAME/hosts`, which `ip netns exec NAME` would bind-mount over
/// `/etc/hosts`. Set once, before any resolver is built; later calls change nothing.
pub fn use_hosts_file(path: PathBuf) {
    let _ = HOSTS_PATH.set(path);
}

/// The hosts file `host` targets are looked up in: [`HOSTS_FILE`] or the one
/// [`use_hosts_file`] chose.
pub fn hosts_path() -> &'static Path {
    HOSTS_PATH
        .get()
        .map_or(Path::new(HOSTS_FILE), PathBuf::as_path)
}

/// The addresses of names in a hosts(5) file, in the file's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsFile {
    /// Lowercase name or alias to its addresses.
    names: HashMap<String, Vec<IpAddr>>,
}

impl HostsFile {
    /// Parses hosts(5) text: `ADDRESS NAME [ALIAS...]` per line, `#` comments. Lines whose
    /// address does not parse (a zone index, say) are skipped, as glibc skips them.
    pub fn parse(text: &str) -> HostsFile {
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let Some(Ok(addr)) = fields.next().map(str::parse::<IpAddr>) else {
                continue;
            };
            for name in fields {
                let list = names
                    .entry(name.trim_end_matches('.').to_ascii_lowercase())
                    .or_default();
                if !list.contains(&addr) {
                    list.push(addr);
                }
            }
        }
        HostsFile { names }
    }

    /// Reads [`hosts_path`]; a missing or unreadable file is an empty table, as for the
    /// system resolver.
    pub fn system() -> HostsFile {
        std::fs::read_to_string(hosts_path())
            .map(|text| HostsFile::parse(&text))
            .unwrap_or_default()
    }

    /// The addresses of `name` (already normalized: lowercase, no trailing dot), if the
    /// file names it.
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        self.names.get(name).map(Vec::as_slice)
    }
}

/// The nameservers of `config`, as a failure names them: `10.0.0.53`, `10.0.0.53:5353`,
/// `10.0.0.1 or 10.0.0.2`.
fn name_servers(config: &ResolverConfig) -> String {
    let mut names: Vec<String> = Vec::new();
    for server in config.name_servers() {
        let port = server.connections.first().map_or(53, |c| c.port);
        let name = match port {
            53 => server.ip.to_string(),
            port => std::net::SocketAddr::new(server.ip, port).to_string(),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    match names.as_slice() {
        [] => "no nameserver".to_string(),
        many => many.join(" or "),
    }
}

/// An answer as `-v` shows it: `203.0.113.10, 203.0.113.11`, `no record`, or the failure.
fn describe_addresses(answer: &Addresses) -> String {
    match answer {
        Addresses::Found(list) => list
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        Addresses::None => "no record".to_string(),
        Addresses::Failed(failure) => failure.to_string(),
    }
}

/// Names the nameservers of a configuration read from `file`, as reports cite them.
/// The nameservers `/etc/resolv.conf` names, as the resolver reads it (each
/// server's address and port); empty when the file is missing or unusable
/// (the run's resolver then reports why).
pub fn system_nameservers() -> Vec<SocketAddr> {
    let Ok((config, _)) = hickory_resolver::system_conf::read_system_conf() else {
        return Vec::new();
    };
    let mut servers = Vec::new();
    for server in config.name_servers() {
        for connection in &server.connections {
            let addr = SocketAddr::new(server.ip, connection.port);
            if !servers.contains(&addr) {
                servers.push(addr);
            }
        }
    }
    servers
}

fn describe_servers(config: &ResolverConfig, file: &str) -> String {
    let mut ips: Vec<IpAddr> = config.name_servers().iter().map(|s| s.ip).collect();
    ips.dedup();
    match ips.as_slice() {
        [] => format!("the DNS servers of {file}"),
        [one] => format!("DNS server {one} (from {file})"),
        many => format!(
            "one of the DNS servers {} (from {file})",
            many.iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl Resolver {
    /// A resolver that asks the servers of `source`.
    pub fn new(source: &NameserverSource) -> Result<Resolver, ResolverError> {
        let provider = TokioRuntimeProvider::default();
        let (config, system_options, answered_by) = match source {
            NameserverSource::Server(addr) => {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                let answered_by = if addr.port() == 53 {
                    format!("DNS server {}", addr.ip())
                } else {
                    format!("DNS server {addr}")
                };
                (
                    ResolverConfig::from_name_servers(vec![server]),
                    None,
                    answered_by,
                )
            }
            NameserverSource::System => {
                // What `TokioResolver::builder` does, keeping the configuration to name
                // its servers.
                let (config, options) = hickory_resolver::system_conf::read_system_conf()
                    .map_err(ResolverError::SystemConfig)?;
                let answered_by = describe_servers(&config, "/etc/resolv.conf");
                (config, Some(options), answered_by)
            }
            NameserverSource::ResolvConf(text) => {
                let (config, _) = hickory_resolver::system_conf::parse_resolv_conf(text)
                    .map_err(ResolverError::NetnsConfig)?;
                let answered_by = describe_servers(&config, "the namespace's resolv.conf");
                (config, None, answered_by)
            }
        };
        let nameserver = name_servers(&config);
        let hosts = match source {
            NameserverSource::Server(_) => None,
            NameserverSource::System | NameserverSource::ResolvConf(_) => Some(HostsFile::system()),
        };
        let servers = {
            let mut servers: Vec<std::net::SocketAddr> = config
                .name_servers()
                .iter()
                .map(|s| {
                    let port = s.connections.first().map_or(53, |c| c.port);
                    std::net::SocketAddr::new(s.ip, port)
                })
                .collect();
            servers.dedup();
            servers
        };
        let mut builder = TokioResolver::builder_with_config(config, provider);
        if let Some(system_options) = system_options {
            *builder.options_mut() = system_options;
        }
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = QUERY_TIMEOUT;
        options.attempts = QUERY_ATTEMPTS;
        // Names are looked up fully qualified, as an MTA does; /etc/hosts is not DNS.
        options.ndots = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.preserve_intermediates = true;
        let inner = builder.build().map_err(ResolverError::Build)?;
        Ok(Resolver {
            inner,
            answered_by,
            nameserver,
            hosts,
            servers,
            diagnosis: Default::default(),
        })
    }

    /// [`classify`], with "no connection could be made" explained in words by
    /// [`diagnose`] (once per resolver): hickory's own message names its pool, not the cause.
    async fn classify(&self, err: &NetError) -> Classified {
        match classify(err) {
            Classified::Failure(FailureKind::Other(_)) if no_connection(err) => {
                let kind = self
                    .diagnosis
                    .get_or_init(|| diagnose(&self.servers))
                    .await
                    .clone();
                Classified::Failure(kind)
            }
            other => other,
        }
    }

    async fn mx(&self, domain: &str) -> MxAnswer {
        let answer = self.mx_answer(domain).await;
        if tracing::enabled!(tracing::Level::DEBUG) {
            let said = match &answer {
                MxAnswer::Exchanges(list, glue) => format!(
                    "{}{}",
                    list.iter()
                        .map(|(pref, name)| format!("{pref} {name}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if glue.is_empty() {
                        ""
                    } else {
                        " (with addresses in the additional section)"
                    }
                ),
                MxAnswer::NoRecords => "no MX record".to_string(),
                MxAnswer::NullMx => "null MX (RFC 7505)".to_string(),
                MxAnswer::Failed(failure) => {
                    tracing::debug!("{failure}");
                    return answer;
                }
            };
            tracing::debug!("{} answered MX {domain}: {said}", self.answered_by);
        }
        answer
    }

    async fn mx_answer(&self, domain: &str) -> MxAnswer {
        match self.inner.mx_lookup(fqdn(domain)).await {
            Ok(lookup) => {
                let mut records: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    return MxAnswer::NoRecords;
                }
                if records.len() == 1 && records[0].1.trim_end_matches('.').is_empty() {
                    return MxAnswer::NullMx;
                }
                records.sort();
                records.dedup();
                let exchanges = records
                    .into_iter()
                    .filter(|(_, name)| !name.trim_end_matches('.').is_empty())
                    .map(|(pref, name)| (pref, name.trim_end_matches('.').to_lowercase()))
                    .collect();
                MxAnswer::Exchanges(exchanges, glue(lookup.additionals()))
            }
            Err(err) => match self.classify(&err).await {
                Classified::NoRecords => MxAnswer::NoRecords,
                Classified::Failure(kind) => MxAnswer::Failed(DnsFailure {
                    name: domain.to_string(),
                    record: "MX",
                    kind,
                    nameserver: Some(self.nameserver.clone()),
                }),
            },
        }
    }

    async fn addresses(&self, name: &str, family: Family) -> Addresses {
        let answer = self.address_answer(name, family).await;
        match &answer {
            Addresses::Failed(failure) => tracing::debug!("{failure}"),
            found => tracing::debug!(
                "{} answered {} {name}: {}",
                self.answered_by,
                family.record_type(),
                describe_addresses(found)
            ),
        }
        answer
    }

    async fn address_answer(&self, name: &str, family: Family) -> Addresses {
        let result = match family {
            Family::Ipv4 => self.inner.lookup(fqdn(name), RecordType::A).await,
            Family::Ipv6 => self.inner.lookup(fqdn(name), RecordType::AAAA).await,
        };
        match result {
            Ok(lookup) => {
                let mut found: Vec<IpAddr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match (&r.data, family) {
                        (RData::A(a), Family::Ipv4) => Some(IpAddr::V4(a.0)),
                        (RData::AAAA(a), Family::Ipv6) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect();
                found.sort();
                found.dedup();
                if found.is_empty() {
                    Addresses::None
                } else {
                    Addresses::Found(found)
                }
            }
            Err(err) => match self.classify(&err).await {
                Classified::NoRecords => Addresses::None,
                Classified::Failure(kind) => Addresses::Failed(DnsFailure {
                    name: name.to_string(),
                    record: family.record_type(),
                    kind,
                    nameserver: Some(self.nameserver.clone()),
                }),
            },
        }
    }

    /// Resolves a set of targets: each distinct name once, concurrently.
    pub async fn resolve_all<'a>(
        &self,
        kinds: impl IntoIterator<Item = &'a TargetKind>,
    ) -> HashMap<TargetKind, Resolution> {
        let kinds: Vec<&TargetKind> = kinds.into_iter().collect();
        let domains: BTreeSet<&str> = kinds
            .iter()
            .filter_map(|k| match k {
                TargetKind::Mx(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        let mx_answers: HashMap<&str, MxAnswer> = domains
            .iter()
            .copied()
            .zip(join_all(domains.iter().map(|d| self.mx(d))).await)
            .collect();

        // `host` targets the hosts file names are answered by it alone, as glibc's `files`
        // source does (`hosts: files dns`): a family it has no address of is not tested.
        let from_file = |host: &str| self.hosts.as_ref().and_then(|h| h.lookup(host));
        let mut hosts: BTreeSet<String> = BTreeSet::new();
        for kind in &kinds {
            match kind {
                TargetKind::Host(host) if from_file(host).is_some() => {}
                TargetKind::Host(host) => {
                    hosts.insert(host.clone());
                }
                TargetKind::Mx(domain) => match &mx_answers[domain.as_str()] {
                    MxAnswer::Exchanges(list, _) => {
                        hosts.extend(list.iter().map(|(_, n)| n.clone()))
                    }
                    MxAnswer::NoRecords => {
                        hosts.insert(domain.clone());
                    }
                    MxAnswer::NullMx | MxAnswer::Failed(_) => {}
                },
                TargetKind::Addresses(_) => {}
            }
        }
        // Addresses that came along with an MX answer need no second round trip. Only a
        // family that is present counts: a missing AAAA in the additional section proves
        // nothing, so that family is still asked for.
        let mut addresses: HashMap<(String, Family), Addresses> = HashMap::new();
        for answer in mx_answers.values() {
            if let MxAnswer::Exchanges(_, glue) = answer {
                for (key, list) in glue {
                    if hosts.contains(&key.0) {
                        tracing::debug!(
                            "{} answered {} {} along with the MX answer: {}",
                            self.answered_by,
                            key.1.record_type(),
                            key.0,
                            describe_addresses(&Addresses::Found(list.clone()))
                        );
                        addresses.insert(key.clone(), Addresses::Found(list.clone()));
                    }
                }
            }
        }
        let lookups = hosts
            .iter()
            .flat_map(|h| Family::ALL.into_iter().map(move |f| (h, f)))
            .filter(|(h, f)| !addresses.contains_key(&((*h).clone(), *f)))
            .map(|(h, f)| async move { ((h.clone(), f), self.addresses(h, f).await) })
            .collect::<Vec<_>>();
        addresses.extend(join_all(lookups).await);
        let exchange = |name: &str, preference: Option<u16>| Exchange {
            name: Some(name.to_string()),
            preference,
            ipv4: addresses[&(name.to_string(), Family::Ipv4)].clone(),
            ipv6: addresses[&(name.to_string(), Family::Ipv6)].clone(),
            answered_by: self.answered_by.clone(),
        };

        kinds
            .into_iter()
            .map(|kind| {
                let resolution = match kind {
                    TargetKind::Mx(domain) => match &mx_answers[domain.as_str()] {
                        MxAnswer::Exchanges(list, _) => Resolution::Exchanges {
                            implicit_mx: false,
                            exchanges: list.iter().map(|(p, n)| exchange(n, Some(*p))).collect(),
                        },
                        MxAnswer::NoRecords => Resolution::Exchanges {
                            implicit_mx: true,
                            exchanges: vec![exchange(domain, None)],
                        },
                        MxAnswer::NullMx => Resolution::NullMx,
                        MxAnswer::Failed(failure) => Resolution::Failed(failure.clone()),
                    },
                    TargetKind::Host(host) => Resolution::Exchanges {
                        implicit_mx: false,
                        exchanges: vec![match from_file(host) {
                            Some(list) => from_hosts_file(host, list),
                            None => exchange(host, None),
                        }],
                    },
                    TargetKind::Addresses(list) => literals(list),
                };
                (kind.clone(), resolution)
            })
            .collect()
    }
}

/// A `host` target as the hosts file gives it: its addresses by family, answered by
/// [`hosts_path`] (so that an answer that is not egress is named as coming from there).
fn from_hosts_file(host: &str, list: &[IpAddr]) -> Exchange {
    let of = |family: Family| {
        let found: Vec<IpAddr> = list
            .iter()
            .copied()
            .filter(|ip| match family {
                Family::Ipv4 => ip.is_ipv4(),
                Family::Ipv6 => ip.is_ipv6(),
            })
            .collect();
        if found.is_empty() {
            Addresses::None
        } else {
            Addresses::Found(found)
        }
    };
    let found = Exchange {
        name: Some(host.to_string()),
        preference: None,
        ipv4: of(Family::Ipv4),
        ipv6: of(Family::Ipv6),
        answered_by: hosts_path().display().to_string(),
    };
    tracing::debug!(
        "{} answered {host}: A {}; AAAA {}",
        found.answered_by,
        describe_addresses(&found.ipv4),
        describe_addresses(&found.ipv6)
    );
    found
}

/// The resolutions of a run: per nameserver source and target.
pub type Resolutions = HashMap<(NameserverSource, TargetKind), Resolution>;

/// Resolves every group of [`crate::plan::lookups`], all groups concurrently.
///
/// Literal addresses need no resolver, so a host without resolv.conf can still probe them;
/// a resolver that cannot be set up fails the names of its group, not the run.
pub async fn resolve_groups(groups: Vec<(NameserverSource, Vec<TargetKind>)>) -> Resolutions {
    resolve_prepared(prepare_groups(groups)).await
}

/// A group of [`crate::plan::lookups`] with its resolver built: its configuration (the
/// system's resolv.conf) read, no socket opened yet.
pub struct PreparedGroup {
    source: NameserverSource,
    kinds: Vec<TargetKind>,
    resolver: Option<Result<Resolver, ResolverError>>,
}

/// Builds the resolvers of `groups` (reading their configuration files) without sending
/// anything: the resolver process ([`crate::dns_process`]) does this before it fences
/// itself off the filesystem.
pub fn prepare_groups(groups: Vec<(NameserverSource, Vec<TargetKind>)>) -> Vec<PreparedGroup> {
    groups
        .into_iter()
        .map(|(source, kinds)| {
            let needs_dns = kinds.iter().any(|k| !matches!(k, TargetKind::Addresses(_)));
            let resolver = needs_dns.then(|| Resolver::new(&source));
            PreparedGroup {
                source,
                kinds,
                resolver,
            }
        })
        .collect()
}

/// Resolves groups prepared by [`prepare_groups`], all concurrently.
pub async fn resolve_prepared(groups: Vec<PreparedGroup>) -> Resolutions {
    let lookups = groups.into_iter().map(|group| async move {
        let PreparedGroup {
            source,
            kinds,
            resolver,
        } = group;
        let resolutions: HashMap<TargetKind, Resolution> = match resolver {
            Some(Ok(resolver)) => resolver.resolve_all(&kinds).await,
            Some(Err(error)) => kinds
                .iter()
                .map(|k| (k.clone(), without_resolver(k, &error.to_string())))
                .collect(),
            None => kinds
                .iter()
                .map(|k| (k.clone(), without_resolver(k, "no resolver")))
                .collect(),
        };
        resolutions
            .into_iter()
            .map(|(k, r)| ((source.clone(), k), r))
            .collect::<Vec<_>>()
    });
    join_all(lookups).await.into_iter().flatten().collect()
}

/// The resolution of a target when no resolver is used: literal addresses as they are, names
/// failed with `message`.
pub fn without_resolver(kind: &TargetKind, message: &str) -> Resolution {
    match kind {
        TargetKind::Addresses(list) => literals(list),
        TargetKind::Mx(name) | TargetKind::Host(name) => Resolution::Failed(DnsFailure {
            name: name.clone(),
            record: if matches!(kind, TargetKind::Mx(_)) {
                "MX"
            } else {
                "A/AAAA"
            },
            kind: FailureKind::Other(message.to_string()),
            nameserver: None,
        }),
    }
}

/// The resolution of literal addresses: themselves.
fn literals(list: &[crate::scenario::GivenAddress]) -> Resolution {
    Resolution::Literals(list.iter().map(|g| g.literal.clone()).collect())
}

/// One destination of a family (or why there is none), before ports are applied.
struct FamilyPlan {
    destination: Destination,
    note: Option<String>,
}

fn join_notes(notes: Vec<String>) -> Option<String> {
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// Where the literal addresses of a target lead, in `family`: each checked against the
/// namespace (`host`), as it goes on the wire.
fn literal_plans(
    list: &[Literal],
    family: Family,
    host: &HostInterfaces,
    local: bool,
) -> Vec<FamilyPlan> {
    let mut plans: Vec<FamilyPlan> = Vec::new();
    let mut seen: Vec<Endpoint> = Vec::new();
    for literal in list {
        if Family::of(&on_the_wire(literal.ip)) != family {
            continue;
        }
        match host.check_literal(literal, local) {
            Ok(checked) => {
                let mapped = address::is_mapped(literal.ip);
                let endpoint = Endpoint {
                    ip: checked.wire,
                    scope: checked.scope,
                    record: (mapped || literal.zone.is_some()).then(|| literal.to_string()),
                    local: checked.class.is_local(),
                };
                // `192.0.2.1` and `::ffff:192.0.2.1` are one destination.
                if seen
                    .iter()
                    .any(|e| e.ip == endpoint.ip && e.scope == endpoint.scope)
                {
                    continue;
                }
                let mut notes = Vec::new();
                if endpoint.local {
                    notes.push(format!(
                        "local: does not cross the egress path, so it is never a pass ({} is {})",
                        checked.wire,
                        checked.class.describe()
                    ));
                }
                if mapped {
                    notes.push(format!("given as {literal}: {}", address::MAPPED_NOTE));
                }
                notes.extend(address::note(checked.wire).map(str::to_string));
                seen.push(endpoint.clone());
                plans.push(FamilyPlan {
                    destination: Destination::Address(endpoint),
                    note: join_notes(notes),
                });
            }
            // `plan::check_literals` refuses these before anything is planned; should one
            // get here all the same, it is not probed.
            Err(error) => plans.push(FamilyPlan {
                destination: Destination::None(error.to_string()),
                note: None,
            }),
        }
    }
    if plans.is_empty() {
        plans.push(FamilyPlan {
            destination: Destination::None(format!(
                "no {family} address given, so {family} was not tested"
            )),
            note: None,
        });
    }
    plans
}

/// Where an exchange's DNS answers lead in `family` (the family on the wire): every
/// address once, with the records that gave it. Answers that cannot be egress become
/// no-address plans that name the record, the nameserver and why; IPv4-mapped AAAA
/// records are IPv4; a family with nothing to probe stays visible as one no-address plan.
fn exchange_plans(
    exchange: &Exchange,
    family: Family,
    asked: &[Family],
    host: &HostInterfaces,
    implicit: Option<&str>,
) -> Vec<FamilyPlan> {
    let name = exchange.name.as_deref().unwrap_or("the target");
    let suffix = implicit.map(|i| format!(" ({i})")).unwrap_or_default();
    // (address on the wire, the records that published it)
    let mut wire: Vec<(IpAddr, Vec<(Family, IpAddr)>)> = Vec::new();
    for record in Family::ALL {
        if let Addresses::Found(list) = exchange.addresses(record) {
            for &published in list {
                let ip = on_the_wire(published);
                if Family::of(&ip) != family {
                    continue;
                }
                match wire.iter_mut().find(|(w, _)| *w == ip) {
                    Some((_, records)) => records.push((record, published)),
                    None => wire.push((ip, vec![(record, published)])),
                }
            }
        }
    }
    wire.sort_by_key(|(ip, _)| *ip);

    let mut plans = Vec::new();
    let own = exchange.addresses(family);
    if let Addresses::Failed(failure) = own {
        plans.push(FamilyPlan {
            destination: Destination::None(format!("{failure}; {family} was not tested")),
            note: None,
        });
    } else if wire.is_empty() {
        let mapped: Vec<String> = match (family, &exchange.ipv6) {
            (Family::Ipv6, Addresses::Found(list)) => list
                .iter()
                .filter(|a| address::is_mapped(**a))
                .map(IpAddr::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let why = if mapped.is_empty() {
            format!(
                "{name} has no {} record, so {family} was not tested{suffix}",
                family.record_type()
            )
        } else {
            format!(
                "{name} has no AAAA record but IPv4-mapped ones ({}; RFC 4291 2.5.5.2), which \
                 go out over IPv4{}; so IPv6 was not tested{suffix}",
                mapped.join(", "),
                if asked.contains(&Family::Ipv4) {
                    " (probed under IPv4)"
                } else {
                    " (IPv4 is not among the target's families)"
                }
            )
        };
        plans.push(FamilyPlan {
            destination: Destination::None(why),
            note: None,
        });
    }
    for (ip, records) in wire {
        let class = host.classify(ip, None);
        let mapped = records.iter().any(|(_, p)| address::is_mapped(*p));
        let records_text = records
            .iter()
            .map(|(r, p)| format!("{} {p}", r.record_type()))
            .collect::<Vec<_>>()
            .join(", ");
        if !class.is_egress() {
            let hint = class
                .dns_hint()
                .map(|h| format!("{h}; "))
                .unwrap_or_default();
            plans.push(FamilyPlan {
                destination: Destination::None(format!(
                    "{} answered {records_text} for {name}: {hint}{ip} is {}; not probed, so \
                     {family} was not tested against it{suffix}",
                    exchange.answered_by,
                    class.describe()
                )),
                note: None,
            });
            continue;
        }
        let mut notes = Vec::new();
        if mapped {
            notes.push(format!("{records_text}: {}", address::MAPPED_NOTE));
        }
        notes.extend(address::note(ip).map(str::to_string));
        notes.extend(implicit.map(|i| format!("({i})")));
        plans.push(FamilyPlan {
            destination: Destination::Address(Endpoint {
                ip,
                scope: None,
                record: mapped.then_some(records_text),
                local: false,
            }),
            note: join_notes(notes),
        });
    }
    plans
}

/// Turns assignments and their targets' resolutions into the exact probes of the run: one
/// per address, port and family on the wire, plus one without a destination for every
/// family that has nothing to connect to (an untested family must show up in the report)
/// and for every answer that cannot be egress. `host` is the namespace the probes run in.
pub fn expand(
    assignments: &[Assignment],
    host: &HostInterfaces,
    resolution_of: impl Fn(&Assignment) -> Resolution,
) -> Vec<PlannedProbe> {
    let mut probes = Vec::new();
    for a in assignments {
        let domain = match &a.target.kind {
            TargetKind::Mx(d) => Some(d.clone()),
            _ => None,
        };
        // Shared by every probe of the assignment: a sweep's 131,070 probes hold one copy
        // of each name, not one allocation per probe and name.
        let user: std::sync::Arc<str> = a.account.name.as_str().into();
        let target: std::sync::Arc<str> = a.target.name.as_str().into();
        let probe = |exchange: Option<String>,
                     preference: Option<u16>,
                     family: Family,
                     port: u16,
                     plan: &FamilyPlan| PlannedProbe {
            spec: ProbeSpec {
                user: std::sync::Arc::clone(&user),
                uid: a.account.uid.as_raw(),
                target: std::sync::Arc::clone(&target),
                domain: domain.clone(),
                exchange,
                preference,
                family,
                port,
                expect: a.expect,
            },
            timeout: a.timeout,
            destination: plan.destination.clone(),
            note: plan.note.clone(),
        };
        let mut every_family_and_port =
            |exchange: Option<String>,
             preference: Option<u16>,
             plans_of: &dyn Fn(Family) -> Vec<FamilyPlan>| {
                for &family in &a.target.families {
                    let plans = plans_of(family);
                    for &port in &a.target.ports {
                        for plan in &plans {
                            probes.push(probe(exchange.clone(), preference, family, port, plan));
                        }
                    }
                }
            };
        let nowhere = |why: String| {
            move |_: Family| {
                vec![FamilyPlan {
                    destination: Destination::None(why.clone()),
                    note: None,
                }]
            }
        };
        match resolution_of(a) {
            Resolution::Failed(failure) => {
                every_family_and_port(None, None, &nowhere(failure.to_string()));
            }
            Resolution::NullMx => {
                let why = format!(
                    "{} publishes a null MX (RFC 7505): it accepts no mail, so there is nothing to probe",
                    domain.as_deref().unwrap_or("the domain")
                );
                every_family_and_port(Some(".".into()), None, &nowhere(why));
            }
            Resolution::Literals(list) => {
                every_family_and_port(None, None, &|family| {
                    literal_plans(&list, family, host, a.target.local)
                });
            }
            Resolution::Exchanges {
                implicit_mx,
                exchanges,
            } => {
                let implicit = implicit_mx
                    .then_some("no MX record: the domain's own address is used, RFC 5321 5.1");
                for exchange in &exchanges {
                    every_family_and_port(exchange.name.clone(), exchange.preference, &|family| {
                        exchange_plans(exchange, family, &a.target.families, host, implicit)
                    });
                }
            }
        }
    }
    probes
}

/// Addresses of exchanges that came in an MX answer's additional section, by name and family.
type Glue = HashMap<(String, Family), Vec<IpAddr>>;

fn glue(additionals: &[hickory_resolver::proto::rr::Record]) -> Glue {
    let mut glue = Glue::new();
    for record in additionals {
        let name = record.name.to_ascii().trim_end_matches('.').to_lowercase();
        let (family, addr) = match &record.data {
            RData::A(a) => (Family::Ipv4, IpAddr::V4(a.0)),
            RData::AAAA(a) => (Family::Ipv6, IpAddr::V6(a.0)),
            _ => continue,
        };
        let list = glue.entry((name, family)).or_default();
        if !list.contains(&addr) {
            list.push(addr);
        }
    }
    for list in glue.values_mut() {
        list.sort();
    }
    glue
}

enum MxAnswer {
    /// The exchanges by preference, and any of their addresses the answer carried along.
    Exchanges(Vec<(u16, String)>, Glue),
    NoRecords,
    NullMx,
    Failed(DnsFailure),
}

enum Classified {
    NoRecords,
    Failure(FailureKind),
}

fn classify(err: &NetError) -> Classified {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => match no_records.response_code {
            ResponseCode::NXDomain => Classified::Failure(FailureKind::Nxdomain),
            ResponseCode::NoError => Classified::NoRecords,
            code => Classified::Failure(rcode_failure(code)),
        },
        NetError::Dns(DnsError::ResponseCode(code)) => Classified::Failure(rcode_failure(*code)),
        NetError::Timeout => Classified::Failure(FailureKind::Timeout),
        // hickory's TCP connect gives up with an io::Error of kind TimedOut.
        NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Classified::Failure(FailureKind::Timeout)
        }
        other => Classified::Failure(FailureKind::Other(other.to_string())),
    }
}

/// True when hickory could not use any connection to the nameservers (its pool gave up, or
/// sending failed): the cases [`diagnose`] explains.
fn no_connection(err: &NetError) -> bool {
    match err {
        NetError::NoConnections => true,
        NetError::Io(io) => io.raw_os_error() == Some(nix::libc::EPERM),
        _ => false,
    }
}

/// A DNS query for the root's NS records (id 0x4543), as a resolver would send it.
const PROBE_QUERY: [u8; 17] = [
    0x45, 0x43, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1,
];

/// Why no connection to `servers` was possible: the first one whose query this host's
/// firewall refuses (EPERM on send, the errno a local `DROP`/`REJECT` in OUTPUT gives a
/// UDP sender), else no answer from any of them.
async fn diagnose(servers: &[std::net::SocketAddr]) -> FailureKind {
    let name = |addr: &std::net::SocketAddr| {
        if addr.port() == 53 {
            addr.ip().to_string()
        } else {
            addr.to_string()
        }
    };
    for server in servers {
        let bind: std::net::SocketAddr = if server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if let Err(error) = socket.send_to(&PROBE_QUERY, server).await {
            if error.raw_os_error() == Some(nix::libc::EPERM) {
                let errno = nix::errno::Errno::from_raw(nix::libc::EPERM);
                return FailureKind::BlockedByHost {
                    server: name(server),
                    error: errno.desc().to_string(),
                };
            }
        }
    }
    FailureKind::NoAnswer {
        servers: if servers.is_empty() {
            "any nameserver".to_string()
        } else {
            servers.iter().map(name).collect::<Vec<_>>().join(", ")
        },
    }
}

fn rcode_failure(code: ResponseCode) -> FailureKind {
    match code {
        ResponseCode::NXDomain => FailureKind::Nxdomain,
        ResponseCode::ServFail => FailureKind::Servfail,
        ResponseCode::Refused => FailureKind::Refused,
        other => FailureKind::Other(format!("response code {other}")),
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::tests::host;
    use crate::plan::tests::assignment;
    use std::net::SocketAddr;

    pub(crate) fn exchange(name: &str, ipv4: Addresses, ipv6: Addresses) -> Exchange {
        Exchange {
            name: Some(name.into()),
            preference: Some(10),
            ipv4,
            ipv6,
            answered_by: "DNS server 10.0.0.53".into(),
        }
    }

    fn found(list: &[&str]) -> Addresses {
        Addresses::Found(list.iter().map(|a| a.parse().unwrap()).collect())
    }

    /// The probes of one `mx.d.test` with these A and AAAA answers, ports 25 and 587.
    fn probes_of(ipv4: Addresses, ipv6: Addresses) -> Vec<PlannedProbe> {
        let a = assignment(
            TargetKind::Mx("d.test".into()),
            Family::ALL.to_vec(),
            vec![25, 587],
        );
        let resolution = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![exchange("mx.d.test", ipv4, ipv6)],
        };
        expand(&[a], &host(), |_| resolution.clone())
    }

    fn why(p: &PlannedProbe) -> &str {
        match &p.destination {
            Destination::None(why) => why,
            Destination::Address(_) => panic!("{p:?} has an address"),
        }
    }

    #[test]
    fn sinkhole_answers_are_not_probed_and_say_who_answered() {
        let probes = probes_of(found(&["0.0.0.0"]), found(&["::"]));
        assert_eq!(probes.len(), 4, "{probes:#?}");
        assert!(probes.iter().all(|p| p.connect_to().is_none()));
        let v4 = probes
            .iter()
            .find(|p| p.spec.family == Family::Ipv4)
            .unwrap();
        assert!(
            why(v4).starts_with(
                "DNS server 10.0.0.53 answered A 0.0.0.0 for mx.d.test: a sinkhole or a broken \
                 zone; 0.0.0.0 is an unspecified address"
            ),
            "{}",
            why(v4)
        );
        assert!(why(v4).contains("stays on this host"), "{}", why(v4));
        let v6 = probes
            .iter()
            .find(|p| p.spec.family == Family::Ipv6)
            .unwrap();
        assert!(
            why(v6).contains("answered AAAA :: for mx.d.test"),
            "{}",
            why(v6)
        );
    }

    #[test]
    fn answers_that_stay_on_the_host_are_named_next_to_good_ones() {
        let probes = probes_of(
            found(&[
                "127.0.0.1",
                "198.51.100.1",
                "203.0.113.10",
                "224.0.0.9",
                "198.51.100.255",
            ]),
            found(&["fe80::1", "ff02::1", "2001:db8::10"]),
        );
        let connect: Vec<_> = probes.iter().filter_map(|p| p.connect_to()).collect();
        assert_eq!(connect.len(), 4, "{probes:#?}");
        let reasons: Vec<&str> = probes
            .iter()
            .filter(|p| p.spec.port == 25 && p.connect_to().is_none())
            .map(why)
            .collect();
        assert_eq!(reasons.len(), 6, "{reasons:#?}");
        for (needle, words) in [
            ("A 127.0.0.1", "a loopback address"),
            ("A 198.51.100.1", "an address of this host (interface eth0)"),
            ("A 224.0.0.9", "a multicast address"),
            (
                "A 198.51.100.255",
                "the broadcast address of the subnet of interface eth0",
            ),
            ("AAAA fe80::1", "link-local"),
            ("AAAA ff02::1", "a multicast address"),
        ] {
            assert!(
                reasons
                    .iter()
                    .any(|r| r.contains(needle) && r.contains(words)),
                "{needle}: {reasons:#?}"
            );
        }
    }

    #[test]
    fn a_mapped_aaaa_is_ipv4_merged_with_the_same_a_record() {
        let probes = probes_of(found(&["203.0.113.10"]), found(&["::ffff:203.0.113.10"]));
        assert_eq!(probes.len(), 4, "{probes:#?}");
        let v4: Vec<_> = probes
            .iter()
            .filter(|p| p.spec.family == Family::Ipv4)
            .collect();
        assert_eq!(v4.len(), 2, "one IPv4 probe per port: {v4:#?}");
        let endpoint = v4[0].endpoint().unwrap();
        assert_eq!(endpoint.ip, "203.0.113.10".parse::<IpAddr>().unwrap());
        assert_eq!(
            endpoint.record.as_deref(),
            Some("A 203.0.113.10, AAAA ::ffff:203.0.113.10")
        );
        assert!(v4[0].note.as_deref().unwrap().contains("RFC 4291 2.5.5.2"));
        let v6: Vec<_> = probes
            .iter()
            .filter(|p| p.spec.family == Family::Ipv6)
            .collect();
        assert_eq!(v6.len(), 2);
        assert!(v6.iter().all(|p| p.connect_to().is_none()));
        assert!(
            why(v6[0]).starts_with(
                "mx.d.test has no AAAA record but IPv4-mapped ones (::ffff:203.0.113.10; RFC 4291 2.5.5.2)"
            ),
            "{}",
            why(v6[0])
        );
        assert!(why(v6[0]).contains("IPv6 was not tested"), "{}", why(v6[0]));
    }

    #[test]
    fn a_mapped_only_aaaa_is_probed_under_ipv4() {
        let probes = probes_of(Addresses::None, found(&["::ffff:203.0.113.11"]));
        let v4: Vec<_> = probes
            .iter()
            .filter(|p| p.spec.family == Family::Ipv4)
            .collect();
        assert_eq!(v4.len(), 2, "{probes:#?}");
        assert_eq!(v4[0].connect_to(), Some("203.0.113.11:25".parse().unwrap()));
        assert_eq!(
            v4[0].endpoint().unwrap().record.as_deref(),
            Some("AAAA ::ffff:203.0.113.11")
        );
        assert!(probes
            .iter()
            .filter(|p| p.spec.family == Family::Ipv6)
            .all(|p| why(p).contains("IPv4-mapped")));
        // A genuine AAAA next to a mapped one: IPv6 is probed, IPv4 gets the mapped one.
        let probes = probes_of(
            found(&["203.0.113.10"]),
            found(&["::ffff:203.0.113.11", "2001:db8::10"]),
        );
        assert_eq!(
            probes.iter().filter(|p| p.connect_to().is_some()).count(),
            6
        );
        // A mapped sinkhole is a sinkhole, reported under IPv4 with its record.
        let probes = probes_of(Addresses::None, found(&["::ffff:0.0.0.0"]));
        assert!(probes.iter().all(|p| p.connect_to().is_none()));
        assert!(probes.iter().any(|p| p.spec.family == Family::Ipv4
            && why(p).contains("answered AAAA ::ffff:0.0.0.0 for mx.d.test")));
    }

    #[test]
    fn a_mapped_aaaa_with_ipv4_not_asked_for_is_said() {
        let a = assignment(
            TargetKind::Host("h.test".into()),
            vec![Family::Ipv6],
            vec![25],
        );
        let resolution = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![exchange(
                "h.test",
                Addresses::None,
                found(&["::ffff:1.2.3.4"]),
            )],
        };
        let probes = expand(&[a], &host(), |_| resolution.clone());
        assert_eq!(probes.len(), 1);
        assert!(why(&probes[0]).contains("IPv4 is not among the target's families"));
    }

    #[test]
    fn nat64_and_6to4_are_probed_with_a_note() {
        let probes = probes_of(
            Addresses::None,
            found(&["64:ff9b::cb00:710a", "2002:cb00:710a::1"]),
        );
        let v6: Vec<_> = probes.iter().filter(|p| p.connect_to().is_some()).collect();
        assert_eq!(v6.len(), 4);
        assert!(v6
            .iter()
            .all(|p| p.spec.family == Family::Ipv6 && p.note.is_some()));
    }

    fn literal_probes(list: &[&str], local: bool) -> Vec<PlannedProbe> {
        let literals: Vec<Literal> = list.iter().map(|l| l.parse().unwrap()).collect();
        let mut a = assignment(
            TargetKind::Addresses(Vec::new()),
            Family::ALL.to_vec(),
            vec![25],
        );
        a.target.local = local;
        expand(&[a], &host(), |_| Resolution::Literals(literals.clone()))
    }

    #[test]
    fn literal_addresses_split_by_family_on_the_wire() {
        let probes = literal_probes(&["192.0.2.1", "2001:db8::1"], false);
        assert_eq!(probes.len(), 2);
        assert!(probes
            .iter()
            .all(|p| p.connect_to().is_some() && !p.is_local()));
        let probes = literal_probes(&["::ffff:10.0.0.1"], false);
        assert_eq!(probes[0].spec.family, Family::Ipv4);
        assert_eq!(probes[0].connect_to(), Some("10.0.0.1:25".parse().unwrap()));
        assert_eq!(
            probes[0].endpoint().unwrap().record.as_deref(),
            Some("::ffff:10.0.0.1")
        );
        assert!(why(&probes[1]).contains("no IPv6 address given"));
        // The same destination twice is probed once.
        let probes = literal_probes(&["10.0.0.1", "::ffff:10.0.0.1"], false);
        assert_eq!(
            probes.iter().filter(|p| p.connect_to().is_some()).count(),
            1
        );
    }

    #[test]
    fn literal_link_local_carries_its_interface() {
        let probes = literal_probes(&["fe80::2%eth0"], false);
        let v6 = probes
            .iter()
            .find(|p| p.spec.family == Family::Ipv6)
            .unwrap();
        let SocketAddr::V6(addr) = v6.connect_to().unwrap() else {
            panic!("{v6:?}")
        };
        assert_eq!(addr.scope_id(), 2);
        assert_eq!(
            v6.endpoint().unwrap().record.as_deref(),
            Some("fe80::2%eth0")
        );
    }

    #[test]
    fn local_literals_are_marked_and_others_never_slip_through() {
        let probes = literal_probes(&["127.0.0.1", "198.51.100.1", "::1"], true);
        assert_eq!(probes.len(), 3);
        for p in &probes {
            assert!(p.is_local(), "{p:?}");
            assert!(
                p.note
                    .as_deref()
                    .unwrap()
                    .starts_with("local: does not cross the egress path"),
                "{p:?}"
            );
        }
        // Without the opt-in (check_literals refuses that earlier), nothing is sent.
        let probes = literal_probes(&["127.0.0.1", "0.0.0.0"], false);
        assert!(
            probes.iter().all(|p| p.connect_to().is_none()),
            "{probes:#?}"
        );
    }

    #[test]
    fn every_address_port_and_family_is_probed() {
        let a = assignment(
            TargetKind::Mx("d.test".into()),
            Family::ALL.to_vec(),
            vec![25, 587],
        );
        let v4: IpAddr = "203.0.113.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let resolution = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![
                exchange(
                    "mx1.d.test",
                    Addresses::Found(vec![v4]),
                    Addresses::Found(vec![v6]),
                ),
                exchange(
                    "mx2.d.test",
                    Addresses::Found(vec![v4]),
                    Addresses::Found(vec![v6]),
                ),
            ],
        };
        let probes = expand(&[a], &host(), |_| resolution.clone());
        assert_eq!(probes.len(), 2 * 2 * 2);
        assert!(probes.iter().all(|p| p.connect_to().is_some()));
        assert!(probes
            .iter()
            .any(|p| p.connect_to() == Some(SocketAddr::new(v6, 587))));
    }

    #[test]
    fn a_family_without_addresses_is_one_inconclusive_probe() {
        let a = assignment(
            TargetKind::Mx("d.test".into()),
            Family::ALL.to_vec(),
            vec![25],
        );
        let v4: IpAddr = "203.0.113.10".parse().unwrap();
        let resolution = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![exchange(
                "mx.d.test",
                Addresses::Found(vec![v4]),
                Addresses::None,
            )],
        };
        let probes = expand(&[a], &host(), |_| resolution.clone());
        assert_eq!(probes.len(), 2);
        let v6 = probes
            .iter()
            .find(|p| p.spec.family == Family::Ipv6)
            .unwrap();
        assert_eq!(v6.connect_to(), None);
        assert!(
            matches!(&v6.destination, Destination::None(why) if why.contains("no AAAA record")),
            "{v6:?}"
        );
    }

    #[test]
    fn families_not_asked_for_are_not_probed() {
        let a = assignment(
            TargetKind::Mx("d.test".into()),
            vec![Family::Ipv4],
            vec![25],
        );
        let resolution = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![exchange("mx.d.test", Addresses::None, Addresses::None)],
        };
        let probes = expand(&[a], &host(), |_| resolution.clone());
        assert_eq!(probes.len(), 1);
        assert_eq!(probes[0].spec.family, Family::Ipv4);
    }

    #[test]
    fn dns_failures_and_null_mx_are_inconclusive_per_family_and_port() {
        let a = assignment(
            TargetKind::Mx("nx.test".into()),
            Family::ALL.to_vec(),
            vec![25, 26],
        );
        let failure = Resolution::Failed(DnsFailure {
            name: "nx.test".into(),
            record: "MX",
            kind: FailureKind::Nxdomain,
            nameserver: Some("10.0.0.53".into()),
        });
        let probes = expand(std::slice::from_ref(&a), &host(), |_| failure.clone());
        assert_eq!(probes.len(), 4);
        assert!(probes
            .iter()
            .all(|p| matches!(&p.destination, Destination::None(why) if why.contains("NXDOMAIN"))));

        let probes = expand(&[a], &host(), |_| Resolution::NullMx);
        assert_eq!(probes.len(), 4);
        assert!(
            matches!(&probes[0].destination, Destination::None(why) if why.contains("null MX"))
        );
    }

    #[test]
    fn failures_read_well_and_name_the_nameserver() {
        let mut f = DnsFailure {
            name: "nx.test".into(),
            record: "MX",
            kind: FailureKind::Nxdomain,
            nameserver: Some("10.255.255.53".into()),
        };
        assert_eq!(
            f.to_string(),
            "DNS MX lookup of nx.test: NXDOMAIN from 10.255.255.53 (no such domain)"
        );
        f.kind = FailureKind::Timeout;
        assert_eq!(
            f.to_string(),
            "DNS MX lookup of nx.test: timed out waiting for 10.255.255.53 (nameserver \
             unreachable or too slow)"
        );
        f.nameserver = None;
        f.kind = FailureKind::Nxdomain;
        assert_eq!(
            f.to_string(),
            "DNS MX lookup of nx.test: NXDOMAIN (no such domain)"
        );
    }

    #[test]
    fn nameservers_are_named_with_their_port_when_not_53() {
        let one = |addr: &str| {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            server
        };
        let config = ResolverConfig::from_name_servers(vec![one("10.0.0.53:53")]);
        assert_eq!(name_servers(&config), "10.0.0.53");
        let config =
            ResolverConfig::from_name_servers(vec![one("[2001:db8::53]:5353"), one("10.0.0.2:53")]);
        assert_eq!(name_servers(&config), "[2001:db8::53]:5353 or 10.0.0.2");
    }

    #[test]
    fn glue_collects_additional_addresses_by_name_and_family() {
        use hickory_resolver::proto::rr::rdata::{A, AAAA};
        use hickory_resolver::proto::rr::{Name, Record};
        let name = Name::from_ascii("MX1.Example.TEST.").unwrap();
        let records = [
            Record::from_rdata(
                name.clone(),
                60,
                RData::A(A("203.0.113.10".parse().unwrap())),
            ),
            Record::from_rdata(
                name.clone(),
                60,
                RData::A(A("203.0.113.10".parse().unwrap())),
            ),
            Record::from_rdata(name, 60, RData::AAAA(AAAA("2001:db8::10".parse().unwrap()))),
        ];
        let glue = glue(&records);
        assert_eq!(
            glue[&("mx1.example.test".to_string(), Family::Ipv4)],
            vec!["203.0.113.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(glue.len(), 2);
    }

    #[test]
    fn hosts_files_parse_as_glibc_reads_them() {
        let hosts = HostsFile::parse(
            "127.0.0.1 localhost\n\
             # a comment\n\
             192.0.2.25  Relay.Example relay # the admin's relay\n\
             2001:db8::25 relay.example\n\
             fe80::1%eth0 broken\n\
             garbage line\n",
        );
        let ips = |list: &[&str]| {
            list.iter()
                .map(|a| a.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        assert_eq!(
            hosts.lookup("relay.example").unwrap(),
            ips(&["192.0.2.25", "2001:db8::25"])
        );
        assert_eq!(hosts.lookup("relay").unwrap(), ips(&["192.0.2.25"]));
        assert_eq!(hosts.lookup("broken"), None);
        assert_eq!(hosts.lookup("line"), None);
    }

    #[test]
    fn a_local_hosts_file_answer_is_named_as_coming_from_it() {
        let exchange = from_hosts_file("relay", &["127.0.0.1".parse().unwrap()]);
        assert_eq!(exchange.ipv6, Addresses::None);
        let plans = exchange_plans(&exchange, Family::Ipv4, &Family::ALL, &host(), None);
        let [FamilyPlan {
            destination: Destination::None(why),
            ..
        }] = plans.as_slice()
        else {
            panic!("not probed")
        };
        assert!(
            why.starts_with("/etc/hosts answered A 127.0.0.1 for relay:"),
            "{why}"
        );
    }

    #[test]
    fn rcodes_map_to_failures() {
        assert_eq!(rcode_failure(ResponseCode::ServFail), FailureKind::Servfail);
        assert_eq!(rcode_failure(ResponseCode::Refused), FailureKind::Refused);
        assert!(matches!(
            classify(&NetError::Timeout),
            Classified::Failure(FailureKind::Timeout)
        ));
    }
}
